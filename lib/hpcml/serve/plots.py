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
