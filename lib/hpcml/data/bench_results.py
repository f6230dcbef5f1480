"""The engine benchmark's results as notebook 01 prints and records them.

:func:`hpcml.data.bench.run_sizes` returns ``{rows: [one result per engine]}``;
:func:`result_lines` is one line per engine and size (rows/s, peak memory, counts, or why it
was skipped) with Spark's stage seconds under its line, and :func:`metrics` the metrics of
:func:`hpcml.data.viz.bench_metrics`, ready for :func:`hpcml.report.record_all`.
"""

from __future__ import annotations

from typing import Any

from hpcml.data.viz import bench_metrics, size_label
from hpcml.report import Metric

#: What every benchmark metric's description says.
DESCRIPTION = "benchmark of the same transform, same data, same run"


def result_lines(results: dict[int, list[dict[str, Any]]]) -> list[str]:
    """One line per size and engine, then (for Spark) where its time went.

    Args:
        results: :func:`hpcml.data.bench.run_sizes`'s ``{rows: results}``.
    """
    lines: list[str] = []
    for n, rs in results.items():
        for r in rs:
            lines.append(f"{n} {r['engine']} {r.get('skipped') or _measured(r)}")
            if "stages" in r:  # where Spark's time went: read+parse+group+cache, statistics, shard sort+write
                lines.append(f"   stage seconds: { {k: round(v, 1) for k, v in r['stages'].items()} }")
    return lines


def _measured(r: dict[str, Any]) -> str:
    return f"{r['rows_per_s']:.0f} rows/s, peak {r['peak_rss_bytes'] / 2**30:.2f} GiB, counts {r['counts']}"


def headline_names(results: dict[int, list[dict[str, Any]]]) -> tuple[str, str]:
    """The benchmark's headline metrics: Spark vs pandas, and Spark's rows/s at the largest size."""
    return "spark_vs_pandas_speedup", f"spark_rows_per_s_{size_label(max(results))}"


def metrics(results: dict[int, list[dict[str, Any]]]) -> list[Metric]:
    """Every metric of :func:`hpcml.data.viz.bench_metrics`, the :func:`headline_names` marked."""
    heads = headline_names(results)
    return [Metric(name, value, unit=unit, description=DESCRIPTION, headline=name in heads)
            for name, (value, unit) in bench_metrics(results).items()]
