"""Capacity maths: replicas for a target load, and the HPA controller's formula."""

import numpy as np
import pytest

from hpcml.serve import capacity, loadgen

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("target,per,util,floor,want", [
    (1000, 500, 1.0, 1, 2),
    (1000, 500, 0.7, 1, 3),        # 1000 / 350 = 2.86 -> 3
    (700, 500, 0.7, 1, 2),         # exactly 2.0 -> 2 (no float creep to 3)
    (0, 500, 0.7, 1, 1),           # floor
    (0, 500, 0.7, 0, 0),           # scale to zero allowed
    (1, 500, 0.7, 0, 1),
    (10_000, 123.4, 0.5, 2, 163),  # 10000 / 61.7 = 162.07 -> 163
], ids=["full-util", "headroom", "exact", "idle-floor", "scale-to-zero", "tiny-load", "large"])
def test_replicas_for(target, per, util, floor, want):
    assert capacity.replicas_for(target, per, util, floor) == want


@pytest.mark.parametrize("kw,msg", [
    (dict(target_rps=-1, per_replica_rps=1), "target_rps"),
    (dict(target_rps=1, per_replica_rps=0), "per_replica_rps"),
    (dict(target_rps=1, per_replica_rps=1, utilisation=0), "utilisation"),
    (dict(target_rps=1, per_replica_rps=1, utilisation=1.5), "utilisation"),
    (dict(target_rps=1, per_replica_rps=1, min_replicas=-1), "min_replicas"),
], ids=["neg-target", "zero-capacity", "zero-util", "util-above-1", "neg-floor"])
def test_replicas_for_rejects(kw, msg):
    with pytest.raises(ValueError, match=msg):
        capacity.replicas_for(**kw)


@pytest.mark.parametrize("cur,value,target,lo,hi,want", [
    (2, 16, 8, 1, 20, 4),       # double the metric -> double the pods
    (4, 4, 8, 1, 20, 2),        # half -> half
    (3, 8.5, 8, 1, 20, 3),      # within 10 % tolerance: unchanged
    (3, 9, 8, 1, 20, 4),        # 12.5 % over: ceil(3.375) = 4
    (10, 100, 8, 1, 20, 20),    # clamped to max
    (2, 0, 8, 2, 20, 2),        # clamped to min
    (5, 7.9, 8, 1, 20, 5),      # just under target, inside tolerance
    (0, 3, 8, 0, 20, 1),        # from zero with load -> 1
    (0, 0, 8, 0, 20, 0),        # stays at zero without load
], ids=["double", "half", "tolerance", "just-over", "clamp-max", "clamp-min", "under-tol", "from-zero", "idle-zero"])
def test_hpa_desired_replicas(cur, value, target, lo, hi, want):
    assert capacity.hpa_desired_replicas(cur, value, target, lo, hi) == want


def test_hpa_multi_metric_takes_largest():
    # CPU at 35% of a 70% target wants 1, in-flight at 24 of 8 wants 6 -> 6
    assert capacity.hpa_multi_metric(2, [(35, 70), (24, 8)]) == 6
    with pytest.raises(ValueError, match="metrics"):
        capacity.hpa_multi_metric(2, [])


@pytest.mark.parametrize("kw,msg", [
    (dict(current_replicas=1, current_value=1, target_value=0), "target_value"),
    (dict(current_replicas=1, current_value=-1, target_value=1), "current_value"),
    (dict(current_replicas=1, current_value=1, target_value=1, min_replicas=5, max_replicas=2), "min_replicas"),
], ids=["zero-target", "neg-value", "min-above-max"])
def test_hpa_rejects(kw, msg):
    with pytest.raises(ValueError, match=msg):
        capacity.hpa_desired_replicas(**kw)


# One replica's measured curve: throughput, in-flight (Little's law), p99.
CURVE = [capacity.LoadPoint(100, 1.0, 5.0), capacity.LoadPoint(180, 4.0, 20.0), capacity.LoadPoint(200, 16.0, 90.0)]


