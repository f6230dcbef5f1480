"""Charts of the training benchmarks: the A/B block chart, per-rank throughput, the step-time split.

:func:`block_chart` draws a paired A/B run (:mod:`hpcml.train.abtest`: blocks in ABBA order)
as one bar per block, the "on" arm orange and the "off" arm blue; notebook 02 draws the
Horovod-loop overhead with it and notebook 05 the exporter's. Each function returns a
``matplotlib`` figure for :func:`hpcml.report.figure`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib.pyplot as plt
import pandas as pd


def block_chart(blocks: Sequence[Mapping[str, Any]], block_steps: int, on_label: str, off_label: str,
                title: str, figsize: tuple[float, float] = (7, 2.4)):
    """Mean step time per block of an in-run A/B.

    Args:
        blocks: the A/B's blocks, each with ``block`` (its number), ``on`` (arm), ``sum_s``
            (seconds over its steps) and ``steps``.
        block_steps: steps per block, for the axis label.
        on_label: what the "on" arm is (orange), e.g. ``"Horovod"``.
        off_label: what the "off" arm is (blue), e.g. ``"plain PyTorch"``.
        title: the chart's title (the notebook puts the measured overhead there).
        figsize: the figure's size in inches.
    """
    fig, ax = plt.subplots(figsize=figsize)
    ax.bar([b["block"] for b in blocks], [1e3 * b["sum_s"] / b["steps"] for b in blocks],
           color=["C1" if b["on"] else "C0" for b in blocks])
    ax.set_xlabel(f"block of {block_steps} steps (orange: {on_label}, blue: {off_label})")
    ax.set_ylabel("mean step (ms)")
    ax.set_title(title)
    return fig


def per_rank_chart(per_rank: pd.DataFrame, title: str):
    """img/s of every rank, ±1.96σ, one colour per run.

    Args:
        per_rank: rows with ``run``, ``rank``, ``img_per_s`` and ``conf95``, grouped by run in
            the order given (:attr:`hpcml.train.scaling.ScalingSummary.per_rank`).
        title: the chart's title.
    """
    fig, ax = plt.subplots(figsize=(9, 3.4))
    for i, (name, g) in enumerate(per_rank.groupby("run", sort=False)):
        ax.bar([f"{name}\n#{r}" for r in g["rank"]], g["img_per_s"], yerr=g["conf95"], color=f"C{i}", capsize=4,
               label=name)
    ax.tick_params(axis="x", labelsize=6)
    ax.set_ylabel("img/s per worker")
    ax.set_title(title)
    return fig


def split_chart(split_frac: Mapping[str, float], label: str = "rank 0"):
    """One horizontal bar: the fraction of step time in each phase, stacked in order.

    Args:
        split_frac: ``{phase: fraction of step time}`` (the profiler's split).
        label: the bar's label.
    """
    fig, ax = plt.subplots(figsize=(5, 2.4))
    left = 0.0
    for i, (k, v) in enumerate(split_frac.items()):
        ax.barh([label], [v], left=left, color=f"C{i}", label=k)
        left += v
    ax.set_xlabel("fraction of step time")
    ax.legend(ncol=4, fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.35))
    return fig


def interconnect_chart(points: Sequence[Mapping[str, Any]], fits: Mapping[str, Any], knee_bps: float, title: str,
                       ceiling: float | None = None):
    """Scaling efficiency against link rate: measured points (±95 %), each fitted model's curve,
    the knee (a vertical line) and, if given, the no-communication ceiling (a horizontal line).

    Args:
        points: rows with ``profile``, ``rate_bps``, ``efficiency`` and ``efficiency_ci95``
            (:func:`hpcml.train.sweep_summary.sweep_points`).
        fits: name -> a fit with ``efficiency(bytes_per_s)`` (:func:`hpcml.cost.interconnect.fit_step_time`).
        knee_bps: the knee's link rate in bits/s.
        title: the chart's title.
        ceiling: the no-communication ceiling's efficiency, or None.
    """
    import numpy as np

    rates = [p["rate_bps"] for p in points]
    lo, hi = min(rates + [knee_bps]) / 3, max(rates + [knee_bps]) * 3
    grid = np.geomspace(lo, hi, 200)
    fig, ax = plt.subplots(figsize=(7, 3.6))
    for i, (name, f) in enumerate(fits.items()):
        ax.plot(grid / 1e6, [f.efficiency(b / 8) for b in grid], color=f"C{i + 1}", label=f"model, {name}")
    ax.errorbar([r / 1e6 for r in rates], [p["efficiency"] for p in points],
                yerr=[p["efficiency_ci95"] for p in points], fmt="o", color="C0", capsize=4, label="measured")
    for p in points:
        ax.annotate(p["profile"], (p["rate_bps"] / 1e6, p["efficiency"]), textcoords="offset points", xytext=(4, 6),
                    fontsize=7)
    ax.axvline(knee_bps / 1e6, color="grey", ls="--", label="knee: allreduce = compute")
    if ceiling is not None:
        ax.axhline(ceiling, color="black", ls=":", label="no-communication ceiling")
    ax.set_xscale("log")
    ax.set_xlabel("link rate (Mbit/s)")
    ax.set_ylabel("scaling efficiency")
    ax.set_ylim(0, 1.1)
    ax.set_title(title)
    ax.legend(fontsize=7, loc="upper left")
    return fig
