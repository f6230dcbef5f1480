"""hpcml.proc: a process that never gets ready and one that exits are told apart."""

import os
import signal
import subprocess
import sys

import pytest

from hpcml import proc

pytestmark = pytest.mark.integration


def test_wait_until_tells_not_ready_from_exited():
    p = proc.spawn([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        with pytest.raises(proc.NotReady, match="sleeper not ready within"):
            proc.wait_until(lambda: False, 0.3, "sleeper", p)
    finally:
        assert proc.stop(p, timeout_s=5) is not None
    q = proc.spawn([sys.executable, "-c", "raise SystemExit(3)"])
    with pytest.raises(RuntimeError, match="quitter exited with 3") as info:
        proc.wait_until(lambda: False, 10, "quitter", q)
    assert not isinstance(info.value, proc.NotReady)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_a_server_that_dies_with_its_parent_does_not_outlive_a_killed_kernel():
    code = ("import sys, time; from hpcml import proc; "
            "c = proc.spawn([sys.executable, '-c', 'import time; time.sleep(60)'], die_with_parent=True); "
            "print(c.pid, flush=True); time.sleep(60)")
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    child = int(parent.stdout.readline())
    try:
        assert os.kill(child, 0) is None  # alive while its parent lives
        parent.kill()  # SIGKILL: no atexit, no finally
        parent.wait()
        proc.wait_until(lambda: not _alive(child), 10, "the orphan to get SIGTERM")
    finally:
        if _alive(child):
            os.kill(child, signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.unit
def test_cmdlines_finds_a_process_by_its_command_line_and_never_this_one():
    marker = f"hpcml-cmdlines-{os.getpid()}"
    p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)", marker])
    try:
        proc.wait_until(lambda: p.pid in proc.cmdlines(marker), 10, "the child's command line")
        found = proc.cmdlines(marker)
        assert list(found) == [p.pid] and found[p.pid].split()[-1] == marker
        assert os.getpid() not in proc.cmdlines("python")
        assert proc.cmdline(p.pid) == found[p.pid] and proc.pid_alive(p.pid, marker)
    finally:
        p.kill()
        p.wait()
    assert proc.cmdline(p.pid) is None and proc.cmdlines(marker) == {}


@pytest.mark.unit
def test_pin_threads_pins_threads_started_before_it():
    import threading

    before = sorted(os.sched_getaffinity(0))
    started, stop = threading.Event(), threading.Event()
    t = threading.Thread(target=lambda: (started.set(), stop.wait(10)))
    t.start()
    started.wait(5)
    try:
        assert proc.pin_threads([before[-1]]) == [before[-1]]
        assert os.sched_getaffinity(t.native_id) == {before[-1]} == os.sched_getaffinity(0)
    finally:
        stop.set()
        t.join()
        proc.pin_threads(before)
    assert sorted(os.sched_getaffinity(0)) == before
