"""The daemons of a real Slurm cluster on this machine: munged + slurmctld + a slurmd per node.

One node (this machine, on loopback) by default; the multi-node cluster of
:mod:`hpcml.cluster.local` writes ``nodes.json`` beside ``slurm.conf`` and each node's slurmd then
runs in that node's network namespace.

The configuration is generated under ``build/slurm`` (``hpcml.paths``) from what
``slurmd -C`` reports about this node (CPUs, sockets, cores, memory), with one partition
and ``SelectType=select/cons_tres``. Every path the daemons use (munge key and socket,
pid files, logs, state save location, spool) lives in that state directory, and the
ports are chosen free on 127.0.0.1 at a cold start, so several clusters (one per build
tree) never collide with each other or with a system Slurm. Client commands find the
configuration through ``SLURM_CONF`` (:meth:`SlurmCluster.env`).

The configuration text comes from :mod:`hpcml.cluster.slurm.conf` and the job records are
read by :mod:`hpcml.cluster.slurm.jobs`; this module starts, watches and stops the daemons
and submits jobs.

Example:
    >>> from hpcml.cluster.slurm import daemons
    >>> daemons.available()          # None when usable, else what to install
    >>> cl = daemons.ensure_cluster()  # starts it, or reuses the running one
    >>> res = cl.run_batch("echo hello from $SLURM_JOB_ID", name="hello")
    >>> res.state, res.exit_code, res.output_tail
    >>> cl.stop()                  # only if cl.started_here

On AWS ParallelCluster the same ``sbatch`` scripts run unchanged; only the partition
and node definitions come from the cluster's own ``slurm.conf``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import re
import time
import uuid
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Sequence

from hpcml import paths
from hpcml.cluster.fabric import PREFIX, RUN_ROOT
from hpcml.cluster.slurm.conf import batch_script, parse_node_config, render_slurm_conf
from hpcml.cluster.slurm.jobs import (TERMINAL_STATES, JobResult, TaskOutput, parse_scontrol_records, summarize_job,
                                      task_tag)
from hpcml.proc import SEARCH_PATH, free_port, missing_packages, pid_alive, tail, which

#: daemon/client -> Debian package that ships it (the metapackage ``slurm-wlm`` pulls all Slurm ones).
PACKAGES = {
    "munged": "munge", "munge": "munge",
    "slurmctld": "slurm-wlm", "slurmd": "slurm-wlm", "sbatch": "slurm-wlm", "sinfo": "slurm-wlm",
    "squeue": "slurm-wlm", "scontrol": "slurm-wlm", "scancel": "slurm-wlm", "srun": "slurm-wlm",
}
DAEMONS = ("munged", "slurmctld", "slurmd")


class SlurmUnavailable(RuntimeError):
    """Slurm cannot run here; the message names the missing Debian package."""


class SlurmError(RuntimeError):
    """A Slurm daemon or client command failed; the message carries its log tail."""


def available(search_path: str | None = None) -> str | None:
    """``None`` when a local Slurm cluster can run here, else one line saying what is missing.

    Args:
        search_path: ``PATH``-style folders to look in (default: ``PATH`` plus the sbin folders).
    """
    missing, pkgs = missing_packages(PACKAGES, search_path)
    if missing:
        return (f"Slurm is not usable here: {', '.join(missing)} not found; install the Debian "
                f"package{'s' if len(pkgs) > 1 else ''} {' and '.join(pkgs)} (apt-get install {' '.join(pkgs)})")
    if os.geteuid() != 0:
        return "Slurm is not usable here: the local cluster runs slurmd/slurmctld as root (SlurmUser=root); run as root"
    return None


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _stamp(path: Path) -> float | None:
    try:
        return float(path.read_text().strip())
    except (OSError, ValueError):
        return None


def read_task_outputs(recs: list[dict[str, str]], stamp_dir: Path, tail_lines: int = 20) -> dict[str, TaskOutput]:
    """What each task of a job left on disk: its start/end stamps and the tails of its stdout/stderr.

    Args:
        recs: the job's ``scontrol`` records (one per array task).
        stamp_dir: the folder :func:`~hpcml.cluster.slurm.conf.batch_script` writes the stamps to.
        tail_lines: lines kept from the end of each output file.

    Returns:
        ``{task tag: TaskOutput}`` (see :func:`~hpcml.cluster.slurm.jobs.task_tag`).
    """
    out = {}
    for r in recs:
        tag = task_tag(r)
        stdout, stderr = r.get("StdOut", ""), r.get("StdErr", "")
        text = tail(stdout, tail_lines) if stdout else ""
        err = tail(stderr, tail_lines) if stderr and stderr != stdout else ""
        if err:
            text += ("\n" if text else "") + "[stderr]\n" + err
        out[tag] = TaskOutput(_stamp(stamp_dir / f"{tag}.start"), _stamp(stamp_dir / f"{tag}.end"), text)
    return out


class SlurmCluster:
    """Handle on the local cluster whose files live in ``state_dir``.

    Use :func:`ensure_cluster` to get one; ``started_here`` says whether this handle
    started the daemons (and so whether :meth:`stop` should be called by its owner).
    """

    def __init__(self, state_dir: Path, partition: str = "batch") -> None:
        self.state_dir = Path(state_dir).resolve()
        self.partition = partition
        self.started_here = False
        self.start_s: float | None = None  # cold-start seconds, when started here
        self.restarts: list[str] = []  # daemons this handle had to (re)start after the first start
        # Unix sockets (munge, slurmstepd) must fit in 108 bytes: long state dirs use /tmp.
        if len(str(self.state_dir)) <= 60:
            self.run_dir = self.state_dir / "run"
        else:
            h = hashlib.sha1(str(self.state_dir).encode()).hexdigest()[:10]
            self.run_dir = Path(tempfile.gettempdir()) / f"hpcml-slurm-{h}"
        self.conf_path = self.state_dir / "slurm.conf"
        self.log_dir = self.state_dir / "log"
        self.jobs_dir = self.state_dir / "jobs"
        self.munge_socket = self.run_dir / "munge.socket"
        self.node_name = ""
        # the local multi-node cluster (hpcml.cluster.local) writes its nodes here; absent = one node
        self.layout: dict = {}
        if (self.state_dir / "nodes.json").exists():
            self.layout = json.loads((self.state_dir / "nodes.json").read_text())

    @property
    def multi_node(self) -> bool:
        return bool(self.layout.get("nodes"))

    @property
    def node_names(self) -> list[str]:
        """The cluster's Slurm node names (one for the single-node cluster)."""
        if self.multi_node:
            return [n["name"] for n in self.layout["nodes"]]
        return [self.node_name or self._conf_value("NodeName")]

    def daemons(self) -> list[str]:
        """munged, slurmctld, then one slurmd per node (``slurmd@n1``…) or the one ``slurmd``."""
        if self.multi_node:
            return ["munged", "slurmctld"] + [f"slurmd@{n}" for n in self.node_names]
        return list(DAEMONS)

    # ---- files and environment -------------------------------------------------------
    def pid_file(self, daemon: str) -> Path:
        return self.run_dir / f"{daemon.replace('@', '-')}.pid"

    def log_file(self, daemon: str) -> Path:
        return self.log_dir / f"{daemon.replace('@', '-')}.log"

    def env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        """Environment for client commands (``SLURM_CONF`` points at this cluster)."""
        env = dict(os.environ)
        env["PATH"] = SEARCH_PATH
        env.update({k: str(v) for k, v in (extra or {}).items()})
        env["SLURM_CONF"] = str(self.conf_path)
        return env

    def cmd(self, args: Sequence[str], timeout: float = 30, check: bool = True,
            env: dict[str, str] | None = None) -> str:
        """Run a Slurm client command (``sinfo``, ``squeue``, ``scontrol``, ``srun``…) here."""
        try:
            p = subprocess.run(list(args), capture_output=True, text=True, timeout=timeout,
                               env=self.env(env), cwd=self.state_dir)
        except subprocess.TimeoutExpired:
            raise SlurmError(f"{' '.join(args)} did not answer within {timeout}s "
                             f"(slurmctld log: {self.log_file('slurmctld')})") from None
        if check and p.returncode != 0:
            raise SlurmError(f"{' '.join(args)} failed (exit {p.returncode}): {(p.stderr or p.stdout).strip()}")
        return p.stdout

    # ---- daemons -----------------------------------------------------------------------
    def _needle(self, daemon: str) -> str:
        return str(self.munge_socket) if daemon == "munged" else str(self.conf_path)

    def daemon_pids(self) -> dict[str, int | None]:
        """``{daemon: pid}`` for each daemon that is running now (``None`` when not)."""
        out = {}
        for d in self.daemons():
            pid = _read_pid(self.pid_file(d))
            out[d] = pid if pid_alive(pid, self._needle(d)) else None
        return out

    def is_running(self) -> bool:
        return all(self.daemon_pids().values())

    def _lock(self) -> AbstractContextManager[None]:
        return paths.file_lock(self.state_dir / ".lock")

    def _write_config(self) -> None:
        out = subprocess.run([which("slurmd") or "slurmd", "-C"], capture_output=True, text=True, timeout=30)
        node = parse_node_config(out.stdout)
        self.node_name = node.name
        if self.multi_node:
            from hpcml.cluster.slurm.conf import LocalNode

            nodes = [LocalNode(n["name"], n["address"], len(n["cpus"]), n["mem_mb"]) for n in self.layout["nodes"]]
            head = self.layout["head_address"]
            node = dataclasses.replace(node, name=self.layout["head_name"])  # slurmctld's own UTS hostname
            text = render_slurm_conf(node, run_dir=self.run_dir, state_dir=self.state_dir,
                                     ctld_port=free_port(head), slurmd_port=self.layout.get("slurmd_port", 6818),
                                     partition=self.partition, nodes=nodes, controller_address=head,
                                     slurmd_timeout_s=self.layout.get("slurmd_timeout_s", 10))
        else:
            text = render_slurm_conf(node, run_dir=self.run_dir, state_dir=self.state_dir,
                                     ctld_port=free_port(), slurmd_port=free_port(), partition=self.partition)
        paths.atomic_write_text(self.conf_path, text)
        paths.atomic_write_text(self.state_dir / "plugstack.conf", "# no SPANK plugins\n")

    def _start_munged(self) -> None:
        key = self.state_dir / "munge.key"
        if not key.exists():
            fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o400)
            with os.fdopen(fd, "wb") as fh:
                fh.write(os.urandom(1024))
        self.munge_socket.unlink(missing_ok=True)
        self._spawn("munged", [which("munged") or "munged", "--force", f"--socket={self.munge_socket}",
                               f"--key-file={key}", f"--pid-file={self.pid_file('munged')}",
                               f"--log-file={self.log_file('munged')}",
                               f"--seed-file={self.state_dir / 'munged.seed'}"])
        self._until(lambda: self.munge_socket.exists(), 15, "munged did not create its socket", "munged")

    def _spawn(self, daemon: str, argv: list[str]) -> None:
        """Start a self-daemonising daemon and wait for its pid file to name a live process."""
        self.pid_file(daemon).unlink(missing_ok=True)
        p = subprocess.run(argv, capture_output=True, text=True, timeout=60, env=self.env())
        if p.returncode != 0:
            raise SlurmError(f"{daemon} failed to start (exit {p.returncode}): {(p.stderr or p.stdout).strip()}\n"
                             f"{tail(self.log_file(daemon))}")
        self._until(lambda: self.daemon_pids()[daemon] is not None, 15, f"{daemon} did not stay up", daemon)

    def _until(self, cond, timeout: float, what: str, daemon: str | None = None) -> None:
        deadline = time.monotonic() + timeout
        delay = 0.02
        while time.monotonic() < deadline:
            if cond():
                return
            time.sleep(delay)
            delay = min(delay * 1.5, 0.5)
        log = f"\n--- {self.log_file(daemon)} ---\n{tail(self.log_file(daemon))}" if daemon else ""
        raise SlurmError(f"{what} within {timeout}s{log}")

    def node_states(self) -> dict[str, str]:
        """Each node's compact state as ``sinfo`` shows it (``idle``, ``mix``, ``alloc``, ``down*``…)."""
        out = self.cmd(["sinfo", "-h", "-N", "-o", "%N %t"], check=False, timeout=10)
        return dict(ln.split(None, 1) for ln in out.strip().splitlines() if len(ln.split()) == 2)

    def node_state(self) -> str:
        """The first node's compact state (the single-node cluster's only node)."""
        states = self.node_states()
        return next(iter(states.values()), "")

    def slurmd_registered_at(self, node: str | None = None) -> float | None:
        """When slurmctld last heard a node's slurmd register (``SlurmdStartTime``), epoch s."""
        recs = parse_scontrol_records(self.cmd(["scontrol", "show", "node", "-o", node or self.node_names[0]],
                                               check=False, timeout=10))
        stamp = recs[0].get("SlurmdStartTime", "") if recs else ""
        try:
            return time.mktime(time.strptime(stamp, "%Y-%m-%dT%H:%M:%S"))
        except ValueError:
            return None

    def _node_ready(self, idle_only: bool, registered_since: float = 0.0) -> bool:
        ok = {"idle"} if idle_only else {"idle", "mix", "alloc", "comp"}
        states = self.node_states()
        for name in self.node_names:
            if registered_since and (self.slurmd_registered_at(name) or 0.0) < registered_since:
                return False  # sinfo may still show the state slurmctld recovered from disk
            st = states.get(name, "")
            if st.rstrip("*~#!%$@^-") in {"down", "drain", "drng"}:  # slurmd is back: return it to service
                self.cmd(["scontrol", "update", f"NodeName={name}", "State=RESUME"], check=False)
            if st not in ok:
                return False
        return True

    def ensure_running(self) -> list[str]:
        """Start whichever daemons are not running (all of them on a cold start).

        Returns:
            The daemons started by this call (empty when everything was up).
        """
        with self._lock():
            pids = self.daemon_pids()
            if all(pids.values()):
                self.node_name = self.node_name or self._conf_value("NodeName")
                if self.start_s is None and (self.state_dir / "cluster.json").exists():
                    self.start_s = json.loads((self.state_dir / "cluster.json").read_text()).get("start_s")
                return []
            cold = not any(pids.values())
            t0 = time.perf_counter()
            for p in (self.state_dir, self.run_dir, self.log_dir, self.jobs_dir,
                      self.state_dir / "ctld", self.run_dir / "spool"):
                paths.ensure(p)
            if cold or not self.conf_path.exists():
                self._write_config()
            self.node_name = self._conf_value("NodeName")
            started = []
            if not pids["munged"]:
                self._start_munged()
                started.append("munged")
            if not pids["slurmctld"]:
                argv = [which("slurmctld") or "slurmctld", "-f", str(self.conf_path)]
                if self.multi_node:  # its own hostname, which resolves to the bridge address it binds
                    argv = [which("unshare") or "unshare", "--uts", "sh", "-c", 'hostname "$0" && exec "$@"',
                            self.layout["head_name"], *argv]
                self._spawn("slurmctld", argv)
                self._until(lambda: "UP" in self.cmd(["scontrol", "ping"], check=False, timeout=10), 30,
                            "slurmctld did not answer scontrol ping", "slurmctld")
                started.append("slurmctld")
            since = 0.0
            for d in self.daemons()[2:]:
                if not pids[d]:
                    # SlurmdStartTime has 1 s resolution; the first start bounds them all
                    since = since or float(int(time.time()))
                    self._start_slurmd(d)
                    started.append(d)
            self._until(lambda: self._node_ready(idle_only=cold, registered_since=since), 60,
                        f"nodes {self.node_names} did not become ready (sinfo {self.node_states()!r})",
                        self.daemons()[-1])
            if cold:
                self.started_here = True
                self.start_s = time.perf_counter() - t0
                paths.atomic_write_text(self.state_dir / "cluster.json", json.dumps(
                    {"started_at": time.time(), "start_s": self.start_s, "pid": os.getpid()}))
            else:
                self.restarts += started
            return started

    def _start_slurmd(self, daemon: str) -> None:
        """``slurmd`` (one node), or ``slurmd@NODE`` inside that node's namespaces, pinned to its cores."""
        argv = [which("slurmd") or "slurmd", "-f", str(self.conf_path)]
        if "@" in daemon:
            node = next(n for n in self.layout["nodes"] if n["name"] == daemon.split("@", 1)[1])
            paths.ensure(self.run_dir / f"spool-{node['name']}")
            argv = list(node["prefix"]) + argv + ["-N", node["name"]]
        self._spawn(daemon, argv)

    def set_scheduler_parameters(self, value: str) -> str:
        """Rewrite ``SchedulerParameters`` (empty = Slurm's defaults) and ``scontrol reconfigure``.

        Returns:
            The previous value, to restore it afterwards.
        """
        if not re.fullmatch(r"[\w=,.:-]*", value):
            raise ValueError(f"scheduler parameters must look like 'batch_sched_delay=0,...', got {value!r}")
        self.ensure_running()
        with self._lock():
            old = self.conf_path.read_text().splitlines()
            previous = next((ln.split("=", 1)[1] for ln in old if ln.startswith("SchedulerParameters=")), "")
            lines = [ln for ln in old if not ln.startswith("SchedulerParameters=")]
            i = next(i for i, ln in enumerate(lines) if ln.startswith("SchedulerType="))
            if value:
                lines.insert(i + 1, f"SchedulerParameters={value}")
            paths.atomic_write_text(self.conf_path, "\n".join(lines) + "\n")
            self.cmd(["scontrol", "reconfigure"])
        return previous

    def _conf_value(self, key: str) -> str:
        for line in self.conf_path.read_text().splitlines():
            for tok in line.split():
                if tok.startswith(key + "="):
                    return tok.split("=", 1)[1]
        raise SlurmError(f"{self.conf_path}: no {key}= entry")

    @staticmethod
    def _terminate(pid: int, needle: str, grace_s: float = 10) -> None:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline and pid_alive(pid, needle):
            time.sleep(0.05)
        if pid_alive(pid, needle):
            os.kill(pid, signal.SIGKILL)
            while pid_alive(pid, needle):
                time.sleep(0.05)

    def stop(self, force: bool = False) -> list[str]:
        """Cancel queued/running jobs, then stop slurmd, slurmctld and munged by pid.

        Args:
            force: stop even when this handle did not start the cluster.

        Returns:
            The daemons that were stopped.
        """
        if not (self.started_here or force):
            return []
        stopped = []
        with self._lock():
            pids = self.daemon_pids()
            if pids["slurmctld"] and self.conf_path.exists():
                try:
                    self.cmd(["scancel", "--full", f"--partition={self.partition}"], check=False, timeout=10)
                    self._until(lambda: not self.cmd(["squeue", "-h"], check=False, timeout=10).strip(), 20,
                                "jobs did not end after scancel")
                except SlurmError:
                    pass  # the daemons' SIGTERM below still ends their job steps
            for d in self.daemons()[::-1]:
                if pids[d]:
                    self._terminate(pids[d], self._needle(d))
                    stopped.append(d)
            for pid in self.leftover_pids():
                self._terminate(pid, "")
            if self.run_dir.parent != self.state_dir:
                shutil.rmtree(self.run_dir, ignore_errors=True)
        self.started_here = False
        return stopped

    def leftover_pids(self) -> list[int]:
        """Processes (other than this one) whose command line or cwd lies in this cluster's dirs."""
        roots = (str(self.state_dir), str(self.run_dir))
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            try:
                cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                cwd = os.readlink(entry / "cwd")
                if (entry / "stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                    continue
            except OSError:
                continue
            if any(r in cmd or cwd == r or cwd.startswith(r + "/") for r in roots):
                found.append(int(entry.name))
        return found

    # ---- jobs ----------------------------------------------------------------------------
    def submit(self, script_body: str, name: str, ntasks: int = 1, cpus_per_task: int = 1,
               time_limit_min: int = 10, workdir: Path | None = None, env: dict | None = None,
               array: str | None = None, mem_mb: int | None = None,
               sbatch_args: Sequence[str] = ()) -> str:
        """Submit ``script_body`` (bash) with ``sbatch``; return the job id without waiting.

        Args:
            script_body: the job's shell commands (``srun`` inside launches job steps).
            name: job name (letters, digits, ``-_.``); also names the output files.
            ntasks, cpus_per_task: ``--ntasks`` / ``--cpus-per-task``.
            time_limit_min: ``--time`` in minutes; Slurm ends the job with state TIMEOUT after it.
            workdir: ``--chdir`` (default: the cluster's jobs folder).
            env: extra environment variables for the job (exported with ``--export=ALL``).
            array: ``--array`` spec such as ``"0-3"`` or ``"0-7%2"``.
            mem_mb: ``--mem`` per node in MB (default: DefMemPerCPU x CPUs).
            sbatch_args: further ``sbatch`` options, passed through.
        """
        if not name or not all(c.isalnum() or c in "-_." for c in name):
            raise ValueError(f"job name must be letters, digits, '-', '_' or '.', got {name!r}")
        self.ensure_running()
        paths.ensure(self.jobs_dir / "stamps")
        tag = "%A_%a" if array else "%j"
        out, err = self.jobs_dir / f"{name}-{tag}.out", self.jobs_dir / f"{name}-{tag}.err"
        text = batch_script(script_body, name=name, ntasks=ntasks, cpus_per_task=cpus_per_task,
                            time_limit_min=time_limit_min, stdout=out, stderr=err,
                            workdir=Path(workdir or self.jobs_dir), array=array, mem_mb=mem_mb,
                            partition=self.partition, stamp_dir=self.jobs_dir / "stamps")
        script = paths.atomic_write_text(self.jobs_dir / f"{name}-{uuid.uuid4().hex[:8]}.sbatch", text)
        submitted_at = time.time()
        job_id = self.cmd(["sbatch", "--parsable", "--export=ALL", *sbatch_args, str(script)],
                          env=env).strip().split(";")[0]
        paths.atomic_write_text(self.jobs_dir / f"{job_id}.json", json.dumps(
            {"job_id": job_id, "name": name, "script": str(script), "submitted_at": submitted_at,
             "array": array}))
        return job_id

    def job_records(self, job_id: str) -> list[dict[str, str]]:
        """``scontrol show job`` records of a job (one per array task); empty when unknown."""
        out = self.cmd(["scontrol", "show", "job", "-o", str(job_id)], check=False, timeout=15)
        return parse_scontrol_records(out)

    def wait(self, job_id: str, timeout_s: float = 300, cancel_on_timeout: bool = True) -> JobResult:
        """Wait for a job (all tasks of an array) to end; never raises for a failed job.

        Args:
            job_id: as returned by :meth:`submit`.
            timeout_s: give up after this long; the job is cancelled (``cancel_on_timeout``)
                and the result has state ``TIMEOUT`` with the reason.

        Returns:
            A :class:`JobResult` with the Slurm state, exit code, output paths and tail.
        """
        self.ensure_running()
        meta_path = self.jobs_dir / f"{job_id}.json"
        meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
        deadline = time.monotonic() + timeout_s
        delay, recs = 0.05, []
        while True:
            recs = self.job_records(job_id)
            if recs and all(r.get("JobState") in TERMINAL_STATES for r in recs):
                return self._result(job_id, recs, meta)
            if time.monotonic() >= deadline:
                break
            time.sleep(delay)
            delay = min(delay * 1.3, 1.0)
        if cancel_on_timeout:
            self.cmd(["scancel", str(job_id)], check=False)
            end = time.monotonic() + 30
            while time.monotonic() < end:
                recs = self.job_records(job_id)
                if recs and all(r.get("JobState") in TERMINAL_STATES for r in recs):
                    break
                time.sleep(0.2)
        res = self._result(job_id, recs, meta)
        res.reason = (f"wait timed out after {timeout_s:g}s; Slurm state {res.state}"
                      + ("; cancelled" if cancel_on_timeout else ""))
        res.state = "TIMEOUT"
        return res

    def _result(self, job_id: str, recs: list[dict[str, str]], meta: dict) -> JobResult:
        stamps = self.jobs_dir / "stamps"
        return summarize_job(job_id, recs, meta, read_task_outputs(recs, stamps))

    def run_batch(self, script_body: str, name: str, ntasks: int = 1, cpus_per_task: int = 1,
                  time_limit_min: int = 10, timeout_s: float = 300, workdir: Path | None = None,
                  env: dict | None = None, array: str | None = None, **kw) -> JobResult:
        """:meth:`submit` then :meth:`wait`: run a batch job to the end and return its result."""
        job_id = self.submit(script_body, name, ntasks=ntasks, cpus_per_task=cpus_per_task,
                             time_limit_min=time_limit_min, workdir=workdir, env=env, array=array, **kw)
        return self.wait(job_id, timeout_s=timeout_s)

    def __repr__(self) -> str:
        return f"SlurmCluster(state_dir={str(self.state_dir)!r}, started_here={self.started_here})"


def default_state_dir() -> Path:
    return paths.build_dir() / "slurm"


def running_multi_node(name: str = PREFIX) -> SlurmCluster | None:
    """The Slurm of the multi-node cluster (:mod:`hpcml.cluster.local`) when it is up, else ``None``."""
    reg = Path(RUN_ROOT) / f"{name}.json"
    try:
        slurm_dir = Path(json.loads(reg.read_text())["state_dir"]) / "slurm"
    except (OSError, ValueError, KeyError):
        return None
    if not (slurm_dir / "nodes.json").exists():
        return None
    cl = SlurmCluster(slurm_dir)
    return cl if cl.is_running() else None


def ensure_cluster(state_dir: Path | None = None, partition: str = "batch", stop_at_exit: bool = False) -> SlurmCluster:
    """Start the local Slurm cluster from a generated config, or reuse the running one.

    Without ``state_dir``, a running multi-node cluster (:mod:`hpcml.cluster.local`) is used
    when there is one, so jobs from every notebook land on its nodes.

    Args:
        state_dir: where config, key, sockets, logs, state and job files live
            (default ``build/slurm``).
        partition: name of the cluster's single (default) partition.
        stop_at_exit: if this call starts the cluster, stop it when the Python process exits
            (a notebook kernel that fails half-way leaves no daemons behind).

    Raises:
        SlurmUnavailable: with one line naming the Debian package to install.
        SlurmError: a daemon did not come up (with its log tail).
    """
    msg = available()
    if msg:
        raise SlurmUnavailable(msg)
    if state_dir is None:
        multi = running_multi_node()
        if multi is not None:
            return multi
    cl = SlurmCluster(state_dir or default_state_dir(), partition=partition)
    cl.ensure_running()
    if stop_at_exit and cl.started_here:
        import atexit

        atexit.register(cl.stop)
    return cl
