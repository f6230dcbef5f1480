"""Kubernetes, for real where a cluster is configured: nodes, the GPU device plugin, apply.

Uses the official ``kubernetes`` client with the user's kubeconfig (``KUBECONFIG`` or
``~/.kube/config``) and context, or the in-cluster service account. Nothing here fakes a
cluster: with none configured, :func:`no_cluster_reason` says so in one line and the
callers (the notebook) continue with the rendered definitions.

The offline checks of the rendered manifests live apart: schemas in
:mod:`hpcml.k8s.validate`, the checkov security lint in :mod:`hpcml.cluster.security_lint`.

Example:
    >>> from hpcml.cluster import kube
    >>> reason = kube.no_cluster_reason()
    >>> if reason is None:
    ...     kc = kube.connect()
    ...     kube.list_nodes(kc), kube.device_plugin_status(kc)
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

DEVICE_PLUGIN = ("kube-system", "nvidia-device-plugin-daemonset")
#: The device plugin the GPU Operator runs instead (manifests/gpu/gpu-operator-clusterpolicy.yaml).
OPERATOR_DEVICE_PLUGIN = ("gpu-operator", "nvidia-device-plugin-daemonset")


class KubeError(RuntimeError):
    """The cluster is configured but a call failed; the message names the server and why."""


def kubeconfig_files() -> list[Path]:
    """Kubeconfig files in effect (``KUBECONFIG`` list, else ``~/.kube/config``) that exist."""
    env = os.environ.get("KUBECONFIG")
    cands = env.split(os.pathsep) if env else [str(Path.home() / ".kube" / "config")]
    return [Path(p).expanduser() for p in cands if p and Path(p).expanduser().is_file()]


def _in_cluster() -> bool:
    return bool(os.environ.get("KUBERNETES_SERVICE_HOST")) and Path(
        "/var/run/secrets/kubernetes.io/serviceaccount/token").exists()


def no_cluster_reason(context: str = "") -> str | None:
    """``None`` when a cluster is configured, else one line saying why there is none.

    Args:
        context: the kubeconfig context wanted (empty = the current one).
    """
    if _in_cluster() and not context:
        return None
    files = kubeconfig_files()
    if not files:
        where = os.environ.get("KUBECONFIG") or "~/.kube/config"
        return f"no Kubernetes cluster configured (no kubeconfig at {where}, not running in a pod)"
    from kubernetes import config

    try:
        contexts, current = config.list_kube_config_contexts(config_file=str(files[0]))
    except Exception as exc:  # malformed file, no contexts
        return f"no usable Kubernetes context in {files[0]}: {exc}"
    names = [c["name"] for c in contexts or []]
    if context and context not in names:
        return f"kubeconfig {files[0]} has no context {context!r} (contexts: {', '.join(names) or 'none'})"
    if not context and not current:
        return f"kubeconfig {files[0]} sets no current-context; pass kube_context (one of {', '.join(names)})"
    return None


@dataclass
class KubeClient:
    """A connected API client and where it points."""

    api: Any  # kubernetes.client.ApiClient
    context: str
    server: str
    timeout_s: float = 10.0


def connect(context: str = "", timeout_s: float = 10.0) -> KubeClient:
    """An API client for ``context`` (empty = current), with short timeouts and no retries.

    Raises:
        KubeError: no cluster configured, or the kubeconfig cannot be loaded.
    """
    reason = no_cluster_reason(context)
    if reason:
        raise KubeError(reason)
    from kubernetes import client, config

    try:
        if _in_cluster() and not context:
            config.load_incluster_config()
            api, ctx = client.ApiClient(), "in-cluster"
        else:
            files = kubeconfig_files()
            api = config.new_client_from_config(config_file=str(files[0]), context=context or None)
            ctx = context or config.list_kube_config_contexts(config_file=str(files[0]))[1]["name"]
    except Exception as exc:
        raise KubeError(f"cannot load Kubernetes context {context or '(current)'}: {exc}") from exc
    api.configuration.retries = 0
    return KubeClient(api, ctx, api.configuration.host, timeout_s)


def _translate(kc: KubeClient, what: str, exc: BaseException) -> BaseException:
    """A one-line :class:`KubeError` for transport and HTTP errors; other errors unchanged."""
    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import HTTPError

    if isinstance(exc, ApiException):
        return KubeError(f"{what} on {kc.server} (context {kc.context}): HTTP {exc.status} {exc.reason}: "
                         f"{(exc.body or '')[:300]}")
    if isinstance(exc, (HTTPError, OSError)):
        cause = getattr(exc, "reason", None) or exc
        return KubeError(f"{what}: cannot reach the Kubernetes API at {kc.server} (context {kc.context}): {cause}")
    return exc


def _call(kc: KubeClient, what: str, fn, *args, **kw):
    """Run one API call with the client's timeout; errors become :class:`KubeError`."""
    try:
        return fn(*args, _request_timeout=kc.timeout_s, **kw)
    except Exception as exc:
        raise _translate(kc, what, exc) from exc


@dataclass
class NodeSummary:
    name: str
    ready: bool
    cpu: str
    memory_gib: float
    gpus: int
    instance_type: str
    labels: dict[str, str] = field(default_factory=dict)
    taints: list[str] = field(default_factory=list)


def _gib(quantity: str) -> float:
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 1e3, "M": 1e6, "G": 1e9}
    for u, f in units.items():
        if quantity.endswith(u):
            return round(float(quantity[: -len(u)]) * f / 2**30, 2)
    return round(float(quantity) / 2**30, 2)