@pytest.mark.parametrize("rate, want", [(0, 0.0), (50, 0.5), (100, 1.0), (140, 2.5), (200, 16.0),
                                        (210, 16.0 + 10 * 15.0)],
                         ids=["idle", "through-origin", "on-a-point", "between", "top", "saturated-queue-grows"])
def test_inflight_at_reads_the_measured_curve(rate, want):
    assert capacity.inflight_at(rate, list(reversed(CURVE))) == pytest.approx(want)


def test_rate_at_inflight_inverts_it():
    for rate in (50, 100, 140, 190):
        assert capacity.rate_at_inflight(capacity.inflight_at(rate, CURVE), CURVE) == pytest.approx(rate)
    assert capacity.rate_at_inflight(99.0, CURVE) == 200


def test_load_curve_rejects_an_empty_curve():
    with pytest.raises(ValueError, match="at least one point"):
        capacity.load_curve([capacity.LoadPoint(0.0, 0.0, 1.0), capacity.LoadPoint(10.0, float("nan"), 1.0)])
    with pytest.raises(ValueError, match="rate"):
        capacity.inflight_at(-1, CURVE)


def test_simulated_hpa_scales_up_then_down_on_the_measured_curve():
    load = [100] * 3 + [1000] * 6 + [100] * 6
    fast = capacity.HpaBehavior(scale_down_window_s=30, scale_up_percent=100, scale_up_pods=4)
    steps = capacity.simulate_hpa(load, CURVE, target_inflight=4, max_replicas=20, behavior=fast)
    peak = max(s.replicas for s in steps)
    assert peak >= capacity.replicas_for(1000, 200, 1.0)
    assert steps[-1].replicas < peak
    # the in-flight level and p99 of each step come from the curve at the per-pod rate
    first_full = steps[3]
    assert first_full.rps_per_pod == pytest.approx(1000 / first_full.replicas)
    assert first_full.inflight_per_pod == pytest.approx(capacity.inflight_at(first_full.rps_per_pod, CURVE))
    settled = steps[8]
    assert settled.rps_per_pod <= 180 and settled.p99_ms_measured <= 20.0


def test_scale_up_is_capped_by_the_policies():
    steps = capacity.simulate_hpa([1000.0] * 3, CURVE, target_inflight=4, max_replicas=50)
    assert [s.replicas for s in steps] == [1, 5, 10]  # +max(100 %, 4 pods) per period
    assert steps[0].recommended == 50


def test_scale_down_waits_for_the_stabilisation_window():
    """In-flight requests do not fall in proportion to the load, so the raw recommendation
    swings between few and many replicas; the window holds the highest recent one."""
    load = [1000.0] * 4 + [100.0] * 30
    no_window = capacity.HpaBehavior(scale_down_window_s=0)
    flapping = [s.replicas for s in capacity.simulate_hpa([1000.0] * 12, CURVE, 4, max_replicas=8, behavior=no_window)]
    assert flapping.count(8) >= 2 and min(flapping[4:]) < 8  # up, down, up again
    held = capacity.simulate_hpa(load, CURVE, 4, max_replicas=8)
    after = [s.replicas for s in held[4:]]
    assert after[:15] == [after[0]] * 15 and after[-1] < after[0]  # held for the 300 s window, then down


def test_behavior_from_the_rendered_hpa():
    from hpcml.k8s import serve as manifests
    from hpcml.serve.spec import ServeSpec

    b = capacity.HpaBehavior.from_manifest(manifests.hpa(ServeSpec())["spec"]["behavior"])
    assert b == capacity.HpaBehavior(300.0, 100.0, 4)
    assert b.scale_up_limit(1) == 5 and b.scale_up_limit(10) == 20


def test_load_curve_keeps_the_frontier():
    noisy = CURVE + [capacity.LoadPoint(170, 30.0, 40.0)]  # more in flight, less throughput: saturated / noise
    assert capacity.load_curve(noisy) == CURVE


def test_simulated_hpa_holds_when_the_target_matches_the_load():
    steps = capacity.simulate_hpa([360.0] * 4, CURVE, target_inflight=4, start_replicas=2, min_replicas=2)
    assert [s.replicas for s in steps] == [2, 2, 2, 2] and steps[0].inflight_per_pod == pytest.approx(4.0)


