"""Elastic training across the cluster's nodes, side by side: Horovod elastic and torchrun elastic, one node lost.

:func:`elastic_side_by_side` puts the same node loss to both elastic stacks, one after the other,
on the same job (:func:`elastic_spec`: two workers, one shard each, down to one):

* Horovod elastic (:func:`horovod_elastic_run`): ``horovodrun --min-np 1 --max-np 2`` inside the
  first node, ranks over SSH, a host-discovery script of the nodes Slurm shows up. The survivor
  rolls back to its last in-memory commit and goes on in the same process.
* torchrun elastic (:func:`torchrun_elastic_run`): ``torchrun --nnodes=1:2 --max-restarts=3`` per
  node, the DDP backend, the c10d rendezvous on the first node. The survivor's agent sees its
  worker fail, closes a new rendezvous round with itself alone and starts a new worker, which
  resumes from the last checkpoint on disk.

The node lost is always the second (never the launcher's or the rendezvous host's): its processes
are killed (:func:`hpcml.cluster.drills.fence`) and, :data:`FIN_GRACE_S` later, its link cut, half
a checkpoint interval after the second checkpoint. Both jobs have the same collective timeout
(``gloo_timeout_s``), which bounds the wait where the peer's loss goes unseen. Each run records (:class:`ElasticRun`) the seconds from the loss until the
job re-formed with one worker and until its next checkpoint, and the steps done again (the step
reached at the loss, from the step rate, minus the step resumed from); torchrun's restart is split
into its phases from its agent's log (:func:`agent_phases`). Every wait is at most 60 s.
"""

from __future__ import annotations

import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from hpcml.cluster.drills import (MAX_WAIT_S, DrillError, discovery_script, drill_dataset, empty_run_dir, fence,
                                  horovod_elastic_command)
from hpcml.cluster.local import LocalCluster
from hpcml.report import Metric
from hpcml.train.spec import TrainSpec
from hpcml.train.targets.slurm import read_run_metrics

#: Seconds between killing the node's processes and cutting its link. Their TCP connections' FINs
#: reach the survivor, which sees the peer gone at once. Cut at the same instant, the FIN is
#: sometimes lost, and the survivor waits out the collective timeout instead: about 10 s
#: (Horovod's ``HOROVOD_GLOO_TIMEOUT_SECONDS``) or 60 s (DDP at its default) in our runs.
FIN_GRACE_S = 0.5

if TYPE_CHECKING:
    from hpcml.train.targets.local import LocalJob
    from hpcml.train.targets.nodes import NodesJob


@dataclass
class ElasticRun:
    """One elastic stack through the node loss (seconds from the loss: the victim's processes killed)."""

    backend: str  # horovod | ddp
    launcher: str  # how the job was started
    node_cut: str
    reset_s: float  # loss -> the job re-formed with one worker (its reset event)
    progress_s: float  # loss -> the first checkpoint written after the reset (training went on)
    step_s: float  # seconds per step with two workers, before the loss
    step_at_cut: float  # the step the job had reached at the loss (last checkpoint + elapsed / step_s)
    resumed_from_step: int  # the step the job went on from
    lost_steps: float  # step_at_cut - resumed_from_step: work done again
    final_world: int
    epochs_run: int
    test_accuracy: float
    total_s: float  # start -> end of the job
    timeline: list[tuple[float, int]] = field(default_factory=list)  # (s from the loss, step) of checkpoints/resets
    phases: dict[str, float] = field(default_factory=dict)  # torchrun: where reset_s went (from its agent's log)

    def as_dict(self) -> dict[str, Any]:
        d = {k: v for k, v in asdict(self).items() if k not in ("timeline", "phases")}
        return {**d, **{f"{k}_s": v for k, v in self.phases.items()}}


