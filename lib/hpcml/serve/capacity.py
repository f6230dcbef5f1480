"""Capacity maths for autoscaling: replicas for a target load, and what the HPA computes.

Pure functions, no I/O. One replica's measured curve (:class:`LoadPoint`: throughput, mean
in-flight requests by Little's law, p99 at each load level) sizes everything: the in-flight
level at a given per-pod rate (:func:`inflight_at`), the rate at a given in-flight target
(:func:`rate_at_inflight`), and the HPA replay of a load trace (:func:`simulate_hpa`). The HPA
formula is the one the Kubernetes horizontal pod
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


def replicas_lost_tolerated(replicas: int, utilisation: float) -> int:
    """How many of ``replicas`` (each loaded to ``utilisation`` of its capacity) can disappear, by
    preemption or a drain, before the survivors are pushed past their capacity.

    The load ``N·u·C`` spread over ``N - k`` survivors stays within ``C`` while ``k ≤ N(1 - u)``.
    """
    if replicas < 0:
        raise ValueError(f"replicas must be >= 0, got {replicas}")
    if not 0 < utilisation <= 1:
        raise ValueError(f"utilisation must be in (0, 1], got {utilisation}")
    return max(0, math.floor(round(replicas * (1 - utilisation), 9)))


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


#: The latency objective the serving capacity is measured against (p99, ms).
SLO_P99_MS = 50.0


@dataclass(frozen=True)
class LoadPoint:
    """One replica measured at one load level.

    Attributes:
        rps: throughput it sustained (requests/s).
        inflight: mean requests in the system, ``rps × mean latency`` (Little's law).
        p99_ms: its p99 latency.
    """

    rps: float
    inflight: float
    p99_ms: float


def load_curve(points: list[LoadPoint]) -> list[LoadPoint]:
    """The measured points that define the curve: sorted by in-flight level, each one sustaining
    more throughput than every point with fewer requests in flight.

    A point with more requests in flight but no more throughput than an earlier one is a
    saturated replica (in a closed loop, extra clients only queue) or noise; it does not say
    how many requests a replica needs in flight to sustain a rate, so it is left out.

    Raises:
        ValueError: no usable point.
    """
    good = sorted((p for p in points if math.isfinite(p.rps) and p.rps > 0 and math.isfinite(p.inflight)
                   and p.inflight >= 0), key=lambda p: (p.inflight, -p.rps))
    if not good:
        raise ValueError("the load curve needs at least one point with a throughput > 0 and a finite in-flight level")
    frontier = [good[0]]
    for p in good[1:]:
        if p.rps > frontier[-1].rps:
            frontier.append(p)
    return frontier


def inflight_at(rate: float, points: list[LoadPoint], period_s: float = 15.0) -> float:
    """Mean in-flight requests of one replica offered ``rate`` requests/s, from its measured curve.

    Up to the highest measured throughput the level is interpolated linearly between the
    measured points (through the origin). Above it the replica is saturated: requests arrive
    faster than it answers, so the queue grows by the excess every second; the level returned
    is the one after ``period_s`` (one HPA sync period) of that growth.
    """
    if rate < 0 or not math.isfinite(rate):
        raise ValueError(f"rate must be a finite number >= 0, got {rate}")
    pts = load_curve(points)
    xs, ys = [0.0] + [p.rps for p in pts], [0.0] + [p.inflight for p in pts]
    if rate <= xs[-1]:
        i = next(k for k in range(1, len(xs)) if rate <= xs[k])
        x0, x1, y0, y1 = xs[i - 1], xs[i], ys[i - 1], ys[i]
        return y0 if x1 == x0 else y0 + (y1 - y0) * (rate - x0) / (x1 - x0)
    return ys[-1] + (rate - xs[-1]) * period_s


def rate_at_inflight(inflight: float, points: list[LoadPoint]) -> float:
    """The throughput at which one replica holds ``inflight`` requests, from its measured curve
    (the inverse of :func:`inflight_at` below saturation; the top measured rate above it)."""
    pts = load_curve(points)
    xs, ys = [0.0] + [p.rps for p in pts], [0.0] + [p.inflight for p in pts]
    for i in range(1, len(xs)):
        if inflight <= ys[i]:
            y0, y1 = ys[i - 1], ys[i]
            return xs[i] if y1 == y0 else xs[i - 1] + (xs[i] - xs[i - 1]) * (inflight - y0) / (y1 - y0)
    return xs[-1]


@dataclass(frozen=True)
class HpaBehavior:
    """The parts of an HPA's ``spec.behavior`` the replay models (``autoscaling/v2``).

    Attributes:
        scale_down_window_s: ``scaleDown.stabilizationWindowSeconds``: a scale-down takes the
            highest recommendation of that window, so a brief dip does not remove pods.
        scale_up_percent / scale_up_pods: the ``scaleUp`` policies (``selectPolicy: Max``): per
            period the replicas grow by at most the larger of that percentage and that count.
    """

    scale_down_window_s: float = 300.0
    scale_up_percent: float = 100.0
    scale_up_pods: int = 4

    @classmethod
    def from_manifest(cls, behavior: dict) -> "HpaBehavior":
        """From a rendered HPA's ``spec.behavior`` (its Percent and Pods scale-up policies)."""
        up = {p["type"]: p["value"] for p in behavior.get("scaleUp", {}).get("policies", [])}
        return cls(float(behavior.get("scaleDown", {}).get("stabilizationWindowSeconds", 300)),
                   float(up.get("Percent", 100)), int(up.get("Pods", 4)))

    def scale_up_limit(self, current: int) -> int:
        """The most replicas one period may reach from ``current``."""
        return current + max(math.ceil(current * self.scale_up_percent / 100), self.scale_up_pods)


@dataclass
class ScaleStep:
    t_s: float
    load_rps: float
    replicas: int
    rps_per_pod: float
    inflight_per_pod: float
    p99_ms_measured: float
    recommended: int


def simulate_hpa(load_rps: list[float], points: list[LoadPoint], target_inflight: float, start_replicas: int = 1,
                 min_replicas: int = 1, max_replicas: int = 20, period_s: float = 15.0,
                 behavior: HpaBehavior | None = None) -> list[ScaleStep]:
    """Replay a load trace through the HPA on the in-flight-requests metric, using the replica's
    measured curve at each offered load.

    Each period the load spreads evenly over the replicas; the per-pod in-flight level is read
    off the measured curve at that per-pod rate (:func:`inflight_at`, Little's law on measured
    throughput and latency, a growing queue beyond the highest measured rate), and so is the
    p99 of the first curve point that sustains that rate (``inf`` beyond the curve). The HPA
    formula gives a recommendation; ``behavior`` then shapes it the way the controller does:
    a scale-down takes the highest recommendation of the stabilisation window (in-flight
    requests do not fall in proportion to the load, so without it the replicas flap), and a
    scale-up is capped by the scale-up policies. New replicas count from the next period (an
    optimistic cold start of one period).
    """
    if target_inflight <= 0:
        raise ValueError(f"target_inflight must be > 0, got {target_inflight}")
    pts, beh = load_curve(points), behavior or HpaBehavior()
    steps, replicas, recent = [], start_replicas, []
    for i, lam in enumerate(load_rps):
        per_pod = lam / max(replicas, 1)
        inflight = inflight_at(per_pod, pts, period_s)
        p99 = next((p.p99_ms for p in pts if p.rps >= per_pod), math.inf)
        rec = hpa_desired_replicas(replicas, inflight, target_inflight, min_replicas, max_replicas)
        steps.append(ScaleStep(i * period_s, lam, replicas, per_pod, inflight, p99, rec))
        recent = [(t, r) for t, r in recent if t > i * period_s - beh.scale_down_window_s] + [(i * period_s, rec)]
        if rec < replicas:
            replicas = max(min(replicas, max(r for _, r in recent)), rec)
        else:
            replicas = min(rec, beh.scale_up_limit(replicas), max_replicas)
    return steps


def direction_changes(replicas: list[int]) -> int:
    """How often a replica count turns from growing to shrinking or back (a flapping autoscaler)."""
    moves = [b - a for a, b in zip(replicas, replicas[1:]) if b != a]
    return sum(1 for x, y in zip(moves, moves[1:]) if (x > 0) != (y > 0))


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
