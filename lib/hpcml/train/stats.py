"""Benchmark statistics: Horovod's mean ± 1.96σ, a Student-t 95 % half-width, scaling efficiency and MFU.

Pure maths over measured numbers (the paired A/B of a per-step cost is :mod:`hpcml.train.abtest`).
"""

from __future__ import annotations

import numpy as np


def ci95(values: list[float]) -> tuple[float, float]:
    """(mean, 1.96 × population σ) — Horovod's ``img_sec_mean ± img_sec_conf``."""
    if not values:
        raise ValueError("ci95: no values")
    return float(np.mean(values)), float(1.96 * np.std(values))


def ci95_half_width(values: list[float]) -> float:
    """Half-width of the 95 % Student-t interval of the mean of ``values`` (NaN below two values)."""
    from scipy import stats

    v = np.asarray(values, dtype=float)
    if len(v) < 2 or not np.all(np.isfinite(v)):
        return float("nan")
    return float(stats.t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v)))


def scaling_efficiency(total_n: float, single: float, n: int) -> float:
    """throughput(n workers) / (n × throughput(1 worker))."""
    if n < 1 or single <= 0:
        raise ValueError("scaling_efficiency: need n >= 1 and a positive single-worker throughput")
    return total_n / (n * single)


def mfu(samples_per_s: float, flops_per_sample: float, peak_flops: float) -> float:
    """Model FLOPs utilisation: achieved training FLOP/s over the peak FLOP/s."""
    if peak_flops <= 0:
        raise ValueError("mfu: peak must be > 0")
    return samples_per_s * flops_per_sample / peak_flops
