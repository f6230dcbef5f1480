"""The ``local`` target: a TrainSpec under ``horovodrun`` (Gloo) or ``torchrun`` on this machine.

:func:`run_local` checks the shards, writes the spec JSON next to the run, starts
``horovodrun -np N -H localhost:N --gloo python -m hpcml.train.worker --spec …``
(``spec.backend == "horovod"``) or ``torchrun --standalone --nproc-per-node N -m
hpcml.train.worker --spec …`` (``"ddp"``; the venv's launchers, next to ``sys.executable``)
in its own process group, streams rank 0's progress lines, enforces a timeout and returns
the parsed final metrics;
:func:`start_local` starts the same job in the background (:class:`LocalJob`: wait for an
event, kill a worker, kill the job). :func:`launch_local` is the registry's launcher. A job
whose ranks checkpointed and stopped on SIGTERM raises :class:`TrainJobPreempted` under either
launcher (both exit 1, not the ranks' 143).

Elastic DDP runs under ``torchrun --max-restarts K`` (``spec.extra["max_restarts"]``, default
3): after a failure the agent restarts every worker, which resumes from the latest checkpoint.
Elastic Horovod runs get a host-discovery script. Horovod blacklists the *host* of a failed
worker, so on one machine the slots are listed under two local names (``localhost``
and ``127.0.0.1``, both loopback): killing a worker blacklists only its alias and the
job continues on the survivors.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from hpcml import paths
from hpcml.train import shards
from hpcml.train.spec import TrainSpec
from hpcml.train.targets.layout import WORKER_MODULE
from hpcml.train.targets.result import LaunchResult
from hpcml.train.worker import ERROR_PREFIX, PREFIX


class TrainJobError(RuntimeError):
    """The training job failed; ``.events`` holds the worker error lines (parsed: each names
    its ``host`` and ``rank``)."""

    def __init__(self, message: str, events: list[dict] | None = None, returncode: int | None = None):
        super().__init__(message)
        self.events = events or []
        self.returncode = returncode


class TrainJobPreempted(TrainJobError):
    """Every rank checkpointed and stopped on a signal (a Spot notice, a pod deletion, ``scancel``):
    nothing is wrong with the job; run the same spec again and it resumes from ``checkpoint``.

    Raised whichever launcher ran the ranks, from rank 0's ``preempted`` event, because the
    launchers hide it: each rank exits with :data:`hpcml.train.worker.EXIT_PREEMPTED` (143), but
    ``horovodrun`` and ``torchrun``'s agent both exit 1 for any failed rank and name the 143 only
    in their logs. ``returncode`` is the launcher's own; ``step`` and ``checkpoint`` are where it
    stopped.
    """

    def __init__(self, event: dict, returncode: int | None, log_path: Path):
        super().__init__(f"preempted: every rank stopped on {event.get('signal', 'a signal')} after step "
                         f"{event.get('step')} with the checkpoint {event.get('checkpoint')} written; run the "
                         f"same spec again to resume (launcher exit {returncode}; log: {log_path})",
                         [event], returncode)
        self.step, self.checkpoint = event.get("step"), event.get("checkpoint")


def horovodrun_path() -> Path:
    """The ``horovodrun`` of this interpreter's environment."""
    p = Path(sys.executable).parent / "horovodrun"
    if not p.exists():
        raise FileNotFoundError(f"horovodrun not found next to {sys.executable}: install horovod[pytorch] into "
                                "this environment (ci/build_horovod builds Horovod 0.28.1 against its PyTorch; "
                                "ci/setup runs it)")
    return p


def torchrun_path() -> Path:
    """The ``torchrun`` of this interpreter's environment (it runs ``-m`` with this interpreter)."""
    p = Path(sys.executable).parent / "torchrun"
    if not p.exists():
        raise FileNotFoundError(f"torchrun not found next to {sys.executable}: install torch into this environment")
    return p


#: Seconds torchrun's rendezvous waits for its nodes before it fails.
RDZV_JOIN_TIMEOUT_S = 60


def torchrun_command(spec: TrainSpec, spec_path: Path, module: str = WORKER_MODULE,
                     module_args: list[str] | None = None) -> list[str]:
    """``torchrun --standalone --nproc-per-node N`` (elastic: ``--max-restarts K``) for ``spec``."""
    cmd = [str(torchrun_path()), "--standalone", "--nproc-per-node", str(spec.world_size),
           "--rdzv-conf", f"join_timeout={RDZV_JOIN_TIMEOUT_S}"]
    if spec.elastic:
        cmd += ["--max-restarts", str(int(spec.extra.get("max_restarts", 3)))]
    cmd += ["-m", module]
    return cmd + (module_args if module_args is not None else ["--spec", str(spec_path)])


