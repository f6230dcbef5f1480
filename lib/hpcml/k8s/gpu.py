"""GPU scheduling beyond the plain device plugin: the GPU Operator, MIG and GPU sharing, DRA claims, and PBS scripts.

Pure builders (spec -> dict or text), rendered under ``manifests/gpu/`` and ``manifests/pbs/``:

* :func:`cluster_policy` -- the NVIDIA GPU Operator's ``ClusterPolicy`` (nvidia.com/v1): one
  object from which the operator runs the device plugin, GPU feature discovery, the MIG manager
  and (where the AMI lacks them) the driver and container toolkit as DaemonSets. It replaces the
  standalone ``cluster/nvidia-device-plugin.yaml``; run one or the other, never both.
* :func:`device_plugin_config` -- the device plugin's named configs (a ConfigMap the operator
  mounts; a node picks one with the label ``nvidia.com/device-plugin.config``): whole GPUs,
  time-slicing and MPS sharing. :func:`mig_config` -- the MIG manager's mig-parted layouts (a
  node picks one with ``nvidia.com/mig.config``).
* :func:`dra_objects` -- Dynamic Resource Allocation (``resource.k8s.io/v1``, GA in Kubernetes
  1.34): a DeviceClass, ResourceClaimTemplates, and a Job whose pod claims GPUs through them.
* :func:`smoke_jobs` -- one Job per way of asking for a GPU (a MIG slice, a time-sliced share,
  a DRA claim), each running ``nvidia-smi -L`` under the restricted Pod Security Standard.
* the PBS Pro scripts of the training job and a sweep (:mod:`hpcml.cluster.pbs`), from the same
  TrainSpec as the MPIJob and the Slurm script.

:func:`check_device_plugin_config`, :func:`check_mig_config` and :func:`consistency_problems`
check what no published schema covers: the rules the device plugin and mig-parted apply when
they read their configs, and that every GPU resource a rendered workload asks for is one the
rendered configs create. Sources: the CRD ``deployments/gpu-operator/crds/nvidia.com_clusterpolicies.yaml``
(NVIDIA/gpu-operator), ``api/config/v1`` (NVIDIA/k8s-device-plugin), the MIG user guide's
profile tables (docs.nvidia.com/datacenter/tesla/mig-user-guide), and the DRA driver
NVIDIA/k8s-dra-driver-gpu (driver name ``gpu.nvidia.com``; device classes ``gpu.nvidia.com``
and ``mig.nvidia.com``; attributes ``type``, ``profile``, ``productName``; capacity ``memory``).
"""

from __future__ import annotations

import dataclasses

import yaml

from hpcml.cluster import pbs
from hpcml.cluster.spec import GPU_LABEL, GPU_TAINT
from hpcml.k8s.common import NAMESPACE, dump_yaml, labels, meta, restricted_container, restricted_pod
from hpcml.k8s.train import PRODUCTION_SPEC
from hpcml.train.targets.layout import node_layout

#: Namespace the GPU Operator's Helm chart installs into (PSA privileged: its agents load drivers).
OPERATOR_NAMESPACE = "gpu-operator"
DEVICE_PLUGIN_CONFIG = "hpcml-device-plugin-config"
MIG_CONFIG = "hpcml-mig-parted-config"
#: The node labels that pick a device-plugin config and a MIG layout per node.
PLUGIN_CONFIG_LABEL = "nvidia.com/device-plugin.config"
MIG_CONFIG_LABEL = "nvidia.com/mig.config"
#: Replicas per GPU for time-slicing and MPS (each pod that asks for one share gets 1/N).
SHARE_REPLICAS = 4
#: The CUDA base image of the smoke jobs (nvidia-smi is injected by the container toolkit).
CUDA_BASE_IMAGE = "nvcr.io/nvidia/cuda:12.8.1-base-ubuntu24.04"
#: The NVIDIA DRA driver's name and the device classes its Helm chart creates.
DRA_DRIVER = "gpu.nvidia.com"
DRA_DRIVER_CLASSES = ("gpu.nvidia.com", "mig.nvidia.com")
#: The project's own DeviceClass: whole NVIDIA GPUs with enough memory for the training job.
TRAINING_CLASS = "hpcml-training-gpu"
TRAINING_MIN_MEMORY = "15Gi"
#: The MIG profile the examples use (an H100 80GB slice: 1 of 7 compute slices, 10 GB).
MIG_PROFILE = "1g.10gb"

