"""Typed cluster specs: node groups, taints, namespaces and quotas, validated on creation.

Every spec checks itself in ``__post_init__`` and raises a ``SpecError`` (a ``ValueError``,
built by :func:`hpcml.specbase.fail`) naming the field and what was expected, so a bad spec fails before any manifest is written. The builders in
:mod:`hpcml.k8s.cluster` turn a :class:`ClusterSpec` into eksctl, Karpenter and Kubernetes
documents.

Example:
    >>> NodeGroupSpec("gpu", "g4dn.xlarge", taints=(TaintSpec("nvidia.com/gpu", "present", "NoSchedule"),))
    >>> NodeGroupSpec("gpu", "g4dn.xlarge", gpus=-1)   # ValueError: NodeGroupSpec.gpus ...
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from hpcml.aws.account import ACCOUNT_ID, REGION, role_arn
from hpcml.aws.account import availability_zones as _zones
from hpcml.specbase import fail

#: EC2 instance types the builders know: vCPUs, memory GiB, GPUs, GPU model, EFA support.
#: (Facts from the EC2 instance-type pages; prices live in hpcml.cost.)
INSTANCE_TYPES: dict[str, dict] = {
    "m5.large": dict(vcpus=2, memory_gib=8, gpus=0, gpu="", efa=False),
    "m5.xlarge": dict(vcpus=4, memory_gib=16, gpus=0, gpu="", efa=False),
    "m5.2xlarge": dict(vcpus=8, memory_gib=32, gpus=0, gpu="", efa=False),
    "m5a.2xlarge": dict(vcpus=8, memory_gib=32, gpus=0, gpu="", efa=False),
    "m6i.xlarge": dict(vcpus=4, memory_gib=16, gpus=0, gpu="", efa=False),
    "m6i.2xlarge": dict(vcpus=8, memory_gib=32, gpus=0, gpu="", efa=False),
    "c5.4xlarge": dict(vcpus=16, memory_gib=32, gpus=0, gpu="", efa=False),
    "c5n.18xlarge": dict(vcpus=72, memory_gib=192, gpus=0, gpu="", efa=True),
    "r5.2xlarge": dict(vcpus=8, memory_gib=64, gpus=0, gpu="", efa=False),
    "g4dn.xlarge": dict(vcpus=4, memory_gib=16, gpus=1, gpu="T4", efa=False),
    "g4dn.2xlarge": dict(vcpus=8, memory_gib=32, gpus=1, gpu="T4", efa=False),
    "g4dn.12xlarge": dict(vcpus=48, memory_gib=192, gpus=4, gpu="T4", efa=True),
    "g4dn.metal": dict(vcpus=96, memory_gib=384, gpus=8, gpu="T4", efa=True),
    "g5.xlarge": dict(vcpus=4, memory_gib=16, gpus=1, gpu="A10G", efa=False),
    "g5.12xlarge": dict(vcpus=48, memory_gib=192, gpus=4, gpu="A10G", efa=True),
    "g5.48xlarge": dict(vcpus=192, memory_gib=768, gpus=8, gpu="A10G", efa=True),
    "p3.2xlarge": dict(vcpus=8, memory_gib=61, gpus=1, gpu="V100", efa=False),
    "p3.8xlarge": dict(vcpus=32, memory_gib=244, gpus=4, gpu="V100", efa=False),
    "p3.16xlarge": dict(vcpus=64, memory_gib=488, gpus=8, gpu="V100", efa=False),
    "p3dn.24xlarge": dict(vcpus=96, memory_gib=768, gpus=8, gpu="V100", efa=True),
    "p4d.24xlarge": dict(vcpus=96, memory_gib=1152, gpus=8, gpu="A100", efa=True),
    "p5.48xlarge": dict(vcpus=192, memory_gib=2048, gpus=8, gpu="H100", efa=True),
}

TAINT_EFFECTS = ("NoSchedule", "PreferNoSchedule", "NoExecute")
POD_SECURITY_LEVELS = ("privileged", "baseline", "restricted")
_DNS1123 = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_QUALIFIED = re.compile(r"^([a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9])?$")
_QUANTITY = re.compile(r"^[0-9]+(\.[0-9]+)?(m|k|M|G|T|Ki|Mi|Gi|Ti)?$")


def _check_name(cls: str, field_name: str, value: str) -> None:
    if not isinstance(value, str) or not _DNS1123.match(value):
        raise fail(cls, field_name, "a DNS-1123 label (lowercase letters, digits, '-', <= 63 chars)", value)


def _check_labels(cls: str, labels: dict[str, str]) -> None:
    for k, v in labels.items():
        if not _QUALIFIED.match(k):
            raise fail(cls, f"labels[{k!r}]", "a qualified label key such as 'hpcml.io/stage'", k)
        if not isinstance(v, str) or not _LABEL_VALUE.match(v):
            raise fail(cls, f"labels[{k!r}]", "a label value (<= 63 chars, alphanumeric at both ends)", v)


def _check_quantity(cls: str, field_name: str, value: str | None) -> None:
    if value is not None and not (isinstance(value, str) and _QUANTITY.match(value)):
        raise fail(cls, field_name, "a Kubernetes quantity such as '500m', '8', '16Gi'", value)


@dataclass(frozen=True)
class TaintSpec:
    """A node taint: pods without a matching toleration are kept off (or evicted).

    Attributes:
        key: qualified key, e.g. ``nvidia.com/gpu``.
        value: value (may be empty).
        effect: one of NoSchedule, PreferNoSchedule, NoExecute.
    """

    key: str
    value: str = ""
    effect: str = ""

    def __post_init__(self) -> None:
        if not self.key or not _QUALIFIED.match(self.key):
            raise fail("TaintSpec", "key", "a qualified key such as 'nvidia.com/gpu'", self.key)
        if not _LABEL_VALUE.match(self.value or ""):
            raise fail("TaintSpec", "value", "a label-style value", self.value)
        if self.effect not in TAINT_EFFECTS:
            raise fail("TaintSpec", "effect", f"one of {', '.join(TAINT_EFFECTS)}", self.effect)

    def as_k8s(self) -> dict[str, str]:
        return {"key": self.key, "value": self.value, "effect": self.effect}

    def toleration(self) -> dict[str, str]:
        """The toleration a pod needs to land on a node with this taint."""
        return {"key": self.key, "operator": "Equal", "value": self.value, "effect": self.effect}


GPU_TAINT = TaintSpec("nvidia.com/gpu", "present", "NoSchedule")
GPU_LABEL = {"hpcml.io/accelerator": "nvidia"}


@dataclass(frozen=True)
class NodeGroupSpec:
    """A managed node group (eksctl) / NodePool requirement set.

    Attributes:
        name: DNS-1123 name.
        instance_type: primary EC2 type (must be in :data:`INSTANCE_TYPES`).
        min_size, max_size, desired: autoscaling bounds, ``min <= desired <= max``.
        gpus: GPUs per node; ``None`` = what the instance type has. Must not exceed it.
        taints: node taints (GPU groups carry :data:`GPU_TAINT`).
        labels: node labels.
        spot: use Spot capacity (with ``extra_instance_types`` for diversification).
        efa: attach Elastic Fabric Adapter interfaces (only types that support it).
        extra_instance_types: further types for a Spot/diversified group.
        volume_gib: root volume size.
    """

    name: str
    instance_type: str
    min_size: int = 0
    max_size: int = 1
    desired: int = 0
    gpus: int | None = None
    taints: tuple[TaintSpec, ...] = ()
    labels: dict[str, str] = field(default_factory=dict)
    spot: bool = False
    efa: bool = False
    extra_instance_types: tuple[str, ...] = ()
    volume_gib: int = 100

    def __post_init__(self) -> None:
        c = "NodeGroupSpec"
        _check_name(c, "name", self.name)
        for f, t in (("instance_type", self.instance_type), *(("extra_instance_types", x) for x in self.extra_instance_types)):
            if t not in INSTANCE_TYPES:
                raise fail(c, f, f"a known EC2 type ({', '.join(sorted(INSTANCE_TYPES))})", t)
        for f in ("min_size", "max_size", "desired", "volume_gib"):
            v = getattr(self, f)
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                raise fail(c, f, "an integer >= 0", v)
        if not self.min_size <= self.desired <= self.max_size:
            raise fail(c, "desired", f"min_size ({self.min_size}) <= desired <= max_size ({self.max_size})", self.desired)
        if self.max_size < 1:
            raise fail(c, "max_size", "at least 1", self.max_size)
        have = INSTANCE_TYPES[self.instance_type]["gpus"]
        if self.gpus is not None and (not isinstance(self.gpus, int) or self.gpus < 0):
            raise fail(c, "gpus", "an integer >= 0 (GPUs per node)", self.gpus)
        if self.gpus is not None and self.gpus > have:
            raise fail(c, "gpus", f"at most {have} ({self.instance_type} has {have} GPUs)", self.gpus)
        if self.efa and not all(INSTANCE_TYPES[t]["efa"] for t in self.instance_types):
            bad = [t for t in self.instance_types if not INSTANCE_TYPES[t]["efa"]]
            raise fail(c, "efa", f"instance types that support EFA ({', '.join(bad)} do not)", self.efa)
        for t in self.taints:
            if not isinstance(t, TaintSpec):
                raise fail(c, "taints", "TaintSpec items", t)
        _check_labels(c, self.labels)
        if self.gpu_count and GPU_TAINT not in self.taints:
            raise fail(c, "taints", f"the GPU taint {GPU_TAINT.key}={GPU_TAINT.value}:{GPU_TAINT.effect} on a GPU node group",
                       [f"{t.key}={t.value}:{t.effect}" for t in self.taints])

    @property
    def instance_types(self) -> tuple[str, ...]:
        return (self.instance_type, *self.extra_instance_types)

    @property
    def gpu_count(self) -> int:
        return INSTANCE_TYPES[self.instance_type]["gpus"] if self.gpus is None else self.gpus


@dataclass(frozen=True)
class QuotaSpec:
    """A namespace's ResourceQuota (``None`` fields are not limited)."""

    requests_cpu: str | None = "64"
    requests_memory: str | None = "256Gi"
    limits_cpu: str | None = "128"
    limits_memory: str | None = "512Gi"
    gpus: int | None = 8
    pods: int | None = 200
    jobs: int | None = 50

    def __post_init__(self) -> None:
        for f in ("requests_cpu", "requests_memory", "limits_cpu", "limits_memory"):
            _check_quantity("QuotaSpec", f, getattr(self, f))
        for f in ("gpus", "pods", "jobs"):
            v = getattr(self, f)
            if v is not None and (not isinstance(v, int) or v < 0):
                raise fail("QuotaSpec", f, "an integer >= 0 or None", v)


