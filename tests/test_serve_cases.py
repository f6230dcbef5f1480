"""The batching case of notebook 04 (hpcml.serve.cases): metrics, the "when batching pays"
rows and sentences, from hand-made timings and comparisons (no server)."""

import math
from pathlib import Path

import pytest

from hpcml import claims
from hpcml.report import Metric
from hpcml.serve import cases
from hpcml.serve.capacity import batching_gain_bound
from hpcml.serve.export import RuntimeTiming

pytestmark = pytest.mark.unit


def _sat(ratio, p99_b, p99_1, mean_batch=4.0, cpu=None):
    """A comparison result; ``cpu``: (server ms/req size 1, batched, client ms/req size 1, batched)."""
    s1, sb, c1, cb = cpu or (3.0, 1.5, 1.0, 0.5)
    return {"batched": {"rps": 100.0 * ratio, "p50_ms": 1.0, "p99_ms": p99_b, "errors": 0, "ok": 10, "mean_batch": mean_batch,
                        "server_cpu_ms_per_req": sb, "client_cpu_ms_per_req": cb},
            "size1": {"rps": 100.0, "p50_ms": 1.0, "p99_ms": p99_1, "errors": 0, "ok": 10, "mean_batch": 1.0,
                      "server_cpu_ms_per_req": s1, "client_cpu_ms_per_req": c1},
            "ratio": ratio, "ratio_ci95": 0.1}


def _case(name="resnet18", b1=2.0, b32=16.0, sat=None, concurrency=32, b4=4.0):
    timings = [RuntimeTiming(name, 1, b1, b1 * 1e3), RuntimeTiming(name, 4, b4, b4 * 1e3 / 4),
               RuntimeTiming(name, 32, b32, b32 * 1e3 / 32)]
    return cases.BatchingCase(name, Path(f"/x/{name}.onnx"), timings, sat or _sat(3.2, 40.0, 50.0), concurrency)


def test_case_model_ms_and_sides():
    c = _case()
    assert c.model_ms() == {1: 2.0, 4: 4.0, 32: 16.0}
    assert c.sides() == {"batched": c.saturation["batched"], "size1": c.saturation["size1"]}



# (the kind notebook 04 passes to case_metrics for a case 07 holds to a target, the comparison's
# per-round ratios' half-width)
@pytest.mark.parametrize("kind, ci", [("weight_bound", 1.0031), ("weight_bound", 0.0)])
def test_case_metrics_record_the_interval_07_reads(kind, ci):
    """The half-width each case records is the comparison's (Student t over the interleaved
    rounds' ratios), under the name review.TARGETS reads for that case's gain."""
    from hpcml import review

    ms = {m.name: m.value for m in cases.case_metrics(_case(sat={**_sat(4.2, 40.0, 50.0), "ratio_ci95": ci}), kind, "t")}
    wanted = [i[1] for _, metric, _, _, i in review.TARGETS if metric == f"batching_throughput_ratio_{kind}" and i]
    assert [(name, ms.get(name)) for name in wanted] == [(f"batching_throughput_ratio_{kind}_ci95", ci)]
    assert ms[f"batching_throughput_ratio_{kind}"] == 4.2

def test_case_metrics_names_and_values():
    c = _case(b1=2.12345, b32=16.00049)
    ms = cases.case_metrics(c, "compute_bound", "heavy_model_time_ms")
    assert all(isinstance(m, Metric) for m in ms)
    assert [(m.name, m.unit, m.headline) for m in ms] == [
        ("batching_throughput_ratio_compute_bound", "x", True), ("batching_throughput_ratio_compute_bound_ci95", "x", False),
        ("p99_ms_batched_compute_bound", "ms", False),
        ("p99_ms_unbatched_compute_bound", "ms", False), ("heavy_model_time_ms", "ms per call", False)]
    assert [m.value for m in ms] == [3.2, 0.1, 40.0, 50.0, {1: 2.123, 4: 4.0, 32: 16.0}]
    assert ms[0].description == "resnet18: batching vs batch size 1 at 32 clients, interleaved"
    assert ms[4].description == "resnet18 ONNX Runtime, 1 thread, CPU time per call by batch size"


@pytest.mark.parametrize("mean, want", [(4.0, 4), (3.6, 4), (0.2, 1), (40.0, 32), (float("nan"), 32)],
                         ids=["exact", "rounded", "floor-1", "cap-timed", "no-calls"])
def test_effective_batch(mean, want):
    assert cases.effective_batch(_case(sat=_sat(3.2, 40.0, 50.0, mean))) == want


