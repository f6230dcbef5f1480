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
    assert {"gpu_speed", "scaling_gpu", "scaling_cpu", "overlap", "image_size", "spot", "serving", "billing",
            "commitments"} <= set(a)
    assert "V100" in a["gpu_ratio_values"]


# ---- scaling from the interconnect model, per instance type -----------------------------------

R50 = Basis(cpu_samples_per_s_per_core=2.0, scaling_efficiency_2=0.8, cpu_resnet50_img_s=2.0,
            grad_bytes=25_557_032 * 4, batch_per_worker=256)


def test_gpu_types_no_longer_scale_alike(table):
    """The CPU 2-worker efficiency does not reach GPU types: p3.16xlarge (25 Gbit/s TCP) falls
    behind p5 (3,200 Gbit/s EFA) across instances, inside one instance both ride NVLink."""
    p3, p5 = table.get("p3.16xlarge"), table.get("p5.48xlarge")
    e3_8, link3 = models.efficiency(p3, 8, R50)
    e5_8, link5 = models.efficiency(p5, 8, R50)
    assert (link3, link5) == ("TCP", "EFA")
    assert e3_8 < e5_8 - 0.1
    assert models.efficiency(p3, 1, R50)[0] > 0.95 and models.efficiency(p5, 1, R50)[0] > 0.95
    low = Basis(2.0, 0.5, 2.0, grad_bytes=R50.grad_bytes, batch_per_worker=256)
    assert models.efficiency(p5, 8, low) == models.efficiency(p5, 8, R50)  # the CPU measurement is not used


def test_gpu_efficiency_is_the_interconnect_model_by_hand(table):
    p3 = table.get("p3.16xlarge")
    compute = 256 / models.GPU_RESNET50_IMG_S["V100"]
    n, bw = 16, 25e9 / 8
    comm = 2 * (n - 1) / n * R50.grad_bytes / bw + 2 * (n - 1) * 50e-6
    assert models.efficiency(p3, 2, R50)[0] == pytest.approx(compute / (compute + comm))


def test_overlap_never_lowers_efficiency(table):
    from dataclasses import replace
    for t in ("p3.16xlarge", "g4dn.12xlarge", "p4d.24xlarge"):
        for k in (1, 2, 8):
            off = models.efficiency(table.get(t), k, R50)[0]
            on = models.efficiency(table.get(t), k, replace(R50, overlap=True))[0]
            assert on >= off - 1e-12, (t, k)


def test_cpu_types_scale_inside_as_measured_and_across_by_network(table):
    c = table.get("c6i.32xlarge")  # 64 physical cores, EFA
    inside = models.scaling_efficiency(64, 0.8)
    assert models.efficiency(c, 1, R50) == (pytest.approx(inside), "measured (CPU cores)")
    e2, link = models.efficiency(c, 2, R50)
    assert link == "measured (CPU cores) + EFA" and e2 <= inside


def test_scaling_table_has_both_overlap_forms(table):
    rows = models.scaling_table(table, R50, ["p3.16xlarge", "p5.48xlarge"], ks=(1, 4))
    assert len(rows) == 4 and all(r["efficiency_overlap"] >= r["efficiency_no_overlap"] for r in rows)


# ---- Spot: the interval applied vs the formula's, the break-even by bisection --------------------

def test_young_daly_interval_is_reported_uncapped_and_capped(table):
    short = Workload("short", 200_000, 1)
    s = models.spot_estimate(table.get("p3.8xlarge"), 2, short, R50, 0.001, 60, 300)
    assert s.young_daly_interval_min == pytest.approx(models.young_daly_interval(60, 3600 / (2 * 0.001)) / 60)
    assert s.interval_capped and s.checkpoint_interval_min == pytest.approx(s.on_demand_hours * 60)
    long = Workload("long", 100_000_000, 10)
    s2 = models.spot_estimate(table.get("p3.8xlarge"), 2, long, R50, 0.01, 60, 300)
    assert not s2.interval_capped and s2.checkpoint_interval_min == pytest.approx(s2.young_daly_interval_min)


def test_breakeven_rate_is_the_root(table):
    inst, wl = table.get("p3.8xlarge"), Workload("big", 10_000_000, 10)
    b = models.spot_breakeven(inst, 2, wl, R50, 60, 300)
    assert b.rate_per_h is not None and 0 < b.rate_per_h < b.searched_up_to
    at = lambda r: models.spot_estimate(inst, 2, wl, R50, r, 60, 300).saving_pct  # noqa: E731
    assert at(b.rate_per_h * 0.99) > 0 > at(b.rate_per_h * 1.01)
    assert "{spot_breakeven_rate_per_h" in models.breakeven_template(b)


def test_breakeven_none_up_to_the_range_says_so(table):
    inst, wl = table.get("p3.8xlarge"), Workload("big", 10_000_000, 10)
    b = models.spot_breakeven(inst, 2, wl, R50, 60, 300, max_rate_per_h=0.01)
    assert b.rate_per_h is None and b.searched_up_to == 0.01
    tpl = models.breakeven_template(b)
    assert "no break-even" in tpl and "{spot_breakeven_rate_per_h" not in tpl