#: The fields the ClusterPolicy CRD requires under ``spec`` (its openAPIV3Schema), plus the ones
#: this project relies on (checked by :mod:`hpcml.k8s.validate` for this custom resource).
CRD_REQUIRED = {
    ("nvidia.com/v1", "ClusterPolicy"): [
        "spec.operator", "spec.daemonsets", "spec.dcgm", "spec.dcgmExporter", "spec.devicePlugin", "spec.driver",
        "spec.gfd", "spec.nodeStatusExporter", "spec.toolkit",
        "spec.mig.strategy", "spec.devicePlugin.config.name", "spec.migManager.config.name",
    ],
}

#: MIG profiles per GPU model: (compute slices of 7, memory slices of 8, at most this many per GPU).
#: From the profile tables of NVIDIA's MIG user guide.
MIG_PROFILES: dict[str, dict[str, tuple[int, int, int]]] = {
    "A100-40GB": {"1g.5gb": (1, 1, 7), "1g.10gb": (1, 2, 4), "2g.10gb": (2, 2, 3), "3g.20gb": (3, 4, 2),
                  "4g.20gb": (4, 4, 1), "7g.40gb": (7, 8, 1)},
    "H100-80GB": {"1g.10gb": (1, 1, 7), "1g.20gb": (1, 2, 4), "2g.20gb": (2, 2, 3), "3g.40gb": (3, 4, 2),
                  "4g.40gb": (4, 4, 1), "7g.80gb": (7, 8, 1)},
}
#: Which EC2 GPUs can be split with MIG (T4, A10G and V100 cannot: time-slicing/MPS only).
MIG_GPU_OF_TYPE = {"p4d.24xlarge": "A100-40GB", "p5.48xlarge": "H100-80GB"}
MIG_STRATEGIES = ("none", "single", "mixed")


# ---- the GPU Operator ------------------------------------------------------------------------
def cluster_policy(mig_strategy: str = "mixed") -> dict:
    """The GPU Operator's ClusterPolicy for EKS GPU nodes.

    The EKS-optimized accelerated AMIs ship the NVIDIA driver and container toolkit, so the
    operator does not install them (``driver``/``toolkit`` disabled); it runs the device plugin
    (configured by :func:`device_plugin_config`), GPU feature discovery (node labels such as
    ``nvidia.com/gpu.product``), and the MIG manager (layouts of :func:`mig_config`). The DCGM
    exporter stays disabled: the monitoring stage runs its own (``monitoring/dcgm-exporter.yaml``).

    Args:
        mig_strategy: how MIG slices are advertised: ``single`` (every GPU of a node cut the
            same way, slices advertised as ``nvidia.com/gpu``), ``mixed`` (each profile its own
            resource, ``nvidia.com/mig-1g.10gb``), or ``none``.
    """
    if mig_strategy not in MIG_STRATEGIES:
        raise ValueError(f"mig_strategy must be one of {MIG_STRATEGIES}, got {mig_strategy!r}")
    return {
        "apiVersion": "nvidia.com/v1", "kind": "ClusterPolicy",
        "metadata": meta("cluster-policy", labels=labels("gpu-operator")),
        "spec": {
            "operator": {"defaultRuntime": "containerd"},
            "daemonsets": {"priorityClassName": "system-node-critical", "tolerations": [GPU_TAINT.toleration()],
                           "updateStrategy": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "1"}},
            "driver": {"enabled": False},    # in the EKS accelerated AMI
            "toolkit": {"enabled": False},   # likewise
            "cdi": {"enabled": True},         # devices reach containers as CDI devices
            "devicePlugin": {"enabled": True, "config": {"name": DEVICE_PLUGIN_CONFIG, "default": "whole-gpu"}},
            "gfd": {"enabled": True},
            "mig": {"strategy": mig_strategy},
            "migManager": {"enabled": True, "config": {"name": MIG_CONFIG, "default": "all-disabled"}},
            "dcgm": {"enabled": False},
            "dcgmExporter": {"enabled": False},
            "nodeStatusExporter": {"enabled": True},
        },
    }