def test_pays_row_uses_the_batch_the_server_formed_and_the_cpu_split():
    row = cases.pays_row(_case(), overhead_ms=1.5, batch=32)
    # the server formed batches of 4: 4 ms per call, 1 ms per row, not 32-row's 0.5 ms
    assert row["effective_batch"] == 4 and row["model_ms_per_row_eff"] == 1.0
    assert row["model_speedup_x"] == 4.0 and row["model_speedup_at_mean_batch_x"] == 2.0
    assert row["model_only_estimate_x"] == pytest.approx(batching_gain_bound(1.5, 2.0, 1.0)) == pytest.approx(3.5 / 2.5)
    # server CPU per request minus the model's per-row time: 3.0 - 2.0 at batch 1, 1.5 - 1.0 batched
    assert row["non_model_cpu_ms_size1"] == pytest.approx(1.0) and row["non_model_cpu_ms_batched"] == pytest.approx(0.5)
    assert row["cpu_estimate_x"] == pytest.approx((3.0 + 1.0) / (1.5 + 0.5))
    assert row["measured_x"] == 3.2 and row["reached_3x"] is True


def test_measured_gain_can_exceed_the_model_only_estimate():
    """The case the old "ceiling" wording got wrong: a model that barely batches (speed-up 1.1x at
    the formed batch) on a server whose non-model cost per request halves with batching."""
    sat = _sat(1.9, 20.0, 30.0, 8.0, cpu=(1.2, 0.65, 0.3, 0.15))
    c = cases.BatchingCase("MNIST cnn", Path("/x/m.onnx"), [RuntimeTiming("m", 1, 0.1, 100.0),
                           RuntimeTiming("m", 8, 0.8 / 1.1, 0.8 / 1.1 / 8 * 1e3), RuntimeTiming("m", 32, 2.4, 75.0)], sat, 64)
    row = cases.pays_row(c, overhead_ms=1.0, batch=32)
    assert row["measured_x"] > row["model_speedup_at_mean_batch_x"] > 1 > 0.5
    assert row["measured_x"] > row["model_only_estimate_x"]
    assert row["non_model_cpu_ms_batched"] < row["non_model_cpu_ms_size1"]
    assert row["cpu_estimate_x"] == pytest.approx(1.5 / 0.8)


def test_pays_row_without_cpu_numbers_gives_nan():
    sat = _sat(3.2, 40.0, 50.0)
    for side in ("batched", "size1"):
        del sat[side]["server_cpu_ms_per_req"], sat[side]["client_cpu_ms_per_req"]
    row = cases.pays_row(_case(sat=sat), 1.5, 32)
    assert math.isnan(row["cpu_estimate_x"]) and math.isnan(row["non_model_cpu_ms_batched"])


@pytest.mark.parametrize("sat, reached", [(_sat(3.0, 50.0, 50.0), True), (_sat(2.9, 10.0, 50.0), False),
                                          (_sat(4.0, 51.0, 50.0), False)],
                         ids=["at-target", "gain-short", "p99-worse"])
def test_reached_3x_needs_gain_and_no_worse_p99(sat, reached):
    assert cases.pays_row(_case(sat=sat), 1.0, 32)["reached_3x"] is reached


def test_pays_metrics_and_claim():
    rows = cases.pays_rows([_case("MNIST cnn", 0.1, 0.8, _sat(1.2, 30.0, 31.0, 4.0), b4=0.2), _case(), _case("mlp")], 1.5, 32)
    ms = cases.pays_metrics(rows)
    names = [m.name for m in ms]
    assert "model_only_estimate_x" in names and "cpu_estimate_x_compute_bound" in names
    assert "non_model_cpu_ms_batched_weight_bound" in names and len(ms) == 3 * len(cases.PAYS_METRICS)
    with pytest.raises(ValueError, match="2 rows but 3 kinds"):
        cases.pays_metrics(rows[:2])
    template, values = cases.pays_claim(rows)
    text = claims.render(template, values)
    assert text.count("\n") == 2 and text.startswith("- **MNIST cnn**: the model alone costs 0.100 ms of CPU for one image")
    assert "model speed-up of 2.00× there (4.00× at `max_batch_size`)" in text
    assert "all CPU per request fell 2.00×." in text


def test_saturation_load_needs_two_rounds():
    with pytest.raises(ValueError, match="rounds must be >= 2"):
        cases.SaturationLoad([], 10, 1.0, 1, 8, 0.0, "asgi", rounds=1)


@pytest.mark.parametrize("ratio, ci, verdict", [(3.5, 0.4, "met"), (3.5, 0.6, "undecided"), (2.0, 0.5, "missed"),
                                                (3.2, 0.1, "met")], ids=["met", "undecided", "missed", "edge"])
def test_say_pays_verdict_uses_the_interval(build_tmp, ratio, ci, verdict):
    from hpcml import report

    report.begin("04_serving", params={})
    sat = _sat(ratio, 40.0, 50.0)
    sat["ratio_ci95"] = ci
    c = _case(sat=sat)
    rows = cases.pays_rows([c], 1.5, 32)
    report.record_all(cases.case_metrics(c, "compute_bound", "heavy_model_time_ms"))
    report.record_all(cases.pays_metrics(rows, ["_compute_bound"]))
    text = cases.say_pays(rows, 3, ["_compute_bound"])._repr_markdown_()
    assert text.endswith(f"is **{verdict}**: the gain's 95 % interval is ± {ci:.2f} over 3 interleaved rounds.")
    report.check_conclusions()
