"""Training stage with real horovodrun (Gloo) workers on tiny Parquet shards: a 2-worker
run, NaN stop, bad input, checkpoint restart equality, elastic survival of a killed worker,
and the benchmark drivers."""

from __future__ import annotations

import dataclasses
import math
import re
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from hpcml.train import bench, checkpoint as ck
from hpcml.train.targets.local import TrainJobError, run_local, start_local
from hpcml.train.spec import TrainSpec

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def ds2(tmp_path_factory, contract_dataset):
    return contract_dataset(tmp_path_factory.mktemp("ds2"))


def _spec(ds, out, **kw):
    base = dict(name="t", world_size=2, epochs=2, batch_size=32, lr=0.02, dataset_dir=str(ds), out_dir=str(out),
                width=8)
    return TrainSpec(**{**base, **kw})


def test_two_workers_train_write_metrics_model_and_export(ds2, tmp_path):
    spec = _spec(ds2, tmp_path / "run", metrics_port=0, checkpoint_every=3)
    m = run_local(spec, timeout_s=240, on_progress=None)
    assert m["world_size"] == 2 and m["epochs_run"] == 2 and m["steps"] == 2 * 6
    assert m["test_accuracy"] > 0.3 and m["test_count"] == 96  # 10 classes: chance is 0.1
    assert set(m["time_split"]) == {"data_s", "compute_s", "allreduce_s", "optimizer_s", "train_s"}
    model, art = ck.load_model(tmp_path / "run" / "model.pt")
    assert art["metrics"]["test_accuracy"] == pytest.approx(m["test_accuracy"])
    assert art["normalization"]["mean"] == pytest.approx(0.13)
    assert ck.resume_state(tmp_path / "run" / "checkpoints")["step"] == 12


def test_exporter_serves_the_contract_metrics(ds2, tmp_path):
    from hpcml.proc import free_port_block

    port = free_port_block(2)  # one per rank, below the ephemeral range
    spec = _spec(ds2, tmp_path / "run", epochs=30, metrics_port=port)
    job = start_local(spec)
    try:
        job.wait_for(lambda e: e.get("event") == "epoch", 120)
        bodies = [urllib.request.urlopen(f"http://127.0.0.1:{port + r}/metrics", timeout=10).read().decode()
                  for r in (0, 1)]
    finally:
        job.kill()
    for r, body in enumerate(bodies):
        for name in ("hpcml_train_step_seconds_bucket", "hpcml_train_samples_total", "hpcml_train_loss",
                     "hpcml_train_allreduce_seconds_count", "hpcml_train_step", "hpcml_train_last_step_timestamp_seconds"):
            assert re.search(rf'^{name}{{[^}}]*rank="{r}"', body, re.M), f"rank {r} does not export {name}"


def test_exporter_ab_inside_a_real_run_measures_both_arms(ds2, tmp_path):
    from hpcml.proc import free_port_block

    # Below the ephemeral range: the A/B re-binds each rank's port every other block, and a
    # port from bind(0) can meanwhile be taken as the local end of some outgoing connection.
    port = free_port_block(2)
    spec = _spec(ds2, tmp_path / "run", epochs=4, metrics_port=port, extra={"exporter_ab_block": 2})
    m = run_local(spec, timeout_s=240)
    ab = m["exporter_ab"]
    assert "error" not in ab, ab
    assert ab["block_steps"] == 2 and ab["steps_on"] > 0 and ab["steps_off"] > 0
    assert [b["on"] for b in ab["blocks"][:4]] == [False, True, True, False]
    # all but the warm-up block and the first step of each block
    assert sum(b["steps"] for b in ab["blocks"]) == m["steps"] - 2 - len(ab["blocks"])
    assert ab["mean_step_on_s"] > 0 and ab["mean_step_off_s"] > 0 and math.isfinite(ab["overhead_pct"])


def test_world_size_must_equal_shards(ds2, tmp_path):
    with pytest.raises(ValueError, match="world_size=3 but .* has 2 shard"):
        run_local(_spec(ds2, tmp_path / "run", world_size=3), timeout_s=60)


