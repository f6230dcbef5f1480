"""Figures of what the local Prometheus recorded (every series comes from a PromQL query)."""

from __future__ import annotations

from typing import Any

QUERIES = {
    "train_rank": 'sum by (rank) (rate(hpcml_train_samples_total[{w}]))',
    "train_step_p99": 'histogram_quantile(0.99, sum by (rank, le) (rate(hpcml_train_step_seconds_bucket[{w}])))',
    "node_cpu_busy": '100 * (1 - avg(rate(hpcml_node_cpu_seconds_total{{mode="idle"}}[{w}])))',
    "node_mem_used": '100 * (1 - hpcml_node_memory_available_bytes / hpcml_node_memory_total_bytes)',
    "serve_p50": 'histogram_quantile(0.5, sum by (le) (rate(hpcml_serve_request_duration_seconds_bucket[{w}])))',
    "serve_p99": 'histogram_quantile(0.99, sum by (le) (rate(hpcml_serve_request_duration_seconds_bucket[{w}])))',
    "serve_rps": 'sum by (code) (rate(hpcml_serve_requests_total[{w}]))',
}


def query(name: str, window: str = "5s") -> str:
    """The PromQL behind a plotted series, with its rate window."""
    return QUERIES[name].format(w=window)


def series(client, name: str, start: float, end: float, window: str = "5s", label: str | None = None):
    return client.query_range(query(name, window), start, end, step=1, label=label)


def overview(client, train: tuple[float, float], serve: tuple[float, float], drill: dict[str, Any],
             session: tuple[float, float], window: str = "5s"):
    """2x2 figure: per-rank training throughput, node CPU/memory, serving latency with the
    drill's injection/pending/firing marks, serving request rate by code."""
    import matplotlib.pyplot as plt
    import pandas as pd

    fig, ax = plt.subplots(2, 2, figsize=(12, 7))
    tr = series(client, "train_rank", *train, window, label="rank")
    tr.plot(ax=ax[0, 0], legend=True)
    ax[0, 0].set(title="Training throughput per rank", ylabel="samples/s")
    ax[0, 0].legend([f"rank {c}" for c in tr.columns], fontsize=8)
    cpu = series(client, "node_cpu_busy", *session, window)
    mem = series(client, "node_mem_used", *session, window)
    ax[0, 1].plot(cpu.index, cpu.iloc[:, 0], label="CPU busy %") if not cpu.empty else None
    ax[0, 1].plot(mem.index, mem.iloc[:, 0], label="memory used %") if not mem.empty else None
    ax[0, 1].set(title="Node (hpcml_node_* sampler)", ylabel="%", ylim=(0, 105))
    ax[0, 1].legend(fontsize=8)
    for name, style in (("serve_p50", "-"), ("serve_p99", "-")):
        s = series(client, name, *serve, window)
        if not s.empty:
            ax[1, 0].plot(s.index, s.iloc[:, 0] * 1000, style, label=name.split("_")[1])
    to_dt = lambda t: pd.to_datetime(t, unit="s", utc=True)  # noqa: E731
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
