"""Training stage, pure pieces: models, FLOPs, LR schedule, benchmark maths, shard checks,
checkpoint atomicity and corruption, model artifacts, NaN detection."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from hpcml.train import abtest, bench, checkpoint as ck, loop, shards, stats
from hpcml.train.models import count_params, make_model, train_flops_per_sample

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("arch,kw,x_shape,out", [
    ("cnn", {}, (3, 784), (3, 10)),
    ("cnn", {"width": 8, "depth": 3, "dropout": 0.0}, (2, 1, 28, 28), (2, 10)),
    ("resnet18", {"num_classes": 10, "in_channels": 1}, (2, 1, 28, 28), (2, 10)),
    ("resnet50", {"channels_last": True}, (2, 3, 32, 32), (2, 1000)),
    ("mlp", {"hidden": 64, "depth": 2}, (3, 1, 28, 28), (3, 10)),
], ids=["cnn-flat", "cnn-deep", "resnet18-mnist", "resnet50-cl", "mlp"])
def test_model_shapes(arch, kw, x_shape, out):
    assert make_model(arch, **kw)(torch.randn(*x_shape)).shape == out


@pytest.mark.parametrize("arch,params", [("resnet18", 11_689_512), ("resnet50", 25_557_032)],
                         ids=["resnet18", "resnet50"])
def test_resnet_param_counts_match_the_paper_models(arch, params):
    assert count_params(make_model(arch)) == params  # the torchvision/He et al. reference counts


def test_resnet50_train_flops_about_three_times_4_1_gmacs():
    f = train_flops_per_sample(make_model("resnet50"), (3, 224, 224), batch=1)
    assert 23e9 < f < 26e9  # 4.1 GMAC fwd = 8.2 GFLOP, x3 for fwd+bwd


@pytest.mark.parametrize("arch,kw,err", [
    ("vgg", {}, "unknown arch"), ("cnn", {"depth": 9}, "depth"), ("cnn", {"dropout": 1.0}, "dropout"),
    ("cnn", {"bogus": 1}, "bad keyword"),
], ids=["arch", "depth", "dropout", "kwarg"])
def test_make_model_rejects_bad_input(arch, kw, err):
    with pytest.raises(ValueError, match=err):
        make_model(arch, **kw)


@pytest.mark.parametrize("progress,ws,warm,expect", [
    (0.0, 4, 1.0, 0.1), (0.5, 4, 1.0, 0.25), (1.0, 4, 1.0, 0.4), (10.0, 4, 1.0, 0.0),
    (0.0, 1, 0.0, 0.1), (5.5, 2, 1.0, 0.1),
], ids=["start", "mid-warmup", "peak", "end-cosine", "no-warmup", "cosine-half"])
def test_lr_schedule(progress, ws, warm, expect):
    assert loop.lr_at(progress, 0.1, ws, warm, 10.0) == pytest.approx(expect, abs=1e-9)


def test_lr_constant_schedule_and_errors():
    assert loop.lr_at(9.0, 0.1, 2, 1.0, 10.0, "constant") == pytest.approx(0.2)
    with pytest.raises(ValueError, match="schedule"):
        loop.lr_at(5.0, 0.1, 2, 1.0, 10.0, "step")


@pytest.mark.parametrize("fn,args,expect", [
    (stats.scaling_efficiency, (180.0, 100.0, 2), 0.9),
    (abtest.overhead_pct, (0.100, 0.104), 4.0),
    (stats.mfu, (10.0, 2e9, 100e9), 0.2),
], ids=["scaling", "overhead", "mfu"])
def test_bench_maths(fn, args, expect):
    assert fn(*args) == pytest.approx(expect)


def test_ci95_is_horovods_mean_and_1_96_sigma():
    mean, conf = stats.ci95([10.0, 12.0])
    assert (mean, conf) == pytest.approx((11.0, 1.96))


def test_epoch_order_is_deterministic_and_rank_specific():
    a, b = loop.epoch_order(100, 0, 1, 0), loop.epoch_order(100, 0, 1, 0)
    assert (a == b).all() and not (a == loop.epoch_order(100, 0, 1, 1)).all()
    assert sorted(a) == list(range(100))


def _touch_shards(root, split, n):
    (root / split).mkdir(parents=True, exist_ok=True)
    for i in n:
        (root / split / f"shard-{i:05d}.parquet").write_bytes(b"x")


@pytest.mark.parametrize("have,ws,elastic,err", [
    (None, 2, False, "no train shards"),
    ([0, 2], 2, False, r"shard\(s\) \[1\] missing"),
    ([0, 1, 2], 2, False, "world_size=2 but .* has 3 shard"),
    ([0], 2, True, "needs >= 2 train shards"),
], ids=["missing", "gap", "mismatch", "elastic-too-few"])
def test_shard_checks(tmp_path, have, ws, elastic, err):
    if have is not None:
        _touch_shards(tmp_path, "train", have)
    with pytest.raises((ValueError, FileNotFoundError), match=err):
        shards.check_world_size(tmp_path, ws, elastic)


def test_shard_check_passes(tmp_path):
    _touch_shards(tmp_path, "train", [0, 1, 2])
    assert shards.check_world_size(tmp_path, 3) == 3
    assert shards.check_world_size(tmp_path, 2, elastic=True) == 3


def test_checkpoint_roundtrip_pointer_and_pruning(tmp_path):
    for step in (5, 10, 15):
        ck.save_checkpoint(tmp_path, {"step": step, "w": torch.full((3,), float(step))})
    assert sorted(p.name for p in tmp_path.glob("ckpt-*.pt")) == ["ckpt-00000010.pt", "ckpt-00000015.pt"]
    assert not list(tmp_path.glob(".*tmp"))  # no temp files left behind
    state = ck.resume_state(tmp_path)
    assert state["step"] == 15 and torch.equal(state["w"], torch.full((3,), 15.0))


def test_resume_without_checkpoint_is_none(tmp_path):
    assert ck.resume_state(tmp_path) is None


@pytest.mark.parametrize("damage", ["truncate", "flip", "garbage-pointer"], ids=str)
def test_corrupt_checkpoint_is_a_clear_error(tmp_path, damage):
    path = ck.save_checkpoint(tmp_path, {"step": 3, "w": torch.randn(100)})
    data = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "flip":
        path.write_bytes(data[:-10] + bytes(10))
    else:
        (tmp_path / "latest.json").write_text("{not json")
    with pytest.raises(ck.CheckpointError, match="corrupt"):
        ck.resume_state(tmp_path)


def test_truncated_file_without_hash_is_a_clear_error(tmp_path):
    path = ck.save_checkpoint(tmp_path, {"step": 1, "w": torch.randn(100)})
    path.write_bytes(path.read_bytes()[:50])
    with pytest.raises(ck.CheckpointError, match="corrupt or truncated"):
        ck.load_checkpoint(path)


def test_model_artifact_roundtrip(tmp_path):
    m = make_model("cnn", width=8)
    p = ck.save_model(m, {"arch": "cnn", "width": 8, "depth": 2, "dropout": 0.1}, tmp_path / "cnn" / "model.pt",
                      {"test_accuracy": 0.5}, {"scale": 1 / 255, "mean": 0.1, "std": 0.3})
    m2, art = ck.load_model(p)
    x = torch.randn(4, 784)
    m.eval()
    assert torch.allclose(m(x), m2(x))
    assert art["format"] == "hpcml-model/1" and art["input_shape"] == [1, 28, 28] and art["arch"] == "cnn"
    with pytest.raises(ck.CheckpointError, match="does not exist"):
        ck.load_model(tmp_path / "nope.pt")


def _toy(n, seed=0):
    rng = np.random.default_rng(seed)
    protos = rng.normal(size=(10, 784)).astype(np.float32)
    y = rng.integers(0, 10, n)
    return (protos[y] + rng.normal(0, 0.5, (n, 784))).astype(np.float32), y.astype(np.int64)


def test_fit_local_learns_and_stops_early():
    cfg = {"lr": 0.05, "batch_size": 32, "weight_decay": 0.0, "optimizer": "sgd", "arch": "cnn",
           "width": 8, "depth": 2, "dropout": 0.0, "seed": 0}
    seen = []
    x, y = _toy(320)
    res = loop.fit_local(cfg, (x[:256], y[:256]), (x[256:], y[256:]), epochs=5,
                         on_epoch=lambda e, m: seen.append(m) or e == 1, threads=1)
    assert res["epochs_run"] == 2 and len(seen) == 2 and set(seen[0]) == {"val_accuracy", "loss"}
    assert res["val_accuracy"] > 0.5 and isinstance(res["model"], torch.nn.Module)


def test_nan_loss_names_the_step():
    x, y = _toy(64)
    x[:] = np.nan  # every batch is poisoned: the very first step must stop
    cfg = {"lr": 0.01, "batch_size": 32, "arch": "cnn", "width": 4, "seed": 0}
    with pytest.raises(loop.NaNLossError, match="at step 1") as ei:
        loop.fit_local(cfg, (x, y), _toy(8), epochs=1)
    assert ei.value.step == 1 and math.isnan(ei.value.loss)


def test_fit_local_config_errors():
    with pytest.raises(ValueError, match="'lr'"):
        loop.fit_local({"batch_size": 8}, _toy(8), _toy(8), epochs=1)


# --- exporter A/B inside one run ------------------------------------------------------------
def test_ab_state_warms_up_then_alternates_abba():
    from hpcml.train.exporter import ab_state

    states = [ab_state(s, 2) for s in range(18)]
    assert states[:2] == [None, None]  # warm-up block, exporter on, not counted
    blocks = states[2::2]
    assert blocks == [False, True, True, False, False, True, True, False]
    assert states[2:] == [b for b in blocks for _ in range(2)]


def test_ab_summary_is_a_ratio_of_means_over_steps():
    from hpcml.train.exporter import ab_summary

    blocks = [{"block": 1, "on": False, "steps": 10, "sum_s": 1.0},
              {"block": 2, "on": True, "steps": 10, "sum_s": 1.3},  # one scrape landed here
              {"block": 3, "on": True, "steps": 10, "sum_s": 1.0},
              {"block": 4, "on": False, "steps": 5, "sum_s": 0.5}]
    s = ab_summary(blocks, 10)
    assert s["steps_on"] == 20 and s["steps_off"] == 15
    assert s["mean_step_on_s"] == pytest.approx(0.115) and s["mean_step_off_s"] == pytest.approx(0.1)
    assert s["overhead_pct"] == pytest.approx(15.0)
    assert s["pair_overheads_pct"] == pytest.approx([30.0, 0.0])  # blocks (1,2) and (3,4)
    assert s["ci95_half_width_pct"] == pytest.approx(1.96 * np.std([30.0, 0.0], ddof=1) / math.sqrt(2))


def test_ab_summary_without_both_arms_says_what_is_missing():
    from hpcml.train.exporter import ab_summary

    with pytest.raises(ValueError, match="0 on and 1 off blocks of 10 steps"):
        ab_summary([{"block": 1, "on": False, "steps": 10, "sum_s": 1.0}], 10)


def test_exporter_ab_toggles_and_counts_only_measured_blocks():
    from hpcml.train.exporter import ExporterAB

    class Switch:  # records what the A/B asked of the exporter
        def __init__(self):
            self.calls = []

        def set_enabled(self, on):
            self.calls.append(on)

    sw = Switch()
    ab = ExporterAB(sw, 3)
    for step in range(15):
        ab.before_step(step)
        ab.record(0.01 if sw.calls[-1] is False else 0.011)
    assert sw.calls == [True] * 3 + [False] * 3 + [True] * 6 + [False] * 3
    # the first step of every block is the switch's transient: kept apart, not counted
    assert [(b["block"], b["on"], b["steps"]) for b in ab.blocks] == [(1, False, 2), (2, True, 2), (3, True, 2),
                                                                       (4, False, 2)]
    assert all("first_step_s" in b for b in ab.blocks)
    assert ab.summary()["overhead_pct"] == pytest.approx(10.0)
    with pytest.raises(ValueError, match="exporter_ab_block must be >= 1"):
        ExporterAB(sw, 0)


def test_exporter_switched_off_refuses_scrapes_and_comes_back():
    import socket
    import urllib.error
    import urllib.request

    from hpcml.train.exporter import Exporter

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    exp = Exporter(port, rank=0)
    url = f"http://127.0.0.1:{port}/metrics"
    try:
        exp.observe(1, 0.02, 0.001, 32, 0.5)
        assert "hpcml_train_step_seconds_count" in urllib.request.urlopen(url, timeout=5).read().decode()
        exp.set_enabled(False)
        with pytest.raises(urllib.error.URLError):
            urllib.request.urlopen(url, timeout=5)
        exp.set_enabled(True)
        body = urllib.request.urlopen(url, timeout=5).read().decode()
        assert 'hpcml_train_samples_total{rank="0"} 32.0' in body  # same registry, values kept
    finally:
        exp.close()


def test_mlp_is_the_weight_bound_shape_and_rejects_bad_sizes():
    m = make_model("mlp")
    assert count_params(m) == 784 * 4096 + 4096 + 2 * (4096 * 4096 + 4096) + 4096 * 10 + 10
    for kw, err in (({"hidden": 0}, "hidden must be"), ({"depth": 0}, "depth must be")):
        with pytest.raises(ValueError, match=err):
            make_model("mlp", **kw)


def test_abba_order_and_its_bounds():
    from hpcml.train.abtest import abba_on

    assert [abba_on(k) for k in range(8)] == [False, True, True, False, False, True, True, False]
    with pytest.raises(ValueError, match="block must be >= 0"):
        abba_on(-1)


def test_abtest_names_the_missing_arm_and_skips_empty_blocks():
    from hpcml.train.abtest import summarize

    with pytest.raises(ValueError, match="without Horovod; got 1 on and 0 off"):
        summarize([{"block": 1, "on": True, "steps": 4, "sum_s": 1.0},
                   {"block": 2, "on": False, "steps": 0, "sum_s": 0.0}], 4, "Horovod")


@pytest.mark.parametrize("cfg, match", [
    ({"overhead_rounds": 1}, "overhead_rounds >= 2"), ({"overhead_steps": 0}, "overhead_steps >= 1"),
    ({"overhead_blocks": 3}, "unknown benchmark option"),
], ids=["one-pair", "no-steps", "unknown"])
def test_overhead_benchmark_checks_its_options_before_launch(cfg, match):
    with pytest.raises(ValueError, match=match):
        bench.run_bench(1, ["overhead"], **cfg)


def test_exporter_switches_off_and_on_at_once_and_its_cost_is_timed():
    import urllib.error
    import urllib.request

    from hpcml.monitor.drill import exporter_cost
    from hpcml.proc import free_port
    from hpcml.train.exporter import Exporter

    port = free_port()
    ex = Exporter(port, rank=0)
    url = f"http://127.0.0.1:{port}/metrics"
    try:
        ex.observe(1, 0.05, 0.01, 64, 0.5)
        assert b"hpcml_train_samples_total" in urllib.request.urlopen(url, timeout=5).read()
        ex.set_enabled(False)  # no poll to wait for: the select loop wakes on its pipe
        with pytest.raises(urllib.error.URLError):
            urllib.request.urlopen(url, timeout=5)
        ex.set_enabled(True)
        assert b'hpcml_train_step{rank="0"} 1.0' in urllib.request.urlopen(url, timeout=5).read()
    finally:
        ex.close()
    assert not ex.thread.is_alive()
    cost = exporter_cost(n=200, scrapes=5)  # must return: it closes the exporter it built
    assert cost["observe_us"] > 0 and cost["scrape_ms"] > 0 and cost["scrape_bytes"] > 100


@pytest.mark.parametrize("optimizer,copies", [("sgd", 2), ("adam", 3), ("AdamW", 3)])
def test_resnet50_checkpoint_bytes_is_weights_plus_optimizer_state(optimizer, copies):
    params = count_params(make_model("resnet50"))
    assert params == 25_557_032
    assert ck.resnet50_checkpoint_bytes(optimizer) == params * 4 * copies


def test_resnet50_checkpoint_bytes_rejects_an_unknown_optimizer():
    with pytest.raises(ValueError, match="optimizer must be one of"):
        ck.resnet50_checkpoint_bytes("lamb")


def test_projected_checkpoint_s_divides_bytes_by_the_rate():
    assert ck.projected_checkpoint_s(100e6, nbytes=50_000_000) == pytest.approx(0.5)
    # default: ResNet-50 + SGD momentum, about 204.5 MB
    assert ck.projected_checkpoint_s(204_456_256) == pytest.approx(1.0)
    assert ck.projected_checkpoint_s(np.float64(1e9), nbytes=0) == 0.0


@pytest.mark.parametrize("rate", [0, -1.0, float("nan"), float("inf"), None, "fast", True])
def test_projected_checkpoint_s_refuses_a_non_positive_rate(rate):
    with pytest.raises(ValueError, match="write_bytes_per_s must be a positive"):
        ck.projected_checkpoint_s(rate)


def test_projected_checkpoint_s_refuses_negative_bytes():
    with pytest.raises(ValueError, match="nbytes must be >= 0"):
        ck.projected_checkpoint_s(1e6, nbytes=-1)


def test_stop_request_records_the_first_signal_and_survives_it():
    import os
    import signal

    from hpcml.train.worker import EXIT_PREEMPTED, StopRequest

    old = signal.getsignal(signal.SIGTERM)
    try:
        stop = StopRequest().install()
        assert stop.signum is None
        os.kill(os.getpid(), signal.SIGTERM)  # this process keeps running: the handler only records
        assert stop.signum == signal.SIGTERM and stop.received_at is not None
        first = stop.received_at
        stop(signal.SIGTERM, None)
        assert stop.received_at == first
    finally:
        signal.signal(signal.SIGTERM, old)
    assert EXIT_PREEMPTED == 143


def test_checkpoint_write_summary_is_total_bytes_over_total_seconds():
    from hpcml.train.worker import checkpoint_write_summary

    assert checkpoint_write_summary([]) is None
    s = checkpoint_write_summary([{"bytes": 1_000_000, "seconds": 0.5}, {"bytes": 3_000_000, "seconds": 1.5}])
    assert s["count"] == 2 and s["bytes_total"] == 4_000_000 and s["mean_bytes"] == 2_000_000
    assert s["bytes_per_s"] == pytest.approx(2e6)


@pytest.mark.parametrize("a,b,steps,expect", [
    ([2.0, 1.0], [2.0, 1.0], 100, {"max_rel_diff": 0.0, "mean_rel_diff": 0.0, "steps": 2, "worst_step": 1}),
    ([2.0, 1.0, 0.5], [2.0, 1.1, 9.0], 2, {"max_rel_diff": 0.1 / 1.1, "mean_rel_diff": 0.05 / 1.1, "steps": 2,
                                            "worst_step": 2}),
    ([0.0, 4.0], [0.0, 2.0, 1.0], 10, {"max_rel_diff": 0.5, "mean_rel_diff": 0.25, "steps": 2, "worst_step": 2}),
], ids=["equal", "first-n-only", "zero-and-shorter"])
def test_loss_parity(a, b, steps, expect):
    assert loop.loss_parity(a, b, steps) == pytest.approx(expect)


@pytest.mark.parametrize("a,b,steps,match", [
    ([1.0], [1.0], 0, "steps must be >= 1"), ([], [1.0], 5, "nothing to compare"),
    ([float("nan")], [1.0], 5, "NaN or infinite"),
], ids=["steps", "empty", "nan"])
def test_loss_parity_rejects_bad_input(a, b, steps, match):
    with pytest.raises(ValueError, match=match):
        loop.loss_parity(a, b, steps)