def device_plugin_configs() -> dict[str, dict]:
    """The device plugin's named configs (config file format ``version: v1``).

    ``whole-gpu`` gives each pod whole GPUs; ``time-sliced`` and ``mps`` advertise each GPU as
    :data:`SHARE_REPLICAS` shares under ``nvidia.com/gpu.shared`` (``renameByDefault``, so a pod
    cannot mistake a share for a whole GPU). Time-slicing interleaves the pods' kernels with no
    memory isolation; MPS runs them concurrently with a per-client memory and thread limit.
    """
    def shared(kind: str) -> dict:
        return {"version": "v1", "sharing": {kind: {
            "renameByDefault": True, "failRequestsGreaterThanOne": True,
            "resources": [{"name": "nvidia.com/gpu", "replicas": SHARE_REPLICAS}]}}}

    return {"whole-gpu": {"version": "v1", "flags": {"failOnInitError": True}},
            "time-sliced": shared("timeSlicing"), "mps": shared("mps")}


def device_plugin_config() -> dict:
    """The ConfigMap the operator hands the device plugin: one YAML file per named config."""
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": meta(DEVICE_PLUGIN_CONFIG, OPERATOR_NAMESPACE, labels("nvidia-device-plugin")),
            "data": {name: dump_yaml(cfg) for name, cfg in device_plugin_configs().items()}}


def mig_configs() -> dict:
    """mig-parted layouts for H100 80GB nodes (p5): off, seven 1g.10gb slices, or a mix."""
    return {"version": "v1", "mig-configs": {
        "all-disabled": [{"devices": "all", "mig-enabled": False}],
        f"all-{MIG_PROFILE}": [{"devices": "all", "mig-enabled": True, "mig-devices": {MIG_PROFILE: 7}}],
        "all-balanced": [{"devices": "all", "mig-enabled": True,
                          "mig-devices": {"1g.10gb": 2, "2g.20gb": 1, "3g.40gb": 1}}],
    }}


def mig_config() -> dict:
    """The ConfigMap the MIG manager reads (key ``config.yaml``)."""
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": meta(MIG_CONFIG, OPERATOR_NAMESPACE, labels("nvidia-mig-manager")),
            "data": {"config.yaml": dump_yaml(mig_configs())}}


# ---- checks no schema covers -----------------------------------------------------------------
def check_device_plugin_config(cfg: dict) -> list[str]:
    """Problems the device plugin would refuse when it reads ``cfg`` (empty when it is valid).

    The rules of its ``api/config/v1``: ``version: v1``; ``migStrategy`` one of
    :data:`MIG_STRATEGIES`; time-slicing and MPS are exclusive; each shared resource names
    ``nvidia.com/gpu`` or a MIG resource and has at least 2 replicas; MPS cannot share MIG slices.
    """
    probs = []
    if cfg.get("version") != "v1":
        probs.append(f"version must be 'v1', got {cfg.get('version')!r}")
    strategy = cfg.get("flags", {}).get("migStrategy", "none")
    if strategy not in MIG_STRATEGIES:
        probs.append(f"flags.migStrategy must be one of {MIG_STRATEGIES}, got {strategy!r}")
    sharing = cfg.get("sharing", {})
    unknown = set(sharing) - {"timeSlicing", "mps"}
    if unknown:
        probs.append(f"sharing: unknown keys {sorted(unknown)}")
    if "timeSlicing" in sharing and "mps" in sharing:
        probs.append("sharing: timeSlicing and mps are mutually exclusive")
    for kind, body in sharing.items():
        if kind not in ("timeSlicing", "mps"):
            continue
        res = (body or {}).get("resources") or []
        if not res:
            probs.append(f"sharing.{kind}: no resources specified")
        for r in res:
            name, replicas = r.get("name", ""), r.get("replicas")
            if not (name == "nvidia.com/gpu" or name.startswith("nvidia.com/mig-")):
                probs.append(f"sharing.{kind}: resource {name!r} cannot be shared (nvidia.com/gpu or nvidia.com/mig-*)")
            if kind == "mps" and name.startswith("nvidia.com/mig-"):
                probs.append(f"sharing.mps: {name}: MPS does not share MIG devices")
            if not isinstance(replicas, int) or replicas < 2:
                probs.append(f"sharing.{kind}: {name}: replicas must be an integer >= 2, got {replicas!r}")
    return probs


