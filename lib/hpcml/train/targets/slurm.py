"""The ``slurm`` target: ``sbatch`` on the local Slurm cluster, waited for, metrics read back.

The script (:func:`hpcml.train.targets.layout.slurm_body`) runs ``horovodrun`` over the
allocation's hosts (``spec.backend == "horovod"``), or one ``torchrun`` agent per node with a
c10d rendezvous on the first node (``"ddp"``); the same script runs on an AWS ParallelCluster queue.
"""

from __future__ import annotations

import json
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hpcml import paths
from hpcml.train import shards
from hpcml.train.spec import TrainSpec
from hpcml.train.targets.layout import env_exports, slurm_body
from hpcml.train.targets.result import LaunchResult

if TYPE_CHECKING:
    from hpcml.cluster.slurm.daemons import SlurmCluster


@dataclass(frozen=True)
class SlurmOptions:
    """Options of the ``slurm`` target.

    Attributes:
        cluster: the cluster to submit to (default: ``hpcml.cluster.slurm.daemons.ensure_cluster()``).
        timeout_s: give up (and cancel) after this long.
        time_limit_min: the job's ``--time``.
        fresh: start from scratch (empty a previous run's out_dir under the build tree);
            False resumes from its last checkpoint.
        env: environment variables exported at the top of the batch script (e.g. the trainer's
            bucket credentials, :func:`hpcml.train.ckpt_bucket.env`): shell-quoted, never echoed
            to the job log, and shown as ``<redacted>`` in the returned request.
    """

    cluster: SlurmCluster | None = None
    timeout_s: float = 900
    time_limit_min: int = 30
    fresh: bool = True
    env: dict[str, str] | None = None


def read_run_metrics(out_dir: Path) -> dict[str, Any]:
    """The final metrics rank 0 wrote to ``out_dir/metrics.json`` (``{}`` when absent)."""
    p = Path(out_dir) / "metrics.json"
    return json.loads(p.read_text()) if p.exists() else {}


def _fresh_out_dir(out_dir: Path) -> None:
    """Empty a previous run's folder (checkpoints would make the job resume, not train)."""
    if not out_dir.exists():
        return
    if paths.build_dir().resolve() not in out_dir.resolve().parents:
        raise ValueError(f"TrainSpec.out_dir={out_dir} already exists outside the build tree; "
                         f"pass fresh=False to resume from its checkpoints, or choose an empty folder")
    shutil.rmtree(out_dir)


def node_allocation(spec: TrainSpec, cl: SlurmCluster | None) -> tuple[int, str | None]:
    """Nodes the job spreads over, and the SSH key Horovod uses to reach them (DDP needs none).

    On the multi-node cluster (:mod:`hpcml.cluster.local`) the ranks spread over as many nodes as
    divide ``world_size`` evenly (one rank per node on the 2-node cluster), and Horovod starts the
    remote ranks over the cluster's sshd with its key. On the single-node cluster: one node, no SSH.
    """
    if cl is None or not cl.multi_node:
        return 1, None
    n = max(k for k in range(1, min(spec.world_size, len(cl.node_names)) + 1) if spec.world_size % k == 0)
    return n, (cl.layout.get("ssh_key") if spec.backend == "horovod" else None)


def _body(spec: TrainSpec, spec_path: Path, cl: SlurmCluster | None, key: str | None, env: dict[str, str] | None,
          redact: bool) -> str:
    """The batch script for ``spec`` (Gloo on the nodes' interface when the cluster is the multi-node one)."""
    from hpcml.cluster.fabric import NODE_IFACE

    bin_dir = Path(sys.executable).parent
    multi = cl is not None and cl.multi_node
    return slurm_body(spec, str(spec_path), python=sys.executable, horovodrun=str(bin_dir / "horovodrun"),
                      ssh_identity_file=key, env=env, redact_env=redact, torchrun=str(bin_dir / "torchrun"),
                      gloo_iface=NODE_IFACE if multi and spec.backend == "ddp" else None)


def worker_errors(output: str) -> list[dict[str, Any]]:
    """The worker error events (``HPCML-ERROR {...}``) in a job's output, each naming its
    ``host`` (the node) and ``rank``."""
    from hpcml.train.targets.local import parse_line

    return [ev for kind, ev in filter(None, map(parse_line, output.splitlines())) if kind == "error"]


def failure_message(spec: TrainSpec, res: Any) -> str:
    """What went wrong in a failed job: state, exit code, the first worker error with its
    node and rank (from the job's whole output), and the output tail."""
    text = ""
    for p in (res.stdout_path, res.stderr_path):
        if p is not None and Path(p).exists():
            text += Path(p).read_text(encoding="utf-8", errors="replace") + "\n"
    errs = worker_errors(text or res.output_tail)
    first = ""
    if errs:
        e = errs[0]
        first = f"; rank {e.get('rank', '?')} on node {e.get('host', '?')}: {e.get('message', e.get('error'))}"
    return (f"Slurm job {res.job_id} ({spec.name}) ended {res.state} with exit code {res.exit_code}"
            f"{' (' + res.reason + ')' if res.reason else ''}{first}; output tail:\n{res.output_tail}")


def launch_slurm(spec: TrainSpec, dry_run: bool | None, options: SlurmOptions) -> LaunchResult:
    """Submit the job with ``sbatch`` to the local Slurm cluster and wait for it (``dry_run``: the script).

    Raises:
        ValueError: an elastic spec (a Slurm allocation is fixed), or shards that do not
            match ``world_size`` (checked before queueing, not in the job).
        RuntimeError: the job did not complete (state, exit code, the first failed rank's node
            and error, and the output tail).
    """
    if spec.elastic:
        raise ValueError("TrainSpec.elastic=True is not supported by the slurm target (a Slurm allocation is "
                         "fixed); run elastic jobs with target='local' or set elastic=False")
    out_dir = spec.resolved_out_dir()
    spec_path = out_dir / "spec.json"
    cl = options.cluster
    env_exports(options.env)  # a bad name or value fails here, before a cluster starts
    if dry_run:
        body = _body(spec, spec_path, cl, node_allocation(spec, cl)[1], options.env, True)
        return LaunchResult("slurm", False, request=body, reason="dry run")
    shards.check_world_size(spec.resolved_dataset_dir(), spec.world_size)  # fail before a cluster starts
    if cl is None:
        from hpcml.cluster.slurm import daemons as slurm

        cl = slurm.ensure_cluster()
    nodes, key = node_allocation(spec, cl)
    body, shown = (_body(spec, spec_path, cl, key, options.env, r) for r in (False, True))
    if options.fresh:
        _fresh_out_dir(out_dir)
    paths.ensure(out_dir)
    spec.to_json(spec_path)
    res = cl.run_batch(body, name=f"train-{spec.name}", ntasks=spec.world_size,
                       cpus_per_task=spec.threads_per_worker, time_limit_min=options.time_limit_min,
                       timeout_s=options.timeout_s, workdir=out_dir,
                       sbatch_args=[f"--nodes={nodes}", f"--ntasks-per-node={spec.world_size // nodes}"])
    if not res.ok:
        raise RuntimeError(failure_message(spec, res))
    return LaunchResult("slurm", True, request=shown, job=res, metrics=read_run_metrics(out_dir))
