"""Figures and small tables for the data notebook (matplotlib; no Spark needed except
:func:`partition_sizes`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def size_label(n: int) -> str:
    """1000000 -> '1m', 200000 -> '200k', 5000 -> '5k', 123 -> '123'."""
    if n % 1_000_000 == 0:
        return f"{n // 1_000_000}m"
    if n % 1000 == 0:
        return f"{n // 1000}k"
    return str(n)


def quality_table(manifest: dict) -> list[tuple[str, int]]:
    """(what, rows) lines of the data-quality report, input first."""
    c = manifest["counts"]
    rows = [("input rows", c["input"]), ("clean rows (before de-duplication)", c["clean"]),
            ("duplicates removed", c["duplicates_removed"]), ("output rows", c["output"]),
            ("quarantined", c["quarantined"])]
    rows += [(f"  quarantined: {r}", n) for r, n in c["quarantine_by_reason"].items()]
    return rows


def sample_images(x: np.ndarray, y: np.ndarray, norm: dict, n: int = 16):
    """A grid of the first ``n`` images, de-normalised back to 0..255, titled with their label."""
    import matplotlib.pyplot as plt

    cols = 8
    fig, axes = plt.subplots((n + cols - 1) // cols, cols, figsize=(cols * 1.2, 1.4 * ((n + cols - 1) // cols)))
    for ax, img, lab in zip(axes.ravel(), x[:n], y[:n]):
        raw = (img * norm["std"] + norm["mean"]) / norm["scale"]
        ax.imshow(raw.reshape(28, 28), cmap="gray_r", vmin=0, vmax=255)
        ax.set_title(str(lab), fontsize=9)
        ax.axis("off")
    fig.tight_layout()
    return fig


def label_distribution(manifest: dict):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3))
    width = 0.27
    for i, (split, dist) in enumerate(manifest["label_distribution"].items()):
        labels = sorted(dist, key=int)
        ax.bar(np.arange(len(labels)) + (i - 1) * width, [dist[k] for k in labels], width, label=split)
    ax.set_xticks(range(10))
    ax.set_xlabel("digit")
    ax.set_ylabel("rows")
    ax.legend()
    fig.tight_layout()
    return fig


def partition_sizes(df) -> list[int]:
    """Rows in each Spark partition of ``df`` (one small aggregation; shows skew)."""
    from pyspark.sql import functions as F

    rows = df.groupBy(F.spark_partition_id().alias("p")).count().orderBy("p").collect()
    return [r["count"] for r in rows]


def bench_plot(results: dict[int, list[dict]]):
    """Rows/s and peak memory per engine and size (two panels)."""
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.6))
    sizes = sorted(results)
    engines = sorted({r["engine"] for rs in results.values() for r in rs})
    width = 0.8 / max(1, len(engines))
    for i, e in enumerate(engines):
        rps = [next((r.get("rows_per_s", 0) for r in results[s] if r["engine"] == e), 0) for s in sizes]
        mem = [next((r.get("peak_rss_bytes", 0) / 2**30 for r in results[s] if r["engine"] == e), 0) for s in sizes]
        xs = np.arange(len(sizes)) + (i - (len(engines) - 1) / 2) * width
        a.bar(xs, rps, width, label=e)
        b.bar(xs, mem, width, label=e)
    for ax, title in ((a, "throughput (input rows/s)"), (b, "peak RSS of the process tree (GiB)")):
        ax.set_xticks(range(len(sizes)))
        ax.set_xticklabels([size_label(s) + " rows" for s in sizes])
        ax.set_title(title)
        ax.legend()
    fig.tight_layout()
    return fig


def bench_metrics(results: dict[int, list[dict]]) -> dict[str, tuple]:
    """``{metric name: (value, unit)}``: rows/s and peak memory per engine and size, ratios, and
    Spark's stage seconds (a dict value).

    ``spark_vs_pandas_speedup`` is Spark's rows/s over pandas' at the largest size both ran;
    ``spark_vs_fastest_ratio`` is Spark's rows/s over the fastest engine's at the largest size;
    ``spark_stage_seconds_<size>`` is where the job's time went (``run_job``'s stages);
    ``spark_shuffle_partitions_<size>`` the shuffle partitions the job sized for that input;
    ``<engine>_peak_memory_growth`` and ``<engine>_peak_bytes_per_row`` compare an engine's
    peak memory at its largest and smallest size (:func:`memory_growth`).
    """
    out: dict[str, tuple] = {}
    for size, rs in sorted(results.items()):
        for r in rs:
            if "rows_per_s" in r:
                out[f"{r['engine']}_rows_per_s_{size_label(size)}"] = (r["rows_per_s"], "rows/s")
                out[f"{r['engine']}_peak_rss_gib_{size_label(size)}"] = (r["peak_rss_bytes"] / 2**30, "GiB")
            if "stages" in r:
                out[f"{r['engine']}_stage_seconds_{size_label(size)}"] = (
                    {k: round(v, 1) for k, v in r["stages"].items()}, "s")
            if "shuffle_partitions" in r:
                out[f"{r['engine']}_shuffle_partitions_{size_label(size)}"] = (r["shuffle_partitions"], "partitions")
    both = [s for s, rs in results.items() if {"spark", "pandas"} <= {r["engine"] for r in rs if "rows_per_s" in r}]
    if both:
        rs = {r["engine"]: r for r in results[max(both)]}
        out["spark_vs_pandas_speedup"] = (rs["spark"]["rows_per_s"] / rs["pandas"]["rows_per_s"], "x")
    for e, (lo, hi, grow) in memory_growth(results).items():
        out[f"{e}_peak_memory_growth"] = (grow, "x")
    for e, per_row in memory_per_row(results).items():
        out[f"{e}_peak_bytes_per_row"] = (per_row, "B/row")
    top = {r["engine"]: r["rows_per_s"] for r in results[max(results)] if "rows_per_s" in r}
    if "spark" in top:
        out["spark_vs_fastest_ratio"] = (top["spark"] / max(top.values()), "x")
    return out


def fixed_and_per_row(results: dict[int, list[dict]], engine: str) -> tuple[float, float] | None:
    """Least-squares fit ``seconds = fixed + per_row * rows`` of one engine over the sizes it ran.

    Returns:
        ``(fixed_s, per_row_s)``, or None with fewer than two sizes.
    """
    pts = [(n, r["seconds"]) for n, rs in results.items() for r in rs if r["engine"] == engine and "seconds" in r]
    if len({n for n, _ in pts}) < 2:
        return None
    n = np.array([p[0] for p in pts], float)
    t = np.array([p[1] for p in pts], float)
    per_row, fixed = np.polyfit(n, t, 1)
    return float(fixed), float(per_row)


def memory_growth(results: dict[int, list[dict]]) -> dict[str, tuple[int, int, float]]:
    """``{engine: (smallest size, largest size, peak memory at largest / at smallest)}`` over the
    sizes each engine ran (engines that ran at one size only are left out)."""
    out = {}
    for e in sorted({r["engine"] for rs in results.values() for r in rs}):
        peaks = {n: r["peak_rss_bytes"] for n, rs in results.items() for r in rs
                 if r["engine"] == e and "peak_rss_bytes" in r}
        if len(peaks) >= 2:
            lo, hi = min(peaks), max(peaks)
            out[e] = (lo, hi, peaks[hi] / peaks[lo])
    return out


def memory_per_row(results: dict[int, list[dict]]) -> dict[str, float]:
    """``{engine: (peak at its largest size - peak at its smallest) / (largest - smallest)}``: the
    bytes of peak memory each extra input row cost. Unlike the ratio of :func:`memory_growth`,
    it does not depend on what the process held before the first row (an interpreter, a JVM
    heap already grown by earlier jobs)."""
    out = {}
    for e, (lo, hi, _) in memory_growth(results).items():
        peak = {n: r["peak_rss_bytes"] for n, rs in results.items() for r in rs if r["engine"] == e and "peak_rss_bytes" in r}
        out[e] = (peak[hi] - peak[lo]) / (hi - lo)
    return out


def bench_summary(results: dict[int, list[dict]]) -> list[str]:
    """Sentences stating what this run measured: the fastest engine and Spark's ratios per size, and
    each engine's fixed cost and per-row cost, with the size where Spark would overtake pandas
    if the linear fit held (or why it would not)."""
    lines = []
    for size, rs in sorted(results.items()):
        ran = {r["engine"]: r["rows_per_s"] for r in rs if "rows_per_s" in r}
        if not ran:
            continue
        best = max(ran, key=ran.get)
        line = f"{size:,} rows: fastest {best} ({ran[best]:,.0f} rows/s)"
        if "spark" in ran:
            line += f"; Spark {ran['spark']:,.0f} rows/s = {ran['spark'] / ran[best]:.2f}x the fastest"
            if "pandas" in ran:
                line += f", {ran['spark'] / ran['pandas']:.2f}x pandas"
        lines.append(line)
    for e, (lo, hi, grow) in memory_growth(results).items():
        lines.append(f"{e}: {hi / lo:.0f}x the rows ({lo:,} -> {hi:,}) took {grow:.2f}x the peak memory")
    fits = {e: fixed_and_per_row(results, e) for e in ("spark", "pandas", "duckdb")}
    for e, f in fits.items():
        if f:
            fixed = f"{f[0]:.1f} s" if f[0] > 0.05 else "~0 s"
            lines.append(f"{e}: fixed {fixed} + {f[1] * 1e6:.0f} µs per row (fit over the sizes run)")
    if fits.get("spark") and fits.get("pandas"):
        (a_s, b_s), (a_p, b_p) = fits["spark"], fits["pandas"]
        if b_s < b_p:
            lines.append(f"Spark's per-row cost is lower: it would overtake pandas near "
                         f"{max(0.0, (a_s - a_p) / (b_p - b_s)):,.0f} rows if both stayed linear")
        else:
            lines.append("Spark's per-row cost is not lower than pandas' on this machine: no crossover "
                         "follows from these sizes (pandas stops instead when the table no longer fits in memory)")
    return lines


def stage_dir_listing(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in Path(root).rglob("*") if p.is_file())