def check_mig_config(cfg: dict, gpu: str = "H100-80GB") -> list[str]:
    """Problems with a mig-parted config for ``gpu`` (empty when every layout can be applied).

    Checks each layout's profiles exist on that GPU, stay under each profile's count, and fit
    the GPU's 7 compute and 8 memory slices. That is a necessary condition, not NVIDIA's full
    placement rules; mig-parted applies those on the node.
    """
    profiles = MIG_PROFILES.get(gpu)
    if profiles is None:
        return [f"no MIG on {gpu!r} (MIG GPUs: {sorted(MIG_PROFILES)})"]
    probs = [] if cfg.get("version") == "v1" else [f"version must be 'v1', got {cfg.get('version')!r}"]
    for name, entries in (cfg.get("mig-configs") or {}).items():
        for e in entries:
            if "devices" not in e or not isinstance(e.get("mig-enabled"), bool):
                probs.append(f"{name}: each entry needs devices and a boolean mig-enabled")
                continue
            devs = e.get("mig-devices", {})
            if not e["mig-enabled"]:
                probs += [f"{name}: mig-devices given with mig-enabled: false"] if devs else []
                continue
            if not devs:
                probs.append(f"{name}: mig-enabled without mig-devices")
            compute = memory = 0
            for prof, n in devs.items():
                if prof not in profiles:
                    probs.append(f"{name}: {prof} is not a {gpu} profile ({', '.join(profiles)})")
                    continue
                c, m, most = profiles[prof]
                if not isinstance(n, int) or n < 1 or n > most:
                    probs.append(f"{name}: {prof} x{n}: at most {most} per GPU")
                compute, memory = compute + c * n, memory + m * n
            if compute > 7 or memory > 8:
                probs.append(f"{name}: needs {compute}/7 compute and {memory}/8 memory slices of a {gpu}")
    return probs


# ---- Dynamic Resource Allocation (resource.k8s.io/v1) ------------------------------------------
def training_device_class() -> dict:
    """Whole NVIDIA GPUs (not MIG slices) with at least :data:`TRAINING_MIN_MEMORY` of memory."""
    expr = (f"device.driver == '{DRA_DRIVER}' && device.attributes['{DRA_DRIVER}'].type == 'gpu' && "
            f"device.capacity['{DRA_DRIVER}'].memory.compareTo(quantity('{TRAINING_MIN_MEMORY}')) >= 0")
    return {"apiVersion": "resource.k8s.io/v1", "kind": "DeviceClass",
            "metadata": meta(TRAINING_CLASS, labels=labels(TRAINING_CLASS)),
            "spec": {"selectors": [{"cel": {"expression": expr}}]}}


def claim_template(name: str, device_class: str, count: int = 1, selector: str | None = None) -> dict:
    """A ResourceClaimTemplate: each pod that names it gets its own claim for ``count`` devices."""
    if count < 1:
        raise ValueError(f"count must be >= 1, got {count}")
    exactly: dict = {"deviceClassName": device_class, "allocationMode": "ExactCount", "count": count}
    if selector:
        exactly["selectors"] = [{"cel": {"expression": selector}}]
    return {"apiVersion": "resource.k8s.io/v1", "kind": "ResourceClaimTemplate",
            "metadata": meta(name, NAMESPACE, labels(name, "train")),
            "spec": {"spec": {"devices": {"requests": [{"name": "gpus", "exactly": exactly}]}}}}