def discovery_script(path: Path, slots: int) -> Path:
    """Write an executable host-discovery script listing ``slots`` local slots (two aliases)."""
    lines = ["#!/bin/sh", "# hpcml: local slots under two loopback names (one blacklistable alias each)"]
    if slots == 1:
        lines.append("echo localhost:1")
    else:
        lines += [f"echo localhost:{slots - 1}", "echo 127.0.0.1:1"]
    paths.atomic_write_text(path, "\n".join(lines) + "\n")
    path.chmod(0o755)
    return path


def build_command(spec: TrainSpec, spec_path: Path, discovery: Path | None = None,
                  module: str = WORKER_MODULE, module_args: list[str] | None = None) -> list[str]:
    """The launcher argv for ``spec``: horovodrun (elastic when ``discovery`` is given), or
    :func:`torchrun_command` when ``spec.backend == "ddp"``.

    Args:
        spec: the job.
        spec_path: the spec JSON the workers read.
        discovery: the host-discovery script of an elastic job.
        module: the module each rank runs (the benchmarks run their own).
        module_args: its arguments (default ``--spec spec_path``).
    """
    if spec.backend == "ddp":
        return torchrun_command(spec, spec_path, module, module_args)
    n = spec.world_size
    cmd = [str(horovodrun_path()), "-np", str(n)]
    if discovery is not None:
        cmd += ["--min-np", str(spec.min_workers), "--max-np", str(n),
                "--host-discovery-script", str(discovery), "--network-interface", "lo"]
    else:
        cmd += ["-H", f"localhost:{n}"]
    cmd += ["--gloo", sys.executable, "-m", module]
    return cmd + (module_args if module_args is not None else ["--spec", str(spec_path)])


def parse_line(line: str) -> tuple[str, dict] | None:
    """('progress'|'error', event) from one horovodrun output line, else None."""
    for kind, prefix in (("error", ERROR_PREFIX), ("progress", PREFIX)):
        i = line.find(prefix)
        if i >= 0:
            try:
                return kind, json.loads(line[i + len(prefix):])
            except ValueError:
                return None
    return None


@dataclass
class LocalJob:
    """A running horovodrun or torchrun job (its own process group)."""

    spec: TrainSpec
    proc: subprocess.Popen
    log_path: Path
    events: list[dict] = field(default_factory=list)
    errors: list[dict] = field(default_factory=list)
    on_progress: Callable[[dict], None] | None = None
    _reader: threading.Thread | None = None

    def _pump(self) -> None:
        with open(self.log_path, "a", encoding="utf-8") as log:
            for line in self.proc.stdout:  # type: ignore[union-attr]
                log.write(line)
                log.flush()
                parsed = parse_line(line)
                if parsed is None:
                    continue
                kind, ev = parsed
                (self.errors if kind == "error" else self.events).append(ev)
                if kind == "progress" and self.on_progress is not None:
                    self.on_progress(ev)

    def wait_for(self, pred: Callable[[dict], bool], timeout_s: float) -> dict:
        """Block until a progress event satisfies ``pred``; returns it."""
        deadline = time.monotonic() + timeout_s
        seen = 0
        while time.monotonic() < deadline:
            for ev in self.events[seen:]:
                if pred(ev):
                    return ev
            seen = len(self.events)
            if self.proc.poll() is not None and seen == len(self.events):
                raise TrainJobError(f"job exited ({self.proc.returncode}) before the awaited event; "
                                    f"log: {self.log_path}", self.errors, self.proc.returncode)
            time.sleep(0.05)
        raise TimeoutError(f"no matching event within {timeout_s} s; log: {self.log_path}")

    def log_tail(self, chars: int = 1500) -> str:
        """The last ``chars`` characters of the job's log."""
        return self.log_path.read_text(encoding="utf-8", errors="replace")[-chars:]

    def worker_pid(self, rank: int) -> int:
        return int((self.spec.resolved_out_dir() / "pids" / f"rank-{rank}.pid").read_text())

    def kill_worker(self, rank: int, sig: int = signal.SIGKILL) -> int:
        """Kill one worker process (fault injection); returns its pid."""
        pid = self.worker_pid(rank)
        os.kill(pid, sig)
        return pid

    def kill(self) -> None:
        """Kill the whole job (horovodrun and every worker: its process group)."""
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait()
        if self._reader:
            self._reader.join(timeout=5)

    def wait(self, timeout_s: float) -> dict[str, Any]:
        """Wait for the end; returns the metrics JSON or raises TrainJobPreempted (the ranks
        checkpointed and stopped on a signal), TrainJobError or TimeoutError."""
        try:
            self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()
            raise TimeoutError(f"training job {self.spec.name} exceeded {timeout_s} s and was killed; "
                               f"log: {self.log_path}") from None
        if self._reader:
            self._reader.join(timeout=10)
        preempted = [e for e in self.events if e.get("event") == "preempted"]
        if preempted and self.proc.returncode != 0:
            raise TrainJobPreempted(preempted[-1], self.proc.returncode, self.log_path)
        if self.errors:
            e = self.errors[0]
            where = f" (rank {e.get('rank', '?')} on node {e['host']})" if "host" in e else ""
            raise TrainJobError(f"{e.get('message', str(e))}{where}; last log lines ({self.log_path}):\n"
                                f"{self.log_tail()}", self.errors, self.proc.returncode)
        metrics = self.spec.resolved_out_dir() / "metrics.json"
        if self.proc.returncode != 0 or not metrics.exists():
            launcher = Path(self.proc.args[0]).name if isinstance(self.proc.args, list) else "the launcher"
            raise TrainJobError(f"{launcher} exited with {self.proc.returncode} on node {socket.gethostname()}; "
                                f"log {self.log_path}:\n{self.log_tail(3000)}", self.errors, self.proc.returncode)
        return json.loads(metrics.read_text(encoding="utf-8"))


