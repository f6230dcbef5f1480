"""Validate rendered documents: core kinds against the official OpenAPI schema of a
pinned Kubernetes version (kubernetes-validate, offline); custom resources against the
required fields their builder module declares.

:func:`validate_doc` checks one document; :func:`validate_manifests` every document the
builders render, for the pinned Kubernetes version and the next minor (upgrade check).
"""

from __future__ import annotations

from typing import Any, Iterable

from hpcml.k8s import render
from hpcml.k8s.render import crd_required


def _get(doc: dict, dotted: str) -> Any:
    cur: Any = doc
    for part in dotted.split("."):
        if not isinstance(cur, dict) or part not in cur:
            raise KeyError(dotted)
        cur = cur[part]
    return cur


CORE_GROUPS = {
    "", "apps", "batch", "policy", "autoscaling", "networking.k8s.io", "rbac.authorization.k8s.io",
    "scheduling.k8s.io", "storage.k8s.io", "node.k8s.io", "coordination.k8s.io", "discovery.k8s.io",
    "admissionregistration.k8s.io", "apiextensions.k8s.io", "certificates.k8s.io", "resource.k8s.io",
}


def is_core(doc: dict) -> bool:
    """True when the kind is served by upstream Kubernetes (its schema ships offline)."""
    group = doc["apiVersion"].rsplit("/", 1)[0] if "/" in doc["apiVersion"] else ""
    return group in CORE_GROUPS


def validate_doc(doc: dict, version: str) -> list[str]:
    """Problems with one document (empty list when valid)."""
    if is_core(doc):
        import kubernetes_validate as kv

        try:
            kv.validate(doc, version, strict=True)
        except kv.ValidationError as exc:
            return [f"{doc['kind']}/{doc.get('metadata', {}).get('name', '?')}: {exc.message} at {list(exc.path)}"]
        except kv.SchemaNotFoundError:
            return [f"{doc['kind']} {doc['apiVersion']}: no schema in Kubernetes {version} (API removed?)"]
        return []
    key = (doc["apiVersion"], doc["kind"])
    fields = crd_required().get(key)
    if fields is None:
        return [f"{doc['kind']} {doc['apiVersion']}: custom resource with no CRD_REQUIRED entry in its builder"]
    probs = []
    for f in ["metadata.name", *fields]:
        try:
            _get(doc, f)
        except KeyError:
            probs.append(f"{doc['kind']}/{doc.get('metadata', {}).get('name', '?')}: missing required field {f}")
    return probs


def validate_manifests(versions: Iterable[str] | None = None) -> dict[str, list[str]]:
    """Schema problems of every rendered document, per Kubernetes version (pinned and next minor).

    Args:
        versions: Kubernetes minors to check against (default :data:`~hpcml.k8s.render.K8S_VERSION`
            and :data:`~hpcml.k8s.render.K8S_NEXT_VERSION`).

    Returns:
        ``{version: ["<path>: <problem>", ...]}`` (empty lists when every document is valid).
    """
    docs = list(render.documents())
    versions = list(versions or (render.K8S_VERSION, render.K8S_NEXT_VERSION))
    return {v: [f"{rel}: {p}" for rel, d in docs for p in validate_doc(d, v)] for v in versions}
