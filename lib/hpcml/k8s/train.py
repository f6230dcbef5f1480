"""Training on Kubernetes: an MPIJob (kubeflow.org/v2beta1) from one TrainSpec.

Pure builders (spec -> dict): :func:`mpijob`, :func:`checkpoint_pvc`, :func:`spec_configmap`;
:func:`render` writes them for :data:`PRODUCTION_SPEC` (ResNet-50, 8 workers x 1 GPU on two
g4dn.12xlarge nodes) into ``manifests/train/``, beside the AWS Batch requests built from the
same spec (the layout, container spec and horovodrun command are
:mod:`hpcml.train.targets.layout`'s).

How the MPIJob runs (mpi-operator v2): the operator creates the Worker pods, a headless
Service and an SSH key Secret (mounted at ``sshAuthMountPath``) and a hostfile
(``/etc/mpi/hostfile``, ``<pod>.<svc> slots=N`` per worker); with
``launcherCreationPolicy: WaitForWorkersReady`` the Launcher pod starts only once every
worker is Ready (here: its sshd answers on port 2222), so ``horovodrun`` never races pod
start-up. The launcher runs ``horovodrun --gloo --hostfile /etc/mpi/hostfile -p 2222``,
which starts ``slotsPerWorker`` ranks in each worker pod over SSH (Gloo rendezvous and
control plane). GPU jobs run :data:`CUDA_IMAGE`, whose Horovod allreduces GPU tensors with NCCL
(over EFA through aws-ofi-nccl where the instance type has EFA: the worker pods then request
``vpc.amazonaws.com/efa``); CPU jobs (:data:`CPU_SPEC`) run :data:`CPU_IMAGE` with Gloo.

Stopping: the pods get :data:`TERMINATION_GRACE_S` seconds; the worker's preStop hook
(:func:`prestop_script`) forwards SIGTERM from sshd (PID 1) to the ranks, which checkpoint
and exit, and waits for them.

Security: pods satisfy Pod Security Admission ``restricted`` (non-root uid 1000, no privilege
escalation, all capabilities dropped, RuntimeDefault seccomp, read-only root filesystem: the
securityContexts of :mod:`hpcml.k8s.common`; the containers take the uid from the pod).
What is relaxed compared with a stock sshd, and why: sshd runs as uid 1000 on the
unprivileged port 2222 (no NET_BIND_SERVICE, no privilege separation) with ``StrictModes no``
(the kubelet mounts the operator's key Secret group-owned by fsGroup, which StrictModes
rejects) and its pid file in the /tmp emptyDir (the root filesystem is read-only). The image
must ship ``/etc/hpcml/sshd_config`` with those settings and host keys readable by uid 1000.
"""

from __future__ import annotations

import dataclasses

from hpcml.cluster.spec import GPU_LABEL, GPU_TAINT, INSTANCE_TYPES
from hpcml.k8s.common import APP_UID, NAMESPACE, labels, meta, restricted_container, restricted_pod
from hpcml.paths import SHARED_MOUNT
from hpcml.train.spec import TRAIN_CUDA_IMAGE, TRAIN_IMAGE, TrainSpec
from hpcml.train.targets.layout import (SSH_PORT, batch_requests, container_spec,
                                        horovodrun_argv, node_layout)

SERVICE_ACCOUNT = "trainer"
PRIORITY_CLASS = "hpcml-training"
STORAGE_CLASS = "efs-sc"  # EFS CSI (ReadWriteMany); FSx for Lustre: "fsx-sc"
SSH_MOUNT = "/home/hpcml/.ssh"
SSHD_CONFIG = "/etc/hpcml/sshd_config"
SPEC_DIR = "/etc/hpcml/spec"
HOSTFILE = "/etc/mpi/hostfile"  # written by the mpi-operator
CRD_REQUIRED = {
    ("kubeflow.org/v2beta1", "MPIJob"): [
        "spec.slotsPerWorker", "spec.runPolicy.cleanPodPolicy", "spec.runPolicy.backoffLimit",
        "spec.launcherCreationPolicy", "spec.mpiImplementation", "spec.sshAuthMountPath",
        "spec.mpiReplicaSpecs.Launcher.template.spec.containers",
        "spec.mpiReplicaSpecs.Worker.replicas", "spec.mpiReplicaSpecs.Worker.template.spec.containers",
    ],
}

