"""Pure cost models (hpcml.cost.models), table-style."""

import math

import pytest

from hpcml.cost import models, prices
from hpcml.cost.models import Basis, Workload

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def table():
    return prices.load_snapshot()


BASIS = Basis(cpu_samples_per_s_per_core=10.0, scaling_efficiency_2=0.9, cpu_resnet50_img_s=5.0)
WL = Workload("w", samples=36_000, epochs=10)


@pytest.mark.parametrize("n,eff2,expected", [
    (1, 0.9, 1.0), (2, 0.9, 0.9), (4, 0.9, 0.81), (8, 0.9, 0.729), (16, 1.0, 1.0), (2, 1.03, 1.0),
], ids=["1", "2", "4", "8", "perfect", "superlinear-capped"])
def test_scaling_efficiency(n, eff2, expected):
    assert models.scaling_efficiency(n, eff2) == pytest.approx(expected)


def test_cpu_instance_time_and_cost_by_hand(table):
    inst = table.get("c5.4xlarge")  # 16 vCPU -> 8 physical cores -> 8 workers
    est = models.train_estimate(inst, 1, WL, BASIS)
    rate = 8 * 10.0 * 0.9 ** 3
    assert est.workers == 8 and est.samples_per_s == pytest.approx(rate)
    assert est.hours == pytest.approx(360_000 / rate / 3600)
    assert est.cost_usd == pytest.approx(0.68 * est.hours)


def test_gpu_instance_uses_the_stated_ratio(table):
    inst = table.get("p3.2xlarge")
    est = models.train_estimate(inst, 1, WL, BASIS)
    assert est.samples_per_s == pytest.approx(10.0 * models.GPU_RESNET50_IMG_S["V100"] / 5.0)


def test_minimum_billing_is_60_seconds(table):
    est = models.train_estimate(table.get("p5.48xlarge"), 1, Workload("tiny", 10, 1), BASIS)
    assert est.cost_usd == pytest.approx(55.04 / 60)


@pytest.mark.parametrize("k", [0, 1.5, -2], ids=["zero", "fraction", "negative"])
def test_bad_instance_count(table, k):
    with pytest.raises(ValueError, match="instances"):
        models.train_estimate(table.get("c5.4xlarge"), k, WL, BASIS)


@pytest.mark.parametrize("make,msg", [
    (lambda: Workload("w", -1, 1), "Workload.samples must be > 0"),
    (lambda: Basis(-1.0, 0.9, 5.0), "cpu_samples_per_s_per_core must be > 0"),
    (lambda: Basis(1.0, 1.5, 5.0), "scaling_efficiency_2 must be in"),
    (lambda: models.rate_from_monthly_pct(-2), "must be >= 0"),
    (lambda: models.serving_usd_per_million(1.0, -5), "rps_per_instance must be > 0"),
    (lambda: models.young_daly_interval(-1, 10), "checkpoint_s must be > 0"),
    (lambda: Basis(1.0, 0.9, 5.0).gpu_speedup("TPU"), "no speed assumption for GPU type 'TPU'"),
], ids=["workload", "throughput", "efficiency", "negative-rate", "negative-rps", "checkpoint", "gpu-type"])
def test_bad_input_names_the_field(make, msg):
    with pytest.raises(ValueError, match=msg):
        make()


def test_spot_on_a_type_without_spot_price_names_it(table):
    with pytest.raises(prices.MissingPriceError, match="hpc7a.96xlarge"):
        models.spot_estimate(table.get("hpc7a.96xlarge"), 1, WL, BASIS, 0.01, 60, 300)


@pytest.mark.parametrize("c,m,expected", [(60, 3600, math.sqrt(2 * 60 * 3600)), (1, 2, 2.0)], ids=["1h", "tiny"])
def test_young_daly_interval(c, m, expected):
    assert models.young_daly_interval(c, m) == pytest.approx(expected)


