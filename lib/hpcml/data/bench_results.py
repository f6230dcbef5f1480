"""The engine benchmark's results as notebook 01 prints, records and states them.

:func:`hpcml.data.bench.run_sizes` returns ``{rows: [one result per engine]}``;
:func:`result_lines` is one line per engine and size (rows/s, peak memory, counts, or why it
was skipped) with Spark's stage seconds under its line, and :func:`metrics` the metrics of
:func:`hpcml.data.viz.bench_metrics`, ready for :func:`hpcml.report.record_all`.

:func:`stage_claim`, :func:`speed_claim` and :func:`memory_claim` are the sentences the
notebook states about the benchmark, rendered with :func:`hpcml.report.say` from the metrics
just recorded; every comparison in them ("ahead of", "grew the most") is decided by
:func:`hpcml.report.conclude`, so the checks cell re-checks it. Each states only what this
run measured: an engine that did not run at a size is left out of the sentence, never
printed as "None".
"""

from __future__ import annotations

from typing import Any

from hpcml import report
from hpcml.claims import ClaimError, Markdown
from hpcml.data.viz import bench_metrics, memory_growth, size_label
from hpcml.report import Metric

#: How the sentences name each engine.
NAMES = {"spark": "Spark", "pandas": "pandas", "duckdb": "DuckDB"}
#: ``run_job``'s stages, as the sentences describe them.
STAGES = {"quarantine": "read, parse, de-duplicate and cache (with the quarantine write)",
          "stats": "statistics (split counts and the train pixel sums)",
          "shards": "shard window, sort and write"}

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


def _ran(results: dict[int, list[dict[str, Any]]], size: int) -> dict[str, dict[str, Any]]:
    return {r["engine"]: r for r in results[size] if "rows_per_s" in r}


def stage_claim(results: dict[int, list[dict[str, Any]]]) -> Markdown:
    """Where Spark's time went at each size, with the shuffle partitions it sized, as a Markdown
    table rendered from the recorded ``spark_stage_seconds_<size>`` and ``spark_shuffle_partitions_<size>``.

    Raises:
        hpcml.claims.ClaimError: Spark ran at no size (or its metrics were not recorded).
    """
    sizes = [n for n in sorted(results) if "stages" in _ran(results, n).get("spark", {})]
    if not sizes:
        raise ClaimError("stage_claim: Spark ran at no benchmark size, so there are no stage timings to state")
    labs = [size_label(n) for n in sizes]
    stages = list(_ran(results, sizes[-1])["spark"]["stages"])
    rows = ["| Spark, this run | " + " | ".join(f"{n:,} rows" for n in sizes) + " |",
            "| --- |" + " ---: |" * len(sizes),
            "| shuffle partitions (sized from the input) | "
            + " | ".join(f"{{spark_shuffle_partitions_{lab}}}" for lab in labs) + " |"]
    rows += [f"| {STAGES.get(k, k)}, s | " + " | ".join(f"{{spark_stage_seconds_{lab}[{k}]:.1f}}" for lab in labs) + " |"
             for k in stages]
    return report.say("\n".join(rows))


def speed_claim(results: dict[int, list[dict[str, Any]]]) -> Markdown:
    """The fastest engine at the largest size, Spark's ratio to it and to pandas, each word
    decided by :func:`hpcml.report.conclude` from the recorded rows/s and ratios."""
    size = max(results)
    lab, ran = size_label(size), _ran(results, size)
    if not ran:
        raise ClaimError(f"speed_claim: no engine ran at {size:,} rows")
    best = max(ran, key=lambda e: ran[e]["rows_per_s"])
    others = [e for e in ran if e != best]
    rule = " and ".join(f"{best}_rows_per_s_{lab} >= {e}_rows_per_s_{lab}" for e in others) or f"{best}_rows_per_s_{lab} > 0"
    was = report.conclude(f"fastest_at_{lab}_is_{best}", rule, "was", "was not")
    text = f"At {size:,} rows {NAMES.get(best, best)} {was} the fastest engine ({{{best}_rows_per_s_{lab}:,.0f}} rows/s)"
    if "spark" in ran and best != "spark":
        behind = report.conclude("spark_fastest", "spark_vs_fastest_ratio >= 1", "the fastest", "behind it")
        text += f"; Spark ran {{spark_rows_per_s_{lab}:,.0f}} rows/s, {{spark_vs_fastest_ratio:.2f}}× that rate: {behind}"
    if "spark_vs_pandas_speedup" in report.metric_values():
        both = max(n for n in results if {"spark", "pandas"} <= set(_ran(results, n)))
        ahead = report.conclude("spark_ahead_of_pandas", "spark_vs_pandas_speedup > 1", "ahead of", "behind")
        text += (f". Against pandas at {both:,} rows Spark's rate is {{spark_vs_pandas_speedup:.2f}}× pandas': "
                 f"Spark is {ahead} pandas here")
    return report.say(text + ".")


def memory_claim(results: dict[int, list[dict[str, Any]]], spark_heap: str, duckdb_limit: str) -> Markdown:
    """Each engine's peak memory at its smallest and largest size, the growth ratio and the
    bytes per extra row (``<engine>_peak_memory_growth``, ``<engine>_peak_bytes_per_row``), the
    engine whose memory grew the most per extra row (decided by :func:`hpcml.report.conclude`),
    and the bounds each engine was configured with.

    Args:
        results: :func:`hpcml.data.bench.run_sizes`'s ``{rows: results}``.
        spark_heap: the session's ``spark.driver.memory`` (the heap Spark's rows live in).
        duckdb_limit: DuckDB's ``memory_limit`` (:data:`hpcml.data.bench.DUCKDB_MEMORY_LIMIT`).
    """
    growth = memory_growth(results)
    if not growth:
        raise ClaimError("memory_claim: no engine ran at two sizes, so this run measured no memory growth")
    parts = []
    for e, (lo, hi, _) in growth.items():
        parts.append(f"{NAMES.get(e, e)} {{{e}_peak_rss_gib_{size_label(lo)}:.2f}} → {{{e}_peak_rss_gib_{size_label(hi)}:.2f}} GiB "
                     f"from {lo:,} to {hi:,} rows ({{{e}_peak_memory_growth:.2f}}×, {{{e}_peak_bytes_per_row:,.0f}} bytes per extra row)")
    text = "Peak memory of each engine's process tree in this run: " + "; ".join(parts) + "."
    if len(growth) > 1:
        per_row = {e: report.get(f"{e}_peak_bytes_per_row") for e in growth}
        top = max(per_row, key=per_row.get)
        rule = " and ".join(f"{top}_peak_bytes_per_row > {e}_peak_bytes_per_row" for e in growth if e != top)
        most = report.conclude(f"memory_grows_most_{top}", rule, "grew the most", "did not grow the most")
        text += f" Per extra row, {NAMES.get(top, top)}'s peak {most}."
        if {"spark", "pandas"} <= set(growth):
            word = report.conclude("pandas_memory_grows_faster_than_spark",
                                   "pandas_peak_bytes_per_row > spark_peak_bytes_per_row", "faster", "slower")
            text += f" pandas' peak grew {word} than Spark's."
    text += (" The bounds are configuration, not measurements: Spark's rows live in a JVM heap of {spark_heap} "
             "(`spark.driver.memory`) and spill past it, DuckDB spills past its `memory_limit` of {duckdb_limit}, "
             "pandas has no bound and no spill.")
    return report.say(text, spark_heap=spark_heap, duckdb_limit=duckdb_limit)
