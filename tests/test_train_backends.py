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


def _check_world_size_one(r: dict, backend: str) -> None:
    assert (r["backend"], r["rank"], r["size"], r["local_rank"]) == (backend, 0, 1, 0)
    assert r["mean"] == r["sum"] == r["min"] == r["async_sum"] == [1.0, 2.0]
    assert r["broadcast"] == {"from": 0} and r["allgather"] == [0]
    assert r["grad_bias"] == [4.0, 4.0]  # d(sum of 4 rows x 2 outputs)/d(bias), not averaged away


@pytest.mark.unit
def test_every_collective_at_world_size_one_horovod():
    # a process of its own: hvd.init is process-wide state
    r = _comm_result([sys.executable, "-m", "hpcml.train.comm", "--backend", "horovod", "--timeout-s", "30"])
    _check_world_size_one(r, "horovod")


@pytest.mark.unit
def test_every_collective_at_world_size_one_ddp(monkeypatch):
    # in this process (a one-rank Gloo group over env:// on loopback; destroyed at the end)
    for k, v in _one_process_env("ddp").items():
        monkeypatch.setenv(k, v)
    _check_world_size_one(comm.selftest("ddp", timeout_s=30), "ddp")
    import torch.distributed as dist

    assert not dist.is_initialized()


@pytest.mark.integration
# Horovod at 2 ranks under horovodrun goes through the same Comm in every test of
# test_train_integration.py; add "horovod" here to run its smoke test too (+10 s).
@pytest.mark.parametrize("backend", ["ddp"])
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
    ({"backend": "horovod", "poll_ms": 0}, "poll_ms must be None"),
    ({"backend": "horovod", "poll_ms": "1"}, "poll_ms must be None"),
], ids=["backend", "bucket-zero", "bucket-bool", "timeout", "poll-zero", "poll-str"])
def test_init_rejects_bad_input(kw, match):
    with pytest.raises(ValueError, match=match):
        comm.init(**kw)


@pytest.mark.unit
def test_horovod_waits_sleep_between_polls_before_horovods_own_wait(monkeypatch):
    # a stand-in for horovod.torch: each handle is done after a given number of polls
    from types import SimpleNamespace

    left, log, slept = {1: 3, 2: 1}, [], []

    def poll(h):
        left[h] -= 1
        return left[h] <= 0

    hvd = SimpleNamespace(Average=0, Sum=1, Min=2, poll=poll, synchronize=lambda h: log.append(("sync", h)) or h)
    monkeypatch.setattr(comm.time, "sleep", slept.append)
    c = comm.HorovodComm(hvd, None, poll_ms=2.0)
    opt = SimpleNamespace(_handles={"a": (1, None), "b": (2, None), "c": (None, None)},
                          synchronize=lambda: log.append(("opt",)))
    c.synchronize(opt)
    assert log == [("opt",)] and slept == [0.002, 0.002] and left == {1: 0, 2: 0}
    assert c.wait(1) == 1 and log[-1] == ("sync", 1)
    spin = comm.HorovodComm(hvd, None, poll_ms=None)  # Horovod 0.28.1's own wait, untouched
    left[1], slept[:] = 5, []
    spin.wait(1)
    assert slept == [] and left[1] == 5


@pytest.mark.unit
def test_ddp_without_torchrun_env_names_what_is_missing(monkeypatch):
    for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(k, raising=False)
    with pytest.raises(ValueError, match=r"torchrun's environment; missing \['RANK'"):
        comm.init("ddp")


@pytest.mark.unit
def test_ddp_beside_refuses_a_ddp_comm_and_names_an_interface_without_ipv4():
    class Fake(comm.Comm):
        name = "ddp"

    with pytest.raises(ValueError, match="joins a DDP group inside a Horovod job, got a 'ddp' comm"):
        comm.ddp_beside(Fake())
    with pytest.raises(ValueError, match="interface 'hpcml-none0' .* has no IPv4 address"):
        comm._iface_address("hpcml-none0")
    assert comm._iface_address("lo") == "127.0.0.1"


