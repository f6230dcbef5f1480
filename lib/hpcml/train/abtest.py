"""Paired A/B of a per-step cost inside one run: blocks in ABBA order, ratio of means, 95% CI.

Two arms measured in separate runs differ by more than the thing compared (process
placement, CPU frequency, the other tenants of a shared machine: step times drift by
±10–30% over a minute here). Alternating short blocks of the two arms inside one run, in
ABBA order (off, on, on, off, off, on, …), makes slow drift hit both arms alike; each pair
of consecutive blocks gives one paired estimate, and their spread gives the interval.
Used by the exporter A/B (:class:`hpcml.train.exporter.ExporterAB`) and by the Horovod-loop
overhead benchmark (:func:`hpcml.train.bench_worker.overhead`).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np


def abba_on(block: int) -> bool:
    """Arm of the 0-based counted ``block``: off, on, on, off, off, on, on, off, …"""
    if block < 0:
        raise ValueError(f"block must be >= 0, got {block}")
    return (block % 4) in (1, 2)


def overhead_pct(t_off: float, t_on: float) -> float:
    """Extra time per step with the arm on over off, in percent."""
    if t_off <= 0:
        raise ValueError(f"overhead_pct: the step time without the arm must be > 0, got {t_off}")
    return (t_on / t_off - 1.0) * 100.0


def summarize(blocks: list[dict[str, Any]], block: int, arm: str) -> dict[str, Any]:
    """Per-step mean of each arm over all blocks (ratio of means: an event such as a scrape
    lands in some blocks and not others, so a median would hide its cost), the paired
    estimate of each consecutive block pair (1,2), (3,4), … and the 95% half-width of their
    mean (normal approximation).

    Args:
        blocks: ``{"block": n (1-based), "on": bool, "steps": int, "sum_s": float}`` each.
        block: steps per block (reported back).
        arm: what "on" means, for the error message (e.g. ``"the exporter"``).
    """
    on = [b for b in blocks if b["on"] and b["steps"]]
    off = [b for b in blocks if not b["on"] and b["steps"]]
    if not on or not off:
        raise ValueError(f"A/B needs at least one full block with and one without {arm}; got {len(on)} on "
                         f"and {len(off)} off blocks of {block} steps — run longer or use smaller blocks")
    mean_on = sum(b["sum_s"] for b in on) / sum(b["steps"] for b in on)
    mean_off = sum(b["sum_s"] for b in off) / sum(b["steps"] for b in off)
    by = {b["block"]: b for b in blocks if b["steps"]}
    pairs = []
    for k in range(1, max(by, default=0), 2):
        a, b = by.get(k), by.get(k + 1)
        if a and b and a["on"] != b["on"]:
            on_b, off_b = (a, b) if a["on"] else (b, a)
            pairs.append(overhead_pct(off_b["sum_s"] / off_b["steps"], on_b["sum_s"] / on_b["steps"]))
    half = 1.96 * float(np.std(pairs, ddof=1)) / math.sqrt(len(pairs)) if len(pairs) > 1 else float("nan")
    return {"block_steps": block, "blocks": blocks, "steps_on": sum(b["steps"] for b in on),
            "steps_off": sum(b["steps"] for b in off), "mean_step_on_s": mean_on, "mean_step_off_s": mean_off,
            "overhead_pct": overhead_pct(mean_off, mean_on), "pair_overheads_pct": pairs,
            "ci95_half_width_pct": half}