@dataclass
class ElasticComparison:
    """Both elastic stacks through the same node loss, in one comparable record."""

    runs: dict[str, ElasticRun]
    checkpoint_every: int
    cut_fraction: float  # the loss came this far into a checkpoint interval
    gloo_timeout_s: int  # the collective timeout of both runs (HOROVOD_GLOO_TIMEOUT_SECONDS, DDP's group timeout)

    def rows(self) -> list[dict[str, Any]]:
        """One row per stack (a table for the notebook)."""
        return [r.as_dict() for r in self.runs.values()]

    def metrics(self) -> list[Metric]:
        """``elastic_<backend>_*`` metrics for :func:`hpcml.report.record_all`."""
        out = [Metric("elastic_cmp_checkpoint_every", self.checkpoint_every, "steps",
                      "steps between checkpoints (and Horovod commits) in both runs"),
               Metric("elastic_cmp_cut_fraction", self.cut_fraction, "", "how far into a checkpoint interval the node was lost")]
        for b, r in self.runs.items():
            out += [Metric(f"elastic_{b}_reset_s", r.reset_s, "s", f"{r.launcher}: s after the node loss until the job "
                           "re-formed with one worker", True),
                    Metric(f"elastic_{b}_progress_s", r.progress_s, "s",
                           f"{r.launcher}: s after the node loss until the next checkpoint was written"),
                    Metric(f"elastic_{b}_lost_steps", r.lost_steps, "steps",
                           f"{r.launcher}: steps done again (reached at the loss, estimated, minus resumed from)"),
                    Metric(f"elastic_{b}_resumed_from_step", r.resumed_from_step, "step"),
                    Metric(f"elastic_{b}_final_world", r.final_world, "workers"),
                    Metric(f"elastic_{b}_test_accuracy", r.test_accuracy, "fraction"),
                    Metric(f"elastic_{b}_step_s", r.step_s, "s", "seconds per step with two workers")]
        return out

    def drill_metrics(self) -> list[Metric]:
        """The Horovod run under :class:`ElasticDrill`'s names (00's elastic drill, when this replaces it)."""
        r = self.runs["horovod"]
        return [Metric("elastic_reset_s", r.reset_s, "s", "s after the cut until the elastic job reset to the survivors"),
                Metric("elastic_world_after", 1, "workers", "workers after the reset"),
                Metric("elastic_final_world", r.final_world, "workers", "workers at the end of the job"),
                Metric("elastic_epochs_run", r.epochs_run, "epochs"),
                Metric("elastic_test_accuracy", r.test_accuracy, "fraction"),
                Metric("elastic_gloo_timeout_s", self.gloo_timeout_s, "s", "collective timeout of both jobs (Gloo)")]

    def plot(self, ax: Any = None) -> Any:
        """The step each job had reached against the seconds since the node loss (checkpoints and resets)."""
        import matplotlib.pyplot as plt

        ax = ax or plt.subplots(figsize=(7, 3.5))[1]
        for r in self.runs.values():
            t, step = zip(*r.timeline) if r.timeline else ((), ())
            ax.plot(t, step, marker=".", label=f"{r.launcher}: re-formed after {r.reset_s:.1f} s, "
                                                f"{r.lost_steps:.0f} steps done again")
        ax.axvline(0, color="k", lw=0.8, ls="--")
        ax.set(xlabel="seconds since the node was lost", ylabel="training step",
               title="Elastic training through the loss of one of two nodes")
        ax.legend(fontsize=8, loc="upper left")
        ax.figure.tight_layout()
        return ax


def elastic_spec(root: Path, backend: str, epochs: int = 6, checkpoint_every: int = 40,
                 timeout_s: int = 10) -> TrainSpec:
    """The elastic drills' job: two workers (one shard each), down to one; ``backend`` horovod or ddp.

    Both backends get the same collective timeout ``timeout_s`` (``comm_timeout_s``: Horovod's
    Gloo timeout, the DDP process group's), the longest a survivor waits for a silent peer.
    """
    ds = drill_dataset(root / "dataset-2", 2, 4096, seed=1)
    out = empty_run_dir(root / f"elastic-{backend}")
    return TrainSpec(name=f"elastic-{backend}", world_size=2, min_workers=1, elastic=True, epochs=epochs,
                     batch_size=16, width=16, lr=0.02, dataset_dir=str(ds), out_dir=str(out),
                     checkpoint_every=checkpoint_every, backend=backend, extra={"comm_timeout_s": timeout_s})


def _stamp(ev: dict) -> None:
    ev.setdefault("t", time.time())


def _through_node_loss(cl: LocalCluster, job: LocalJob | NodesJob, victim: str, checkpoint_every: int,
                       cut_after_checkpoints: int, cut_fraction: float, say: Callable[[str], None]) -> dict[str, float]:
    """Lose ``victim`` (fence, then cut its link) ``cut_fraction`` into a checkpoint interval; time the recovery.

    Every event must carry its arrival time ``t``. Returns the timings of :class:`ElasticRun`.
    """
    k = cut_after_checkpoints * checkpoint_every
    # both workers in (an elastic torchrun round may close before the second agent arrives; it then restarts to 2)
    formed = job.wait_for(lambda e: e.get("event") in ("start", "reset") and e.get("world_size") == 2, MAX_WAIT_S)
    ck_at = lambda e, s: e.get("event") == "checkpoint" and e["step"] >= s and e["t"] >= formed["t"]  # noqa: E731
    job.wait_for(lambda e: ck_at(e, k - checkpoint_every), MAX_WAIT_S)
    last = job.wait_for(lambda e: ck_at(e, k), MAX_WAIT_S)
    prev = [e for e in job.events if ck_at(e, 0) and e["step"] == last["step"] - checkpoint_every][-1]
    step_s = (last["t"] - prev["t"]) / checkpoint_every
    time.sleep(max(0.0, last["t"] + cut_fraction * checkpoint_every * step_s - time.time()))
    t_loss = time.time()
    fence(cl, victim)  # the node's processes die first (see elastic_drill), then its link goes
    time.sleep(FIN_GRACE_S)  # their closed connections reach the survivor: a crash, detected at once
    with cl.link_cut(victim):
        say(f"killed {victim}'s processes and cut its link at ~step {last['step'] + (t_loss - last['t']) / step_s:.0f}")
        reset = job.wait_for(lambda e: e.get("event") == "reset" and e.get("world_size") == 1, MAX_WAIT_S)
        say(f"the job re-formed with 1 worker {reset['t'] - t_loss:.1f} s after the loss, from step {reset['step']}")
    nxt = job.wait_for(lambda e: e.get("t", 0) > reset["t"] and e.get("event") == "checkpoint", MAX_WAIT_S)
    at_cut = last["step"] + (t_loss - last["t"]) / step_s
    return {"reset_s": reset["t"] - t_loss, "progress_s": nxt["t"] - t_loss, "step_s": step_s,
            "step_at_cut": at_cut, "resumed_from_step": int(reset["step"]), "lost_steps": at_cut - int(reset["step"]),
            "t_loss": t_loss}


