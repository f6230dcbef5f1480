"""The ``kubernetes`` target: the MPIJob, its spec ConfigMap and checkpoint PVC
(:func:`hpcml.k8s.train.documents`), applied when a cluster is configured, else returned."""

from __future__ import annotations

from dataclasses import dataclass

from hpcml.k8s import train as k8s_train
from hpcml.train.spec import TrainSpec
from hpcml.train.targets.result import LaunchResult


@dataclass(frozen=True)
class KubernetesOptions:
    """Options of the ``kubernetes`` target.

    Attributes:
        context: the kubeconfig context (empty: the current one).
    """

    context: str = ""


def launch_kubernetes(spec: TrainSpec, dry_run: bool | None, options: KubernetesOptions) -> LaunchResult:
    """Render the documents; apply them when a cluster is configured (or ``dry_run=False`` demands it).

    The apply is a server-side dry run first (admission, schemas, quota, the MPIJob CRD),
    then the real one (:func:`hpcml.cluster.kube.apply`).

    Raises:
        RuntimeError: ``dry_run=False`` without a cluster, or the server rejected a document.
    """
    from hpcml.cluster import kube

    docs = k8s_train.documents(spec)
    if dry_run:
        return LaunchResult("kubernetes", False, request=docs, reason="dry run")
    reason = kube.no_cluster_reason(options.context)
    if reason is not None:
        if dry_run is False:
            raise RuntimeError(f"cannot submit the MPIJob: {reason}")
        return LaunchResult("kubernetes", False, request=docs, reason=reason)
    results = kube.apply(kube.connect(options.context), docs)  # server-side dry run of all, then for real
    if not all(r.applied for r in results):
        bad = "; ".join(f"{r.kind}/{r.name}: {r.message}" for r in results if not r.dry_run_ok)
        raise RuntimeError(f"the MPIJob was not applied, the server-side dry run rejected: {bad}")
    return LaunchResult("kubernetes", True, request=docs, response=results)