#: The CUDA training image (docker/Dockerfile.train-cuda: CUDA, cuDNN, NCCL, the EFA
#: libfabric and aws-ofi-nccl; Horovod built with NCCL for GPU tensors) and the CPU one
#: (docker/Dockerfile.train: Gloo only). GPU pods run the first, CPU pods the second.
CUDA_IMAGE = TRAIN_CUDA_IMAGE
CPU_IMAGE = TRAIN_IMAGE
#: EFA interfaces per instance type (the ``vpc.amazonaws.com/efa`` a whole-node pod requests;
#: source: the EC2 User Guide's EFA "supported instance types" and network-card tables). Types
#: without EFA (g4dn.xlarge, p3.8xlarge, ...) are absent: their pods request none.
EFA_INTERFACES = {"c5n.18xlarge": 1, "g4dn.12xlarge": 1, "g4dn.metal": 1, "g5.12xlarge": 1, "g5.48xlarge": 1,
                  "p3dn.24xlarge": 1, "p4d.24xlarge": 4, "p5.48xlarge": 32}
#: EFA with GPUDirect RDMA (p4d/p5): libfabric may read/write GPU memory directly.
EFA_RDMA_TYPES = ("p4d.24xlarge", "p5.48xlarge")
#: Seconds between SIGTERM and SIGKILL for training pods. The preStop hook forwards SIGTERM to
#: the ranks (PID 1 of a worker pod is sshd, not a rank) and waits while they checkpoint; the
#: kubelet counts the hook's time inside this period. It must exceed the checkpoint time (the
#: coherence test compares it with ResNet-50's checkpoint bytes at a write rate it measures) and
#: stay under the two minutes between a Spot interruption notice and the reclaim.
TERMINATION_GRACE_S = 90
#: Karpenter does not voluntarily disrupt (consolidate, replace on drift) a node running these
#: pods; the PodDisruptionBudget (maxUnavailable 0) does the same for drains.
NO_DISRUPT = {"karpenter.sh/do-not-disrupt": "true"}
#: The share of a node's memory the MPIJob's worker pods request (the rest: kubelet, system
#: reserve, page cache for the shards). With 6 cores per T4 rank it keeps the 8-GPU job inside
#: the namespace quota (64 CPU, 256 GiB requests) instead of asking for 80 CPU and 288 GiB.
MEMORY_FRACTION = 0.5

#: The production-sized job the checked-in manifests are rendered from: 8 ranks x 1 T4 on two
#: g4dn.12xlarge nodes (4 GPUs, 48 vCPUs, 1 EFA interface each). Six input-pipeline threads per
#: rank, not ten: the quota grants the 8 GPUs with 64 CPUs, and a T4 rank's decode/augment
#: pipeline needs a few cores, not a fifth of the node.
PRODUCTION_SPEC = TrainSpec(
    name="resnet50-train", world_size=8, threads_per_worker=6, arch="resnet50", epochs=90, batch_size=64,
    lr=0.0125, warmup_epochs=5.0, weight_decay=5e-5, optimizer="sgd", fp16_allreduce=True,
    checkpoint_every=500, metrics_port=9100, gpus_per_worker=1, instance_type="g4dn.12xlarge", image=CUDA_IMAGE,
)
#: The CPU variant (Gloo, the CPU image, no GPU or EFA): 4 ranks on two c5.4xlarge-sized pods.
CPU_SPEC = TrainSpec(
    name="resnet50-train-cpu", world_size=4, threads_per_worker=7, arch="resnet50", epochs=90, batch_size=32,
    lr=0.0125, warmup_epochs=5.0, weight_decay=5e-5, optimizer="sgd", checkpoint_every=500, metrics_port=9100,
    gpus_per_worker=0, instance_type="c5.4xlarge", image=CPU_IMAGE,
)


def _labels(spec: TrainSpec, role: str | None = None) -> dict[str, str]:
    """The project's labels for one of this job's objects (``role``: launcher or worker)."""
    return labels(spec.name, stage="train", component=role)


def _meta(spec: TrainSpec, name: str, role: str | None = None) -> dict:
    return meta(name, NAMESPACE, _labels(spec, role))


def spec_configmap(spec: TrainSpec) -> dict:
    """The container copy of the spec, mounted read-only at ``/etc/hpcml/spec/spec.json``."""
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": _meta(spec, f"{spec.name}-spec"),
            "data": {"spec.json": container_spec(spec).to_json() + "\n"}}


def checkpoint_pvc(spec: TrainSpec, size: str = "200Gi", storage_class: str = STORAGE_CLASS) -> dict:
    """Shared ReadWriteMany volume (EFS): dataset shards, checkpoints, the final model."""
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": _meta(spec, f"{spec.name}-shared"),
            "spec": {"accessModes": ["ReadWriteMany"], "storageClassName": storage_class,
                     "resources": {"requests": {"storage": size}}}}


def efa_interfaces(spec: TrainSpec) -> int:
    """EFA interfaces a whole-node worker pod of ``spec`` requests (0 where the type has none)."""
    return EFA_INTERFACES.get(spec.instance_type, 0) if INSTANCE_TYPES[spec.instance_type]["efa"] else 0


