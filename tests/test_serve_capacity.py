"""Capacity maths: replicas for a target load, and the HPA controller's formula."""

import pytest

from hpcml.serve import capacity

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


def test_simulated_hpa_scales_up_then_down():
    load = [100] * 3 + [1000] * 6 + [100] * 3
    steps = capacity.simulate_hpa(load, per_replica_rps=200, latency_s=0.02, target_inflight=4, max_replicas=20)
    peak = max(s.replicas for s in steps)
    assert peak >= capacity.replicas_for(1000, 200, 1.0)
    assert steps[-1].replicas < peak


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