@dataclass(frozen=True)
class LimitSpec:
    """A namespace's LimitRange: defaults for containers that set no requests/limits."""

    default_request_cpu: str = "250m"
    default_request_memory: str = "256Mi"
    default_limit_cpu: str = "2"
    default_limit_memory: str = "2Gi"
    max_cpu: str = "64"
    max_memory: str = "512Gi"

    def __post_init__(self) -> None:
        for f in ("default_request_cpu", "default_request_memory", "default_limit_cpu",
                  "default_limit_memory", "max_cpu", "max_memory"):
            _check_quantity("LimitSpec", f, getattr(self, f))


@dataclass(frozen=True)
class NamespaceSpec:
    """A namespace with its Pod Security Admission level, quota and limits."""

    name: str
    pod_security: str = "restricted"
    labels: dict[str, str] = field(default_factory=dict)
    quota: QuotaSpec | None = None
    limits: LimitSpec | None = None

    def __post_init__(self) -> None:
        _check_name("NamespaceSpec", "name", self.name)
        if self.pod_security not in POD_SECURITY_LEVELS:
            raise fail("NamespaceSpec", "pod_security", f"one of {', '.join(POD_SECURITY_LEVELS)}", self.pod_security)
        _check_labels("NamespaceSpec", self.labels)


