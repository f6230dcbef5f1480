"""The scaling summary of notebook 02 (hpcml.train.scaling) on hand-made benchmark results."""

import pytest

from hpcml.report import Metric
from hpcml.train import scaling

pytestmark = pytest.mark.unit


def _rank(rank, img_per_s, user_s=1.0, system_s=0.5, wall_s=2.0, ctx=100.0):
    return {"rank": rank, "img_per_s": img_per_s, "conf95": 0.1 * img_per_s,
            "process": {"user_s": user_s, "system_s": system_s, "wall_s": wall_s, "ctx_switches_per_s": ctx}}


def _run(*ranks):
    per_rank = list(ranks)
    return {"synthetic": {"per_rank": per_rank, "total_img_per_s": sum(r["img_per_s"] for r in per_rank),
                          "per_worker_img_per_s": sum(r["img_per_s"] for r in per_rank) / len(per_rank)}}


@pytest.fixture
def runs():
    ceiling = {"per_process": [{"slot": s, "alone": {"img_per_s": 10.0, "conf95": 0.5},
                                "together": {"img_per_s": 9.0, "conf95": 0.4}} for s in (0, 1)],
               "n": 2, "alone_img_per_s": 10.0, "together_img_per_s": 18.0, "efficiency": 0.9}
    return scaling.ScalingRuns(
        one=_run(_rank(0, 10.0)),
        pinned=_run(_rank(0, 8.0, ctx=100.0), _rank(1, 8.0, ctx=300.0)),
        unpinned=_run(_rank(0, 7.0), _rank(1, 7.0)),
        default_cycle=_run(_rank(0, 6.0, ctx=1000.0, system_s=1.0), _rank(1, 6.0, ctx=2000.0)),
        ceiling=ceiling, world_size=2, cycle="50 ms cycle")


def test_per_rank_rows_every_run_and_the_ceiling(runs):
    rows = scaling.per_rank_rows(runs)
    assert [(r["run"], r["rank"]) for r in rows] == [
        ("1 worker, 50 ms cycle", 0), ("2 pinned, 50 ms cycle", 0), ("2 pinned, 50 ms cycle", 1),
        ("2 unpinned, 50 ms cycle", 0), ("2 unpinned, 50 ms cycle", 1), ("2 pinned, 1 ms cycle", 0),
        ("2 pinned, 1 ms cycle", 1), ("plain PyTorch, alone", 0), ("plain PyTorch, alone", 1),
        ("plain PyTorch, together", 0), ("plain PyTorch, together", 1)]
    assert rows[0] == {"run": "1 worker, 50 ms cycle", "rank": 0, "img_per_s": 10.0, "conf95": 1.0}
    assert rows[-1] == {"run": "plain PyTorch, together", "rank": 1, "img_per_s": 9.0, "conf95": 0.4}


def test_process_rows_the_two_pinned_runs(runs):
    rows = scaling.process_rows(runs)
    assert [(r["run"], r["rank"]) for r in rows] == [("2 pinned, 50 ms cycle", 0), ("2 pinned, 50 ms cycle", 1),
                                                     ("2 pinned, 1 ms cycle", 0), ("2 pinned, 1 ms cycle", 1)]
    assert rows[2] == {"run": "2 pinned, 1 ms cycle", "rank": 0, "ctx_switches_per_s": 1000.0,
                       "system_share": 0.5, "cpu_share": 1.0}


def test_summary_efficiencies(runs):
    s = scaling.summarize(runs)
    assert s.efficiency == pytest.approx(16 / (2 * 10))
    assert s.efficiency_default_cycle == pytest.approx(12 / (2 * 10))
    assert s.efficiency_vs_plain == pytest.approx(16 / (2 * 10))
    assert s.ceiling == 0.9 and s.vs_ceiling == pytest.approx(0.8 / 0.9)
    assert s.per_worker_img_per_s == 8.0
    assert list(s.per_rank.columns) == ["run", "rank", "img_per_s", "conf95"] and len(s.per_rank) == 11
    assert list(s.processes.columns) == ["run", "rank", "ctx_switches_per_s", "system_share", "cpu_share"]


def test_metrics_names_order_and_values(runs):
    ms = scaling.metrics(scaling.summarize(runs), "resnet50", 128, 32)
    assert all(isinstance(m, Metric) for m in ms)
    assert [m.name for m in ms] == [
        "scaling_efficiency", "scaling_efficiency_ci95", "scaling_efficiency_default_cycle", "scaling_ceiling", "scaling_vs_ceiling",
        "scaling_efficiency_vs_plain", "resnet50_img_per_s_per_worker", "synthetic_per_rank", "ctx_switches_per_s"]
    by = {m.name: m for m in ms}
    assert [m.name for m in ms if m.headline] == ["scaling_efficiency", "scaling_ceiling", "resnet50_img_per_s_per_worker"]
    assert by["ctx_switches_per_s"].value == {"2 pinned, 50 ms cycle": 200.0, "2 pinned, 1 ms cycle": 1500.0}
    assert by["ctx_switches_per_s"].unit == "1/s" and by["resnet50_img_per_s_per_worker"].unit == "img/s"
    assert by["scaling_efficiency"].description == (
        "resnet50 synthetic: 2×1 thread vs 2×(1×1 thread), same per-worker batch, 50 ms cycle")
    assert by["resnet50_img_per_s_per_worker"].description == "resnet50 synthetic 128px batch 32, CPU, mean over 2 ranks"
    assert scaling.metrics(scaling.summarize(runs), "resnet18", 64, 8)[6].name == "resnet18_img_per_s_per_worker"
    # pinned total 16 ± 0.8·sqrt(2), 1 worker 10 ± 1: relative half-widths 0.1/sqrt(2) and 0.1 in quadrature
    assert by["scaling_efficiency_ci95"].value == pytest.approx(0.8 * (0.1 ** 2 / 2 + 0.1 ** 2) ** 0.5)


