"""The two training backends (issue 25): the shared collective layer (:mod:`hpcml.train.comm`)
at world size 1 and 2 under each backend's real launcher, the worker's loop under torchrun,
and the loss-parity measure."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from hpcml.train import comm

BIN = Path(sys.executable).parent


def _comm_result(cmd: list[str], env: dict[str, str] | None = None) -> dict:
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env={**os.environ, **(env or {})},
                       cwd="/tmp")
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    line = next(ln for ln in p.stdout.splitlines() if "HPCML-COMM " in ln)
    return json.loads(line.split("HPCML-COMM ", 1)[1])


def _one_process_env(backend: str) -> dict[str, str]:
    if backend == "horovod":
        return {}
    from hpcml.proc import free_port

    return {"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(free_port())}


@pytest.mark.unit
@pytest.mark.parametrize("backend", comm.BACKENDS)
def test_every_collective_at_world_size_one(backend):
    r = _comm_result([sys.executable, "-m", "hpcml.train.comm", "--backend", backend, "--timeout-s", "30"],
                     _one_process_env(backend))
    assert (r["backend"], r["rank"], r["size"], r["local_rank"]) == (backend, 0, 1, 0)
    assert r["mean"] == r["sum"] == r["min"] == r["async_sum"] == [1.0, 2.0]
    assert r["broadcast"] == {"from": 0} and r["allgather"] == [0]
    assert r["grad_bias"] == [4.0, 4.0]  # d(sum of 4 rows x 2 outputs)/d(bias), not averaged away


@pytest.mark.integration
@pytest.mark.parametrize("backend", comm.BACKENDS)
def test_two_ranks_on_localhost_under_the_backends_launcher(backend):
    if backend == "horovod":
        cmd = [str(BIN / "horovodrun"), "-np", "2", "-H", "localhost:2", "--gloo", sys.executable]
    else:
        cmd = [str(BIN / "torchrun"), "--standalone", "--nproc-per-node", "2"]  # runs `-m` with its python
    cmd += ["-m", "hpcml.train.comm", "--backend", backend, "--timeout-s", "30"]
    r = _comm_result(cmd)
    assert (r["rank"], r["size"]) == (0, 2)
    assert r["mean"] == [1.5, 3.0] and r["sum"] == r["async_sum"] == [3.0, 6.0] and r["min"] == [1.0, 2.0]
    assert r["broadcast"] == {"from": 1} and r["allgather"] == [0, 10]
    assert r["weights"][0] == r["weights"][1]  # rank 1 started from other weights: wrap synced them
    # rank 0 fed zeros, rank 1 ones: the bias gradient 4 is the same on both, its mean is 4
    assert r["grad_bias"] == [4.0, 4.0]


@pytest.mark.unit
@pytest.mark.parametrize("kw,match", [
    ({"backend": "mpi"}, r"backend must be one of \('horovod', 'ddp'\), got 'mpi'"),
    ({"backend": "ddp", "bucket_mb": 0}, "bucket_mb must be None"),
    ({"backend": "ddp", "bucket_mb": True}, "bucket_mb must be None"),
    ({"backend": "ddp", "timeout_s": 0}, "timeout_s must be > 0"),
], ids=["backend", "bucket-zero", "bucket-bool", "timeout"])
def test_init_rejects_bad_input(kw, match):
    with pytest.raises(ValueError, match=match):
        comm.init(**kw)


@pytest.mark.unit
def test_ddp_without_torchrun_env_names_what_is_missing(monkeypatch):
    for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(k, raising=False)
    with pytest.raises(ValueError, match=r"torchrun's environment; missing \['RANK'"):
        comm.init("ddp")