def comm_env(spec: TrainSpec) -> list[dict]:
    """The ranks' environment: threads, and the collective backend's settings.

    GPU jobs allreduce GPU tensors with NCCL (the CUDA image's Horovod is built with
    ``HOROVOD_GPU_OPERATIONS=NCCL``; ``horovodrun --gloo`` only runs the control plane); on EFA
    types NCCL goes through aws-ofi-nccl with libfabric's ``efa`` provider, with GPUDirect
    RDMA on p4d/p5. CPU jobs allreduce with Gloo over TCP. ``horovodrun`` forwards the
    launcher's environment to every rank over SSH, so the launcher carries these too (a
    worker container's own environment is sshd's, not the ranks').
    """
    env = [{"name": "OMP_NUM_THREADS", "value": str(spec.threads_per_worker)}]
    if spec.gpus_per_worker:
        env += [{"name": "NCCL_DEBUG", "value": "WARN"}]
        if efa_interfaces(spec):
            env += [{"name": "FI_PROVIDER", "value": "efa"}]
            if spec.instance_type in EFA_RDMA_TYPES:
                env += [{"name": "FI_EFA_USE_DEVICE_RDMA", "value": "1"}]
    else:
        env += [{"name": "HOROVOD_CPU_OPERATIONS", "value": "GLOO"}]
    return env


def prestop_script(module: str = "hpcml.train.worker") -> str:
    """Shell run by the worker pod's preStop hook: SIGTERM to every rank, then wait for them.

    The kubelet signals PID 1 only, and PID 1 of a worker pod is sshd; the ranks are children
    of its SSH sessions and would only see the session drop. A rank is a process one of whose
    arguments is exactly ``module`` (``python -m hpcml.train.worker``), which the shell that
    wraps it and this script itself are not. The kubelet kills whatever is left when
    :data:`TERMINATION_GRACE_S` runs out.
    """
    pattern = module.replace(".", "[.]")
    return (f"ranks() {{ for d in /proc/[0-9]*; do tr '\\0' '\\n' < \"$d/cmdline\" 2>/dev/null "
            f"| grep -qx '{pattern}' && echo \"${{d#/proc/}}\"; done; }}\n"
            "for p in $(ranks); do kill -TERM \"$p\" 2>/dev/null; done\n"
            "while [ -n \"$(ranks)\" ]; do sleep 1; done\n")


def _pod_spec(spec: TrainSpec, container: dict, volumes: list[dict], gpu: bool) -> dict:
    pod: dict = {
        "serviceAccountName": SERVICE_ACCOUNT, "automountServiceAccountToken": False,
        "priorityClassName": PRIORITY_CLASS, "enableServiceLinks": False,
        "terminationGracePeriodSeconds": TERMINATION_GRACE_S,
        "securityContext": restricted_pod(APP_UID),
        "containers": [container], "volumes": volumes,
    }
    if gpu:
        pod["nodeSelector"] = {**GPU_LABEL, "node.kubernetes.io/instance-type": spec.instance_type}
        pod["tolerations"] = [GPU_TAINT.toleration()]
    return pod


def _volume_mounts(shm: bool) -> list[dict]:
    mounts = [{"name": "spec", "mountPath": SPEC_DIR, "readOnly": True},
              {"name": "tmp", "mountPath": "/tmp"},
              {"name": "shared", "mountPath": SHARED_MOUNT}]
    return mounts + ([{"name": "dshm", "mountPath": "/dev/shm"}] if shm else [])


def _volumes(spec: TrainSpec, shm_gib: int | None) -> list[dict]:
    vols = [{"name": "spec", "configMap": {"name": f"{spec.name}-spec"}},
            {"name": "tmp", "emptyDir": {"sizeLimit": "10Gi"}},
            {"name": "shared", "persistentVolumeClaim": {"claimName": f"{spec.name}-shared"}}]
    if shm_gib:
        vols.append({"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": f"{shm_gib}Gi"}})
    return vols


def launcher_template(spec: TrainSpec) -> dict:
    """The Launcher pod: ``horovodrun`` over the operator's hostfile; small, no GPU."""
    argv = horovodrun_argv(spec, f"{SPEC_DIR}/spec.json", hostfile=HOSTFILE, ssh_port=SSH_PORT)
    res = {"cpu": "1", "memory": "2Gi"}
    container = {
        "name": "launcher", "image": spec.image, "imagePullPolicy": "Always",
        "command": argv[:1], "args": argv[1:],
        "env": [{"name": "HOROVOD_GLOO_TIMEOUT_SECONDS", "value": "300"}, *comm_env(spec)],
        "resources": {"requests": res, "limits": res},
        "securityContext": restricted_container(uid=None), "volumeMounts": _volume_mounts(shm=False),
    }
    return {"metadata": {"labels": _labels(spec, "launcher"), "annotations": dict(NO_DISRUPT)},
            "spec": _pod_spec(spec, container, _volumes(spec, None), gpu=False)}


