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


# ---- the sentences the notebook states (report.say / report.conclude) -----------------------
GIB = 2**30
TWO_SIZES = {
    100_000: [_r("spark", 5000.0, 3.0, stages={"quarantine": 10.04, "stats": 2.0, "shards": 8.0}, shuffle_partitions=4),
              _r("pandas", 20000.0, 1.5), _r("duckdb", 40000.0, 1.0)],
    1_000_000: [_r("spark", 8000.0, 3.5, stages={"quarantine": 60.0, "stats": 9.0, "shards": 50.0}, shuffle_partitions=29),
                _r("pandas", 25000.0, 2.5), _r("duckdb", 50000.0, 4.5)],
}


@pytest.fixture
def recorded(build_tmp):
    from hpcml import report

    report.begin("99_bench", params={})
    report.record_all(bench_results.metrics(TWO_SIZES))
    return report


def test_stage_claim_renders_every_stage_of_every_size(recorded):
    text = str(bench_results.stage_claim(TWO_SIZES))
    assert text.splitlines()[0] == "| Spark, this run | 100,000 rows | 1,000,000 rows |"
    assert "| shuffle partitions (sized from the input) | 4 | 29 |" in text
    assert "| statistics (split counts and the train pixel sums), s | 2.0 | 9.0 |" in text
    assert "| read, parse, de-duplicate and cache (with the quarantine write), s | 10.0 | 60.0 |" in text
    assert "None" not in text


def test_speed_claim_words_follow_the_ratios_and_are_rechecked(recorded):
    text = str(bench_results.speed_claim(TWO_SIZES))
    assert text.startswith("At 1,000,000 rows DuckDB was the fastest engine (50,000 rows/s)")
    assert "0.16× that rate: behind it" in text and "0.32× pandas': Spark is behind pandas here" in text
    assert recorded.check_conclusions() == {"fastest_at_1m_is_duckdb": True, "spark_fastest": False,
                                            "spark_ahead_of_pandas": False}
    recorded.record("spark_vs_pandas_speedup", 1.2)  # the number changed after the text was rendered
    with pytest.raises(AssertionError, match="spark_ahead_of_pandas: the text printed 'behind'"):
        recorded.check_conclusions()


def test_memory_claim_names_the_engine_that_grew_most_per_row(recorded):
    text = str(bench_results.memory_claim(TWO_SIZES, spark_heap="4g", duckdb_limit="6GB"))
    assert "DuckDB 1.00 → 4.50 GiB from 100,000 to 1,000,000 rows (4.50×" in text
    assert "Per extra row, DuckDB's peak grew the most." in text
    assert "pandas' peak grew faster than Spark's." in text  # 1 GiB against 0.5 GiB more over the same rows
    assert "JVM heap of 4g" in text and "`memory_limit` of 6GB" in text
    assert recorded.check_conclusions() == {"memory_grows_most_duckdb": True, "pandas_memory_grows_faster_than_spark": True}


def test_claims_refuse_a_benchmark_that_measured_nothing(recorded):
    from hpcml.claims import ClaimError

    no_spark = {10: [_r("pandas", 1.0)]}
    with pytest.raises(ClaimError, match="Spark ran at no benchmark size"):
        bench_results.stage_claim(no_spark)
    with pytest.raises(ClaimError, match="no engine ran at two sizes"):
        bench_results.memory_claim(no_spark, "4g", "6GB")
    with pytest.raises(ClaimError, match="no engine ran"):
        bench_results.speed_claim({10: [{"engine": "spark", "skipped": "x"}]})