def start_local(spec: TrainSpec, on_progress: Callable[[dict], None] | None = None,
                env: dict[str, str] | None = None, module: str = WORKER_MODULE,
                module_args: list[str] | None = None, check_data: bool = True,
                command: Callable[[Path], list[str]] | None = None) -> LocalJob:
    """Start ``spec`` under its backend's launcher in the background (elastic if ``spec.elastic``).

    Args:
        spec: the job.
        on_progress: called with each progress event rank 0 prints.
        env: extra environment of the job (on top of this process's).
        module: the module each rank runs.
        module_args: its arguments (default ``--spec <out_dir>/spec.json``).
        check_data: check the shards against ``world_size`` first.
        command: builds the argv from the spec JSON's path, instead of :func:`build_command`
            (the multi-node cluster's elastic drill starts horovodrun inside a node, over SSH).
    """
    if check_data:
        shards.check_world_size(spec.resolved_dataset_dir(), spec.world_size, elastic=spec.elastic)
    out = paths.ensure(spec.resolved_out_dir())
    spec_path = out / "spec.json"
    spec.to_json(spec_path)
    if command is not None:
        cmd = command(spec_path)
    else:
        elastic_hvd = spec.elastic and spec.backend == "horovod"
        disc = discovery_script(out / "discover_hosts.sh", spec.world_size) if elastic_hvd else None
        cmd = build_command(spec, spec_path, disc, module=module, module_args=module_args)
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    log_path = out / ("torchrun.log" if spec.backend == "ddp" else "horovodrun.log")
    log_path.write_text(" ".join(cmd) + "\n", encoding="utf-8")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
                            env=full_env, cwd=str(out), start_new_session=True)
    job = LocalJob(spec, proc, log_path, on_progress=on_progress)
    job._reader = threading.Thread(target=job._pump, daemon=True)
    job._reader.start()
    return job


def print_progress(ev: dict) -> None:
    """Default progress printer: one compact line per epoch / checkpoint / reset."""
    if ev.get("event") == "epoch":
        print(f"epoch {ev['epoch']}: loss {ev['loss']:.4f}  val_acc {ev['val_accuracy']:.4f}  "
              f"{ev['samples_per_s']:.0f} samples/s  (world {ev['world_size']})", flush=True)
    elif ev.get("event") in ("reset", "start"):
        print(json.dumps(ev), flush=True)


def run_local(spec: TrainSpec, timeout_s: float = 900, on_progress: Callable[[dict], None] | None = print_progress,
              env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run ``spec`` to the end and return its final metrics (see ``worker.Trainer.finish``).

    Raises:
        FileNotFoundError / ValueError: missing shards or world size != shard count.
        TrainJobError: a worker failed (NaN loss, corrupt checkpoint …) — the message is
            the worker's own.
        TimeoutError: the job ran past ``timeout_s`` (it is killed).
    """
    job = start_local(spec, on_progress=on_progress, env=env)
    try:
        return job.wait(timeout_s)
    finally:
        job.kill()


@dataclass(frozen=True)
class LocalOptions:
    """Options of the ``local`` target (:func:`run_local`'s).

    Attributes:
        timeout_s: kill the job after this long.
        on_progress: called with each progress event (default: one printed line per epoch).
        env: extra environment variables of the job.
    """

    timeout_s: float = 900
    on_progress: Callable[[dict], None] | None = print_progress
    env: dict[str, str] | None = None


def launch_local(spec: TrainSpec, dry_run: bool | None, options: LocalOptions) -> LaunchResult:
    """Run ``spec`` here under horovodrun (always, unless ``dry_run``: then only its argv)."""
    spec_path = spec.resolved_out_dir() / "spec.json"
    if dry_run:
        return LaunchResult("local", False, request=build_command(spec, spec_path), reason="dry run")
    metrics = run_local(spec, timeout_s=options.timeout_s, on_progress=options.on_progress, env=options.env)
    return LaunchResult("local", True, request=build_command(spec, spec_path), metrics=metrics)