@pytest.mark.parametrize("n, u, want", [(10, 0.7, 3), (8, 0.7, 2), (2, 0.7, 0), (4, 0.5, 2), (5, 1.0, 0), (0, 0.7, 0)])
def test_replicas_lost_tolerated(n, u, want):
    assert capacity.replicas_lost_tolerated(n, u) == want
    if n:  # losing one more than tolerated pushes the survivors past capacity
        assert n * u / (n - want) <= 1 + 1e-9
        assert want + 1 >= n or n * u / (n - want - 1) > 1


@pytest.mark.parametrize("overhead,m1,mb,want", [
    (0.0, 6.0, 2.0, 3.0),       # no overhead: the model's own batching gain
    (1.0, 6.0, 2.0, 7 / 3),     # a fixed per-request cost caps it
    (0.5, 0.1, 0.1, 1.0),       # a model that does not get cheaper per row: no gain
    (0.5, 0.1, 0.05, 0.6 / 0.55),  # tiny model, overhead-bound: ~1.09x at best
], ids=["model-only", "with-overhead", "no-model-gain", "overhead-bound"])
def test_batching_gain_bound(overhead, m1, mb, want):
    assert capacity.batching_gain_bound(overhead, m1, mb) == pytest.approx(want)


@pytest.mark.parametrize("args,msg", [((-1, 1, 1), "overhead_ms"), ((0, 0, 1), "model_ms_b1"),
                                      ((0, 1, float("nan")), "model_ms_per_row_batched")],
                         ids=["neg-overhead", "zero-model", "nan-batched"])
def test_batching_gain_bound_rejects(args, msg):
    with pytest.raises(ValueError, match=msg):
        capacity.batching_gain_bound(*args)


def _run(c, rps, p99, errors=0):
    lat = np.full(100, p99)
    return loadgen.LoadResult("closed", c, None, 100 + errors, 100, {"x": errors} if errors else {}, 100 / rps, lat)


def test_capacity_at_slo_bracketed():
    runs = [_run(1, 100, 2), _run(4, 300, 10), _run(16, 500, 40), _run(64, 520, 120)]
    cap = loadgen.capacity_at_slo(list(reversed(runs)), 50.0)
    assert (cap.max_rps, cap.concurrency, cap.is_lower_bound) == (pytest.approx(500), 16, False)
    assert (cap.first_miss_concurrency, cap.first_miss_rps, cap.first_miss_p99_ms) == (64, pytest.approx(520), 120)


def test_capacity_at_slo_lower_bound_when_never_crossed():
    cap = loadgen.capacity_at_slo([_run(1, 100, 2), _run(4, 300, 10)], 50.0)
    assert (cap.max_rps, cap.concurrency, cap.is_lower_bound) == (pytest.approx(300), 4, True)
    assert cap.first_miss_concurrency is None


def test_capacity_at_slo_errors_and_nothing_met():
    cap = loadgen.capacity_at_slo([_run(1, 100, 2), _run(4, 300, 10, errors=3)], 50.0)
    assert (cap.concurrency, cap.is_lower_bound, cap.first_miss_concurrency) == (1, False, 4)
    none = loadgen.capacity_at_slo([_run(1, 100, 60)], 50.0)
    assert (none.max_rps, none.concurrency, none.is_lower_bound, none.first_miss_p99_ms) == (0.0, None, False, 60)


def test_little_law_and_points():
    r = _run(8, 400, 20)
    assert r.mean_ms() == 20 and r.inflight() == pytest.approx(8.0)
    assert r.summary()["inflight"] == 8.0 and r.summary()["mean_ms"] == 20.0
    assert loadgen.load_points([r]) == [capacity.LoadPoint(pytest.approx(400), pytest.approx(8.0), 20.0)]


@pytest.mark.parametrize("seq, want", [([1, 1, 5, 5, 2], 1), ([1, 8, 1, 8, 1], 3), ([2, 3, 4, 4], 0), ([3], 0)])
def test_direction_changes(seq, want):
    assert capacity.direction_changes(seq) == want
