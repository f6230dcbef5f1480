"""The traffic the design allows and the traffic it forbids, as a table the rendered
NetworkPolicies are evaluated against (:func:`hpcml.k8s.coherence.network_problems`).

Each row names a source and a destination, a port and protocol, the verdict the design states
and why. The endpoints are built from the rendered definitions (:func:`endpoints`): a pod's
namespace and labels are those of its workload's pod template, so a relabelled workload is
evaluated as it would run. Outside the cluster: the ALB (``target-type: ip``: it connects to
pod addresses from its own interfaces in the VPC's public subnets), a client on the internet,
S3's public endpoint and the instance metadata service. With vpc-cni every pod has a VPC address
too, which matters for ``ipBlock`` rules.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any

from hpcml.k8s.cluster import METRICS_PORTS, MON_NS, SERVE_PORT, VPC_CIDR
from hpcml.k8s.common import NAMESPACE
from hpcml.k8s.monitor import AGENTS_NS

#: Addresses of the endpoints outside the cluster.
_VPC = ipaddress.ip_network(VPC_CIDR)
ALB_IP = str(_VPC[10])  # an ALB interface in a public subnet
INTERNET_IP = "203.0.113.7"  # TEST-NET-3, a client on the internet
S3_IP = "52.216.8.10"  # an address of S3's regional endpoint (outside the VPC)
IMDS_IP = "169.254.169.254"
#: Pods get addresses from the VPC's private half (vpc-cni).
_POD_BASE = int(_VPC.network_address) + _VPC.num_addresses // 2

SSH_PORT = 2222
GLOO_PORT = 45123  # Gloo/NCCL ring and rendezvous ports are chosen at run time: any high port
PG_PORT = 5432


@dataclass(frozen=True)
class Endpoint:
    """One end of a flow: a pod (namespace + labels + its VPC address) or an outside address."""

    name: str
    ip: str
    namespace: str | None = None
    labels: tuple[tuple[str, str], ...] = ()

    @property
    def label_map(self) -> dict[str, str]:
        return dict(self.labels)


@dataclass(frozen=True)
class Flow:
    """One row: ``src`` opens ``port/protocol`` on ``dst``; ``allowed`` is the design's verdict."""

    src: str
    dst: str
    port: int
    protocol: str
    allowed: bool
    why: str


FLOWS: tuple[Flow, ...] = (
    # --- allowed ---------------------------------------------------------------------------
    Flow("alb", "inference", SERVE_PORT, "TCP", True, "the ALB (target-type ip) sends requests to the pod IPs"),
    Flow("prometheus", "inference", SERVE_PORT, "TCP", True, "Prometheus scrapes /metrics on the serving port"),
    Flow("prometheus", "train-worker", METRICS_PORTS[0], "TCP", True, "Prometheus scrapes rank 0's exporter"),
    Flow("prometheus", "train-worker", METRICS_PORTS[0] + 3, "TCP", True, "and local rank 3's (base port + rank)"),
    Flow("prometheus", "dcgm-exporter", 9400, "TCP", True, "Prometheus scrapes the DCGM exporter"),
    Flow("prometheus", "fluent-bit", 2020, "TCP", True, "Prometheus scrapes Fluent Bit's metrics"),
    Flow("train-launcher", "train-worker", SSH_PORT, "TCP", True, "the launcher starts the ranks over SSH"),
    Flow("train-worker", "train-launcher", GLOO_PORT, "TCP", True, "ranks reach horovodrun's rendezvous on the launcher"),
    Flow("train-worker", "train-worker", GLOO_PORT, "TCP", True, "ranks allreduce with each other (Gloo/NCCL rings)"),
    Flow("inference", "kube-dns", 53, "UDP", True, "every pod resolves names through kube-dns"),
    Flow("inference", "kube-dns", 53, "TCP", True, "DNS falls back to TCP for large answers"),
    Flow("train-worker", "kube-dns", 53, "UDP", True, "workers resolve the launcher and peer hostnames"),
    Flow("tuning-worker", "kube-dns", 53, "UDP", True, "tuning workers resolve postgresql-0.postgresql"),
    Flow("tuning-worker", "postgresql", PG_PORT, "TCP", True, "Optuna workers share one study in PostgreSQL"),
    Flow("spark-driver", "spark-executor", GLOO_PORT, "TCP", True, "the Spark driver talks to its executors"),
    Flow("spark-executor", "spark-driver", GLOO_PORT, "TCP", True, "executors report back to the driver"),
    Flow("spark-driver", "s3", 443, "TCP", True, "Spark reads raw/ and writes processed/ over HTTPS"),
    Flow("train-worker", "s3", 443, "TCP", True, "trainers sync checkpoints and models over HTTPS"),
    # --- forbidden -------------------------------------------------------------------------
    Flow("inference", "train-worker", SSH_PORT, "TCP", False, "a compromised endpoint must not reach training"),
    Flow("inference", "train-worker", METRICS_PORTS[0], "TCP", False, "nor its exporters"),
    Flow("inference", "train-launcher", GLOO_PORT, "TCP", False, "nor the launcher"),
    Flow("inference", "postgresql", PG_PORT, "TCP", False, "only tuning workers reach the tuning database"),
    Flow("train-worker", "postgresql", PG_PORT, "TCP", False, "only tuning workers reach the tuning database"),
    Flow("spark-driver", "postgresql", PG_PORT, "TCP", False, "only tuning workers reach the tuning database"),
    Flow("katib-trial", "postgresql", PG_PORT, "TCP", False, "Katib trials keep no Optuna study"),
    Flow("prometheus", "postgresql", PG_PORT, "TCP", False, "monitoring scrapes, it does not query the database"),
    Flow("grafana", "postgresql", PG_PORT, "TCP", False, "only tuning workers reach the tuning database"),
    Flow("other-namespace", "postgresql", PG_PORT, "TCP", False, "no pod outside the namespace reaches it"),
    Flow("alb", "postgresql", PG_PORT, "TCP", False, "the ALB reaches the serving port of the inference pods only"),
    Flow("alb", "train-worker", SSH_PORT, "TCP", False, "the ALB reaches the serving port of the inference pods only"),
    Flow("internet", "inference", SERVE_PORT, "TCP", False, "clients come through the ALB, never straight to a pod"),
    Flow("inference", "s3", 443, "TCP", False, "the endpoint has no business on the internet (exfiltration)"),
    Flow("train-worker", "imds", 80, "TCP", False, "IRSA gives credentials; the node's metadata service stays closed"),
    Flow("postgresql", "s3", 443, "TCP", False, "the database needs no internet"),
    # --- the price of admitting the ALB by address ---------------------------------------------
    Flow("grafana", "inference", SERVE_PORT, "TCP", True, "known gap: the ALB's ipBlock (the VPC range) also matches "
         "pod addresses under vpc-cni; narrow it to the public subnets' CIDRs, or use security groups for pods"),
)