def worker_template(spec: TrainSpec) -> dict:
    """A Worker pod per node: sshd (uid 1000, port 2222) hosting ``slotsPerWorker`` ranks."""
    lay = node_layout(spec, MEMORY_FRACTION)
    res = {"cpu": str(lay.cpus_per_node), "memory": f"{lay.memory_gib_per_node}Gi"}
    if lay.gpus_per_node:
        res["nvidia.com/gpu"] = str(lay.gpus_per_node)
    if lay.gpus_per_node and efa_interfaces(spec):
        res["vpc.amazonaws.com/efa"] = str(efa_interfaces(spec))  # the EFA device plugin's resource
    container = {
        "name": "worker", "image": spec.image, "imagePullPolicy": "Always",
        "command": ["/usr/sbin/sshd"], "args": ["-De", "-f", SSHD_CONFIG],
        "ports": [{"name": "ssh", "containerPort": SSH_PORT, "protocol": "TCP"}]
        + ([{"name": "metrics", "containerPort": spec.metrics_port, "protocol": "TCP"}] if spec.metrics_port else []),
        "env": comm_env(spec),
        "lifecycle": {"preStop": {"exec": {"command": ["/bin/sh", "-c", prestop_script()]}}},
        "readinessProbe": {"tcpSocket": {"port": SSH_PORT}, "periodSeconds": 5},
        "livenessProbe": {"tcpSocket": {"port": SSH_PORT}, "periodSeconds": 20, "failureThreshold": 6},
        "resources": {"requests": res, "limits": dict(res)},  # Guaranteed QoS; GPUs: requests = limits
        "securityContext": restricted_container(uid=None), "volumeMounts": _volume_mounts(shm=True),
    }
    return {"metadata": {"labels": _labels(spec, "worker"), "annotations": dict(NO_DISRUPT)},
            "spec": _pod_spec(spec, container, _volumes(spec, lay.shm_gib), gpu=bool(lay.gpus_per_node))}


def mpijob(spec: TrainSpec) -> dict:
    """The MPIJob: one Launcher, ``nodes`` Workers with ``slotsPerWorker`` ranks each."""
    lay = node_layout(spec)
    return {
        "apiVersion": "kubeflow.org/v2beta1", "kind": "MPIJob", "metadata": _meta(spec, spec.name),
        "spec": {
            "slotsPerWorker": lay.slots,
            "runPolicy": {"cleanPodPolicy": "Running", "backoffLimit": 3, "ttlSecondsAfterFinished": 3600},
            "launcherCreationPolicy": "WaitForWorkersReady",
            "mpiImplementation": "OpenMPI",  # hostfile format "host slots=N", which horovodrun reads
            "sshAuthMountPath": SSH_MOUNT,
            "mpiReplicaSpecs": {
                # OnFailure: a failed launcher restarts and the job resumes from the last checkpoint
                "Launcher": {"replicas": 1, "restartPolicy": "OnFailure", "template": launcher_template(spec)},
                "Worker": {"replicas": lay.nodes, "restartPolicy": "OnFailure", "template": worker_template(spec)},
            },
        },
    }


def documents(spec: TrainSpec) -> list[dict]:
    """Everything one ``kubectl apply`` needs, in apply order."""
    return [checkpoint_pvc(spec), spec_configmap(spec), mpijob(spec)]


def pod_templates(spec: TrainSpec) -> list[dict]:
    """The launcher and worker pod templates as core ``PodTemplate`` objects (schema checks)."""
    job = mpijob(spec)
    return [{"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": f"{spec.name}-{role.lower()}"},
             "template": rs["template"]} for role, rs in job["spec"]["mpiReplicaSpecs"].items()]


def render(spec: TrainSpec | None = None) -> dict[str, object]:
    """``{path under manifests/: documents}`` for the production (GPU) training job and its CPU variant."""
    spec = spec or PRODUCTION_SPEC
    batch = batch_requests(spec)
    return {
        "train/checkpoint-pvc.yaml": [checkpoint_pvc(spec)],
        "train/mpijob.yaml": [spec_configmap(spec), mpijob(spec)],
        "train/mpijob-cpu.yaml": [checkpoint_pvc(CPU_SPEC), spec_configmap(CPU_SPEC), mpijob(CPU_SPEC)],
        "train/batch-register-job-definition.json": batch["register_job_definition"],
        "train/batch-submit-job.json": batch["submit_job"],
        "train/train-spec.json": dataclasses.asdict(spec),
    }