def _timeline(events: list[dict], t_loss: float) -> list[tuple[float, int]]:
    return [(e["t"] - t_loss, int(e["step"])) for e in events if e.get("event") in ("checkpoint", "reset") and "t" in e]


#: torchrun agent log lines that mark the phases of a restart, in order.
AGENT_MARKS = {"failed": "Worker group FAILED", "rendezvous": "Rendezvous complete for workers",
               "workers_started": "Starting worker group"}


def _log_time(line: str) -> float | None:
    """Epoch seconds of a glog-style torch line (``I1205 06:08:06.139000 …``, this machine's local time)."""
    try:
        stamp = time.strptime(f"{time.localtime().tm_year}{line[1:5]} {line[6:14]}", "%Y%m%d %H:%M:%S")
        return time.mktime(stamp) + float("0" + line[14:21])
    except (ValueError, IndexError):
        return None


def agent_phases(log: Path, t_loss: float, t_reset: float) -> dict[str, float]:
    """Where a torchrun restart's time went: loss -> the agent saw its worker fail -> the new rendezvous
    closed -> the agent started the new worker -> the worker re-formed (its reset event), in seconds."""
    marks: dict[str, float] = {}
    for line in log.read_text(errors="replace").splitlines():
        t = _log_time(line)
        for name, text in AGENT_MARKS.items():
            if t is not None and t >= t_loss and text in line and name not in marks and \
                    (name == "failed" or "failed" in marks):
                marks[name] = t
    if len(marks) < len(AGENT_MARKS):
        return {}
    return {"detect": marks["failed"] - t_loss, "rendezvous": marks["rendezvous"] - marks["failed"],
            "worker_start": marks["workers_started"] - marks["rendezvous"],
            "worker_resume": t_reset - marks["workers_started"]}


def _run_record(backend: str, launcher: str, victim: str, timing: dict[str, float], m: dict[str, Any],
                total_s: float, events: list[dict]) -> ElasticRun:
    t_loss = timing.pop("t_loss")
    return ElasticRun(backend=backend, launcher=launcher, node_cut=victim, final_world=int(m["world_size"]),
                      epochs_run=int(m["epochs_run"]), test_accuracy=float(m["test_accuracy"]), total_s=total_s,
                      timeline=_timeline(events, t_loss), **timing)


def horovod_elastic_run(cl: LocalCluster, root: Path, epochs: int = 6, checkpoint_every: int = 40,
                        cut_after_checkpoints: int = 2, cut_fraction: float = 0.5, gloo_timeout_s: int = 10,
                        on_event: Callable[[str], None] | None = None) -> ElasticRun:
    """Horovod elastic (``horovodrun --min-np 1 --max-np 2`` over SSH) through the loss of the second node."""
    from hpcml.train.targets.local import start_local

    _two_nodes(cl)
    spec = elastic_spec(root, "horovod", epochs, checkpoint_every, gloo_timeout_s)
    victim = cl.plan.nodes[1].name
    command = horovod_elastic_command(cl, discovery_script(cl, Path(spec.out_dir) / "discover_hosts.sh"))
    t0 = time.time()
    job = start_local(spec, command=command, on_progress=_stamp,
                      env={"HOROVOD_GLOO_TIMEOUT_SECONDS": str(gloo_timeout_s)})
    try:
        timing = _through_node_loss(cl, job, victim, checkpoint_every, cut_after_checkpoints, cut_fraction,
                                    on_event or (lambda s: None))
        m = job.wait(MAX_WAIT_S)
    except (TimeoutError, RuntimeError) as exc:
        raise DrillError(f"the Horovod elastic run failed: {exc}; last events {job.events[-5:]}") from exc
    finally:
        job.kill()
    return _run_record("horovod", "horovodrun --min-np 1 --max-np 2", victim, timing, m, time.time() - t0, job.events)


