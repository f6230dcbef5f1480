"""Node-failure drills on the local multi-node cluster, measured: a requeued job resumes, the node returns.

:func:`requeue_drill` runs a small checkpointing training job twice through ``sbatch``: once
undisturbed (the reference), once with ``--requeue`` while the drill cuts the link of the node it
runs on. The cut node is *fenced* at the same moment: the job's processes on it are killed, as a
STONITH action or an instance termination would, so the partitioned copy cannot go on writing
checkpoints beside the requeued one (the split brain a cut link alone would cause). Slurm marks
the node down after ``SlurmdTimeout``, requeues the job, starts it on the surviving node, where
it resumes from its last checkpoint; it must end with the reference's final metrics. The link
is restored (in a ``finally``) as soon as the job has moved, and ``ReturnToService=2`` brings the
node back to idle while the job finishes.

:func:`elastic_drill` runs a Horovod elastic job across two nodes, started by ``horovodrun`` inside
the first node over SSH, with a host-discovery script that lists the nodes Slurm shows up. It
cuts (and fences) the second node: the surviving rank's collective fails after Gloo's timeout, the
job resets to the hosts discovery still lists, goes on with one worker and finishes.

:mod:`hpcml.cluster.elastic` puts the same node loss to Horovod elastic and torchrun elastic, side by side.

Every wait has its own timeout of at most 60 s; a timeout raises :class:`DrillError` with what
Slurm showed, and the link is restored whatever happened.
"""

from __future__ import annotations

import dataclasses
import math
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from hpcml import paths
from hpcml.cluster import netns
from hpcml.cluster.local import LocalCluster
from hpcml.data.spec import MANIFEST
from hpcml.data.synthetic import write_contract_dataset
from hpcml.report import Metric
from hpcml.train import checkpoint as ck
from hpcml.train.spec import TrainSpec
from hpcml.train.targets.layout import slurm_body
from hpcml.train.targets.slurm import read_run_metrics

MAX_WAIT_S = 60.0


class DrillError(RuntimeError):
    """A drill step did not happen in time; the message says which, and what Slurm showed."""


@dataclass
class RequeueDrill:
    """What the requeue drill measured (times in seconds from the cut unless said otherwise)."""

    node_cut: str
    survivor: str
    detect_s: float  # cut -> slurmctld shows the node down
    requeue_s: float  # cut -> the job runs again, on the survivor
    resume_s: float  # cut -> the restarted job is running again (Slurm's StartTime of the new run)
    return_s: float  # link restored -> the node is idle again (ReturnToService)
    checkpoint_every: int
    step_s: float  # seconds per training step in the reference run
    last_checkpoint_step: int  # the step the job resumed from
    lost_s: float  # compute since that checkpoint, lost with the node
    lost_steps: float  # the same in steps (lost_s / step_s)
    restarts: int
    checkpoint_write_s: float  # mean seconds per checkpoint write in the reference run
    reference: dict[str, float] = field(default_factory=dict)
    drilled: dict[str, float] = field(default_factory=dict)
    max_abs_diff: float = math.nan
    timeline: list[tuple[float, str]] = field(default_factory=list)

    @property
    def interval_s(self) -> float:
        """Seconds of training between two checkpoints."""
        return self.checkpoint_every * self.step_s

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def metrics(self) -> list[Metric]:
        """The drill's numbers as ``drill_*`` metrics for :func:`hpcml.report.record_all`."""
        since = "s after the link was cut"
        return [
            Metric("drill_detect_s", self.detect_s, "s", f"{since} until slurmctld marked the node down"),
            Metric("drill_requeue_s", self.requeue_s, "s", f"{since} until the requeued job ran on the survivor", True),
            Metric("drill_return_s", self.return_s, "s", "s after the link came back until the node was idle"),
            Metric("drill_lost_s", self.lost_s, "s", "training time since the last checkpoint, lost with the node"),
            Metric("drill_lost_steps", self.lost_steps, "steps", "the same in steps"),
            Metric("drill_max_abs_diff", self.max_abs_diff, "", "largest |drilled - reference| over the final metrics"),
            Metric("drill_step_s", self.step_s, "s", "seconds per step in the reference run"),
            Metric("drill_checkpoint_write_s", self.checkpoint_write_s, "s", "mean checkpoint write"),
            Metric("drill_interval_s", self.interval_s, "s", "training seconds between two checkpoints"),
            Metric("drill_checkpoint_every", self.checkpoint_every, "steps"),
            Metric("drill_resumed_from_step", self.last_checkpoint_step, "step"),
            Metric("drill_restarts", self.restarts, "", "times Slurm restarted the job"),
        ]


FINAL_KEYS = ("test_accuracy", "test_loss", "val_accuracy", "train_loss", "steps", "epochs_run")


