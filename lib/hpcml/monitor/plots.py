"""Figures of what the local Prometheus recorded (every series comes from a PromQL query)."""

from __future__ import annotations

from typing import Any

from hpcml.monitor import dashboard
from hpcml.serve.spec import METRIC_REQUEST_SECONDS, METRIC_REQUESTS
from hpcml.train.spec import METRIC_SAMPLES, METRIC_STEP_SECONDS

#: The PromQL of every plotted series; ``{w}`` is the rate window (see :func:`query`).
QUERIES = {
    "train_rank": f"sum by (rank) (rate({METRIC_SAMPLES}_total[{{w}}]))",
    "train_step_p99": f"histogram_quantile(0.99, sum by (rank, le) (rate({METRIC_STEP_SECONDS}_bucket[{{w}}])))",
    # node_exporter, per node; host-wide figures (a network namespace shares /proc: see hpcml.monitor.nodes)
    "node_cpu_busy": '100 * (1 - avg by (node) (rate(node_cpu_seconds_total{{mode="idle"}}[{w}])))',
    "node_mem_used": "100 * (1 - node_memory_MemAvailable_bytes / node_memory_MemTotal_bytes)",
    "serve_p50": f"histogram_quantile(0.5, sum by (le) (rate({METRIC_REQUEST_SECONDS}_bucket[{{w}}])))",
    "serve_p99": f"histogram_quantile(0.99, sum by (le) (rate({METRIC_REQUEST_SECONDS}_bucket[{{w}}])))",
    "serve_rps": f"sum by (code) (rate({METRIC_REQUESTS}[{{w}}]))",
}


def query(name: str, window: str = "5s") -> str:
    """The PromQL behind a plotted series, with its rate window."""
    return QUERIES[name].format(w=window)


step_s = 1.0  # the resolution of every plotted query_range


def series(client, name: str, start: float, end: float, window: str = "5s", label: str | None = None):
    return client.query_range(query(name, window), start, end, step=step_s, label=label)


def overview(client, train: tuple[float, float], serve: tuple[float, float], drill: dict[str, Any],
             session: tuple[float, float], window: str = "5s", train_window: tuple[float, float] | None = None):
    """2x2 figure: per-rank training throughput (``train_window``, when given, shaded: the
    interval the measured rate covers), node CPU/memory, serving latency with the drill's
    injection/pending/firing marks, serving request rate by code."""
    import matplotlib.pyplot as plt
    import pandas as pd

    to_dt = lambda t: pd.to_datetime(t, unit="s", utc=True)  # noqa: E731
    fig, ax = plt.subplots(2, 2, figsize=(12, 7))
    tr = series(client, "train_rank", *train, window, label="rank")
    if len(tr) > 1:  # on the query's own grid, so a gap in the series stays a gap, not a line
        tr.index = tr.index.round("ms")
        tr = tr.asfreq(f"{step_s:g}s")
    for rank in tr.columns:
        ax[0, 0].plot(tr.index, tr[rank], label=f"rank {rank}")
    if train_window is not None:
        ax[0, 0].axvspan(to_dt(train_window[0]), to_dt(train_window[1]), color="tab:green", alpha=0.12,
                         label="scraped while training")
    ax[0, 0].set(title=f"Training throughput per rank (rate over {window})", ylabel="samples/s")
    ax[0, 0].legend(fontsize=8)
    cpu = series(client, "node_cpu_busy", *session, window, label="node")
    mem = series(client, "node_mem_used", *session, window, label="node")
    for node in cpu.columns:
        ax[0, 1].plot(cpu.index, cpu[node], label=f"CPU busy % ({node})")
    for node in mem.columns[:1]:  # host-wide: every node reads the same memory
        ax[0, 1].plot(mem.index, mem[node], "k--", label="memory used % (host)")
    ax[0, 1].set(title="Nodes (node_exporter; host-wide CPU and memory)", ylabel="%", ylim=(0, 105))
    ax[0, 1].legend(fontsize=8)
    for name, style in (("serve_p50", "-"), ("serve_p99", "-")):
        s = series(client, name, *serve, window)
        if not s.empty:
            ax[1, 0].plot(s.index, s.iloc[:, 0] * 1000, style, label=name.split("_")[1])
    ax[1, 0].axvspan(to_dt(drill["inject_at"]), to_dt(drill["cleared_at"]), color="tab:red", alpha=0.12,
                     label="latency injected")
    for state, color in (("pending", "tab:orange"), ("firing", "tab:red")):
        t = next((s for s, st in drill["timeline"] if st == state), None)
        if t is not None:
            ax[1, 0].axvline(to_dt(drill["inject_at"] + t), color=color, ls="--", label=f"alert {state}")
    ax[1, 0].set(title="Serving latency (histogram_quantile)", ylabel="ms")
    ax[1, 0].legend(fontsize=8)
    rps = series(client, "serve_rps", *serve, window, label="code")
    rps.plot(ax=ax[1, 1])
    ax[1, 1].set(title="Serving requests/s by HTTP code", ylabel="req/s")
    for a in ax.flat:
        a.set_xlabel("")
        a.tick_params(axis="x", labelsize=7)
    fig.tight_layout()
    return fig


def dashboard_panels(client, start: float, end: float, window: str = "5s", cols: int = 3):
    """The Grafana dashboard's panels (:data:`hpcml.monitor.dashboard.PANELS`, the one list) as
    figures: each panel's PromQL with ``$__rate_interval`` set to ``window``, run as a
    ``query_range`` against the local Prometheus. A panel whose series this machine does not
    have (DCGM without a data-center GPU) says so instead of drawing nothing.

    Returns:
        ``(figure, {panel title: number of series drawn})``.
    """
    import math

    import matplotlib.pyplot as plt

    queries = dashboard.local_queries(window)
    rows = math.ceil(len(queries) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 2.6 * rows), squeeze=False)
    drawn: dict[str, int] = {}
    units = {t: u for t, u, _ in dashboard.PANELS}
    for ax, (title, targets) in zip(axes.flat, queries.items()):
        n = 0
        for legend, expr in targets:
            df = client.query_range(expr, start, end, step=step_s)
            for col in df.columns:
                ax.plot(df.index, df[col], label=(legend if len(df.columns) == 1 else col)[:30])
                n += 1
        if not n:
            ax.text(0.5, 0.5, "no series here", ha="center", va="center", transform=ax.transAxes, color="grey")
        ax.set_title(title, fontsize=8)
        ax.set_ylabel(units[title], fontsize=7)
        ax.tick_params(labelsize=6)
        if n:
            ax.legend(fontsize=6)
        drawn[title] = n
    for ax in list(axes.flat)[len(queries):]:
        ax.set_visible(False)
    fig.tight_layout()
    return fig, drawn