def test_headline_and_chart_title(runs):
    s = scaling.summarize(runs)
    assert scaling.headline(s) == ("scaling efficiency 0.800 (50 ms cycle), 0.600 (1 ms cycle); ceiling 0.900 "
                                   "-> Horovod reaches 89% of what two independent processes get")
    assert scaling.chart_title(s, "resnet50") == ("resnet50 synthetic: efficiency 0.80 (50 ms cycle), 0.60 (1 ms), "
                                                  "ceiling 0.90")


def test_pinning_comparison_ratio_and_its_interval(runs):
    pin = scaling.pinning_comparison(runs.pinned, runs.unpinned)
    assert pin["ratio"] == pytest.approx(16.0 / 14.0)
    assert pin["pinned_img_per_s"] == 16.0 and pin["unpinned_img_per_s"] == 14.0
    # each total: sqrt(2) * 0.1 * per-rank value, i.e. 0.1/sqrt(2) relative; the ratio adds both in quadrature
    rel = 0.1 / 2 ** 0.5
    assert pin["ci95"] == pytest.approx(16.0 / 14.0 * (2 * rel ** 2) ** 0.5)


def _conf(rank, img_per_s, conf95):
    return {**_rank(rank, img_per_s), "conf95": conf95}


# (n-worker ranks as (img/s, conf95), 1-worker (img/s, conf95), n, efficiency, half-width), by hand:
# totals' half-widths add per rank in quadrature, relative half-widths of the two totals add in
# quadrature, and n is exact (it scales value and half-width alike).
@pytest.mark.parametrize("many, one, n, eff, hw", [
    # 16 ± 0.5 (sqrt(0.3² + 0.4²), not 0.7) vs 10 ± 2: 0.8 × sqrt((0.5/16)² + 0.2²)
    ([(8.0, 0.3), (8.0, 0.4)], (10.0, 2.0), 2, 0.8, 0.8 * ((0.5 / 16) ** 2 + 0.2 ** 2) ** 0.5),
    # one worker each: 5 ± 0.5 vs 10 ± 1 -> 0.5 × sqrt(0.1² + 0.1²)
    ([(5.0, 0.5)], (10.0, 1.0), 1, 0.5, 0.5 * 0.02 ** 0.5),
    # four ranks 5 ± 1: 20 ± 2 vs 6 ± 0.6 -> 20/24 × sqrt(0.1² + 0.1²)
    ([(5.0, 1.0)] * 4, (6.0, 0.6), 4, 20 / 24, 20 / 24 * 0.02 ** 0.5),
    # no spread anywhere: no width
    ([(8.0, 0.0), (8.0, 0.0)], (10.0, 0.0), 2, 0.8, 0.0),
])
def test_efficiency_with_ci95_propagation(many, one, n, eff, hw):
    got = scaling.efficiency_with_ci95(_run(*[_conf(i, v, c) for i, (v, c) in enumerate(many)]),
                                       _run(_conf(0, *one)), n)
    assert got == (pytest.approx(eff), pytest.approx(hw))


def test_summary_efficiency_ci95_is_the_pinned_run_against_one_worker(runs):
    s = scaling.summarize(runs)
    assert (s.efficiency, s.efficiency_ci95) == tuple(
        pytest.approx(v) for v in scaling.efficiency_with_ci95(runs.pinned, runs.one, 2))


@pytest.mark.parametrize("n", [0, -1])
def test_efficiency_with_ci95_refuses_no_workers(runs, n):
    with pytest.raises(ValueError, match="n must be >= 1"):
        scaling.efficiency_with_ci95(runs.pinned, runs.one, n)


def test_ratio_with_ci95_refuses_non_positive_values():
    with pytest.raises(ValueError, match="positive"):
        scaling.ratio_with_ci95((1.0, 0.1), (0.0, 0.1))


@pytest.mark.parametrize("measurable, faster, words", [
    (False, True, "Within the noise"), (False, False, "Within the noise"),
    (True, True, "own core"), (True, False, "cannot leave its core")])
def test_pinning_reading_follows_the_measured_result(measurable, faster, words):
    assert words in scaling.pinning_reading(measurable, faster)


def test_runs_without_the_pinning_comparison_and_with_ddp(runs):
    """On the nodes 02 skips the unpinned run (pinning needs both runs on one host) and adds DDP's."""
    import dataclasses

    r = dataclasses.replace(runs, unpinned=None, ddp=_run(_rank(0, 9.0), _rank(1, 9.5)))
    labels = [label for label, _ in r.horovod_runs()]
    assert labels == ["1 worker, 50 ms cycle", "2 pinned, 50 ms cycle", "2 pinned, 1 ms cycle", "2 DDP"]
    assert [(x["run"], x["rank"]) for x in scaling.process_rows(r)][::2] == [("2 pinned, 50 ms cycle", 0),
                                                                            ("2 pinned, 1 ms cycle", 0)]
    assert scaling.summarize(r).efficiency == scaling.summarize(runs).efficiency