def list_nodes(kc: KubeClient) -> list[NodeSummary]:
    """Nodes with allocatable CPU/memory/``nvidia.com/gpu``, readiness, labels and taints."""
    from kubernetes import client

    nodes = _call(kc, "list nodes", client.CoreV1Api(kc.api).list_node).items
    out = []
    for n in nodes:
        alloc = n.status.allocatable or {}
        labels = n.metadata.labels or {}
        out.append(NodeSummary(
            name=n.metadata.name,
            ready=any(c.type == "Ready" and c.status == "True" for c in n.status.conditions or []),
            cpu=alloc.get("cpu", "0"), memory_gib=_gib(alloc.get("memory", "0")),
            gpus=int(alloc.get("nvidia.com/gpu", "0")),
            instance_type=labels.get("node.kubernetes.io/instance-type", ""),
            labels=labels,
            taints=[f"{t.key}={t.value or ''}:{t.effect}" for t in n.spec.taints or []],
        ))
    return out


@dataclass
class DaemonSetStatus:
    namespace: str
    name: str
    found: bool
    desired: int = 0
    ready: int = 0
    available: int = 0

    @property
    def ok(self) -> bool:
        """Found, and every scheduled pod ready (zero desired is fine: no GPU nodes yet)."""
        return self.found and self.ready == self.desired and self.available == self.desired


def device_plugin_status(kc: KubeClient, namespace: str = DEVICE_PLUGIN[0], name: str = DEVICE_PLUGIN[1]) -> DaemonSetStatus:
    """Readiness of the NVIDIA device plugin DaemonSet (``found=False`` when it is not installed)."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    try:
        ds = client.AppsV1Api(kc.api).read_namespaced_daemon_set(name, namespace, _request_timeout=kc.timeout_s)
    except ApiException as exc:
        if exc.status == 404:
            return DaemonSetStatus(namespace, name, found=False)
        raise _translate(kc, f"read DaemonSet {namespace}/{name}", exc) from exc
    except Exception as exc:
        raise _translate(kc, f"read DaemonSet {namespace}/{name}", exc) from exc
    st = ds.status
    return DaemonSetStatus(namespace, name, True, st.desired_number_scheduled or 0, st.number_ready or 0,
                           st.number_available or 0)


@dataclass
class ApplyResult:
    kind: str
    name: str
    namespace: str
    dry_run_ok: bool
    applied: bool
    message: str = ""


def apply(kc: KubeClient, docs: Iterable[dict], field_manager: str = "hpcml", dry_run_only: bool = False) -> list[ApplyResult]:
    """Server-side apply ``docs``: a dry run of all of them first, then (if all passed) for real.

    Args:
        docs: manifest documents (dicts with apiVersion/kind/metadata).
        field_manager: the field manager recorded by server-side apply.
        dry_run_only: stop after the dry run.

    Returns:
        One :class:`ApplyResult` per document; nothing is applied when any dry run failed.
    """
    from kubernetes.dynamic import DynamicClient

    docs = list(docs)
    try:
        dyn = DynamicClient(kc.api)  # discovery: the first request to the server
    except Exception as exc:
        raise _translate(kc, "API discovery", exc) from exc
    results = []
    for d in docs:
        meta = d.get("metadata", {})
        r = ApplyResult(d["kind"], meta.get("name", ""), meta.get("namespace", ""), False, False)
        try:
            res = dyn.resources.get(api_version=d["apiVersion"], kind=d["kind"])
            _call(kc, f"dry-run apply {d['kind']}/{r.name}", dyn.server_side_apply, res, body=d,
                  field_manager=field_manager, dry_run="All")
            r.dry_run_ok = True
        except Exception as exc:  # unknown kind (CRD missing), validation, RBAC
            r.message = str(exc).splitlines()[0][:300]
        results.append(r)
    if dry_run_only or not all(r.dry_run_ok for r in results):
        return results
    for d, r in zip(docs, results):
        res = dyn.resources.get(api_version=d["apiVersion"], kind=d["kind"])
        _call(kc, f"apply {d['kind']}/{r.name}", dyn.server_side_apply, res, body=d, field_manager=field_manager)
        r.applied = True
    return results


def inspect(context: str = "") -> str:
    """One paragraph for the notebook: the nodes and the device plugin, or why there is no cluster."""
    reason = no_cluster_reason(context)
    if reason:
        return reason
    kc = connect(context)
    nodes = list_nodes(kc)
    dp = device_plugin_status(kc)
    if not dp.found:  # the GPU Operator's, when it manages the node stack
        op = device_plugin_status(kc, *OPERATOR_DEVICE_PLUGIN)
        dp = op if op.found else dp
    lines = [f"context {kc.context} ({kc.server}): {len(nodes)} nodes, "
             f"{sum(n.gpus for n in nodes)} allocatable nvidia.com/gpu"]
    lines += [f"  {n.name} {'Ready' if n.ready else 'NotReady'} {n.instance_type or '-'} cpu={n.cpu} "
              f"mem={n.memory_gib}Gi gpu={n.gpus} taints={','.join(n.taints) or '-'}" for n in nodes]
    lines.append(f"device plugin {dp.namespace}/{dp.name}: " + (
        f"{dp.ready}/{dp.desired} ready" if dp.found else "not installed (apply manifests/cluster/nvidia-device-plugin.yaml, "
                                                         "or the GPU Operator with manifests/gpu/)"))
    return "\n".join(lines)
