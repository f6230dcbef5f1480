"""The preprocessing job as a batch job on the local Slurm cluster (:mod:`hpcml.cluster.slurm.daemons`).

The job body is the one rendered into ``manifests/data/preprocess.sbatch``
(:func:`hpcml.k8s.data.sbatch_body`): Spark in local mode on the cores Slurm allocated.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from hpcml import paths
from hpcml.cluster.slurm.daemons import SlurmCluster, ensure_cluster
from hpcml.cluster.slurm.jobs import JobResult
from hpcml.k8s.data import JOB_NAME, sbatch_body


def run_batch_job(n_shards: int, dataset_dir: Path | None = None, cluster: SlurmCluster | None = None,
                  cpus_per_task: int = 1, timeout_s: float = 600) -> JobResult:
    """Run the job as a batch job on the local Slurm cluster and wait for it.

    Args:
        n_shards: shards per split.
        dataset_dir: output folder (default ``data_dir()/"mnist-slurm"``).
        cluster: a running cluster (default :func:`~hpcml.cluster.slurm.daemons.ensure_cluster`).
        cpus_per_task: cores Spark gets (``local[N]``).
        timeout_s: how long to wait for the job.

    Returns:
        How the job ended (a failed job is returned, not raised).
    """
    cl = cluster or ensure_cluster()
    env = {"HPCML_ROOT": str(paths.repo_root()), "HPCML_BUILD": str(paths.build_dir()),
           "HPCML_PYTHON": sys.executable, "N_SHARDS": str(n_shards),
           "HPCML_DATASET": str(dataset_dir or paths.data_dir() / "mnist-slurm"),
           "PATH": os.environ.get("PATH", ""), "JAVA_HOME": os.environ.get("JAVA_HOME", "")}
    return cl.run_batch(sbatch_body(n_shards), name=JOB_NAME, cpus_per_task=cpus_per_task,
                        time_limit_min=max(1, int(timeout_s // 60) + 1), timeout_s=timeout_s,
                        env={k: v for k, v in env.items() if v})
