"""A real single-node Slurm cluster on this machine: munged + slurmctld + slurmd.

The configuration is generated under ``build/slurm`` (``hpcml.paths``) from what
``slurmd -C`` reports about this node (CPUs, sockets, cores, memory), with one partition
and ``SelectType=select/cons_tres``. Every path the daemons use (munge key and socket,
pid files, logs, state save location, spool) lives in that state directory, and the
ports are chosen free on 127.0.0.1 at a cold start, so several clusters (one per build
tree) never collide with each other or with a system Slurm. Client commands find the
configuration through ``SLURM_CONF`` (:meth:`SlurmCluster.env`).

Example:
    >>> from hpcml.cluster import slurm
    >>> slurm.available()          # None when usable, else what to install
    >>> cl = slurm.ensure_cluster()  # starts it, or reuses the running one
    >>> res = cl.run_batch("echo hello from $SLURM_JOB_ID", name="hello")
    >>> res.state, res.exit_code, res.output_tail
    >>> cl.stop()                  # only if cl.started_here

On AWS ParallelCluster the same ``sbatch`` scripts run unchanged; only the partition
and node definitions come from the cluster's own ``slurm.conf``.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import tempfile
import time
import re
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

from hpcml import paths

#: daemon/client -> Debian package that ships it (the metapackage ``slurm-wlm`` pulls all Slurm ones).
PACKAGES = {
    "munged": "munge", "munge": "munge",
    "slurmctld": "slurm-wlm", "slurmd": "slurm-wlm", "sbatch": "slurm-wlm", "sinfo": "slurm-wlm",
    "squeue": "slurm-wlm", "scontrol": "slurm-wlm", "scancel": "slurm-wlm", "srun": "slurm-wlm",
}
_SEARCH_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin", "/usr/local/sbin"])
DAEMONS = ("munged", "slurmctld", "slurmd")


class SlurmUnavailable(RuntimeError):
    """Slurm cannot run here; the message names the missing Debian package."""


class SlurmError(RuntimeError):
    """A Slurm daemon or client command failed; the message carries its log tail."""


def _which(name: str) -> str | None:
    return shutil.which(name, path=_SEARCH_PATH)


def available(search_path: str | None = None) -> str | None:
    """``None`` when a local Slurm cluster can run here, else one line saying what is missing.

    Args:
        search_path: ``PATH``-style folders to look in (default: ``PATH`` plus the sbin folders).
    """
    missing = [n for n in PACKAGES if shutil.which(n, path=search_path or _SEARCH_PATH) is None]
    if missing:
        pkgs = sorted({PACKAGES[n] for n in missing})
        return (f"Slurm is not usable here: {', '.join(missing)} not found; install the Debian "
                f"package{'s' if len(pkgs) > 1 else ''} {' and '.join(pkgs)} (apt-get install {' '.join(pkgs)})")
    if os.geteuid() != 0:
        return "Slurm is not usable here: the local cluster runs slurmd/slurmctld as root (SlurmUser=root); run as root"
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _proc_alive(pid: int | None, needle: str) -> bool:
    """True when ``pid`` runs (not a zombie) and its command line contains ``needle``."""
    if not pid:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z" and needle in cmd


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _tail(path: Path, n: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return ""


# ---- pure half: config text, batch scripts, scontrol parsing (unit-testable) ------------

#: Slurm job states after which a job never runs again.
TERMINAL_STATES = frozenset({
    "COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "PREEMPTED", "OUT_OF_MEMORY",
    "BOOT_FAIL", "DEADLINE", "SPECIAL_EXIT", "REVOKED",
})
_SEVERITY = ("NODE_FAIL", "BOOT_FAIL", "OUT_OF_MEMORY", "TIMEOUT", "DEADLINE", "FAILED", "CANCELLED",
             "PREEMPTED", "REVOKED", "SPECIAL_EXIT", "COMPLETED")


#: SchedulerParameters of the local cluster: start batch jobs at once instead of batching
#: them for up to 3 s (Slurm's default ``batch_sched_delay``), which suits a high-rate HPC
#: site but only adds latency to a one-node cluster.
FAST_SCHEDULING = "batch_sched_delay=0"


@dataclass(frozen=True)
class NodeSpec:
    """What ``slurmd -C`` reports for this node."""

    name: str
    cpus: int
    boards: int
    sockets_per_board: int
    cores_per_socket: int
    threads_per_core: int
    real_memory_mb: int

    def __post_init__(self) -> None:
        for f in ("cpus", "boards", "sockets_per_board", "cores_per_socket", "threads_per_core", "real_memory_mb"):
            if getattr(self, f) < 1:
                raise ValueError(f"NodeSpec.{f} must be >= 1, got {getattr(self, f)}")


def parse_node_config(text: str) -> NodeSpec:
    """Parse the first line of ``slurmd -C`` (``NodeName=vm CPUs=2 … RealMemory=24105``)."""
    kv = dict(tok.split("=", 1) for tok in text.split() if "=" in tok)
    try:
        return NodeSpec(kv["NodeName"], int(kv["CPUs"]), int(kv.get("Boards", 1)),
                        int(kv["SocketsPerBoard"]), int(kv["CoresPerSocket"]), int(kv["ThreadsPerCore"]),
                        int(kv["RealMemory"]))
    except (KeyError, ValueError) as exc:
        raise ValueError(f"cannot read the node from `slurmd -C` output (missing/bad {exc}): {text[:200]!r}") from None


def render_slurm_conf(node: NodeSpec, run_dir: Path | str, state_dir: Path | str, ctld_port: int = 6817,
                      slurmd_port: int = 6818, partition: str = "batch", cluster_name: str = "hpcml",
                      slurm_user: str = "root", mem_fraction: float = 0.9,
                      scheduler_parameters: str = FAST_SCHEDULING, gpus: int = 0, node_count: int = 1,
                      controller: str | None = None) -> str:
    """``slurm.conf`` text for a one-node cluster: cons_tres, one default partition, loopback only.

    Args:
        node: the node as ``slurmd -C`` describes it.
        run_dir: pid files, munge socket, slurmd spool (short path: Unix sockets live there).
        state_dir: slurmctld state, logs, job completion log.
        ctld_port, slurmd_port: TCP ports on 127.0.0.1.
        partition: name of the default partition.
        mem_fraction: share of RealMemory handed to jobs (the rest is the OS's).
        scheduler_parameters: ``SchedulerParameters`` (Slurm's default delays batch jobs
            by up to ``batch_sched_delay=3`` s; empty string = Slurm defaults).
        gpus: GPUs per node (adds ``GresTypes=gpu`` and ``Gres=gpu:N``; needs a gres.conf).
        node_count, controller: for a multi-node site (the example in manifests/slurm): nodes
            ``<name>[1-N]`` on their own addresses, the controller host by name, cgroup
            process tracking and PMIx. Without ``controller`` everything is on 127.0.0.1.
    """
    run, st = Path(run_dir), Path(state_dir)
    mem = max(1, int(node.real_memory_mb * mem_fraction))
    local = controller is None
    names = node.name if node_count == 1 else f"{node.name}[1-{node_count}]"
    return "\n".join([
        f"# slurm.conf generated by hpcml.cluster.slurm from `slurmd -C` on {node.name}",
        f"ClusterName={cluster_name}",
        f"SlurmctldHost={node.name}(127.0.0.1)" if local else f"SlurmctldHost={controller}",
        f"SlurmctldPort={ctld_port}",
        f"SlurmdPort={slurmd_port}",
        f"SlurmUser={slurm_user}",
        "SlurmdUser=root",
        "AuthType=auth/munge",
        "CredType=cred/munge",
        f"AuthInfo=socket={run / 'munge.socket'}",
        *(["CommunicationParameters=NoCtldInAddrAny,NoInAddrAny"] if local else []),
        f"StateSaveLocation={st / 'ctld'}",
        f"SlurmdSpoolDir={run / 'spool'}",
        f"SlurmctldPidFile={run / 'slurmctld.pid'}",
        f"SlurmdPidFile={run / 'slurmd.pid'}",
        f"SlurmctldLogFile={st / 'log' / 'slurmctld.log'}",
        f"SlurmdLogFile={st / 'log' / 'slurmd.log'}",
        f"PlugStackConfig={st / 'plugstack.conf'}",
        "MailProg=/bin/true",
        # one laptop node: plain process tracking; a real site confines jobs with cgroups
        "ProctrackType=proctrack/linuxproc" if local else "ProctrackType=proctrack/cgroup",
        "TaskPlugin=task/none" if local else "TaskPlugin=task/cgroup,task/affinity",
        "JobAcctGatherType=jobacct_gather/none" if local else "JobAcctGatherType=jobacct_gather/cgroup",
        "AccountingStorageType=accounting_storage/none",
        "JobCompType=jobcomp/filetxt",
        f"JobCompLoc={st / 'log' / 'jobcomp.log'}",
        "MpiDefault=none" if local else "MpiDefault=pmix",
        "SchedulerType=sched/backfill",
        *([f"SchedulerParameters={scheduler_parameters}"] if scheduler_parameters else []),
        "SelectType=select/cons_tres",
        "SelectTypeParameters=CR_Core_Memory",
        f"DefMemPerCPU={mem // node.cpus}",
        "ReturnToService=2",
        "MinJobAge=3600",
        "KillWait=5",
        "SlurmdTimeout=60",
        "InactiveLimit=0",
        *(["GresTypes=gpu"] if gpus else []),
        f"NodeName={names}" + (" NodeAddr=127.0.0.1" if local else "") + f" CPUs={node.cpus} Boards={node.boards} "
        f"SocketsPerBoard={node.sockets_per_board} CoresPerSocket={node.cores_per_socket} "
        f"ThreadsPerCore={node.threads_per_core} RealMemory={mem}" + (f" Gres=gpu:{gpus}" if gpus else "")
        + " State=UNKNOWN",
        f"PartitionName={partition} Nodes={names} Default=YES MaxTime=INFINITE State=UP",
        "",
    ])


def batch_script(body: str, name: str, ntasks: int = 1, cpus_per_task: int = 1, time_limit_min: int = 10,
                 stdout: Path | str | None = None, stderr: Path | str | None = None,
                 workdir: Path | str | None = None, array: str | None = None, mem_mb: int | None = None,
                 partition: str | None = None, nodes: int | None = None, gpus_per_node: int = 0,
                 stamp_dir: Path | str | None = None) -> str:
    """An ``sbatch`` script: ``#SBATCH`` directives, optional start/end stamps, then ``body``.

    Raises:
        ValueError: naming the argument when a count or the time limit is not positive.
    """
    for field_name, v in (("ntasks", ntasks), ("cpus_per_task", cpus_per_task), ("time_limit_min", time_limit_min)):
        if not isinstance(v, int) or v < 1:
            raise ValueError(f"{field_name} must be a positive integer, got {v!r}")
    if array is not None and not re.fullmatch(r"[0-9,\-:%]+", array):
        raise ValueError(f"array must look like '0-3', '1,5,7' or '0-15%4', got {array!r}")
    opts = [("job-name", name), ("partition", partition), ("nodes", nodes), ("ntasks", ntasks),
            ("cpus-per-task", cpus_per_task), ("time", time_limit_min), ("mem", mem_mb),
            ("gres", f"gpu:{gpus_per_node}" if gpus_per_node else None), ("array", array),
            ("output", stdout), ("error", stderr), ("chdir", workdir)]
    lines = ["#!/bin/bash"] + [f"#SBATCH --{k}={v}" for k, v in opts if v is not None]
    if stamp_dir is not None:
        lines += [
            "# hpcml: stamp start/end times (submit-to-start latency, run time)",
            '_hpcml_t=${SLURM_ARRAY_JOB_ID:+${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}}',
            f'_hpcml_s="{stamp_dir}/${{_hpcml_t:-$SLURM_JOB_ID}}"',
            'date +%s.%N > "$_hpcml_s.start"',
            "trap 'date +%s.%N > \"$_hpcml_s.end\"' EXIT",
        ]
    return "\n".join(lines + ["", body.rstrip("\n"), ""])


_KEY = re.compile(r"(?:^|\s)([A-Za-z][\w:/]*)=")


def parse_scontrol_records(text: str) -> list[dict[str, str]]:
    """Parse ``scontrol show … -o`` output (one ``Key=value …`` record per line)."""
    recs = []
    for line in text.splitlines():
        keys = list(_KEY.finditer(line))
        if not keys:
            continue
        rec = {}
        for i, m in enumerate(keys):
            end = keys[i + 1].start() if i + 1 < len(keys) else len(line)
            rec[m.group(1)] = line[m.end():end].strip()
        recs.append(rec)
    return recs


def _exit_code(rec: dict[str, str]) -> int:
    code, _, sig = rec.get("ExitCode", "0:0").partition(":")
    code, sig = int(code or 0), int(sig or 0)
    return code if code else (128 + sig if sig else 0)


def _runtime_s(text: str) -> float:
    days, _, hms = text.rpartition("-")
    parts = [int(p) for p in hms.split(":") if p.isdigit()]
    while len(parts) < 3:
        parts.insert(0, 0)
    return (int(days) if days else 0) * 86400 + parts[0] * 3600 + parts[1] * 60 + parts[2]


def _stamp(path: Path) -> float | None:
    try:
        return float(path.read_text().strip())
    except (OSError, ValueError):
        return None


@dataclass
class JobResult:
    """How a batch job ended.

    Attributes:
        job_id: Slurm job id (the array job id for arrays).
        state: Slurm state (COMPLETED, FAILED, CANCELLED, TIMEOUT, …); the worst over array tasks.
            ``TIMEOUT`` also when :meth:`SlurmCluster.wait` gave up (see ``reason``).
        exit_code: the script's exit code (128+signal when killed; max over array tasks).
        stdout_path, stderr_path: output files (of the first task for arrays).
        elapsed_s: run time (from the job's own start/end stamps, else Slurm's RunTime).
        output_tail: last lines of stdout and stderr (per task for arrays).
        submitted_at, started_at, ended_at: epoch seconds (None when unknown).
        tasks: number of array tasks (1 for a plain job).
        reason: Slurm's Reason, or why the wait gave up.
    """

    job_id: str
    state: str
    exit_code: int
    stdout_path: Path | None
    stderr_path: Path | None
    elapsed_s: float
    output_tail: str
    submitted_at: float | None = None
    started_at: float | None = None
    ended_at: float | None = None
    tasks: int = 1
    reason: str = ""

    @property
    def ok(self) -> bool:
        return self.state == "COMPLETED" and self.exit_code == 0

    @property
    def submit_to_start_s(self) -> float | None:
        if self.submitted_at is None or self.started_at is None:
            return None
        return self.started_at - self.submitted_at


def summarize_job(job_id: str, recs: list[dict[str, str]], meta: dict, stamp_dir: Path,
                  tail_lines: int = 20) -> JobResult:
    """Fold ``scontrol`` records (one per array task) and stamp files into a :class:`JobResult`."""
    if not recs:
        return JobResult(str(job_id), "UNKNOWN", -1, None, None, 0.0, "",
                         submitted_at=meta.get("submitted_at"), reason="job unknown to slurmctld")
    states = [r.get("JobState", "UNKNOWN") for r in recs]
    state = next((s for s in _SEVERITY if s in states), states[0])
    starts, ends, tails = [], [], []
    for r in sorted(recs, key=lambda r: int(r.get("ArrayTaskId", "0")) if r.get("ArrayTaskId", "0").isdigit() else 0):
        tag = f"{r['ArrayJobId']}_{r['ArrayTaskId']}" if r.get("ArrayTaskId", "").isdigit() else r.get("JobId", "")
        starts.append(_stamp(stamp_dir / f"{tag}.start"))
        ends.append(_stamp(stamp_dir / f"{tag}.end"))
        out, err = r.get("StdOut", ""), r.get("StdErr", "")
        text = _tail(Path(out), tail_lines) if out else ""
        if err and err != out and _tail(Path(err), tail_lines):
            text += ("\n" if text else "") + "[stderr]\n" + _tail(Path(err), tail_lines)
        tails.append(f"[task {r['ArrayTaskId']}]\n{text}" if len(recs) > 1 else text)
    ok_s, ok_e = [s for s in starts if s], [e for e in ends if e]
    started = min(ok_s) if ok_s else None
    ended = max(ok_e) if ok_e else None
    elapsed = (ended - started) if (started and ended and len(ok_e) == len(recs)) else \
        max(_runtime_s(r.get("RunTime", "0:0:0")) for r in recs)
    first = recs[0]
    return JobResult(
        job_id=str(job_id), state=state, exit_code=max(_exit_code(r) for r in recs),
        stdout_path=Path(first["StdOut"]) if first.get("StdOut") else None,
        stderr_path=Path(first["StdErr"]) if first.get("StdErr") else None,
        elapsed_s=float(elapsed), output_tail="\n".join(tails).strip("\n"),
        submitted_at=meta.get("submitted_at"), started_at=started, ended_at=ended, tasks=len(recs),
        reason="" if first.get("Reason") in (None, "None") else first["Reason"],
    )


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

    # ---- files and environment -------------------------------------------------------
    def pid_file(self, daemon: str) -> Path:
        return self.run_dir / f"{daemon}.pid"

    def log_file(self, daemon: str) -> Path:
        return self.log_dir / f"{daemon}.log"

    def env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        """Environment for client commands (``SLURM_CONF`` points at this cluster)."""
        env = dict(os.environ)
        env["PATH"] = _SEARCH_PATH
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
        for d in DAEMONS:
            pid = _read_pid(self.pid_file(d))
            out[d] = pid if _proc_alive(pid, self._needle(d)) else None
        return out

    def is_running(self) -> bool:
        return all(self.daemon_pids().values())

    @contextmanager
    def _lock(self) -> Iterator[None]:
        paths.ensure(self.state_dir)
        with open(self.state_dir / ".lock", "w") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def _write_config(self) -> None:
        out = subprocess.run([_which("slurmd") or "slurmd", "-C"], capture_output=True, text=True, timeout=30)
        node = parse_node_config(out.stdout)
        self.node_name = node.name
        text = render_slurm_conf(node, run_dir=self.run_dir, state_dir=self.state_dir,
                                 ctld_port=_free_port(), slurmd_port=_free_port(), partition=self.partition)
        paths.atomic_write_text(self.conf_path, text)
        paths.atomic_write_text(self.state_dir / "plugstack.conf", "# no SPANK plugins\n")

    def _start_munged(self) -> None:
        key = self.state_dir / "munge.key"
        if not key.exists():
            fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o400)
            with os.fdopen(fd, "wb") as fh:
                fh.write(os.urandom(1024))
        self.munge_socket.unlink(missing_ok=True)
        self._spawn("munged", [_which("munged") or "munged", "--force", f"--socket={self.munge_socket}",
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
                             f"{_tail(self.log_file(daemon))}")
        self._until(lambda: self.daemon_pids()[daemon] is not None, 15, f"{daemon} did not stay up", daemon)

    def _until(self, cond, timeout: float, what: str, daemon: str | None = None) -> None:
        deadline = time.monotonic() + timeout
        delay = 0.02
        while time.monotonic() < deadline:
            if cond():
                return
            time.sleep(delay)
            delay = min(delay * 1.5, 0.5)
        log = f"\n--- {self.log_file(daemon)} ---\n{_tail(self.log_file(daemon))}" if daemon else ""
        raise SlurmError(f"{what} within {timeout}s{log}")

    def node_state(self) -> str:
        """The node's compact state as ``sinfo`` shows it (``idle``, ``mix``, ``alloc``, ``down*``…)."""
        out = self.cmd(["sinfo", "-h", "-N", "-o", "%t"], check=False, timeout=10)
        return out.strip().splitlines()[0] if out.strip() else ""

    def slurmd_registered_at(self) -> float | None:
        """When slurmctld last heard this node's slurmd register (``SlurmdStartTime``), epoch s."""
        recs = parse_scontrol_records(self.cmd(["scontrol", "show", "node", "-o", self.node_name],
                                               check=False, timeout=10))
        stamp = recs[0].get("SlurmdStartTime", "") if recs else ""
        try:
            return time.mktime(time.strptime(stamp, "%Y-%m-%dT%H:%M:%S"))
        except ValueError:
            return None

    def _node_ready(self, idle_only: bool, registered_since: float = 0.0) -> bool:
        if registered_since and (self.slurmd_registered_at() or 0.0) < registered_since:
            return False  # sinfo may still show the state slurmctld recovered from disk
        st = self.node_state()
        ok = {"idle"} if idle_only else {"idle", "mix", "alloc", "comp"}
        if st.rstrip("*~#!%$@^-") in {"down", "drain", "drng"}:  # slurmd is back: return the node to service
            self.cmd(["scontrol", "update", f"NodeName={self.node_name}", "State=RESUME"], check=False)
        return st in ok

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
                self._spawn("slurmctld", [_which("slurmctld") or "slurmctld", "-f", str(self.conf_path)])
                self._until(lambda: "UP" in self.cmd(["scontrol", "ping"], check=False, timeout=10), 30,
                            "slurmctld did not answer scontrol ping", "slurmctld")
                started.append("slurmctld")
            since = 0.0
            if not pids["slurmd"]:
                since = float(int(time.time()))  # SlurmdStartTime has 1 s resolution
                self._spawn("slurmd", [_which("slurmd") or "slurmd", "-f", str(self.conf_path)])
                started.append("slurmd")
            self._until(lambda: self._node_ready(idle_only=cold, registered_since=since), 60,
                        f"node {self.node_name} did not become ready (sinfo state {self.node_state()!r})", "slurmd")
            if cold:
                self.started_here = True
                self.start_s = time.perf_counter() - t0
                paths.atomic_write_text(self.state_dir / "cluster.json", json.dumps(
                    {"started_at": time.time(), "start_s": self.start_s, "pid": os.getpid()}))
            else:
                self.restarts += started
            return started

    def set_scheduler_parameters(self, value: str) -> None:
        """Rewrite ``SchedulerParameters`` (empty = Slurm's defaults) and ``scontrol reconfigure``."""
        if not re.fullmatch(r"[\w=,.:-]*", value):
            raise ValueError(f"scheduler parameters must look like 'batch_sched_delay=0,...', got {value!r}")
        self.ensure_running()
        with self._lock():
            lines = [ln for ln in self.conf_path.read_text().splitlines() if not ln.startswith("SchedulerParameters=")]
            i = next(i for i, ln in enumerate(lines) if ln.startswith("SchedulerType="))
            if value:
                lines.insert(i + 1, f"SchedulerParameters={value}")
            paths.atomic_write_text(self.conf_path, "\n".join(lines) + "\n")
            self.cmd(["scontrol", "reconfigure"])

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
        while time.monotonic() < deadline and _proc_alive(pid, needle):
            time.sleep(0.05)
        if _proc_alive(pid, needle):
            os.kill(pid, signal.SIGKILL)
            while _proc_alive(pid, needle):
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
                self.cmd(["scancel", "--full", f"--partition={self.partition}"], check=False, timeout=10)
                try:
                    self._until(lambda: not self.cmd(["squeue", "-h"], check=False, timeout=10).strip(), 20,
                                "jobs did not end after scancel")
                except SlurmError:
                    pass  # the daemons' SIGTERM below still ends their job steps
            for d in DAEMONS[::-1]:
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
                return summarize_job(job_id, recs, meta, self.jobs_dir / "stamps")
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
        res = summarize_job(job_id, recs, meta, self.jobs_dir / "stamps")
        res.reason = (f"wait timed out after {timeout_s:g}s; Slurm state {res.state}"
                      + ("; cancelled" if cancel_on_timeout else ""))
        res.state = "TIMEOUT"
        return res

    def run_batch(self, script_body: str, name: str, ntasks: int = 1, cpus_per_task: int = 1,
                  time_limit_min: int = 10, timeout_s: float = 300, workdir: Path | None = None,
                  env: dict | None = None, array: str | None = None, **kw) -> JobResult:
        """:meth:`submit` then :meth:`wait`: run a batch job to the end and return its result."""
        job_id = self.submit(script_body, name, ntasks=ntasks, cpus_per_task=cpus_per_task,
                             time_limit_min=time_limit_min, workdir=workdir, env=env, array=array, **kw)
        return self.wait(job_id, timeout_s=timeout_s)

    def __repr__(self) -> str:
        return f"SlurmCluster(state_dir={str(self.state_dir)!r}, started_here={self.started_here})"


def measure_jobs(cl: SlurmCluster, n_jobs: int, body: str = "true", timeout_s: float = 300) -> dict:
    """Submit ``n_jobs`` one-CPU jobs at once and time them.

    Returns:
        ``{"latencies_s": [...], "median_s", "jobs_per_minute", "makespan_s", "states"}``: per job the
        submit-to-start latency (client submit time to the job's own start stamp), and the
        throughput as jobs finished per minute from the first submit to the last end.
    """
    if n_jobs < 1:
        raise ValueError(f"n_jobs must be >= 1, got {n_jobs}")
    ids = [cl.submit(body, name=f"bench-{i}") for i in range(n_jobs)]
    results = [cl.wait(j, timeout_s=timeout_s) for j in ids]
    lat = [r.submit_to_start_s for r in results if r.submit_to_start_s is not None]
    first = min(r.submitted_at for r in results if r.submitted_at)
    last = max((r.ended_at or r.started_at or first) for r in results)
    makespan = max(last - first, 1e-9)
    return {"job_ids": ids, "latencies_s": lat, "median_s": statistics.median(lat) if lat else None,
            "jobs_per_minute": 60 * sum(r.ok for r in results) / makespan, "makespan_s": makespan,
            "states": [r.state for r in results]}


def default_state_dir() -> Path:
    return paths.build_dir() / "slurm"


def ensure_cluster(state_dir: Path | None = None, partition: str = "batch", stop_at_exit: bool = False) -> SlurmCluster:
    """Start the local Slurm cluster from a generated config, or reuse the running one.

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
    cl = SlurmCluster(state_dir or default_state_dir(), partition=partition)
    cl.ensure_running()
    if stop_at_exit and cl.started_here:
        import atexit

        atexit.register(cl.stop)
    return cl
