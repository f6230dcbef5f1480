"""hpcml.proc: a process that never gets ready and one that exits are told apart."""

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
