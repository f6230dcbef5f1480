"""Managed local processes: free ports, start in their own session, stop by pid, log tails.

Every real component the project starts (Prometheus, the inference server, the S3
endpoint, Slurm's daemons, Horovod jobs) is a child process that must bind to loopback,
be found again by pid and leave nothing behind. The pieces they share live here once.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Mapping, Sequence

LOOPBACK = "127.0.0.1"


#: ``PATH`` plus the sbin folders, where Debian puts the daemons and admin tools (slurmd, sshd, ip).
SEARCH_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin", "/usr/local/sbin"])


def which(name: str, path: str | None = None) -> str | None:
    """The full path of command ``name`` on ``path`` (default :data:`SEARCH_PATH`), or ``None``."""
    return shutil.which(name, path=path or SEARCH_PATH)


def missing_packages(packages: Mapping[str, str], path: str | None = None) -> tuple[list[str], list[str]]:
    """The commands of ``packages`` (``{command: Debian package}``) not found, and the packages to install.

    Returns:
        ``(missing commands in the mapping's order, sorted packages that ship them)``; both empty
        when everything is there.
    """
    missing = [n for n in packages if which(n, path) is None]
    return missing, sorted({packages[n] for n in missing})


class NotReady(RuntimeError):
    """A process stayed up but did not become ready in time (:func:`wait_until`)."""


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port that is free on ``host`` right now (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def port_open(port: int, host: str = LOOPBACK, timeout_s: float = 0.2) -> bool:
    """True when something accepts TCP connections on ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def free_port_block(n: int, tries: int = 50, host: str = LOOPBACK) -> int:
    """A base port with ``n`` consecutive free ports on ``host`` (for per-rank exporters).

    Drawn below Linux's ephemeral range (``ip_local_port_range``, 32768+ by default): a port
    in it can be taken at any moment as the local end of some outgoing connection, and the
    exporter then fails to bind (or to re-bind, when the A/B switches it back on).
    """
    for _ in range(tries):
        base = random.randint(20000, 32000 - n)
        if any(port_open(base + i, host) for i in range(n)):
            continue
        socks = []
        try:
            for i in range(n):
                s = socket.socket()
                s.bind((host, base + i))
                socks.append(s)
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError(f"no block of {n} free ports found on {host}")


def tail(path: Path | str, n: int = 20, missing: str = "") -> str:
    """The last ``n`` lines of a log file (``missing`` when it cannot be read)."""
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return missing


def cmdline(pid: int | str) -> str | None:
    """``pid``'s command line, arguments joined by spaces (None once it is gone)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return None


def cmdlines(needle: str = "") -> dict[int, str]:
    """``{pid: command line}`` of every process but this one whose command line contains ``needle``."""
    me, out = os.getpid(), {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != me:
            cmd = cmdline(entry.name)
            if cmd is not None and needle in cmd:
                out[int(entry.name)] = cmd
    return out


def pin_threads(cores: Sequence[int]) -> list[int]:
    """Pin every thread of this process to ``cores`` (``sched_setaffinity(0, …)`` pins only the
    calling thread; threads started earlier, e.g. a library's background thread, keep theirs)."""
    mine = sorted(cores)
    for tid in sorted(int(t) for t in os.listdir("/proc/self/task")):
        try:
            os.sched_setaffinity(tid, mine)
        except ProcessLookupError:  # a thread that has just ended
            pass
    return mine


def pid_alive(pid: int | None, needle: str = "") -> bool:
    """True when ``pid`` runs (not a zombie) and, if given, its command line contains ``needle``."""
    if not pid:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    cmd = cmdline(pid)
    return cmd is not None and stat.rsplit(")", 1)[1].split()[0] != "Z" and needle in cmd


def _die_with_parent() -> None:
    """In the child, before exec: ask Linux for SIGTERM when the parent dies (``PR_SET_PDEATHSIG``)."""
    import ctypes

    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM, 0, 0, 0)  # 1 = PR_SET_PDEATHSIG


def spawn(argv: Sequence[str], log_path: Path | str | None = None, cwd: Path | str | None = None,
          env: dict[str, str] | None = None, die_with_parent: bool = False) -> subprocess.Popen:
    """Start ``argv`` in its own session (so its whole group can be stopped), output to ``log_path``.

    Args:
        die_with_parent: the kernel sends the child SIGTERM when this process dies, however it dies
            (Linux ``PR_SET_PDEATHSIG``). For servers that belong to one notebook or test (Prometheus,
            Alertmanager, exporters): a kernel killed after a failed cell can't run its ``atexit`` stop,
            and they would outlive it. Not for what later notebooks reuse (the cluster, the object store).
    """
    pre = _die_with_parent if die_with_parent and sys.platform.startswith("linux") else None
    if log_path is None:
        return subprocess.Popen(list(argv), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=cwd,
                                env=env, start_new_session=True, preexec_fn=pre)
    with open(log_path, "w", encoding="utf-8") as log:
        return subprocess.Popen(list(argv), stdout=log, stderr=subprocess.STDOUT, cwd=cwd, env=env,
                                start_new_session=True, preexec_fn=pre)


def stop(proc: subprocess.Popen | None, timeout_s: float = 10.0, sig: int = signal.SIGTERM,
         group: bool = False) -> int | None:
    """Send ``sig`` (to the process group when ``group``), SIGKILL after ``timeout_s``; returns the exit code."""
    if proc is None:
        return None
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, sig) if group else proc.send_signal(sig)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(proc.pid, signal.SIGKILL) if group else proc.kill()
            except ProcessLookupError:
                pass
            proc.wait()
    return proc.returncode


def wait_until(ready: Callable[[], bool], timeout_s: float, what: str, proc: subprocess.Popen | None = None,
               log_path: Path | str | None = None, interval_s: float = 0.1) -> float:
    """Poll ``ready()`` until true; returns the seconds waited.

    Raises:
        RuntimeError: ``proc`` exited first (with the log's tail).
        NotReady: ``timeout_s`` passed (a RuntimeError, with the log's tail).
    """
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}:\n{tail(log_path, 30, '(no log)') if log_path else ''}")
        if ready():
            return time.monotonic() - t0
        time.sleep(interval_s)
    raise NotReady(f"{what} not ready within {timeout_s}s:\n{tail(log_path, 30, '(no log)') if log_path else ''}")