def _smoke_job(name: str, limits: dict | None = None, claim_template_name: str | None = None,
               node_selector: dict | None = None) -> dict:
    """A Job that lists the GPUs its container sees (``nvidia-smi -L``), restricted PSA."""
    res = {"cpu": "500m", "memory": "512Mi"}
    container = {"name": "smoke", "image": CUDA_BASE_IMAGE, "imagePullPolicy": "Always",
                 "command": ["nvidia-smi", "-L"], "securityContext": restricted_container(None),
                 "resources": {"requests": dict(res), "limits": {**res, **(limits or {})}}}
    pod: dict = {"restartPolicy": "Never", "automountServiceAccountToken": False, "enableServiceLinks": False,
                 "securityContext": restricted_pod(), "nodeSelector": {**GPU_LABEL, **(node_selector or {})},
                 "tolerations": [GPU_TAINT.toleration()], "containers": [container]}
    if claim_template_name:
        container["resources"]["claims"] = [{"name": "gpus"}]
        pod["resourceClaims"] = [{"name": "gpus", "resourceClaimTemplateName": claim_template_name}]
    lab = labels(name, "train", "gpu-smoke")
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": meta(name, NAMESPACE, lab),
            "spec": {"backoffLimit": 0, "ttlSecondsAfterFinished": 3600, "activeDeadlineSeconds": 600,
                     "template": {"metadata": {"labels": dict(lab)}, "spec": pod}}}


def dra_objects() -> list[dict]:
    """The training DeviceClass, two claim templates (all GPUs of a training node; one MIG slice)."""
    gpus = node_layout(PRODUCTION_SPEC).gpus_per_node
    return [training_device_class(),
            claim_template("hpcml-train-gpus", TRAINING_CLASS, count=gpus),
            claim_template(f"hpcml-mig-{MIG_PROFILE.replace('.', '-')}", "mig.nvidia.com",
                           selector=f"device.attributes['{DRA_DRIVER}'].profile == '{MIG_PROFILE}'")]


def smoke_jobs() -> list[dict]:
    """One Job per way of asking for a GPU: a MIG slice, a time-sliced share, a DRA claim."""
    return [
        _smoke_job("gpu-smoke-mig", limits={f"nvidia.com/mig-{MIG_PROFILE}": 1},
                   node_selector={MIG_CONFIG_LABEL: f"all-{MIG_PROFILE}"}),
        _smoke_job("gpu-smoke-time-sliced", limits={"nvidia.com/gpu.shared": 1},
                   node_selector={PLUGIN_CONFIG_LABEL: "time-sliced"}),
        _smoke_job("gpu-smoke-dra", claim_template_name="hpcml-train-gpus"),
    ]


