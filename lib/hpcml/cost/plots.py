"""Figures of the cost review (matplotlib; no display needed)."""

from __future__ import annotations

from typing import Iterable

from hpcml.cost.models import SpotEstimate, TrainEstimate


def pareto_figure(estimates: Iterable[TrainEstimate], front: list[TrainEstimate], title: str = ""):
    """Cost vs time-to-train for every type x instance count, the Pareto front highlighted."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    est = list(estimates)
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    families = sorted({e.instance_type.split(".")[0] for e in est})
    cmap = plt.get_cmap("tab10")
    for i, fam in enumerate(families):
        pts = [e for e in est if e.instance_type.split(".")[0] == fam]
        ax.scatter([e.hours for e in pts], [e.cost_usd for e in pts], s=18, color=cmap(i % 10), label=fam, alpha=0.75)
    ax.plot([e.hours for e in front], [e.cost_usd for e in front], "k-", lw=1.2, label="Pareto front")
    for i, e in enumerate(front):  # front points sit close in cost: short labels, alternately above and below
        ax.annotate(f"{e.instances}x {e.instance_type.split('.')[0]}", (e.hours, e.cost_usd), fontsize=7,
                    xytext=(2, 8 if i % 2 == 0 else -12), textcoords="offset points")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("time to train (hours, log)")
    ax.set_ylabel("cost (USD, log)")
    ax.set_title(title or "cost vs time to train")
    ax.grid(True, which="both", alpha=0.25)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    return fig


def spot_figure(rates: list[float], estimates: list[SpotEstimate]):
    """Spot saving and time penalty as the interruption rate grows."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 3.6))
    ax.plot(rates, [s.saving_pct for s in estimates], "o-", label="saving vs On-Demand (%)")
    ax.plot(rates, [s.time_penalty_pct for s in estimates], "s--", label="extra wall time (%)")
    ax.axhline(0, color="gray", lw=0.8)
    positive = [r for r in rates if r > 0]
    ax.set_xscale("symlog", linthresh=min(positive) if positive else 1e-3)
    ax.set_xlim(left=0)  # rates are never negative: no empty mirrored half
    ax.set_xlabel("interruptions per instance-hour")
    ax.set_ylabel("%")
    ax.set_title(f"Spot with Young/Daly checkpoints: {estimates[0].instances}x {estimates[0].instance_type}")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.25)
    fig.tight_layout()
    return fig