def test_missing_shards_is_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="no train shards"):
        run_local(_spec(tmp_path / "nothing", tmp_path / "run"), timeout_s=60)


def test_nan_loss_stops_every_rank_and_names_the_step(tmp_path, contract_dataset):
    ds = contract_dataset(tmp_path / "ds", poison=True)
    with pytest.raises(TrainJobError, match="at step 1") as ei:
        run_local(_spec(ds, tmp_path / "run", checkpoint_every=1), timeout_s=120, on_progress=None)
    assert ei.value.events[0]["error"] == "nan_loss"
    assert ck.resume_state(tmp_path / "run" / "checkpoints") is None  # nothing poisoned was saved


def test_corrupt_checkpoint_refuses_to_resume(ds2, tmp_path):
    out = tmp_path / "run"
    ck.save_checkpoint(out / "checkpoints", {"step": 1})
    (out / "checkpoints" / "ckpt-00000001.pt").write_bytes(b"garbage")
    with pytest.raises(TrainJobError, match="corrupt"):
        run_local(_spec(ds2, out), timeout_s=120, on_progress=None)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("backend", ["horovod", "ddp"])
def test_sigterm_checkpoints_every_rank_at_one_step_and_the_run_resumes(ds2, tmp_path, backend):
    """A Spot notice or a pod deletion sends SIGTERM: the worker finishes its step, writes a
    checkpoint, exits with EXIT_PREEMPTED; the job says so under either launcher; a restart
    resumes from that checkpoint."""
    import signal

    from hpcml.train.targets.local import TrainJobPreempted
    from hpcml.train.worker import EXIT_PREEMPTED

    spec = _spec(ds2, tmp_path / "run", epochs=40, checkpoint_every=0, backend=backend)  # no periodic checkpoint
    job = start_local(spec, on_progress=None)
    try:
        job.wait_for(lambda e: e.get("event") == "epoch", 40)
        job.kill_worker(1, signal.SIGTERM)  # one rank only: the other learns it through the allreduce
        with pytest.raises(TrainJobPreempted) as ei:
            job.wait(30)
    finally:
        job.kill()
    log = job.log_path.read_text(encoding="utf-8", errors="replace")
    pre = [e for e in job.events if e.get("event") == "preempted"]
    assert len(pre) == 1 and pre[0]["signal"] == "SIGTERM", log[-2000:]
    assert ei.value.step == pre[0]["step"] and "run the same spec again to resume" in str(ei.value)
    # both launchers exit 1 for a failed rank and name the ranks' 143 only in their logs: hence the event
    assert job.proc.returncode == 1 and ei.value.returncode == 1, log[-2000:]
    assert "stopped on SIGTERM" in log and str(EXIT_PREEMPTED) in log, log[-2000:]
    state = ck.resume_state(tmp_path / "run" / "checkpoints")
    assert state is not None and state["step"] == pre[0]["step"]
    assert 6 <= state["step"] < 40 * 6  # after the first epoch, before the end
    assert [e["event"] for e in job.events if e.get("event") == "checkpoint"] == ["checkpoint"]
    again = run_local(dataclasses.replace(spec, epochs=state["epoch"] + 1), timeout_s=40, on_progress=None)
    assert again["resumed_from_step"] == state["step"]
    assert again["epochs_run"] == state["epoch"] + 1 and again["steps"] == (state["epoch"] + 1) * 6


