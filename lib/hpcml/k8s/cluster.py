"""Cluster-level definitions, rendered from :class:`hpcml.cluster.spec.ClusterSpec`.

Pure builders (spec -> dict) for: namespaces with Pod Security Admission labels,
ResourceQuota/LimitRange, RBAC (data-scientist Role, workload ServiceAccounts with IRSA),
NetworkPolicies (default deny + the allows each stage needs), PriorityClasses, a
training PodDisruptionBudget, the NVIDIA device plugin DaemonSet, an eksctl ClusterConfig,
a Karpenter NodePool + EC2NodeClass alternative, and the Slurm side (slurm.conf example,
sbatch templates). :func:`render` maps them to paths under ``manifests/``.
"""

from __future__ import annotations

import json

from hpcml.aws.account import role_arn
from hpcml.cluster.slurm.conf import NodeSpec, batch_script, render_slurm_conf
from hpcml.cluster.spec import (GPU_LABEL, GPU_TAINT, INSTANCE_TYPES, ClusterSpec, NamespaceSpec, QuotaSpec,
                                default_cluster)
from hpcml.k8s.common import NAMESPACE, PART_OF, SECCOMP, SERVING_PRIORITY_CLASS, labels, meta

MON_NS = "monitoring"
DEVICE_PLUGIN_IMAGE = "nvcr.io/nvidia/k8s-device-plugin:v0.17.0"
DATA_SCIENTIST_GROUP = "hpcml:data-scientists"
#: Ports the allows open: inference HTTP (+ /metrics) and the Prometheus exporters' range
#: (training rank r serves on 9100 + r). Trainer pods reach each other on every port (Gloo
#: rings pick ports at run time; MPI's SSH listens on 2222 in the MPIJob).
SERVE_PORT, METRICS_PORTS = 8080, (9100, 9199)
#: The VPC's address range (eksctl ``vpc.cidr``). The ALB's network interfaces sit in its public
#: subnets, and with ``target-type: ip`` the ALB connects to the pod IPs directly, so traffic
#: reaches the inference pods from an address in this range, never from an ingress-controller pod.
VPC_CIDR = "10.42.0.0/16"
#: vpc-cni settings: the network policy agent enforces NetworkPolicies (without it the API
#: server accepts every NetworkPolicy and nothing enforces any of them).
VPC_CNI_CONFIG = {"enableNetworkPolicy": "true"}
STAGE_OF_SA = {"spark": "data", "trainer": "train", "tuner": "tune", "inference": "serve"}
CRD_REQUIRED = {
    ("eksctl.io/v1alpha5", "ClusterConfig"): ["metadata.region", "metadata.version", "managedNodeGroups"],
    ("karpenter.sh/v1", "NodePool"): ["spec.template.spec.nodeClassRef.name", "spec.template.spec.requirements",
                                      "spec.limits", "spec.disruption.consolidationPolicy"],
    ("karpenter.k8s.aws/v1", "EC2NodeClass"): ["spec.role", "spec.amiSelectorTerms", "spec.subnetSelectorTerms",
                                               "spec.securityGroupSelectorTerms"],
}


# ---- namespaces, quota, limits -----------------------------------------------------------
def namespace(ns: NamespaceSpec) -> dict:
    psa = {f"pod-security.kubernetes.io/{mode}": ns.pod_security for mode in ("enforce", "audit", "warn")}
    psa["pod-security.kubernetes.io/enforce-version"] = "latest"
    return {"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": ns.name, "labels": {**ns.labels, **psa}}}


#: The serving budget: a quota of its own, scoped to the serving PriorityClass, so the HPA's
#: scale-out never eats the batch quota a training job was sized against (and the reverse).
#: Sized for both serving forms rendered in manifests/serve at their maximum, the Deployment
#: and the KServe InferenceService (20 replicas x 1 CPU / 1 GiB each, limits 2 CPU / 2 GiB),
#: plus 20 % for a rolling update's surge pods; no GPUs.
SERVING_QUOTA = QuotaSpec(requests_cpu="48", requests_memory="48Gi", limits_cpu="96", limits_memory="96Gi",
                          gpus=0, pods=48, jobs=None)


def _quota(name: str, namespace: str, hard: dict, scope: dict | None = None) -> dict:
    spec: dict = {"hard": {k: str(v) for k, v in hard.items() if v is not None}}
    if scope:
        spec["scopeSelector"] = {"matchExpressions": [scope]}
    return {"apiVersion": "v1", "kind": "ResourceQuota", "metadata": meta(name, namespace, labels(name)), "spec": spec}