def drill_dataset(ds: Path, n_shards: int, rows: int, seed: int) -> Path:
    """The drills' synthetic dataset at ``ds``, written once (``rows`` train rows, an eighth each for val/test)."""
    if not (ds / MANIFEST).exists():
        write_contract_dataset(ds, n_shards=n_shards, rows=(rows, rows // 8, rows // 8), seed=seed)
    return ds


def empty_run_dir(folder: Path) -> Path:
    """``folder``, emptied of an earlier drill's run (checkpoints there would make the job resume)."""
    if folder.exists():
        shutil.rmtree(folder)
    return paths.ensure(folder)


def drill_spec(root: Path, epochs: int = 4, checkpoint_every: int = 40, rows: int = 4096, seed: int = 0) -> TrainSpec:
    """A one-rank CNN job on a synthetic one-shard dataset (written under ``root``), checkpointing often."""
    ds = drill_dataset(root / "dataset", 1, rows, seed)
    return TrainSpec(name="drill", world_size=1, epochs=epochs, batch_size=16, width=16, lr=0.02, seed=seed,
                     dataset_dir=str(ds), checkpoint_every=checkpoint_every)


def _submit(cl: LocalCluster, spec: TrainSpec, out_dir: Path, name: str, requeue: bool) -> str:
    empty_run_dir(out_dir)
    spec = dataclasses.replace(spec, out_dir=str(out_dir))
    spec_path = out_dir / "spec.json"
    spec.to_json(spec_path)
    bin_dir = Path(sys.executable).parent
    body = slurm_body(spec, str(spec_path), python=sys.executable, horovodrun=str(bin_dir / "horovodrun"),
                      ssh_identity_file=cl.slurm.layout.get("ssh_key"))
    args = ["--nodes=1", "--ntasks-per-node=1"] + (["--requeue"] if requeue else ["--no-requeue"])
    return cl.slurm.submit(body, name=name, ntasks=1, time_limit_min=10, workdir=out_dir, sbatch_args=args)


def _until(cond: Callable[[], Any], what: str, show: Callable[[], Any], timeout_s: float = MAX_WAIT_S) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        got = cond()
        if got:
            return got
        time.sleep(0.2)
    raise DrillError(f"{what} did not happen within {timeout_s:g}s; Slurm shows {show()}")


def _job(cl: LocalCluster, job_id: str) -> dict[str, str]:
    recs = cl.slurm.job_records(job_id)
    return recs[0] if recs else {}


def fence(cl: LocalCluster, node: str) -> list[int]:
    """Kill every process in ``node`` but its slurmd and sshd listener (the job dies with the node)."""
    keep = {p for p in cl.slurm.daemon_pids().values() if p} | set(cl.sshd_pids.values())
    victims = [p for p in netns.pids_in(cl.plan.node(node).netns) if p not in keep]
    netns.kill_all(victims, grace_s=0.0)  # SIGKILL at once: a dead node gives no SIGTERM notice
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(netns.alive(p) for p in victims):
        time.sleep(0.02)
    return victims


def _ckpt_step_and_time(ckpt_dir: Path) -> tuple[int, float] | None:
    latest = ck.latest_checkpoint(ckpt_dir)
    if latest is None:
        return None
    return ck.load_checkpoint(latest)["step"], latest.stat().st_mtime


def requeue_drill(cl: LocalCluster, root: Path, epochs: int = 4, checkpoint_every: int = 40,
                  cut_after_checkpoints: int = 2, on_event: Callable[[str], None] | None = None) -> RequeueDrill:
    """Reference run, then the same job with ``--requeue`` and its node's link cut mid-run.

    Args:
        cl: a multi-node cluster with at least two nodes.
        root: a folder for the dataset and both runs.
        cut_after_checkpoints: cut once this many checkpoints exist (mid-run, with work to lose).
        on_event: called with each step of the drill as it happens (progress).

    Raises:
        DrillError: a step did not happen within 60 s, or the resumed run's metrics differ.
    """
    if cl.mode != "multi" or len(cl.plan.nodes) < 2:
        raise DrillError("the requeue drill needs the multi-node cluster with at least 2 nodes "
                         f"(this is the {cl.describe()})")
    say = on_event or (lambda s: None)
    spec = drill_spec(root, epochs=epochs, checkpoint_every=checkpoint_every)
    ref_dir, run_dir = root / "reference", root / "drilled"
    show = lambda: cl.slurm.node_states()  # noqa: E731
    # the reference (the same job, undisturbed) and the drilled job start together, one per node; the
    # reference ends long before the requeued job needs its node
    ref_id = _submit(cl, spec, ref_dir, "drill-ref", requeue=False)
    job_id = _submit(cl, spec, run_dir, "drill", requeue=True)
    ckpt_dir = run_dir / "checkpoints"
    _until(lambda: _job(cl, job_id).get("JobState") == "RUNNING", "the drill job starting", show)
    victim = _job(cl, job_id)["NodeList"]
    say(f"reference job {ref_id} and drilled job {job_id} (on {victim}) running")
    _until(lambda: (_ckpt_step_and_time(ckpt_dir) or (0, 0))[0] >= cut_after_checkpoints * checkpoint_every,
           f"checkpoint {cut_after_checkpoints} of the drill job", show)
    timeline: list[tuple[float, str]] = []
    with cl.link_cut(victim) as t_cut:
        fence(cl, victim)
        last = _ckpt_step_and_time(ckpt_dir)
        lost_s = t_cut - last[1]
        timeline.append((0.0, f"link of {victim} cut, its processes fenced"))
        say(f"cut {victim}'s link at checkpoint step {last[0]}")
        _until(lambda: cl.slurm.node_states().get(victim, "").startswith("down"), f"{victim} marked down", show)
        detect_s = time.time() - t_cut
        timeline.append((detect_s, f"slurmctld marks {victim} down"))
        say(f"{victim} down after {detect_s:.1f} s")

        def moved() -> bool:
            j = _job(cl, job_id)
            return j.get("JobState") == "RUNNING" and j.get("NodeList") not in ("", victim)

        _until(moved, "the requeued job running on a surviving node", lambda: (_job(cl, job_id), show()))
        survivor = _job(cl, job_id)["NodeList"]
        requeue_s = time.time() - t_cut
        timeline.append((requeue_s, f"job requeued and running on {survivor}"))
        start = _job(cl, job_id).get("StartTime", "")
        try:
            resume_s = time.mktime(time.strptime(start, "%Y-%m-%dT%H:%M:%S")) - t_cut
        except ValueError:
            resume_s = requeue_s
    t_restore = time.time()
    res = cl.slurm.wait(ref_id, timeout_s=MAX_WAIT_S)
    if not res.ok:
        raise DrillError(f"the reference run ended {res.state}: {res.output_tail[-800:]}")
    ref = read_run_metrics(ref_dir)
    step_s = ref["time_split"]["train_s"] / max(ref["steps"], 1)
    timeline.append((t_restore - t_cut, f"link of {victim} restored"))
    say(f"job running on {survivor} {requeue_s:.1f} s after the cut; link restored")
    res = cl.slurm.wait(job_id, timeout_s=MAX_WAIT_S)
    timeline.append((time.time() - t_cut, f"requeued job ends {res.state}"))
    if not res.ok:
        raise DrillError(f"the requeued job ended {res.state}: {res.output_tail[-800:]}")
    _until(lambda: cl.slurm.node_states().get(victim) == "idle", f"{victim} back to idle (ReturnToService)", show)
    return_s = time.time() - t_restore
    timeline.append((time.time() - t_cut, f"{victim} idle again"))
    got = read_run_metrics(run_dir)
    diff = max(abs(float(got[k]) - float(ref[k])) for k in FINAL_KEYS)
    rec = _job(cl, job_id)
    return RequeueDrill(node_cut=victim, survivor=survivor, detect_s=detect_s, requeue_s=requeue_s,
                        resume_s=resume_s, return_s=return_s, checkpoint_every=checkpoint_every, step_s=step_s,
                        last_checkpoint_step=int(got.get("resumed_from_step") or -1), lost_s=lost_s,
                        lost_steps=lost_s / step_s, restarts=int(rec.get("Restarts", 0)),
                        checkpoint_write_s=ref["checkpoint_writes"]["seconds_total"] / ref["checkpoint_writes"]["count"],
                        reference={k: float(ref[k]) for k in FINAL_KEYS},
                        drilled={k: float(got[k]) for k in FINAL_KEYS}, max_abs_diff=diff, timeline=timeline)


@dataclass
class ElasticDrill:
    """What the elastic drill measured (seconds from the cut)."""

    node_cut: str
    reset_s: float  # cut -> the job reset to the survivors
    world_after: int  # workers right after the reset
    final_world: int  # workers at the end (the node may have come back and rejoined)
    epochs_run: int
    test_accuracy: float
    gloo_timeout_s: int
    events: list[dict] = field(default_factory=list)

    def metrics(self) -> list[Metric]:
        return [Metric("elastic_reset_s", self.reset_s, "s", "s after the cut until the elastic job reset to the survivors"),
                Metric("elastic_world_after", self.world_after, "workers", "workers after the reset"),
                Metric("elastic_final_world", self.final_world, "workers", "workers at the end of the job"),
                Metric("elastic_epochs_run", self.epochs_run, "epochs"),
                Metric("elastic_test_accuracy", self.test_accuracy, "fraction"),
                Metric("elastic_gloo_timeout_s", self.gloo_timeout_s, "s", "HOROVOD_GLOO_TIMEOUT_SECONDS of the job")]


def discovery_script(cl: LocalCluster, path: Path, slots: int = 1) -> Path:
    """A host-discovery script that lists, ``name:slots`` per line, the nodes Slurm shows usable now."""
    sinfo = Path(netns.which("sinfo") or "/usr/bin/sinfo")
    text = (f"#!/bin/sh\n# hpcml: the nodes slurmctld shows idle/mix/alloc, {slots} slot(s) each\n"
            f"SLURM_CONF={cl.slurm.conf_path} {sinfo} -h -N -o '%N %t' | "
            f"awk '$2 ~ /^(idle|mix|alloc|comp)$/ {{print $1\":{slots}\"}}'\n")
    paths.atomic_write_text(path, text)
    path.chmod(0o755)
    return path


def horovod_elastic_command(cl: LocalCluster, discovery: Path) -> Callable[[Path], list[str]]:
    """``horovodrun --min-np 1 --max-np 2`` with ``discovery``, inside the first node, for a spec JSON's path."""
    launcher = cl.plan.nodes[0].name
    hvd = str(Path(sys.executable).parent / "horovodrun")

    def command(spec_path: Path) -> list[str]:
        return cl.node_argv(launcher, [hvd, "-np", "2", "--min-np", "1", "--max-np", "2",
                                       "--host-discovery-script", str(discovery), "--network-interface", "eth1",
                                       "--ssh-identity-file", str(cl.key), "--start-timeout", "30", "--gloo",
                                       sys.executable, "-m", "hpcml.train.worker", "--spec", str(spec_path)], pin=False)

    return command


def elastic_drill(cl: LocalCluster, root: Path, epochs: int = 6, checkpoint_every: int = 40,
                  gloo_timeout_s: int = 10, cut_after_checkpoints: int = 2,
                  on_event: Callable[[str], None] | None = None) -> ElasticDrill:
    """Horovod elastic over two nodes; cut one; the job goes on with the survivor and finishes.

    Raises:
        DrillError: the job did not reset or finish in time (each wait at most 60 s), or failed.
    """
    from hpcml.train.targets.local import start_local

    if cl.mode != "multi" or len(cl.plan.nodes) < 2:
        raise DrillError(f"the elastic drill needs the multi-node cluster with at least 2 nodes ({cl.describe()})")
    say = on_event or (lambda s: None)
    ds = drill_dataset(root / "dataset-2", 2, 4096, seed=1)
    out = empty_run_dir(root / "elastic")
    spec = TrainSpec(name="elastic-drill", world_size=2, min_workers=1, elastic=True, epochs=epochs, batch_size=16,
                     width=16, lr=0.02, dataset_dir=str(ds), out_dir=str(out), checkpoint_every=checkpoint_every)
    command = horovod_elastic_command(cl, discovery_script(cl, out / "discover_hosts.sh"))
    job = start_local(spec, command=command, env={"HOROVOD_GLOO_TIMEOUT_SECONDS": str(gloo_timeout_s)})
    try:
        job.wait_for(lambda e: e.get("event") == "start", MAX_WAIT_S)
        # never the launcher's node (the driver would die with it); rank 0 may be on the victim
        victim = cl.plan.nodes[1].name
        job.wait_for(lambda e: e.get("event") == "checkpoint" and e["step"] >= cut_after_checkpoints * checkpoint_every,
                     MAX_WAIT_S)
        # the node's processes die first (their sockets close, so the survivor's Gloo sees it at
        # once), then its link goes. Cut first, Horovod 0.28.1 hangs: the survivor's Gloo recv
        # times out in the background loop ("uncaught exception") and never reaches the elastic reset.
        fence(cl, victim)
        with cl.link_cut(victim) as t_cut:
            say(f"killed {victim}'s processes and cut its link during the elastic job")
            job.wait_for(lambda e: e.get("event") == "reset" and e.get("world_size") == 1, MAX_WAIT_S)
            reset_s = time.time() - t_cut
            say(f"the job reset to 1 worker {reset_s:.1f} s after the cut")
        m = job.wait(MAX_WAIT_S)  # the rest of the training, in one worker
    except (TimeoutError, RuntimeError) as exc:
        raise DrillError(f"the elastic drill failed: {exc}; last events {job.events[-5:]}") from exc
    finally:
        job.kill()
    # the node comes back by itself (ReturnToService), as the requeue drill measured; nothing waits for it
    return ElasticDrill(node_cut=victim, reset_s=reset_s, world_after=1, final_world=int(m["world_size"]),
                        epochs_run=int(m["epochs_run"]), test_accuracy=float(m["test_accuracy"]),
                        gloo_timeout_s=gloo_timeout_s,
                        events=[e for e in job.events if e.get("event") in ("reset", "checkpoint", "epoch")][-20:])
