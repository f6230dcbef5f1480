"""The engine benchmark's printed lines and recorded metrics (hpcml.data.bench_results)."""

import pytest

from hpcml.data import bench_results
from hpcml.data.viz import bench_metrics
from hpcml.report import Metric

pytestmark = pytest.mark.unit

COUNTS = {"input": 10, "quarantined": 1, "output": 9}


def _r(engine, rows_per_s, gib=0.5, **extra):
    return {"engine": engine, "rows_per_s": rows_per_s, "peak_rss_bytes": gib * 2**30, "counts": COUNTS, **extra}


RESULTS = {
    1000: [_r("spark", 500.0, stages={"read": 1.23, "write": 0.04}), _r("pandas", 1000.0),
           {"engine": "duckdb", "skipped": "duckdb not installed"}],
    100000: [_r("spark", 20000.4, 1.0, stages={"read": 2.0}), _r("pandas", 10000.0, 2.0)],
}


def test_result_lines_each_engine_stages_and_skips():
    assert bench_results.result_lines(RESULTS) == [
        f"1000 spark 500 rows/s, peak 0.50 GiB, counts {COUNTS}",
        "   stage seconds: {'read': 1.2, 'write': 0.0}",
        f"1000 pandas 1000 rows/s, peak 0.50 GiB, counts {COUNTS}",
        "1000 duckdb duckdb not installed",
        f"100000 spark 20000 rows/s, peak 1.00 GiB, counts {COUNTS}",
        "   stage seconds: {'read': 2.0}",
        f"100000 pandas 10000 rows/s, peak 2.00 GiB, counts {COUNTS}",
    ]


def test_metrics_are_viz_bench_metrics_with_two_headlines():
    ms = bench_results.metrics(RESULTS)
    assert all(isinstance(m, Metric) for m in ms)
    assert {m.name: (m.value, m.unit) for m in ms} == bench_metrics(RESULTS)
    assert [m.name for m in ms] == list(bench_metrics(RESULTS))
    assert sorted(m.name for m in ms if m.headline) == ["spark_rows_per_s_100k", "spark_vs_pandas_speedup"]
    assert {m.description for m in ms} == {bench_results.DESCRIPTION}
    assert bench_results.headline_names(RESULTS) == ("spark_vs_pandas_speedup", "spark_rows_per_s_100k")