def _compute(q: QuotaSpec) -> dict:
    return {"requests.cpu": q.requests_cpu, "requests.memory": q.requests_memory, "limits.cpu": q.limits_cpu,
            "limits.memory": q.limits_memory, "requests.nvidia.com/gpu": q.gpus, "pods": q.pods}


def resource_quotas(ns: NamespaceSpec, serving: QuotaSpec | None = SERVING_QUOTA) -> list[dict]:
    """The namespace's quotas. With a ``serving`` quota, compute is split by PriorityClass: the
    namespace's :class:`~hpcml.cluster.spec.QuotaSpec` caps every pod that is not serving (pods
    without a PriorityClass included: ``NotIn`` matches them), ``serving`` caps the serving pods,
    and the object counts (Jobs), which a PriorityClass scope cannot count, sit in an unscoped quota.
    Without ``serving`` one unscoped quota caps everything."""
    q = ns.quota
    if q is None:
        return []
    if serving is None:
        return [_quota(f"{ns.name}-quota", ns.name, {**_compute(q), "count/jobs.batch": q.jobs})]
    scope = {"scopeName": "PriorityClass", "values": [SERVING_PRIORITY_CLASS]}
    return [_quota(f"{ns.name}-quota", ns.name, _compute(q), {**scope, "operator": "NotIn"}),
            _quota(f"{ns.name}-serving-quota", ns.name, _compute(serving), {**scope, "operator": "In"}),
            _quota(f"{ns.name}-objects-quota", ns.name, {"count/jobs.batch": q.jobs})]


def limit_range(ns: NamespaceSpec) -> dict | None:
    lim = ns.limits
    if lim is None:
        return None
    name = f"{ns.name}-limits"
    return {"apiVersion": "v1", "kind": "LimitRange", "metadata": meta(name, ns.name, labels(name)),
            "spec": {"limits": [{
                "type": "Container",
                "defaultRequest": {"cpu": lim.default_request_cpu, "memory": lim.default_request_memory},
                "default": {"cpu": lim.default_limit_cpu, "memory": lim.default_limit_memory},
                "max": {"cpu": lim.max_cpu, "memory": lim.max_memory},
            }]}}


# ---- RBAC --------------------------------------------------------------------------------
def service_accounts(spec: ClusterSpec) -> list[dict]:
    """One ServiceAccount per workload, annotated with its IRSA role (S3 access)."""
    return [{"apiVersion": "v1", "kind": "ServiceAccount",
             "metadata": meta(sa, NAMESPACE, labels(sa, STAGE_OF_SA.get(sa, "data")),
                              annotations={"eks.amazonaws.com/role-arn": spec.role_arn(sa)}),
             "automountServiceAccountToken": sa == "spark"}  # only the Spark driver talks to the API
            for sa in spec.service_accounts]


def data_scientist_role() -> list[dict]:
    """Run and watch jobs and MPIJobs, read pods and logs; no access to Secrets."""
    verbs_rw = ["create", "get", "list", "watch", "delete"]
    role = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
            "metadata": meta("data-scientist", NAMESPACE, labels("data-scientist")),
            "rules": [
                {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": verbs_rw},
                {"apiGroups": ["kubeflow.org"], "resources": ["mpijobs"], "verbs": verbs_rw},
                {"apiGroups": [""], "resources": ["pods", "events"], "verbs": ["get", "list", "watch"]},
                {"apiGroups": [""], "resources": ["pods/log"], "verbs": ["get"]},
            ]}
    binding = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
               "metadata": meta("data-scientist", NAMESPACE, labels("data-scientist")),
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "data-scientist"},
               "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": DATA_SCIENTIST_GROUP}]}
    return [role, binding]


def spark_driver_role() -> list[dict]:
    """Spark on Kubernetes: the driver creates and deletes its executor pods and their service."""
    role = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
            "metadata": meta("spark-driver", NAMESPACE, labels("spark-driver")),
            "rules": [
                {"apiGroups": [""], "resources": ["pods"], "verbs": ["create", "get", "list", "watch", "delete"]},
                {"apiGroups": [""], "resources": ["services", "configmaps"],
                 "verbs": ["create", "get", "list", "delete"]},
                {"apiGroups": [""], "resources": ["persistentvolumeclaims"], "verbs": ["get", "list"]},
            ]}
    binding = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
               "metadata": meta("spark-driver", NAMESPACE, labels("spark-driver")),
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "spark-driver"},
               "subjects": [{"kind": "ServiceAccount", "name": "spark", "namespace": NAMESPACE}]}
    return [role, binding]