@pytest.mark.integration
@pytest.mark.timeout(120)
def test_elastic_ddp_restarts_resume_reshard_and_a_dead_rank_names_its_node(tmp_path, contract_dataset):
    import signal
    import socket

    from hpcml.train.spec import TrainSpec
    from hpcml.train.targets.local import TrainJobError, start_local

    ds = contract_dataset(tmp_path / "ds")
    spec = TrainSpec(name="ddp-elastic", world_size=2, epochs=40, batch_size=32, lr=0.02, width=8, backend="ddp",
                     elastic=True, checkpoint_every=2, dataset_dir=str(ds), out_dir=str(tmp_path / "run"),
                     extra={"max_restarts": 1, "comm_timeout_s": 30})
    job = start_local(spec, on_progress=None)
    try:
        job.wait_for(lambda e: e.get("event") == "checkpoint" and e["step"] >= 4, 60)
        job.kill_worker(1)  # torchrun stops the survivor and restarts both (restart 1 of 1)
        reset = job.wait_for(lambda e: e.get("event") == "reset", 60)
        assert reset["world_size"] == 2 and reset["restart"] == 1 and reset["step"] >= 4
        assert reset["step"] % 2 == 0  # resumed from a checkpoint, not from step 0
        job.wait_for(lambda e: e.get("event") == "checkpoint" and e["step"] > reset["step"], 60)
        job.kill_worker(1, signal.SIGKILL)  # no restart left: the job fails
        with pytest.raises(TrainJobError) as err:
            job.wait(60)
    finally:
        job.kill()
    msg = str(err.value)
    assert f"torchrun exited with 1 on node {socket.gethostname()}" in msg
    assert "hpcml.train.worker FAILED" in msg and "rank      : 1" in msg  # torchrun's failure summary: the tail


@pytest.mark.integration
@pytest.mark.timeout(300)
def test_sbatch_runs_ddp_across_the_nodes(mcluster, tmp_path, contract_dataset):
    """``sbatch -N2`` of a ddp TrainSpec: srun starts one torchrun agent per node (c10d rendezvous)."""
    from hpcml.train.spec import TrainSpec
    from hpcml.train.targets.registry import launch

    ds = contract_dataset(tmp_path / "ds")
    spec = TrainSpec(name="slurm-ddp", world_size=2, epochs=1, batch_size=32, lr=0.02, width=8, backend="ddp",
                     dataset_dir=str(ds), out_dir=str(tmp_path / "run"), pin_cpus=False)
    res = launch(spec, target="slurm", cluster=mcluster.slurm, timeout_s=240)
    assert res.job.ok, res.job
    m = res.metrics
    assert m["backend"] == "ddp" and m["world_size"] == 2 and m["steps"] == 6 and len(m["step_losses"]) == 6
    assert "--rdzv-backend=c10d" in res.request and "GLOO_SOCKET_IFNAME=eth1" in res.request
    assert sorted(m["hosts"]) == sorted(n.name for n in mcluster.plan.nodes)  # one rank on each node


@pytest.mark.unit
@pytest.mark.parametrize("kw,match", [
    ({"backend": "nccl"}, r"TrainSpec.backend: expected one of \('horovod', 'ddp'\), got 'nccl'"),
    ({"bucket_mb": -1}, r"TrainSpec.bucket_mb: expected None \(each tool's default\) or a positive number of MiB"),
    ({"record_losses": 1.5}, r"TrainSpec.record_losses: expected an integer >= 0"),
], ids=["backend", "bucket", "record"])
def test_spec_rejects_a_bad_backend_field(kw, match):
    from hpcml.specbase import SpecError
    from hpcml.train.spec import TrainSpec

    with pytest.raises(SpecError, match=match):
        TrainSpec(**kw)


@pytest.mark.unit
def test_backend_comparison_order_and_summary():
    from hpcml.train import backend_compare as bc

    assert bc.abba(2) == ["horovod", "ddp", "ddp", "horovod"]
    run = lambda t, losses: {"step_time_s": t, "train_samples_per_s": 64 / t, "time_split": {}, "test_accuracy": 0.9,  # noqa: E731
                             "steps": 3, "hosts": ["h"], "step_losses": losses}
    s = bc.summarize({"horovod": [run(0.2, [2.0, 1.0, 0.5]), run(0.4, [9.0])], "ddp": [run(0.25, [2.0, 1.0, 0.55])]}, 3)
    assert s["parity"]["max_rel_diff"] == pytest.approx(0.05 / 0.55) and s["parity"]["steps"] == 3
    assert s["horovod"]["step_time_s"] == pytest.approx(0.3) and s["step_time_ratio_hvd_over_ddp"] == pytest.approx(1.2)
    assert s["throughput_ratio_hvd_over_ddp"] == pytest.approx((160 + 320) / 2 / 256)
    m = {x.name: x.value for x in bc.comparison_metrics(s)}
    assert m["cnn_backend_loss_parity_steps"] == 3 and m["cnn_backend_ddp_step_time_s"] == pytest.approx(0.25)
    assert len(m) == 11 and all(k.startswith("cnn_backend_") for k in m)


@pytest.mark.unit
def test_comparison_refuses_runs_shorter_than_the_parity_window(tmp_path):
    from hpcml.train import backend_compare as bc
    from hpcml.train.spec import TrainSpec

    fake = lambda s: {"steps": 10, "step_losses": [1.0] * 10}  # noqa: E731  (stands in for a real run's metrics)
    with pytest.raises(ValueError, match="the horovod run trained 10 steps, fewer than parity_steps=100"):
        bc.compare_backends(TrainSpec(out_dir=str(tmp_path / "x")), runner=fake, out_root=tmp_path)