def test_sensitivity_table_rates_and_advisor_buckets(table):
    rows = models.spot_sensitivity(table.get("p3.8xlarge"), 2, Workload("w", 10_000_000, 10), R50,
                                   [0.0, models.rate_from_monthly_pct(10.0), 1.0], 60, 300)
    assert [r["advisor_pct_per_month"] for r in rows][:2] == [0.0, pytest.approx(10.0)]
    assert rows[0]["saving_pct"] > rows[1]["saving_pct"] > rows[2]["saving_pct"]
    assert rows[0]["time_penalty_pct"] < rows[2]["time_penalty_pct"]


# ---- what a run bills: commitments, Capacity Blocks, inter-AZ traffic, the serving bill ----------

def test_purchase_options_price_every_market(table):
    est = models.train_estimate(table.get("p5.48xlarge"), 2, Workload("w", 10_000_000, 1), R50)
    row = models.purchase_options(table, est, 0.001, R50, Workload("w", 10_000_000, 1), 60, 300)
    assert row["sp_compute_1yr_usd"] > row["sp_instance_3yr_usd"] > 0
    assert row["sp_compute_3yr_usd"] == pytest.approx(round(est.cost_usd * (1 - 0.45), 2), abs=0.02)
    assert row["capacity_block_billed_h"] == 48  # two instances, one whole day
    assert row["capacity_block_usd"] == pytest.approx(39.33 * 48)
    tpl, vals = models.purchase_summary(row)
    assert "Capacity Block" in tpl.format(**vals)


def test_purchase_options_without_a_block_or_spot_say_why(table):
    est = models.train_estimate(table.get("hpc7a.96xlarge"), 1, WL, BASIS)
    row = models.purchase_options(table, est, 0.001, BASIS, WL, 60, 300)
    assert row["spot_usd"] is None and row["capacity_block_usd"] is None and row["sp_compute_1yr_usd"] is None
    assert "no spot price" in row["notes"] and "no Capacity Block" in row["notes"]
    tpl, vals = models.purchase_summary(row)
    assert "no Capacity Block is sold" in tpl.format(**vals)


@pytest.mark.parametrize("hours,instances,billed", [
    (0.5, 1, 24), (24.0, 1, 24), (24.5, 3, 2 * 24 * 4), (15 * 24, 1, 21 * 24), (100, 64, 5 * 24 * 64),
], ids=["half-hour", "one-day", "rounds-count-up", "week-steps", "max-count"])
def test_capacity_block_bills_whole_days_and_offered_counts(table, hours, instances, billed):
    assert table.capacity_block_billed_hours(hours, instances) == billed


def test_capacity_block_limits(table):
    with pytest.raises(ValueError, match="at most 64"):
        table.capacity_block_billed_hours(1, 65)
    with pytest.raises(ValueError, match="longest Capacity Block"):
        table.capacity_block_billed_hours(200 * 24, 1)


def test_inter_az_allreduce_bill_by_hand(table):
    wl = Workload("w", 1_000_000, 1)
    est = models.train_estimate(table.get("p4d.24xlarge"), 2, wl, R50)
    out = models.inter_az_allreduce_usd(table, est, R50.grad_bytes, 256, wl)
    steps = 1_000_000 / (16 * 256)
    gb = steps * 2 * 15 / 16 * R50.grad_bytes / 1e9 * 2
    assert out["usd_if_spread_over_azs"] == pytest.approx(gb * 0.01 * 2, rel=1e-3)
    one = models.train_estimate(table.get("p4d.24xlarge"), 1, wl, R50)
    assert models.inter_az_allreduce_usd(table, one, R50.grad_bytes, 256, wl)["usd_if_spread_over_azs"] == 0


def test_serving_month_floor_alb_and_egress(table):
    inst = table.get("c6i.xlarge")
    low = models.serving_month(table, inst, 500.0, 1.0, 2, 3238, 265)
    assert low.instances == 2 and low.floor_instances == 2  # minReplicas holds the floor
    assert low.instances_usd == pytest.approx(0.17 * 2 * 730)
    assert low.alb_hours_usd == pytest.approx(0.0225 * 730) and low.egress_usd == 0  # under the free 100 GB
    high = models.serving_month(table, inst, 500.0, 2000.0, 2, 3238, 265)
    assert high.instances == models.replicas_for(2000.0, 500.0, 0.6)
    assert high.lcu_driver == "new connections" and high.lcus == pytest.approx(2000 / 25)
    egress_gb = 2000 * 265 * 730 * 3600 / 1e9
    assert high.egress_usd == pytest.approx((egress_gb - 100) * 0.09)
    assert high.inter_az_usd == 0  # ALB to targets: no inter-AZ charge
    assert high.total_usd == pytest.approx(high.instances_usd + high.alb_hours_usd + high.alb_lcu_usd + high.egress_usd)
    keep_alive = models.serving_month(table, inst, 500.0, 2000.0, 2, 3238, 265, requests_per_connection=100)
    assert keep_alive.lcu_driver == "processed bytes" and keep_alive.alb_lcu_usd < high.alb_lcu_usd
