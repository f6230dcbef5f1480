"""Capacity maths for autoscaling: replicas for a target load, and what the HPA computes.

Pure functions, no I/O. The HPA formula is the one the Kubernetes horizontal pod
autoscaler controller uses (``pkg/controller/podautoscaler``)::

    desiredReplicas = ceil(currentReplicas * currentMetricValue / desiredMetricValue)

skipped (replicas unchanged) while the ratio is within the tolerance (default 0.1) of
1.0, then clamped to ``[minReplicas, maxReplicas]``. With several metrics the controller
takes the largest proposal.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

#: kube-controller-manager --horizontal-pod-autoscaler-tolerance default.
HPA_TOLERANCE = 0.1


def replicas_for(target_rps: float, per_replica_rps: float, utilisation: float = 0.7,
                 min_replicas: int = 1) -> int:
    """Replicas needed to serve ``target_rps`` when each replica runs at ``utilisation`` of its capacity.

    Args:
        target_rps: the load to serve (requests/s, ≥ 0).
        per_replica_rps: measured capacity of one replica at the latency objective (> 0).
        utilisation: fraction of capacity each replica may use (0 < u ≤ 1), the headroom
            that absorbs bursts while new pods start.
        min_replicas: floor (≥ 0; 0 allows scale to zero when there is no load).

    Raises:
        ValueError: naming the argument and the allowed range.
    """
    if target_rps < 0 or not math.isfinite(target_rps):
        raise ValueError(f"target_rps must be a finite number >= 0, got {target_rps}")
    if per_replica_rps <= 0 or not math.isfinite(per_replica_rps):
        raise ValueError(f"per_replica_rps must be a finite number > 0, got {per_replica_rps}")
    if not 0 < utilisation <= 1:
        raise ValueError(f"utilisation must be in (0, 1], got {utilisation}")
    if min_replicas < 0:
        raise ValueError(f"min_replicas must be >= 0, got {min_replicas}")
    # round before ceil so 2.0000000001 from float division does not become 3
    need = math.ceil(round(target_rps / (per_replica_rps * utilisation), 9))
    return max(min_replicas, need)


def hpa_desired_replicas(current_replicas: int, current_value: float, target_value: float,
                         min_replicas: int = 1, max_replicas: int = 100,
                         tolerance: float = HPA_TOLERANCE) -> int:
    """The HPA controller's proposal for one metric (average value / utilisation type).

    Args:
        current_replicas: pods now (≥ 0; 0 means scaled to zero, proposal is min_replicas).
        current_value: the metric's current per-pod average (e.g. in-flight requests or CPU %).
        target_value: the HPA target for that average (> 0).
        min_replicas: HPA minReplicas (≥ 0).
        max_replicas: HPA maxReplicas (≥ min_replicas, ≥ 1).
        tolerance: no change while ``|current/target - 1| <= tolerance``.
    """
    if target_value <= 0:
        raise ValueError(f"target_value must be > 0, got {target_value}")
    if current_value < 0:
        raise ValueError(f"current_value must be >= 0, got {current_value}")
    if current_replicas < 0 or min_replicas < 0 or max_replicas < max(1, min_replicas):
        raise ValueError(f"need 0 <= min_replicas <= max_replicas, max_replicas >= 1 and current_replicas >= 0, "
                         f"got current={current_replicas} min={min_replicas} max={max_replicas}")
    if current_replicas == 0:
        return max(min_replicas, 1 if current_value > 0 else min_replicas)
    ratio = current_value / target_value
    if abs(ratio - 1.0) <= tolerance:
        desired = current_replicas
    else:
        desired = math.ceil(round(current_replicas * ratio, 9))
    return min(max_replicas, max(min_replicas, desired))


def hpa_multi_metric(current_replicas: int, metrics: list[tuple[float, float]], min_replicas: int = 1,
                     max_replicas: int = 100) -> int:
    """Largest proposal over several ``(current, target)`` metrics (how HPA v2 combines them)."""
    if not metrics:
        raise ValueError("metrics must list at least one (current, target) pair")
    return max(hpa_desired_replicas(current_replicas, c, t, min_replicas, max_replicas) for c, t in metrics)


@dataclass
class ScaleStep:
    t_s: float
    load_rps: float
    replicas: int
    inflight_per_pod: float


def simulate_hpa(load_rps: list[float], per_replica_rps: float, latency_s: float, target_inflight: float,
                 start_replicas: int = 1, min_replicas: int = 1, max_replicas: int = 20,
                 period_s: float = 15.0) -> list[ScaleStep]:
    """Replay a load trace through the HPA on the in-flight-requests metric.

    Per pod in-flight requests follow Little's law, ``L = λ·W`` with ``λ`` the per-pod
    arrival rate and ``W`` the per-request latency (inflated as utilisation nears 1,
    M/M/1-style: ``W / (1 - ρ)``, capped). New replicas count from the next period (an
    optimistic cold start of one period).
    """
    if per_replica_rps <= 0 or latency_s <= 0 or target_inflight <= 0:
        raise ValueError("per_replica_rps, latency_s and target_inflight must be > 0")
    steps, replicas = [], start_replicas
    for i, lam in enumerate(load_rps):
        per_pod = lam / max(replicas, 1)
        rho = min(per_pod / per_replica_rps, 0.95)
        inflight = per_pod * latency_s / (1 - rho)
        steps.append(ScaleStep(i * period_s, lam, replicas, inflight))
        replicas = hpa_desired_replicas(replicas, inflight, target_inflight, min_replicas, max_replicas)
    return steps


def batching_gain_bound(overhead_ms: float, model_ms_b1: float, model_ms_per_row_batched: float) -> float:
    """Best-case throughput gain of batching when each request also pays a fixed overhead.

    Batching shrinks only the model's share of a request's cost (Amdahl's law)::

        gain = (overhead + model time at batch 1) / (overhead + model time per row in a full batch)

    Args:
        overhead_ms: per-request cost that batching does not amortise (HTTP, decode, response, client).
        model_ms_b1: model time for one row run alone.
        model_ms_per_row_batched: model time per row when run in a full batch.

    Raises:
        ValueError: for a negative overhead or non-positive model times.
    """
    for name, v in (("model_ms_b1", model_ms_b1), ("model_ms_per_row_batched", model_ms_per_row_batched)):
        if not math.isfinite(v) or v <= 0:
            raise ValueError(f"{name} must be a finite number > 0, got {v}")
    if not math.isfinite(overhead_ms) or overhead_ms < 0:
        raise ValueError(f"overhead_ms must be a finite number >= 0, got {overhead_ms}")
    return (overhead_ms + model_ms_b1) / (overhead_ms + model_ms_per_row_batched)