# ---- network policies ---------------------------------------------------------------------
def _np(name: str, selector: dict, types: list[str], ingress=None, egress=None) -> dict:
    """A NetworkPolicy in the workload namespace; ``selector`` is matchLabels, or a whole
    LabelSelector when it has ``matchExpressions``."""
    pod_sel = selector if "matchExpressions" in selector else {"matchLabels": selector} if selector else {}
    spec: dict = {"podSelector": pod_sel, "policyTypes": types}
    if ingress is not None:
        spec["ingress"] = ingress
    if egress is not None:
        spec["egress"] = egress
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": meta(name, NAMESPACE, labels(name)), "spec": spec}


def _ns_sel(name: str) -> dict:
    return {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": name}}}


def network_policies() -> list[dict]:
    """Default deny in ``hpcml``, then the allows each stage needs."""
    stage = lambda s: {"podSelector": {"matchLabels": {"hpcml.io/stage": s}}}  # noqa: E731
    tcp = lambda p, end=None: {"protocol": "TCP", "port": p, **({"endPort": end} if end else {})}  # noqa: E731
    metrics = [tcp(SERVE_PORT), tcp(*METRICS_PORTS)]
    return [
        _np("default-deny-all", {}, ["Ingress", "Egress"]),
        _np("allow-dns", {}, ["Egress"], egress=[{
            "to": [{**_ns_sel("kube-system"), "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}],
            "ports": [{"protocol": "UDP", "port": 53}, tcp(53)]}]),
        # S3 (and ECR/STS) over HTTPS for the stages that read/write data; the node metadata
        # service stays closed (IRSA gives credentials through the web-identity token instead).
        *[_np(f"allow-https-egress-{s}", {"matchLabels": {"hpcml.io/stage": s}, "matchExpressions": [
            {"key": "app.kubernetes.io/component", "operator": "NotIn", "values": ["database"]}]},
            ["Egress"], egress=[{
                "to": [{"ipBlock": {"cidr": "0.0.0.0/0", "except": ["169.254.169.254/32"]}}], "ports": [tcp(443)]}])
          for s in ("data", "train", "tune")],  # the tuning database needs no internet
        # Spark driver <-> executors, Horovod/Gloo rings and MPI's SSH between trainer pods.
        _np("allow-spark-peers", {"hpcml.io/stage": "data"}, ["Ingress", "Egress"],
            ingress=[{"from": [stage("data")]}], egress=[{"to": [stage("data")]}]),
        _np("allow-trainer-peers", {"hpcml.io/stage": "train"}, ["Ingress", "Egress"],
            ingress=[{"from": [stage("train")]}], egress=[{"to": [stage("train")]}]),
        # The study database: the Optuna workers only (Katib trials keep no Optuna study).
        _np("allow-tuner-to-postgresql", {"app.kubernetes.io/name": "optuna-worker"}, ["Egress"],
            egress=[{"to": [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": "postgresql"}}}],
                     "ports": [tcp(5432)]}]),
        _np("allow-postgresql-from-tuners", {"app.kubernetes.io/name": "postgresql"}, ["Ingress"],
            ingress=[{"from": [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": "optuna-worker"}}}],
                      "ports": [tcp(5432)]}]),
        # The ALB (target-type ip) connects from its own addresses in the VPC, not from a pod:
        # admit the VPC range on the serving port only. Pods have VPC addresses too (vpc-cni),
        # so this also admits other pods to port 8080 of the inference pods, and nothing else.
        _np("allow-inference-ingress", {"hpcml.io/stage": "serve"}, ["Ingress"],
            ingress=[{"from": [{"ipBlock": {"cidr": VPC_CIDR}}], "ports": [tcp(SERVE_PORT)]}]),
        _np("allow-prometheus-scrape", {}, ["Ingress"], ingress=[{
            "from": [{**_ns_sel(MON_NS), "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}}}],
            "ports": metrics}]),
    ]


# ---- scheduling ----------------------------------------------------------------------------
def priority_classes() -> list[dict]:
    """Serving outranks training: a full GPU pool preempts training pods, never the endpoint."""
    return [
        {"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass",
         "metadata": meta(SERVING_PRIORITY_CLASS, labels=labels(SERVING_PRIORITY_CLASS)),
         "value": 100000, "globalDefault": False, "preemptionPolicy": "PreemptLowerPriority",
         "description": "Online inference: may preempt training; keeps latency SLOs under contention."},
        {"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass",
         "metadata": meta("hpcml-training", labels=labels("hpcml-training")),
         "value": 10000, "globalDefault": False, "preemptionPolicy": "Never",
         "description": "Batch training/tuning: queues rather than preempting other batch work."},
    ]


def training_pdb() -> dict:
    """Training pods are not evicted voluntarily (a drain waits for the job or its checkpoint)."""
    return {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
            "metadata": meta("hpcml-training", NAMESPACE, labels("hpcml-training")),
            "spec": {"maxUnavailable": 0, "selector": {"matchLabels": {"hpcml.io/stage": "train"}},
                     "unhealthyPodEvictionPolicy": "AlwaysAllow"}}


def nvidia_device_plugin() -> dict:
    """The DaemonSet that advertises ``nvidia.com/gpu`` on GPU nodes (and only there)."""
    name = "nvidia-device-plugin-daemonset"
    match = {"app.kubernetes.io/name": "nvidia-device-plugin"}  # the pods' selector
    container = {
        "name": "nvidia-device-plugin-ctr", "image": DEVICE_PLUGIN_IMAGE, "imagePullPolicy": "Always",
        "env": [{"name": "FAIL_ON_INIT_ERROR", "value": "false"}, {"name": "DEVICE_LIST_STRATEGY", "value": "envvar"}],
        "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                            "capabilities": {"drop": ["ALL"]}, "seccompProfile": dict(SECCOMP)},
        "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"cpu": "200m", "memory": "256Mi"}},
        "volumeMounts": [{"name": "device-plugin", "mountPath": "/var/lib/kubelet/device-plugins"}],
    }
    return {"apiVersion": "apps/v1", "kind": "DaemonSet",
            "metadata": meta(name, "kube-system", labels("nvidia-device-plugin")),
            "spec": {
                "selector": {"matchLabels": match},
                "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1}},
                "template": {"metadata": {"labels": {**match, **PART_OF}}, "spec": {
                    "priorityClassName": "system-node-critical",
                    "nodeSelector": dict(GPU_LABEL),
                    "tolerations": [GPU_TAINT.toleration(), {"key": "CriticalAddonsOnly", "operator": "Exists"}],
                    "automountServiceAccountToken": False,
                    # root: it creates its socket in the kubelet's root-owned device-plugins dir
                    "securityContext": {"runAsUser": 0, "runAsGroup": 0, "seccompProfile": dict(SECCOMP)},
                    "containers": [container],
                    "volumes": [{"name": "device-plugin", "hostPath": {"path": "/var/lib/kubelet/device-plugins",
                                                                       "type": "Directory"}}],
                }},
            }}


# ---- AWS: eksctl and Karpenter -------------------------------------------------------------
def eksctl_config(spec: ClusterSpec) -> dict:
    """eksctl ClusterConfig: private networking, IRSA, managed node groups with taints/EFA/Spot."""
    groups = []
    for g in spec.node_groups:
        ng: dict = {"name": g.name, "minSize": g.min_size, "maxSize": g.max_size, "desiredCapacity": g.desired,
                    "volumeSize": g.volume_gib, "volumeEncrypted": True, "privateNetworking": spec.private_networking,
                    "labels": {**g.labels, "hpcml.io/nodegroup": g.name},
                    "tags": {"k8s.io/cluster-autoscaler/enabled": "true", f"k8s.io/cluster-autoscaler/{spec.name}": "owned"}}
        if g.spot:
            ng.update(instanceTypes=list(g.instance_types), spot=True)
        else:
            ng["instanceType"] = g.instance_type
        if g.taints:
            ng["taints"] = [t.as_k8s() for t in g.taints]
        if g.gpu_count:
            ng["amiFamily"] = "AmazonLinux2023"  # EKS-optimised accelerated AMI: driver + container toolkit
        if g.efa:
            ng.update(efaEnabled=True, availabilityZones=[spec.availability_zones[0]])  # one AZ: EFA needs a placement group
        ng["iam"] = {"withAddonPolicies": {"autoScaler": True, "cloudWatch": True, "ebs": True}}
        groups.append(ng)
    return {
        "apiVersion": "eksctl.io/v1alpha5", "kind": "ClusterConfig",
        "metadata": {"name": spec.name, "region": spec.region, "version": spec.version, "tags": dict(PART_OF)},
        "availabilityZones": list(spec.availability_zones),
        "vpc": {"cidr": VPC_CIDR,
                "clusterEndpoints": {"privateAccess": True, "publicAccess": not spec.private_networking},
                "nat": {"gateway": "HighlyAvailable"}},
        "iam": {"withOIDC": True, "serviceAccounts": [
            {"metadata": {"name": sa, "namespace": NAMESPACE}, "roleOnly": True, "roleName": f"{spec.name}-{sa}",
             "attachPolicyARNs": [f"arn:aws:iam::{spec.account_id}:policy/{spec.name}-s3-{sa}"]}
            for sa in spec.service_accounts]},
        "iamIdentityMappings": [{"arn": role_arn(f"{spec.name}-data-scientist", spec.account_id),
                                 "groups": [DATA_SCIENTIST_GROUP], "username": "data-scientist:{{SessionName}}"}],
        "addons": [{"name": "vpc-cni", "version": "latest", "configurationValues": json.dumps(VPC_CNI_CONFIG)},
                   *({"name": n, "version": "latest"} for n in
                     ("coredns", "kube-proxy", "aws-ebs-csi-driver", "eks-pod-identity-agent"))],
        "managedNodeGroups": groups,
        "secretsEncryption": {"keyARN": f"arn:aws:kms:{spec.region}:{spec.account_id}:alias/{spec.name}-secrets"},
        "cloudWatch": {"clusterLogging": {"enableTypes": ["api", "audit", "authenticator", "controllerManager", "scheduler"]}},
    }


def karpenter(spec: ClusterSpec) -> list[dict]:
    """Karpenter alternative to fixed node groups: a GPU NodePool and a Spot CPU NodePool."""
    gpu_families = sorted({t.split(".")[0] for g in spec.node_groups if g.gpu_count for t in g.instance_types})
    node_class = {"apiVersion": "karpenter.k8s.aws/v1", "kind": "EC2NodeClass",
                  "metadata": meta("hpcml", labels=labels("hpcml")),
                  "spec": {"role": f"KarpenterNodeRole-{spec.name}", "amiSelectorTerms": [{"alias": "al2023@latest"}],
                           "subnetSelectorTerms": [{"tags": {"karpenter.sh/discovery": spec.name}}],
                           "securityGroupSelectorTerms": [{"tags": {"karpenter.sh/discovery": spec.name}}],
                           "metadataOptions": {"httpTokens": "required", "httpPutResponseHopLimit": 1},
                           "blockDeviceMappings": [{"deviceName": "/dev/xvda", "ebs": {
                               "volumeSize": "200Gi", "volumeType": "gp3", "encrypted": True}}]}}
    ref = {"group": "karpenter.k8s.aws", "kind": "EC2NodeClass", "name": "hpcml"}
    amd64 = {"key": "kubernetes.io/arch", "operator": "In", "values": ["amd64"]}

    def pool(name, node_labels, taints, reqs, limits, policy):
        return {"apiVersion": "karpenter.sh/v1", "kind": "NodePool", "metadata": meta(name, labels=labels(name)),
                "spec": {"template": {"metadata": {"labels": node_labels}, "spec": {
                    "nodeClassRef": ref, "taints": taints, "requirements": [amd64, *reqs], "expireAfter": "720h"}},
                    "limits": limits, "disruption": {"consolidationPolicy": policy, "consolidateAfter": "5m"}}}

    return [node_class,
            pool("gpu", dict(GPU_LABEL), [GPU_TAINT.as_k8s()],
                 [{"key": "karpenter.k8s.aws/instance-family", "operator": "In", "values": gpu_families},
                  {"key": "karpenter.sh/capacity-type", "operator": "In", "values": ["on-demand", "spot"]}],
                 {"cpu": "512", "nvidia.com/gpu": "32"}, "WhenEmpty"),
            pool("cpu-spot", {"hpcml.io/capacity": "spot"}, [],
                 [{"key": "karpenter.k8s.aws/instance-category", "operator": "In", "values": ["c", "m", "r"]},
                  {"key": "karpenter.sh/capacity-type", "operator": "In", "values": ["spot"]}],
                 {"cpu": "256"}, "WhenEmptyOrUnderutilized")]


# ---- Slurm (the HPC path: AWS ParallelCluster or any Slurm site) ------------------------------
EXAMPLE_NODE = NodeSpec("gpu-st-g4dn12-", 48, 1, 1, 24, 2, 191000)  # slurmd -C of a g4dn.12xlarge


def slurm_files() -> dict[str, str]:
    """slurm.conf for a ParallelCluster-style GPU queue and the sbatch templates of the stages."""
    conf = render_slurm_conf(EXAMPLE_NODE, run_dir="/run/slurm", state_dir="/var/spool/slurmctld",
                             partition="gpu", cluster_name="hpcml", slurm_user="slurm", gpus=4,
                             node_count=4, controller="head-node")
    def tpl(fname: str, text: str) -> str:
        first, rest = text.split("\n", 1)
        return f"{first}\n# Template rendered by hpcml.k8s.cluster; submit with: sbatch {fname}\n{rest}"

    train = batch_script(
        'export MASTER_ADDR=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n1)\n'
        "# one Horovod worker per GPU; srun starts them, PMIx wires up the ranks\n"
        "srun --mpi=pmix --cpu-bind=cores python -m hpcml.train.worker --spec \"${SPEC:-spec.json}\"",
        name="hpcml-train", partition="gpu", nodes=2, ntasks=8, cpus_per_task=10, time_limit_min=240,
        gpus_per_node=4, stdout="logs/%x-%j.out", stderr="logs/%x-%j.err")
    tune = batch_script(
        "# a parameter sweep: array task i trains the configuration in spec-i.json (one GPU each)\n"
        'python -m hpcml.train.worker --spec "sweep/spec-${SLURM_ARRAY_TASK_ID}.json"',
        name="hpcml-sweep", partition="gpu", ntasks=1, cpus_per_task=8, time_limit_min=120, gpus_per_node=1,
        array="0-15%4", stdout="logs/%x-%A_%a.out", stderr="logs/%x-%A_%a.err")
    spark = batch_script(
        "# the data stage on one node: Spark in local mode on the allocated cores\n"
        'export PYSPARK_SUBMIT_ARGS="--master local[$SLURM_CPUS_PER_TASK] --driver-memory 48g pyspark-shell"\n'
        'python -c "from hpcml.data.dataset import ensure_dataset; print(ensure_dataset(n_shards=${SHARDS:-8}))"',
        name="hpcml-spark", ntasks=1, cpus_per_task=32, time_limit_min=60,
        stdout="logs/%x-%j.out", stderr="logs/%x-%j.err")
    return {
        "slurm/slurm.conf.example": conf,
        "slurm/gres.conf.example": "# GPUs found through NVML on each node\nAutoDetect=nvml\n",
        "slurm/train-horovod.sbatch": tpl("train-horovod.sbatch", train),
        "slurm/sweep-array.sbatch": tpl("sweep-array.sbatch", tune),
        "slurm/spark-batch.sbatch": tpl("spark-batch.sbatch", spark),
    }


def render(spec: ClusterSpec | None = None) -> dict[str, object]:
    """``{path under manifests/: documents or text}`` for the cluster definitions."""
    spec = spec or default_cluster()
    wl = next(n for n in spec.namespaces if n.name == NAMESPACE)
    out: dict[str, object] = {
        "cluster/namespaces.yaml": [namespace(n) for n in spec.namespaces],
        "cluster/quota.yaml": [*resource_quotas(wl), *[d for d in (limit_range(wl),) if d]],
        "cluster/rbac.yaml": [*service_accounts(spec), *data_scientist_role(), *spark_driver_role()],
        "cluster/network-policies.yaml": network_policies(),
        "cluster/priority-classes.yaml": priority_classes(),
        "cluster/pdb-training.yaml": [training_pdb()],
        "cluster/nvidia-device-plugin.yaml": [nvidia_device_plugin()],
        "eks/cluster.yaml": eksctl_config(spec),
        "karpenter/nodepools.yaml": karpenter(spec),
    }
    out.update(slurm_files())
    return out


def gpu_summary(spec: ClusterSpec | None = None) -> list[dict]:
    """Per node group: type, GPUs, EFA, capacity type, taints (for the notebook's table)."""
    spec = spec or default_cluster()
    return [{"group": g.name, "types": ",".join(g.instance_types), "gpus_per_node": g.gpu_count,
             "gpu": INSTANCE_TYPES[g.instance_type]["gpu"] or "-", "efa": g.efa, "spot": g.spot,
             "min/max": f"{g.min_size}/{g.max_size}",
             "taints": ";".join(f"{t.key}={t.value}:{t.effect}" for t in g.taints) or "-"} for g in spec.node_groups]