def torchrun_elastic_run(cl: LocalCluster, root: Path, epochs: int = 6, checkpoint_every: int = 40,
                         cut_after_checkpoints: int = 2, cut_fraction: float = 0.5, gloo_timeout_s: int = 10,
                         on_event: Callable[[str], None] | None = None) -> ElasticRun:
    """torchrun elastic (``--nnodes=1:2 --max-restarts=3``, DDP) through the loss of the second node.

    The first node's agent hosts the rendezvous and is never the one lost.
    """
    from hpcml.train.targets import nodes
    from hpcml.train.targets.layout import WORKER_MODULE

    _two_nodes(cl)
    spec = elastic_spec(root, "ddp", epochs, checkpoint_every, gloo_timeout_s)
    hosts, victim = [n.name for n in cl.plan.nodes[:2]], cl.plan.nodes[1].name
    spec_path = Path(spec.out_dir) / "spec.json"
    spec.to_json(spec_path)
    t0 = time.time()
    job = nodes.start(cl, "ddp", hosts, 1, WORKER_MODULE, ["--spec", str(spec_path)], log_dir=Path(spec.out_dir) / "logs",
                      min_nodes=1, max_restarts=3)
    try:
        timing = _through_node_loss(cl, job, victim, checkpoint_every, cut_after_checkpoints, cut_fraction,
                                    on_event or (lambda s: None))
        job.wait(MAX_WAIT_S)
        phases = agent_phases(job.logs[hosts[0]], timing["t_loss"], timing["t_loss"] + timing["reset_s"])
    except (TimeoutError, RuntimeError) as exc:
        raise DrillError(f"the torchrun elastic run failed: {exc}; last events {job.events[-5:]}") from exc
    finally:
        job.kill()
    run = _run_record("ddp", "torchrun --nnodes=1:2 --max-restarts=3", victim, timing,
                      read_run_metrics(Path(spec.out_dir)), time.time() - t0, job.events)
    run.phases = phases
    return run


def _two_nodes(cl: LocalCluster) -> None:
    if cl.mode != "multi" or len(cl.plan.nodes) < 2:
        raise DrillError(f"the elastic drills need the multi-node cluster with at least 2 nodes ({cl.describe()})")


def elastic_side_by_side(cl: LocalCluster, root: Path, epochs: int = 6, checkpoint_every: int = 40,
                         cut_after_checkpoints: int = 2, cut_fraction: float = 0.5, gloo_timeout_s: int = 10,
                         on_event: Callable[[str], None] | None = None) -> ElasticComparison:
    """Horovod elastic, then torchrun elastic, through the same node loss at the same point of the same job.

    Raises:
        DrillError: a run did not re-form, progress or finish in time (each wait at most 60 s).
    """
    kw = dict(epochs=epochs, checkpoint_every=checkpoint_every, cut_after_checkpoints=cut_after_checkpoints,
              cut_fraction=cut_fraction, on_event=on_event)
    kw["gloo_timeout_s"] = gloo_timeout_s  # the same collective timeout for both
    runs = {"horovod": horovod_elastic_run(cl, root, **kw)}
    runs["ddp"] = torchrun_elastic_run(cl, root, **kw)  # torchrun needs the node's link only, not Slurm's idle
    return ElasticComparison(runs, checkpoint_every, cut_fraction, gloo_timeout_s)


def _main(argv: list[str] | None = None) -> int:
    import argparse
    import json

    from hpcml import paths
    from hpcml.cluster import local
    from hpcml.cluster.fabric import PREFIX, LocalClusterSpec

    ap = argparse.ArgumentParser(prog="python -m hpcml.cluster.elastic", description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--checkpoint-every", type=int, default=40)
    ap.add_argument("--name", default=PREFIX, help="the cluster's name (its running copy is reused)")
    ap.add_argument("--state-dir", type=Path, default=None)
    ap.add_argument("--root", type=Path, default=None, help="folder for the dataset and runs (default build/drill)")
    a = ap.parse_args(argv)
    cl = local.up(LocalClusterSpec(nodes=2, name=a.name), a.state_dir)
    t0 = time.time()
    try:
        cmp = elastic_side_by_side(cl, paths.ensure(a.root or paths.build_dir() / "drill"), epochs=a.epochs,
                                   checkpoint_every=a.checkpoint_every,
                                   on_event=lambda s: print(f"{time.time() - t0:6.1f} s  {s}", flush=True))
    finally:
        if cl.started_here:  # a cluster brought up for this measurement goes down with it
            local.down(cl.state_dir, prefix=a.name)
    print(json.dumps(cmp.rows(), indent=1, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(_main())
