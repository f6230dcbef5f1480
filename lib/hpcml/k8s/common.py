"""What every manifest builder shares: the workload namespace, the labels, the metadata
block and the restricted securityContext (Pod Security Standards, "restricted" profile).

Each is defined once here and imported by the ``k8s`` builders; a change to the project's
security baseline is a change to this file.
"""

from __future__ import annotations

from typing import Any

import yaml

#: The namespace the pipeline's workloads run in.
NAMESPACE = "hpcml"
#: The label that marks every object the project renders.
PART_OF = {"app.kubernetes.io/part-of": "hpcml"}
#: The uid/gid the project's images run as (a non-root user baked into each Dockerfile).
APP_UID = 1000
SECCOMP = {"type": "RuntimeDefault"}
#: The PriorityClass of online inference (it may preempt training, and has a quota of its own).
SERVING_PRIORITY_CLASS = "hpcml-serving"


def labels(name: str, stage: str | None = None, component: str | None = None) -> dict[str, str]:
    """The recommended labels: ``app.kubernetes.io/name``, ``part-of``, the pipeline stage and component."""
    out = {"app.kubernetes.io/name": name, **PART_OF}
    if stage:
        out["hpcml.io/stage"] = stage
    if component:
        out["app.kubernetes.io/component"] = component
    return out


def meta(name: str, namespace: str | None = None, labels: dict[str, str] | None = None, **extra) -> dict:
    """An object's ``metadata``: name, namespace (omitted for cluster-scoped objects), labels, extras."""
    m: dict = {"name": name}
    if namespace:
        m["namespace"] = namespace
    if labels is not None:
        m["labels"] = labels
    m.update(extra)
    return m


def restricted_container(uid: int | None = APP_UID) -> dict:
    """A container ``securityContext`` that passes the "restricted" Pod Security Standard.

    Args:
        uid: the user and group to run as; ``None`` leaves them to the pod's securityContext.
    """
    sc: dict = {"runAsNonRoot": True}
    if uid is not None:
        sc.update(runAsUser=uid, runAsGroup=uid)
    sc.update(allowPrivilegeEscalation=False, readOnlyRootFilesystem=True, capabilities={"drop": ["ALL"]},
              seccompProfile=dict(SECCOMP))
    return sc


def restricted_pod(uid: int = APP_UID) -> dict:
    """A pod ``securityContext``: non-root ``uid``/``gid``, ``fsGroup`` for mounted volumes, seccomp."""
    return {"runAsNonRoot": True, "runAsUser": uid, "runAsGroup": uid, "fsGroup": uid, "seccompProfile": dict(SECCOMP)}


class NoAliasDumper(yaml.SafeDumper):
    """A SafeDumper that writes a shared object out in full each time it occurs: no ``&id001``
    anchors and ``*id001`` aliases, which kubectl accepts but which make a reader (and a
    ``kustomize``/``yq`` edit of one place) see two fields tied together that the API server keeps apart."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def dump_yaml(obj: Any, **kw: Any) -> str:
    """``yaml.dump`` with :class:`NoAliasDumper` (the keywords as ``yaml.dump``'s; ``sort_keys`` defaults to False)."""
    kw.setdefault("sort_keys", False)
    return yaml.dump(obj, Dumper=kw.pop("Dumper", NoAliasDumper), **kw)