# ---- the rendered set, and what must agree across it ------------------------------------------
def consistency_problems(rendered: dict[str, object] | None = None) -> list[str]:
    """What a real cluster would refuse or never schedule, across the rendered GPU objects.

    * each device-plugin and mig-parted config passes its reader's rules;
    * a ``nvidia.com/mig-<profile>`` limit names a profile some mig-parted layout creates,
      and the ClusterPolicy's strategy is ``mixed`` (``single`` advertises slices as ``nvidia.com/gpu``);
    * a ``nvidia.com/gpu.shared`` limit has a sharing config with ``renameByDefault``, picked by
      the Job's ``nvidia.com/device-plugin.config`` node label;
    * a ``nvidia.com/mig.config`` node label names a layout that exists;
    * a pod's resource claim names a rendered claim template, each container claim names a
      pod claim, and each template's device class is rendered or is the DRA driver's own.
    """
    rendered = rendered if rendered is not None else render()
    docs = [d for v in rendered.values() if isinstance(v, list) for d in v]
    by_kind: dict[str, list[dict]] = {}
    for d in docs:
        by_kind.setdefault(d["kind"], []).append(d)
    probs: list[str] = []
    plugin_cfgs, mig_layouts, profiles = {}, {}, set()
    for cm in by_kind.get("ConfigMap", []):
        if cm["metadata"]["name"] == DEVICE_PLUGIN_CONFIG:
            plugin_cfgs = {k: yaml.safe_load(v) for k, v in cm["data"].items()}
            probs += [f"device-plugin config {k}: {p}" for k, c in plugin_cfgs.items() for p in check_device_plugin_config(c)]
        if cm["metadata"]["name"] == MIG_CONFIG:
            cfg = yaml.safe_load(cm["data"]["config.yaml"])
            probs += [f"mig-parted config: {p}" for p in check_mig_config(cfg)]
            mig_layouts = cfg.get("mig-configs", {})
            profiles = {p for entries in mig_layouts.values() for e in entries for p in e.get("mig-devices", {})}
    policies = by_kind.get("ClusterPolicy", [])
    strategy = policies[0]["spec"]["mig"]["strategy"] if policies else None
    if policies and policies[0]["spec"]["devicePlugin"]["config"]["default"] not in plugin_cfgs:
        probs.append("ClusterPolicy: devicePlugin.config.default names no rendered config")
    templates = {d["metadata"]["name"]: d for d in by_kind.get("ResourceClaimTemplate", [])}
    classes = {d["metadata"]["name"] for d in by_kind.get("DeviceClass", [])} | set(DRA_DRIVER_CLASSES)
    for t in templates.values():
        for r in t["spec"]["spec"]["devices"]["requests"]:
            if r["exactly"]["deviceClassName"] not in classes:
                probs.append(f"ResourceClaimTemplate/{t['metadata']['name']}: no DeviceClass {r['exactly']['deviceClassName']}")
    for job in by_kind.get("Job", []):
        name, pod = job["metadata"]["name"], job["spec"]["template"]["spec"]
        sel = pod.get("nodeSelector", {})
        pod_claims = {c["name"]: c for c in pod.get("resourceClaims", [])}
        for c in pod_claims.values():
            if c.get("resourceClaimTemplateName") not in templates:
                probs.append(f"Job/{name}: claim {c['name']} names no rendered ResourceClaimTemplate")
        if MIG_CONFIG_LABEL in sel and sel[MIG_CONFIG_LABEL] not in mig_layouts:
            probs.append(f"Job/{name}: node label {MIG_CONFIG_LABEL}={sel[MIG_CONFIG_LABEL]} names no MIG layout")
        for ctr in pod["containers"]:
            for cl in ctr.get("resources", {}).get("claims", []):
                if cl["name"] not in pod_claims:
                    probs.append(f"Job/{name}: container claim {cl['name']} is not in spec.resourceClaims")
            for res in ctr.get("resources", {}).get("limits", {}):
                if res.startswith("nvidia.com/mig-"):
                    if res.removeprefix("nvidia.com/mig-") not in profiles:
                        probs.append(f"Job/{name}: {res}: no MIG layout creates that profile")
                    if strategy != "mixed":
                        probs.append(f"Job/{name}: {res} is advertised only with mig strategy 'mixed' (policy: {strategy})")
                if res == "nvidia.com/gpu.shared":
                    cfg = plugin_cfgs.get(sel.get(PLUGIN_CONFIG_LABEL, ""), {})
                    sharing = next(iter(cfg.get("sharing", {}).values()), {})
                    if not sharing.get("renameByDefault"):
                        probs.append(f"Job/{name}: {res} needs a renameByDefault sharing config picked by "
                                     f"its {PLUGIN_CONFIG_LABEL} node label")
    return probs


def pbs_scripts() -> dict[str, str]:
    """The PBS Pro twins of the Slurm scripts: the training job (from the MPIJob's TrainSpec) and a sweep."""
    sweep = dataclasses.replace(PRODUCTION_SPEC, name="hpcml-sweep", world_size=1, threads_per_worker=4,
                                instance_type="g4dn.xlarge")

    def tpl(fname: str, text: str) -> str:
        first, rest = text.split("\n", 1)
        return f"{first}\n# Template rendered by hpcml.k8s.gpu (hpcml.cluster.pbs); submit with: qsub {fname}\n{rest}"

    return {
        "pbs/train-horovod.pbs": tpl("train-horovod.pbs", pbs.qsub_script(PRODUCTION_SPEC, walltime_min=240)),
        "pbs/sweep-array.pbs": tpl("sweep-array.pbs", pbs.qsub_script(
            sweep, walltime_min=120, array=(0, 15), max_running=4,
            body="# array subjob i trains the configuration in sweep/spec-i.json (one GPU)\n"
                 'cd "$PBS_O_WORKDIR"\n'
                 'python -m hpcml.train.worker --spec "sweep/spec-${PBS_ARRAY_INDEX}.json"')),
    }


def render() -> dict[str, object]:
    """``{path under manifests/: documents or text}`` for the GPU and PBS definitions."""
    return {
        "gpu/gpu-operator-clusterpolicy.yaml": [cluster_policy()],
        "gpu/device-plugin-config.yaml": [device_plugin_config()],
        "gpu/mig-parted-config.yaml": [mig_config()],
        "gpu/dra.yaml": dra_objects(),
        "gpu/smoke-jobs.yaml": smoke_jobs(),
        **pbs_scripts(),
    }
