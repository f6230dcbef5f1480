"""Charts of the serving benchmarks: the closed-loop latency/throughput sweep.

:func:`latency_throughput` draws one or more sweeps (a list of load results per curve, one
per concurrency level: :func:`hpcml.serve.bench.curve`) side by side; it returns a
``matplotlib`` figure for :func:`hpcml.report.figure`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib.pyplot as plt


def latency_throughput(concurrencies: Sequence[int], curves: Mapping[str, Sequence[Any]],
                       objective_ms: float = 50.0):
    """Throughput and p99 latency against the number of closed-loop clients.

    Args:
        concurrencies: the clients of each point, in the curves' order.
        curves: ``{label: results}``; each result has ``throughput`` (req/s) and ``pct(q)``
            (latency percentile, ms), like :class:`hpcml.serve.loadgen.LoadResult`.
        objective_ms: the latency objective drawn on the p99 panel.
    """
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.5))
    for label, rs in curves.items():
        a1.plot(concurrencies, [r.throughput for r in rs], "o-", label=label)
        a2.plot(concurrencies, [r.pct(99) for r in rs], "o-", label=label)
    a1.set(xscale="log", xlabel="concurrent clients", ylabel="throughput (req/s)", title="throughput")
    a2.set(xscale="log", yscale="log", xlabel="concurrent clients", ylabel="p99 latency (ms)", title="p99 latency")
    a2.axhline(objective_ms, color="grey", ls=":", label=f"{objective_ms:g} ms objective")
    a1.legend()
    a2.legend()
    return fig


def bakeoff_curves(stats: Mapping[str, Mapping[str, Mapping[str, float]]], title: str, objective_ms: float = 50.0):
    """The bake-off's curves for one model: throughput, and p50 (dashed) / p99 (solid) latency,
    against closed-loop clients, one colour per server.

    Args:
        stats: ``{server: {clients: {"rps", "p50_ms", "p99_ms"}}}`` (:func:`hpcml.serve.bakeoff.stats`).
        title: the figure's title.
        objective_ms: the latency objective drawn on the latency panel.
    """
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 3.8))
    for i, (server, per) in enumerate(stats.items()):
        cs = sorted(per, key=int)
        xs = [int(c) for c in cs]
        colour = f"C{i}"
        a1.plot(xs, [per[c]["rps"] for c in cs], "o-", color=colour, label=server)
        a2.plot(xs, [per[c]["p99_ms"] for c in cs], "o-", color=colour, label=f"{server} p99")
        a2.plot(xs, [per[c]["p50_ms"] for c in cs], "x--", color=colour, alpha=0.6)
    a1.set(xscale="log", xlabel="concurrent clients (offered load)", ylabel="throughput (req/s)", title="throughput")
    a2.set(xscale="log", yscale="log", xlabel="concurrent clients (offered load)", ylabel="latency (ms)",
           title="p99 (solid) and p50 (dashed)")
    a2.axhline(objective_ms, color="grey", ls=":", label=f"{objective_ms:g} ms objective")
    a1.legend(fontsize=8)
    a2.legend(fontsize=7)
    fig.suptitle(title)
    return fig