@dataclass(frozen=True)
class ClusterSpec:
    """An EKS cluster: region, version, node groups, namespaces, IRSA.

    Attributes:
        name: cluster name.
        region: AWS region (default :data:`hpcml.aws.account.REGION`, the one every definition names).
        version: Kubernetes minor, e.g. ``"1.36"``.
        account_id: 12-digit AWS account for IRSA role ARNs (default
            :data:`hpcml.aws.account.ACCOUNT_ID`, AWS's documentation placeholder; set yours).
        availability_zones: at least two (EKS needs two subnets in different AZs).
        node_groups: at least one CPU (system) group; names unique.
        namespaces: the workload and monitoring namespaces.
        service_accounts: workload ServiceAccounts (each gets an IRSA role ``<name>-<sa>``).
        private_networking: nodes in private subnets; API endpoint private.
    """

    name: str = "hpcml"
    region: str = REGION
    version: str = "1.36"
    account_id: str = ACCOUNT_ID
    availability_zones: tuple[str, ...] = _zones()
    node_groups: tuple[NodeGroupSpec, ...] = ()
    namespaces: tuple[NamespaceSpec, ...] = ()
    service_accounts: tuple[str, ...] = ("spark", "trainer", "tuner", "inference")
    private_networking: bool = True

    def __post_init__(self) -> None:
        c = "ClusterSpec"
        _check_name(c, "name", self.name)
        if not re.fullmatch(r"[a-z]{2}(-[a-z]+)+-\d", self.region):
            raise fail(c, "region", f"an AWS region such as {REGION!r}", self.region)
        if not re.fullmatch(r"1\.\d{2}", self.version):
            raise fail(c, "version", "a Kubernetes minor such as '1.36'", self.version)
        if not re.fullmatch(r"\d{12}", self.account_id):
            raise fail(c, "account_id", "12 digits", self.account_id)
        if len(self.availability_zones) < 2 or not all(z.startswith(self.region) for z in self.availability_zones):
            raise fail(c, "availability_zones", f"two or more zones of {self.region}", self.availability_zones)
        names = [g.name for g in self.node_groups]
        if len(set(names)) != len(names):
            raise fail(c, "node_groups", "unique names", names)
        if self.node_groups and not any(g.gpu_count == 0 and not g.spot for g in self.node_groups):
            raise fail(c, "node_groups", "an on-demand CPU (system) group for cluster add-ons", names)
        for sa in self.service_accounts:
            _check_name(c, "service_accounts", sa)

    def role_arn(self, service_account: str) -> str:
        """IRSA role of a workload ServiceAccount."""
        return role_arn(f"{self.name}-{service_account}", self.account_id)


