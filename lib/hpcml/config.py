"""Every typed spec of the pipeline, in one place.

Each spec lives beside the stage that owns it (so a stage's validation sits with its
code); this module re-exports them lazily for readers who want the whole picture:

=================  ===========================================  =========================
spec               what it describes                            defined in
=================  ===========================================  =========================
ClusterSpec        EKS cluster, node groups, taints, quotas     hpcml.cluster.spec
DataJobSpec        the Spark job on Kubernetes / EMR / Slurm    hpcml.data.spec
TrainSpec          one distributed training job, every target   hpcml.train.spec
TuneSpec           an Optuna study: space, sampler, pruner      hpcml.tune.spec
SearchSpace        the hyperparameter search space              hpcml.tune.space
ServeConfig        the inference server and its batching        hpcml.serve.spec
ServeSpec          the serving Deployment/HPA/KServe objects    hpcml.serve.spec
Thresholds         alert thresholds (production and drill)      hpcml.monitor.rules
Workload           a training workload priced by the cost model hpcml.cost.models
=================  ===========================================  =========================

Every spec validates in ``__post_init__`` and raises ``ValueError`` naming the field
and what was expected, before anything is written or started.
"""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {
    "ClusterSpec": "hpcml.cluster.spec",
    "NodeGroupSpec": "hpcml.cluster.spec",
    "TaintSpec": "hpcml.cluster.spec",
    "QuotaSpec": "hpcml.cluster.spec",
    "DataJobSpec": "hpcml.data.spec",
    "TrainSpec": "hpcml.train.spec",
    "TuneSpec": "hpcml.tune.spec",
    "SearchSpace": "hpcml.tune.space",
    "ServeConfig": "hpcml.serve.spec",
    "ServeSpec": "hpcml.serve.spec",
    "Thresholds": "hpcml.monitor.rules",
    "Workload": "hpcml.cost.models",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"hpcml.config has no spec {name!r}; specs: {', '.join(__all__)}")
    return getattr(importlib.import_module(_WHERE[name]), name)
