"""The batching case of notebook 04 (hpcml.serve.cases): metrics, the "when batching pays"
rows and sentences, from hand-made timings and comparisons (no server)."""

from pathlib import Path

import pytest

from hpcml.report import Metric
from hpcml.serve import cases
from hpcml.serve.capacity import batching_gain_bound
from hpcml.serve.export import RuntimeTiming

pytestmark = pytest.mark.unit


def _sat(ratio, p99_b, p99_1, mean_batch=4.0):
    return {"batched": {"rps": 100.0 * ratio, "p50_ms": 1.0, "p99_ms": p99_b, "errors": 0, "ok": 10, "mean_batch": mean_batch},
            "size1": {"rps": 100.0, "p50_ms": 1.0, "p99_ms": p99_1, "errors": 0, "ok": 10, "mean_batch": 1.0},
            "ratio": ratio}


def _case(name="resnet18", b1=2.0, b32=16.0, sat=None, concurrency=32):
    timings = [RuntimeTiming(name, 1, b1, b1 * 1e3), RuntimeTiming(name, 32, b32, b32 * 1e3 / 32)]
    return cases.BatchingCase(name, Path(f"/x/{name}.onnx"), timings, sat or _sat(3.2, 40.0, 50.0), concurrency)


def test_case_model_ms_and_sides():
    c = _case()
    assert c.model_ms() == {1: 2.0, 32: 16.0}
    assert c.sides() == {"batched": c.saturation["batched"], "size1": c.saturation["size1"]}


def test_case_metrics_names_and_values():
    c = _case(b1=2.12345, b32=16.00049)
    ms = cases.case_metrics(c, "compute_bound", "heavy_model_time_ms")
    assert all(isinstance(m, Metric) for m in ms)
    assert [(m.name, m.unit, m.headline) for m in ms] == [
        ("batching_throughput_ratio_compute_bound", "x", True), ("p99_ms_batched_compute_bound", "ms", False),
        ("p99_ms_unbatched_compute_bound", "ms", False), ("heavy_model_time_ms", "ms per call", False)]
    assert [m.value for m in ms] == [3.2, 40.0, 50.0, {1: 2.123, 32: 16.0}]
    assert ms[0].description == "resnet18: batching vs batch size 1 at 32 clients, interleaved"
    assert ms[3].description == "resnet18 ONNX Runtime, 1 thread, by batch size"


def test_pays_row_against_the_amdahl_bound():
    row = cases.pays_row(_case(), overhead_ms=1.5, batch=32)
    assert row == {"model": "resnet18", "overhead_ms": 1.5, "model_ms_b1": 2.0, "model_ms_per_row_b": 0.5,
                   "model_speedup_x": 4.0, "model_only_estimate_x": batching_gain_bound(1.5, 2.0, 0.5),
                   "measured_x": 3.2, "mean_batch": 4.0, "p99_batched_ms": 40.0, "p99_size1_ms": 50.0,
                   "reached_3x": True}
    assert row["model_only_estimate_x"] == pytest.approx(3.5 / 2.0)


@pytest.mark.parametrize("sat, reached", [(_sat(3.0, 50.0, 50.0), True), (_sat(2.9, 10.0, 50.0), False),
                                          (_sat(4.0, 51.0, 50.0), False)],
                         ids=["at-target", "gain-short", "p99-worse"])
def test_reached_3x_needs_gain_and_no_worse_p99(sat, reached):
    assert cases.pays_row(_case(sat=sat), 1.0, 32)["reached_3x"] is reached


def test_pays_rows_and_lines():
    rows = cases.pays_rows([_case("MNIST cnn", 0.1, 0.8, _sat(1.2, 30.0, 31.0, 8.04)), _case()], 1.5, 32)
    assert [r["model"] for r in rows] == ["MNIST cnn", "resnet18"]
    lines = cases.pays_lines(rows)
    assert lines[0] == ("MNIST cnn: model 0.100 ms/image alone vs per-request overhead 1.500 ms -> model batch "
                        f"speed-up 4.00x, model-only estimate {batching_gain_bound(1.5, 0.1, 0.025):.2f}x, measured "
                        "1.20x at mean batch 8.0 (p99 30 vs 31 ms); issue's 3x target not reached")
    assert lines[1].endswith("measured 3.20x at mean batch 4.0 (p99 40 vs 50 ms); issue's 3x target reached")