def test_daly_walltime_limits():
    # failures vanishingly rare: wall time -> solve time plus one checkpoint per interval
    w = models.daly_expected_walltime(3600, 10, 0, 1e12, 600)
    assert w == pytest.approx(3600 * (600 + 10) / 600, rel=1e-6)
    # more failures always cost more time
    assert models.daly_expected_walltime(3600, 10, 60, 3600, 600) > models.daly_expected_walltime(3600, 10, 60, 36000, 600)


def test_young_daly_interval_minimises_expected_time():
    c, m, r, ts = 30.0, 5000.0, 120.0, 36000.0
    best = models.young_daly_interval(c, m)
    at = lambda tau: models.daly_expected_walltime(ts, c, r, m, tau)  # noqa: E731
    assert at(best) < at(best / 3) and at(best) < at(best * 3)


@pytest.mark.parametrize("pct", [0.0, 5.0, 10.0], ids=["never", "advisor-5pct", "advisor-10pct"])
def test_spot_saving_at_advisor_rates_is_close_to_the_discount(table, pct):
    """At Spot Instance Advisor frequencies (< 20 %/month) a 10-hour job is rarely hit."""
    big = Workload("big", 10_000_000, 10)
    s = models.spot_estimate(table.get("p3.8xlarge"), 2, big, BASIS, models.rate_from_monthly_pct(pct), 60, 300)
    assert abs(s.saving_pct - 70) < 2  # Spot estimated at 70 % off for P3
    assert s.spot_hours >= s.on_demand_hours


def test_spot_saving_falls_as_interruptions_rise(table):
    big = Workload("big", 10_000_000, 10)
    savings = [models.spot_estimate(table.get("p3.8xlarge"), 2, big, BASIS, rate, 60, 300).saving_pct
               for rate in (0.0, 0.01, 0.1, 1.0)]
    assert savings == sorted(savings, reverse=True) and savings[0] > savings[-1]


def test_hourly_interruptions_make_spot_lose():
    """A rate that reclaims the job every few minutes must cost more than On-Demand."""
    t = prices.load_snapshot()
    s = models.spot_estimate(t.get("p3.8xlarge"), 4, Workload("w", 10_000_000, 10), BASIS, 6.0, 120, 300)
    assert s.saving_pct < 0


def test_pareto_front_is_non_dominated(table):
    est = models.cost_table(table, WL, BASIS, ks=(1, 2, 4))
    front = models.pareto_front(est)
    assert front and len(front) < len(est)
    for f in front:
        assert not any(e.hours < f.hours and e.cost_usd < f.cost_usd for e in est)
    assert [f.hours for f in front] == sorted(f.hours for f in front)
    assert [f.cost_usd for f in front] == sorted((f.cost_usd for f in front), reverse=True)


@pytest.mark.parametrize("usd,rps,util,expected", [(0.17, 100, 1.0, 0.17 / 360000 * 1e6), (1.0, 1, 0.5, 1e6 / 1800)],
                         ids=["full", "half"])
def test_serving_cost(usd, rps, util, expected):
    assert models.serving_usd_per_million(usd, rps, util) == pytest.approx(expected)


def test_instance_rps_scales_with_cores_and_refuses_gpu(table):
    assert models.instance_rps(table.get("c6i.4xlarge"), 100, 2) == pytest.approx(400)
    with pytest.raises(ValueError, match="GPU type"):
        models.instance_rps(table.get("g4dn.xlarge"), 100, 2)
    assert models.replicas_for(1000, 100, 0.5) == 20


def test_storage_costs_respect_minimum(table):
    rows = {r["tier"]: r for r in models.storage_costs(table, 10.0)}
    assert rows["s3_standard"]["usd"] == pytest.approx(0.23)
    assert rows["fsx_lustre_ssd_125"]["billed_gb"] == pytest.approx(1228.8)
    assert rows["instance_nvme"]["usd"] == 0


def test_assumptions_are_stated():
    a = models.assumptions(BASIS)
    assert {"gpu_speed", "scaling", "spot", "serving", "billing"} <= set(a)
    assert "V100" in a["gpu_ratio_values"]