@pytest.mark.slow
def test_restart_after_kill_resumes_and_matches_uninterrupted(ds2, tmp_path):
    kw = dict(epochs=3, checkpoint_every=4, batch_size=16)
    ref = run_local(_spec(ds2, tmp_path / "ref", **kw), timeout_s=240, on_progress=None)
    spec = _spec(ds2, tmp_path / "cut", **kw)
    job = start_local(spec)
    job.wait_for(lambda e: e.get("event") == "checkpoint" and e["step"] >= 16, 180)  # mid-epoch 1
    job.kill()  # the whole job, as a node loss or a Slurm preemption would
    assert ck.resume_state(tmp_path / "cut" / "checkpoints")["step"] >= 16
    again = run_local(spec, timeout_s=240, on_progress=None)
    assert again["resumed_from_step"] >= 16
    assert again["steps"] == ref["steps"] and again["epochs_run"] == ref["epochs_run"]
    # Tolerance: 1e-6 absolute on losses; accuracies identical (in practice bit-identical).
    assert again["test_accuracy"] == ref["test_accuracy"] and again["val_accuracy"] == ref["val_accuracy"]
    assert math.isclose(again["test_loss"], ref["test_loss"], abs_tol=1e-6)
    assert math.isclose(again["train_loss"], ref["train_loss"], abs_tol=1e-6)


@pytest.mark.slow
def test_elastic_job_survives_a_killed_worker(ds2, tmp_path):
    spec = _spec(ds2, tmp_path / "el", elastic=True, min_workers=1, epochs=3, batch_size=16, checkpoint_every=4)
    job = start_local(spec)
    try:
        job.wait_for(lambda e: e.get("event") == "checkpoint" and e["step"] >= 8, 180)
        job.kill_worker(1)
        m = job.wait(300)
    finally:
        job.kill()
    resets = [e for e in job.events if e.get("event") == "reset"]
    assert resets and resets[0]["world_size"] == 1
    assert m["world_size"] == 1 and m["epochs_run"] == 3 and m["test_accuracy"] > 0.3


@pytest.mark.slow
def test_benchmark_drivers_run_tiny(ds2):
    r = bench.run_bench(1, ["synthetic", "overhead"], timeout_s=240, arch="resnet18", image_size=32,
                        batch_size=2, iters=2, batches_per_iter=1, warmup_batches=1, overhead_steps=4,
                        overhead_rounds=2, dataset_dir=str(ds2), cnn_batch=16)
    assert r["world_size"] == 1 and r["synthetic"]["per_rank"][0]["img_per_s"] > 0
    assert r["heap_kept"] == [True] and "heap_applied" not in r["config"]  # glibc took keep(); options untouched
    assert len(r["synthetic"]["per_rank"][0]["iters"]) == 2
    ov = r["overhead"]
    assert ov["plain_step_s"] > 0 and ov["horovod_step_s"] > 0 and len(ov["pair_overheads_pct"]) == 2
    assert [b["on"] for b in ov["blocks"]] == [False, True, True, False]  # ABBA, Horovod is "on"
    assert math.isfinite(ov["ci95_half_width_pct"])
    assert r["horovod_cycle_time_ms"] is None
    c = bench.run_bench(2, ["synthetic"], timeout_s=240, arch="resnet18", image_size=32, batch_size=2, iters=2,
                        batches_per_iter=1, warmup_batches=1, cycle_time_ms=20)
    assert c["horovod_cycle_time_ms"] == "20" and len(c["synthetic"]["per_rank"]) == 2
    ceil = bench.ceiling(2, timeout_s=240, arch="resnet18", image_size=32, batch_size=2, iters=2,
                         batches_per_iter=1, warmup_batches=1)
    assert [p["slot"] for p in ceil["per_process"]] == [0, 1]
    assert sorted(p["cores"][0] for p in ceil["per_process"]) == [0, 1]
    assert all(len(p[ph]["iters"]) == 2 for p in ceil["per_process"] for ph in ("alone", "together"))
    assert 0 < ceil["efficiency"] < 1.5 and ceil["alone_img_per_s"] > 0
    p = bench.run_bench(2, ["profile"], timeout_s=240, profile_steps=2, dataset_dir=str(ds2), cnn_batch=16)
    assert p["profile"]["top_ops"] and set(p["profile"]["split_s"]) == {"data", "compute", "allreduce", "optimizer"}
    assert sorted(c[0] for c in p["cores"]) == [0, 1] or len(p["cores"]) == 2