def _docs(out: dict[str, Any]) -> list[dict]:
    return [d for c in out.values() if not isinstance(c, str) for d in (c if isinstance(c, list) else [c])
            if isinstance(d, dict) and "kind" in d]


def _pod_labels(out: dict[str, Any], kind: str, name: str, role: str | None = None) -> tuple[str, dict]:
    for d in _docs(out):
        if d["kind"] != kind or d["metadata"].get("name") != name:
            continue
        ns = d["metadata"].get("namespace", "default")
        spec = d["spec"]
        if kind == "MPIJob":
            return ns, spec["mpiReplicaSpecs"][role]["template"]["metadata"].get("labels", {})
        if kind == "SparkApplication":
            return ns, {**spec[role].get("labels", {}), "spark-role": role}
        if kind == "Experiment":
            return ns, spec["trialTemplate"]["trialSpec"]["spec"]["template"]["metadata"].get("labels", {})
        return ns, spec["template"]["metadata"].get("labels", {})
    raise KeyError(f"no rendered {kind}/{name}: the flow table names a workload the manifests do not define")


def endpoints(out: dict[str, Any]) -> dict[str, Endpoint]:
    """``{name: Endpoint}`` for every name the flow table uses, from the rendered definitions."""
    from hpcml.k8s.train import PRODUCTION_SPEC as TRAIN
    from hpcml.k8s.tune import PRODUCTION_SPEC as TUNE

    pods = {
        "inference": ("Deployment", "hpcml-serve", None),
        "train-launcher": ("MPIJob", TRAIN.name, "Launcher"),
        "train-worker": ("MPIJob", TRAIN.name, "Worker"),
        "tuning-worker": ("Job", f"{TUNE.study_name}-optuna", None),
        "katib-trial": ("Experiment", f"{TUNE.study_name}-katib", None),
        "postgresql": ("StatefulSet", "postgresql", None),
        "spark-driver": ("SparkApplication", "hpcml-preprocess", "driver"),
        "spark-executor": ("SparkApplication", "hpcml-preprocess", "executor"),
        "dcgm-exporter": ("DaemonSet", "dcgm-exporter", None),
        "fluent-bit": ("DaemonSet", "fluent-bit", None),
    }
    eps: dict[str, Endpoint] = {}
    for i, (name, (kind, wname, role)) in enumerate(pods.items()):
        ns, labels = _pod_labels(out, kind, wname, role)
        eps[name] = Endpoint(name, str(ipaddress.ip_address(_POD_BASE + 10 + i)), ns, tuple(sorted(labels.items())))
    others = {
        "prometheus": (MON_NS, {"app.kubernetes.io/name": "prometheus"}),  # kube-prometheus-stack's pods
        "grafana": (MON_NS, {"app.kubernetes.io/name": "grafana"}),
        "kube-dns": ("kube-system", {"k8s-app": "kube-dns"}),
        "other-namespace": ("default", {"app": "anything"}),
    }
    for j, (name, (ns, labels)) in enumerate(others.items()):
        eps[name] = Endpoint(name, str(ipaddress.ip_address(_POD_BASE + 100 + j)), ns, tuple(sorted(labels.items())))
    eps.update({"alb": Endpoint("alb", ALB_IP), "internet": Endpoint("internet", INTERNET_IP),
                "s3": Endpoint("s3", S3_IP), "imds": Endpoint("imds", IMDS_IP)})
    missing = ({f.src for f in FLOWS} | {f.dst for f in FLOWS}) - set(eps)
    if missing:
        raise KeyError(f"flow table names undefined endpoints: {sorted(missing)}")
    return eps


#: The namespaces the table spans (for a reader; the evaluator takes them from the rendering).
NAMESPACES = (NAMESPACE, MON_NS, AGENTS_NS, "kube-system", "default")