def default_cluster() -> ClusterSpec:
    """The reference cluster: system, GPU (g4dn, p3, EFA) and Spot CPU node groups."""
    return ClusterSpec(
        node_groups=(
            NodeGroupSpec("system", "m5.xlarge", min_size=2, max_size=4, desired=2,
                          labels={"hpcml.io/role": "system"}),
            NodeGroupSpec("gpu-g4dn", "g4dn.xlarge", min_size=0, max_size=8, desired=0,
                          taints=(GPU_TAINT,), labels={**GPU_LABEL, "hpcml.io/gpu": "t4"}),
            NodeGroupSpec("gpu-p3", "p3.8xlarge", min_size=0, max_size=2, desired=0,
                          taints=(GPU_TAINT,), labels={**GPU_LABEL, "hpcml.io/gpu": "v100"}),
            NodeGroupSpec("gpu-efa", "g4dn.12xlarge", min_size=0, max_size=4, desired=0, efa=True,
                          taints=(GPU_TAINT,), labels={**GPU_LABEL, "hpcml.io/gpu": "t4", "hpcml.io/efa": "true"}),
            NodeGroupSpec("cpu-spot", "m5.2xlarge", min_size=0, max_size=10, desired=0, spot=True,
                          extra_instance_types=("m5a.2xlarge", "m6i.2xlarge"),
                          taints=(TaintSpec("hpcml.io/capacity", "spot", "PreferNoSchedule"),),
                          labels={"hpcml.io/capacity": "spot"}),
        ),
        namespaces=(
            NamespaceSpec("hpcml", "restricted", labels={"app.kubernetes.io/part-of": "hpcml"},
                          quota=QuotaSpec(), limits=LimitSpec()),
            NamespaceSpec("monitoring", "baseline", labels={"app.kubernetes.io/part-of": "hpcml"}),
        ),
    )
