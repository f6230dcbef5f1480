"""Horovod vs DDP across the nodes and the link sweep (hpcml.train.sweep, hpcml.train.sweep_summary).

Unit tests on hand-made runs; one integration test runs both backends, the sweep and the
ceiling on the 2-node cluster (tiny ResNet-18 at 32 px).
"""

import math

import pytest

from hpcml.cost import interconnect as ic
from hpcml.report import Metric
from hpcml.train import bench, sweep
from hpcml.train import sweep_summary as ss

G = 25_557_032 * 4


def _run(backend, per_rank_img_s, conf=0.0, batch=32, bucket_mb=None, cycle=None, poll=None):
    per = [{"rank": r, "img_per_s": v, "conf95": conf, "host": f"n{r + 1}"} for r, v in enumerate(per_rank_img_s)]
    return {"backend": backend, "config": {"batch_size": batch, "bucket_mb": bucket_mb, "cycle_time_ms": cycle,
                                           "backend": backend, "hvd_poll_ms": poll},
            "synthetic": {"per_rank": per, "total_img_per_s": sum(per_rank_img_s),
                          "per_worker_img_per_s": sum(per_rank_img_s) / len(per_rank_img_s)}}


@pytest.mark.unit
def test_backend_ratio_and_interval_by_hand():
    # 16 ± 0.1·√2·8 vs 20 ± 0.1·√2·10: relative half-widths 0.1/√2 each, in quadrature
    r = ss.backend_ratio(_run("horovod", [8.0, 8.0], 0.8), _run("ddp", [10.0, 10.0], 1.0))
    rel = 0.1 / 2 ** 0.5
    assert r["ratio"] == pytest.approx(0.8) and r["ci95"] == pytest.approx(0.8 * (2 * rel ** 2) ** 0.5)
    assert (r["lower"], r["upper"]) == (pytest.approx(0.8 - r["ci95"]), pytest.approx(0.8 + r["ci95"]))
    assert (r["horovod_img_per_s"], r["ddp_img_per_s"]) == (16.0, 20.0)


@pytest.mark.unit
def test_step_time_is_batch_over_per_worker_throughput():
    assert ss.step_s(_run("ddp", [8.0, 8.0], batch=32)) == pytest.approx(4.0)


@pytest.mark.unit
@pytest.mark.parametrize("size,expected", [
    (1024, 1e-3),                        # at a measured size
    (4096, 4e-3),                        # between two: log-log, here a straight line
    (2048, 2e-3),
    (512, 1e-3),                         # below the smallest: its time (latency-bound)
    (8192 * 3, 4e-3 * 3 * 8192 / 4096),  # beyond the largest: the bandwidth term, linear in size
])
def test_interp_time(size, expected):
    times = {1024: 1e-3, 8192: 8e-3}
    assert ss.interp_time_s(times, size) == pytest.approx(expected)


@pytest.mark.unit
def test_buckets_and_the_allreduce_gap():
    mib = 1024 * 1024
    assert ss.buckets(100 * mib, 25) == [25 * mib] * 4
    assert ss.buckets(102 * mib, 25) == [25 * mib] * 4 + [2 * mib]
    a = {mib: 0.010, 32 * mib: 0.320}  # 100 MiB/s
    b = {mib: 0.008, 32 * mib: 0.256}  # 125 MiB/s
    # 4 buckets of 25 MiB: each 0.25 s vs 0.2 s
    assert ss.allreduce_gap_s(a, b, 100 * mib, 25) == pytest.approx(4 * (0.25 - 0.2))
    assert ss.gap_explained(2.0, 1.6, 0.2) == pytest.approx(0.5)
    assert math.isnan(ss.gap_explained(1.6, 2.0, 0.2))  # Horovod faster: nothing to explain


@pytest.mark.unit
@pytest.mark.parametrize("call,msg", [
    (lambda: ss.interp_time_s({}, 10), "no measured sizes"),
    (lambda: ss.interp_time_s({0: 1.0, 10: 1.0}, 5), "must be > 0"),
    (lambda: ss.buckets(100, 0), "bucket_mb must be > 0"),
    (lambda: sweep.setting_options("tuned"), "setting must be one of"),
], ids=["empty", "zero-size", "zero-bucket", "setting"])
def test_bad_input_is_named(call, msg):
    with pytest.raises(ValueError, match=msg):
        call()


@pytest.mark.unit
def test_setting_options():
    assert sweep.setting_options("matched") == {"bucket_mb": sweep.MATCHED_MB} == {"bucket_mb": 25.0}
    assert sweep.setting_options("defaults") == {"bucket_mb": None}
    assert sweep.setting_options("matched", 64) == {"bucket_mb": 64}


def _sweep_runs(eta=0.8, overhead=0.2, compute=4.0, profiles=("unshaped", "10gbit", "1gbit", "150mbit")):
    rates = {"unshaped": 8e9, "10gbit": 1e10, "1gbit": 1e9, "150mbit": 1.5e8}
    rates = {p: rates[p] for p in profiles}
    runs = {p: _run("ddp", [32 / (ic.step_time(compute, G, 2, eta * r / 8) + overhead)] * 2, conf=0.1)
            for p, r in rates.items()}
    return _run("ddp", [32 / compute], conf=0.1), runs, rates


@pytest.mark.unit
def test_sweep_points_fit_and_metrics():
    one, runs, rates = _sweep_runs()
    pts = ss.sweep_points(one, runs, rates, 2)
    assert [p["profile"] for p in pts] == ["10gbit", "unshaped", "1gbit", "150mbit"]  # fastest link first
    slow = pts[-1]
    assert slow["step_s"] == pytest.approx(4.0 + G / (0.8 * 1.5e8 / 8) + 0.2)
    assert slow["efficiency"] == pytest.approx(4.0 / slow["step_s"]) and slow["compute_s"] == pytest.approx(4.0)
    fits = ss.fit_sweep(pts, G, 2)
    assert fits["serial"].eta == pytest.approx(0.8, rel=1e-3) and fits["serial"].max_abs_rel_error < 1e-4
    assert ss.best_fit(fits) == "serial"
    rows = ss.fit_rows(pts, fits)
    assert rows[-1]["fit_serial"] == pytest.approx(slow["efficiency"], rel=1e-4)
    assert set(rows[0]) == {"profile", "link_mbit_s", "measured", "measured_ci95", "fit_serial", "err_serial",
                            "fit_overlap", "err_overlap"}
    ms = ss.metrics(pts, fits, "ddp", "resnet50", 128)
    by = {m.name: m for m in ms}
    assert all(isinstance(m, Metric) for m in ms)
    assert by["sweep_efficiency"].value["150mbit"] == pytest.approx(slow["efficiency"])
    assert by["interconnect_best_fit"].value == "serial"
    assert by["interconnect_fit_max_err"].headline and by["interconnect_fit_max_err"].value < 1e-4
    assert by["interconnect_knee_mbit_s"].value == pytest.approx(G * 8 / (0.8 * 4.0) / 1e6, rel=1e-3)
    assert {"interconnect_fit_eta_overlap", "interconnect_fit_overhead_s_serial"} <= set(by)
    assert "knee" in ss.knee_reading(fits["serial"])


@pytest.mark.unit
def test_sweep_points_needs_a_rate_for_every_profile():
    one, runs, rates = _sweep_runs()
    del rates["1gbit"]
    with pytest.raises(ValueError, match=r"no link rate for profile\(s\) \['1gbit'\]"):
        ss.sweep_points(one, runs, rates, 2)


@pytest.mark.unit
def test_ratio_and_gap_metrics():
    mib = 1024 * 1024
    pairs = {"matched": {"horovod": _run("horovod", [8.0, 8.0], 0.8, bucket_mb=25, cycle=50),
                         "ddp": _run("ddp", [10.0, 10.0], 1.0, bucket_mb=25)},
             "defaults": {"horovod": _run("horovod", [9.0, 9.0], 0.9), "ddp": _run("ddp", [10.0, 10.0], 1.0)}}
    ms = ss.ratio_metrics(pairs, "resnet50")
    assert [m.name for m in ms][:4] == ["resnet50_horovod_ddp_ratio_matched", "resnet50_horovod_ddp_ratio_matched_ci95",
                                        "resnet50_img_per_s_horovod_matched", "resnet50_img_per_s_ddp_matched"]
    by = {m.name: m for m in ms}
    assert by["resnet50_horovod_ddp_ratio_matched"].headline and not by["resnet50_horovod_ddp_ratio_defaults"].headline
    assert by["resnet50_horovod_ddp_ratio_defaults"].value == pytest.approx(0.9)
    assert "fusion threshold 25 MiB, cycle 50 ms vs DDP bucket_cap_mb 25" in by["resnet50_horovod_ddp_ratio_matched"].description
    assert "fusion threshold its default, cycle its default 1 ms vs DDP bucket_cap_mb its default 25" in \
        by["resnet50_horovod_ddp_ratio_defaults"].description
    # steps 4 s vs 3.2 s; allreduce 100 MiB/s vs 125 MiB/s over 4 x 25 MiB: 0.2 s of the 0.8 s gap
    times = {"horovod": {mib: 0.010, 32 * mib: 0.320}, "ddp": {mib: 0.008, 32 * mib: 0.256}}
    gm = {m.name: m.value for m in ss.gap_metrics(pairs["matched"], times, 100 * mib, 25, "resnet50")}
    assert gm == {"resnet50_step_gap_s_matched": pytest.approx(0.8), "resnet50_allreduce_gap_s_matched": pytest.approx(0.2),
                  "resnet50_gap_explained_matched": pytest.approx(0.25)}


def _ranks(backend, walls, mains, others, waits):
    return {"config": {"iters": 5, "batches_per_iter": 2}, "synthetic": {"per_rank": [
        {"rank": i, "time_split": {"allreduce": w}, "process": {"wall_s": wa, "main_thread_s": m, "other_threads_s": o}}
        for i, (wa, m, o, w) in enumerate(zip(walls, mains, others, waits))]}}


@pytest.mark.unit
def test_where_the_gap_goes_on_the_rank_the_others_waited_for():
    # Horovod's rank 1 waited least (0.2 s): it is the critical one; 10 steps per run
    pair = {"horovod": _ranks("horovod", [45.0, 45.0], [44.0, 41.0], [1.6, 2.6], [4.0, 0.2]),
            "ddp": _ranks("ddp", [43.0, 43.0], [42.0, 42.0], [0.8, 0.8], [0.0, 0.01])}
    assert ss.critical_rank(pair["horovod"])["rank"] == 1 and ss.critical_rank(pair["ddp"])["rank"] == 0
    g = ss.where_gap_goes(pair)
    assert g["gap_s"] == pytest.approx(0.2)
    assert g["main_thread_s"] == pytest.approx(-0.1) and g["other_threads_s"] == pytest.approx(0.18)
    assert g["off_cpu_s"] == pytest.approx(0.12)
    assert g["main_thread_s"] + g["other_threads_s"] + g["off_cpu_s"] == pytest.approx(g["gap_s"])
    by = {m.name: m.value for m in ss.thread_gap_metrics(pair, "resnet50")}
    assert by["resnet50_hvd_minus_ddp_other_threads_s_matched"] == pytest.approx(0.18)
    assert by["resnet50_horovod_other_threads_s_matched"] == pytest.approx(0.26)


@pytest.mark.unit
def test_bench_refuses_a_bad_backend_and_a_sweep_without_nodes():
    with pytest.raises(ValueError, match="backend must be one of"):
        bench.run_bench(2, ["synthetic"], backend="mpi")
    with pytest.raises(ValueError, match="link_sweep needs the multi-node cluster"):
        sweep.link_sweep(None, ["1gbit"])


TINY = dict(arch="resnet18", image_size=32, batch_size=2, iters=2, batches_per_iter=1, warmup_batches=1)


@pytest.mark.unit
def test_interconnect_chart_draws_points_curves_and_knee():
    from hpcml.train import plots

    one, runs, rates = _sweep_runs()
    pts = ss.sweep_points(one, runs, rates, 2)
    fits = ss.fit_sweep(pts, G, 2)
    fig = plots.interconnect_chart(pts, fits, fits["serial"].knee_bytes_per_s * 8, "t", ceiling=0.9)
    ax = fig.axes[0]
    assert [ln.get_label() for ln in ax.get_lines()][:2] == ["model, serial", "model, overlap"]
    assert ax.get_xscale() == "log" and len(ax.texts) == 4  # one label per profile
    knee = [ln for ln in ax.get_lines() if ln.get_label().startswith("knee")][0]
    assert knee.get_xdata()[0] == pytest.approx(fits["serial"].knee_bytes_per_s * 8 / 1e6)


@pytest.mark.unit
def test_gpu_carry_places_the_gpu_job_on_the_cpu_curve():
    from hpcml.cost.models import GPU_RESNET50_IMG_S

    fit = ic.InterconnectFit(overlap=False, compute_s=4.0, grad_bytes=G, n=2, backward_fraction=2 / 3, eta=0.5,
                             overhead_s=0.0, bandwidths=(1e9,), measured_s=(4.5,))
    rows = ss.gpu_carry(fit, nodes=(2,))
    assert [r["network"] for r in rows] == ["3200 Gbit/s EFA", "100 Gbit/s TCP"]
    tcp = rows[1]
    assert tcp["compute_ms"] == pytest.approx(1e3 * ss.GPU_BATCH / GPU_RESNET50_IMG_S["H100"])
    # the same comm/compute ratio on the CPU runs: G / (0.5 * bw) = ratio * 4 s
    bw = G / (0.5 * tcp["comm_over_compute"] * 4.0)
    assert tcp["cpu_sweep_equivalent_mbit_s"] == pytest.approx(bw * 8 / 1e6)
    assert fit.comm_s(bw) / fit.compute_s == pytest.approx(tcp["comm_over_compute"])
    by = {m.name: m.value for m in ss.carry_metrics(rows)}
    assert by["gpu_efa_efficiency_2nodes"] > by["gpu_tcp_efficiency_2nodes"]
    assert set(by) == {"gpu_carry", "gpu_efa_efficiency_2nodes", "gpu_efa_efficiency_overlap_2nodes",
                       "gpu_efa_cpu_equivalent_mbit_s", "gpu_tcp_efficiency_2nodes",
                       "gpu_tcp_efficiency_overlap_2nodes", "gpu_tcp_cpu_equivalent_mbit_s"}


@pytest.mark.unit
def test_allreduce_times_from_the_micro_benchmark_rows():
    rows = [{"profile": p, "tool": t, "size_bytes": s, "time_med_s": s * k * 1e-9}
            for p in ("unshaped", "1gbit") for t, k in (("horovod", 2), ("torch", 1), ("mpi", 3)) for s in (4096, 65536)]
    got = ss.allreduce_times(rows, "1gbit")
    assert got == {"horovod": {4096: pytest.approx(4096 * 2e-9), 65536: pytest.approx(65536 * 2e-9)},
                   "ddp": {4096: pytest.approx(4096e-9), 65536: pytest.approx(65536e-9)}}
    with pytest.raises(ValueError, match="no 'horovod' rows at profile '150mbit'"):
        ss.allreduce_times(rows, "150mbit")


@pytest.mark.unit
def test_summary_of_a_sweep_json():
    one, runs, rates = _sweep_runs()
    out = {"bakeoff": {"matched": {"horovod": _run("horovod", [8.0, 8.0], 0.8), "ddp": _run("ddp", [10.0, 10.0], 1.0)}},
           "sweep": {"one": one, "runs": runs, "rates_bps": rates, "world_size": 2},
           "ceiling": {"efficiency": 0.9}}
    s = ss.summary(out, G)
    assert s["ratios"]["matched"]["ratio"] == pytest.approx(0.8)
    assert s["best_fit"] == "serial" and s["fits"]["serial"]["eta"] == pytest.approx(0.8, rel=1e-3)
    assert s["knee_mbit_s"] == pytest.approx(G * 8 / (0.8 * 4.0) / 1e6, rel=1e-3)
    unshaped = [p for p in s["points"] if p["profile"] == "unshaped"][0]
    assert s["unshaped_vs_ceiling"] == pytest.approx(unshaped["efficiency"] / 0.9)
    assert [r["nodes"] for r in s["gpu_carry"]] == [2, 2]
    only = ss.summary({"sweep": {"one": one, "runs": {"unshaped": runs["unshaped"]}, "rates_bps": rates,
                                 "world_size": 2}, "ceiling": {"efficiency": 0.9}}, G)
    assert "fits" not in only and only["unshaped_vs_ceiling"] == pytest.approx(unshaped["efficiency"] / 0.9)


@pytest.mark.unit
@pytest.mark.parametrize("world,hosts,expected", [
    (1, None, (["n1"], 1)), (2, None, (["n1", "n2"], 1)), (4, None, (["n1", "n2"], 2)),
    (2, ["n2"], (["n2"], 2)),
], ids=["one", "one-per-node", "two-per-node", "given"])
def test_bench_hosts(world, hosts, expected):
    from types import SimpleNamespace

    cl = SimpleNamespace(plan=SimpleNamespace(nodes=[SimpleNamespace(name="n1"), SimpleNamespace(name="n2")]))
    assert bench.bench_hosts(cl, world, hosts) == expected
    with pytest.raises(ValueError, match="world_size 3 must be a positive multiple of the 2 host"):
        bench.bench_hosts(cl, 3, ["n1", "n2"])


@pytest.mark.unit
def test_bakeoff_gives_the_cycle_to_the_matched_setting_only(monkeypatch):
    calls = []
    monkeypatch.setattr(bench, "run_bench", lambda ws, modes, timeout_s, tag, backend, cluster, **kw:
                        calls.append((tag, backend, kw)) or {"backend": backend})
    out = sweep.bakeoff(None, ("matched", "defaults"), cycle_time_ms=50.0, iters=2)
    assert [(t, b) for t, b, _ in calls] == [("bakeoff-matched", "horovod"), ("bakeoff-matched", "ddp"),
                                            ("bakeoff-defaults", "ddp"), ("bakeoff-defaults", "horovod")]
    kw = {(t, b): k for t, b, k in calls}
    assert kw[("bakeoff-matched", "horovod")] == {"bucket_mb": 25.0, "cycle_time_ms": 50.0, "hvd_poll_ms": None,
                                                  "iters": 2}
    # Horovod as it ships: its own 1 ms cycle and its spinning wait
    assert kw[("bakeoff-defaults", "horovod")] == {"bucket_mb": None, "hvd_poll_ms": None, "iters": 2}
    assert kw[("bakeoff-matched", "ddp")] == {"bucket_mb": 25.0, "iters": 2}
    assert set(out) == {"matched", "defaults"}


@pytest.mark.unit
def test_bakeoff_pairs_alternate_abba_and_keep_every_pair(monkeypatch):
    calls = []
    monkeypatch.setattr(bench, "run_bench", lambda ws, modes, timeout_s, tag, backend, cluster, **kw:
                        calls.append(backend) or {"backend": backend, "n": len(calls)})
    out = sweep.bakeoff(None, ("matched",), pairs=3, hvd_poll_ms=1.0)
    assert ss.describe_setting({"backend": "horovod", "config": {"bucket_mb": 25, "cycle_time_ms": 50, "hvd_poll_ms": 1.0}}) \
        == "Horovod fusion threshold 25 MiB, cycle 50 ms, waits sleeping 1 ms between polls"
    assert calls == ["horovod", "ddp", "ddp", "horovod", "horovod", "ddp"]
    assert [(p["horovod"]["n"], p["ddp"]["n"]) for p in out["matched"]["pairs"]] == [(1, 2), (4, 3), (5, 6)]
    assert out["matched"]["horovod"]["n"] == 1 and out["matched"]["ddp"]["n"] == 2
    assert "pairs" not in sweep.bakeoff(None, ("matched",), pairs=1)["matched"]
    for bad in (0, 1.5, True):
        with pytest.raises(ValueError, match="pairs must be a whole number >= 1"):
            sweep.bakeoff(None, ("matched",), pairs=bad)


@pytest.mark.unit
def test_pooled_ratio_is_the_geometric_mean_with_a_t_interval():
    from scipy import stats

    pairs = [{"horovod": _run("horovod", [h, h]), "ddp": _run("ddp", [10.0, 10.0])} for h in (9.0, 10.0, 11.0)]
    p = ss.pooled_ratio(pairs)
    logs = [math.log(0.9), 0.0, math.log(1.1)]
    sd = math.sqrt(sum((x - sum(logs) / 3) ** 2 for x in logs) / 2)
    half = stats.t.ppf(0.975, 2) * sd / math.sqrt(3)
    assert p["ratio"] == pytest.approx(math.exp(sum(logs) / 3))
    assert p["lower"] == pytest.approx(math.exp(sum(logs) / 3 - half)) and p["upper"] > p["ratio"] > p["lower"]
    assert p["pairs"] == 3 and p["pair_ratios"] == pytest.approx([0.9, 1.0, 1.1])
    with pytest.raises(ValueError, match="at least 2 Horovod/DDP run pairs, got 1"):
        ss.pooled_ratio(pairs[:1])
    s = ss.summary({"bakeoff": {"matched": {**pairs[0], "pairs": pairs}}}, G)
    assert s["pooled"]["matched"]["ratio"] == pytest.approx(p["ratio"]) and s["ratios"]["matched"]["ratio"] == 0.9


@pytest.mark.unit
def test_ceiling_rounds_reverse_the_order_every_other_round(monkeypatch):
    from types import SimpleNamespace

    calls = []
    cl = SimpleNamespace(mode="nodes", plan=SimpleNamespace(nodes=[SimpleNamespace(name="n1"), SimpleNamespace(name="n2")]),
                         shape=lambda prof: calls.append(("shape", prof)))
    monkeypatch.setattr(bench, "on_nodes", lambda c: c is cl)
    monkeypatch.setattr(bench, "run_bench", lambda ws, modes, timeout_s, tag, backend, cluster, hosts=None, **kw:
                        calls.append((tag, ws, hosts)) or {"n": len(calls)})
    monkeypatch.setattr(bench, "ceiling", lambda n, timeout_s, cluster, **kw: calls.append(("ceiling", n, None))
                        or {"n": len(calls)})
    out = sweep.ceiling_rounds(cl, 2, iters=2)
    assert calls == [("shape", "unshaped"), ("ceiling-one", 1, ["n1"]), ("ceiling-nodes", 2, None),
                     ("ceiling", 2, None), ("ceiling", 2, None), ("ceiling-nodes", 2, None), ("ceiling-one", 1, ["n1"])]
    assert [(r["one"]["n"], r["nodes"]["n"], r["ceiling"]["n"]) for r in out] == [(2, 3, 4), (7, 6, 5)]
    for bad in (0, 2.0, True):
        with pytest.raises(ValueError, match="rounds must be a whole number >= 1"):
            sweep.ceiling_rounds(cl, bad)
    with pytest.raises(ValueError, match="needs the multi-node cluster; got none"):
        sweep.ceiling_rounds(None, 2)


@pytest.mark.unit
def test_pooled_vs_ceiling_pools_each_rounds_efficiency_over_its_own_ceiling():
    # rounds' efficiencies 0.9, 0.95, 1.0 against ceilings 1.0, 0.95, 0.9: ratios 0.9, 1.0, 1/0.9
    rounds = [{"one": _run("ddp", [10.0]), "nodes": _run("ddp", [10.0 * e, 10.0 * e]), "ceiling": {"efficiency": c}}
              for e, c in ((0.9, 1.0), (0.95, 0.95), (1.0, 0.9))]
    p = ss.pooled_vs_ceiling(rounds, 2)
    assert p["round_ratios"] == pytest.approx([0.9, 1.0, 1 / 0.9]) and p["rounds"] == 3
    assert p["round_efficiencies"] == pytest.approx([0.9, 0.95, 1.0]) and p["round_ceilings"] == [1.0, 0.95, 0.9]
    assert p["ratio"] == pytest.approx(1.0)  # the geometric mean of 0.9, 1 and 1/0.9
    assert p["lower"] < 0.9 < 1 / 0.9 < p["upper"]  # t(2) over three points is wider than their range
    with pytest.raises(ValueError, match="at least 2 rounds, got 1"):
        ss.pooled_vs_ceiling(rounds[:1], 2)
    one, runs, rates = _sweep_runs()
    s = ss.summary({"sweep": {"one": one, "runs": {"unshaped": runs["unshaped"]}, "rates_bps": rates, "world_size": 2},
                    "ceiling": {"efficiency": 0.9}, "ceiling_rounds": rounds}, G)
    assert s["pooled_vs_ceiling"]["ratio"] == pytest.approx(1.0) and "unshaped_vs_ceiling" in s


@pytest.mark.unit
@pytest.mark.parametrize("argv,msg", [
    (["--ceiling-rounds", "0"], "--ceiling-rounds must be >= 1, got 0"),
    (["--ceiling-rounds", "3", "--profiles", "1gbit"], "needs 'unshaped' in --profiles"),
    (["--paired-ceiling", "--iters", "1"], "--paired-ceiling needs --iters >= 2"),
    (["--paired-bakeoff", "--iters", "1"], "--paired-bakeoff needs --iters >= 2"),
    (["--paired-bakeoff", "--bakeoff-runs", "0"], "--bakeoff-runs must be >= 1"),
    (["--bakeoff-runs", "3"], "got 3 without --paired-bakeoff"),
])
def test_sweep_cli_refuses_bad_ceiling_rounds(argv, msg, capsys):
    with pytest.raises(SystemExit):
        sweep.main(argv)
    assert msg in capsys.readouterr().err


@pytest.mark.unit
def test_paired_vs_ceiling_pools_synced_over_local_per_pair():
    def rank(r, synced, local):
        return {"rank": r, "pairs": [{"synced": s, "local": l} for s, l in zip(synced, local)]}

    # pair ratios (4+5)/(5+5) = 0.9, (5+5)/(5+5) = 1, (5.5+5.5)/(5+5) = 1.1
    run = {"paired": {"per_rank": [rank(0, [4, 5, 5.5], [5, 5, 5]), rank(1, [5, 5, 5.5], [5, 5, 5])]}}
    p = ss.paired_vs_ceiling(run)
    assert p["pair_ratios"] == pytest.approx([0.9, 1.0, 1.1]) and (p["pairs"], p["ranks"]) == (3, 2)
    assert p["ratio"] == pytest.approx(ss.pooled_ratio([{"horovod": _run("horovod", [h]), "ddp": _run("ddp", [10.0])}
                                                        for h in (9.0, 10.0, 11.0)])["ratio"])
    assert p["lower"] < p["ratio"] < p["upper"]
    with pytest.raises(ValueError, match="needs a run with the 'paired' benchmark mode"):
        ss.paired_vs_ceiling({"synthetic": {}})
    with pytest.raises(ValueError, match="at least 2 pairs"):
        ss.paired_vs_ceiling({"paired": {"per_rank": [rank(0, [4], [5])]}})
    assert ss.summary({"paired": run}, G)["paired_vs_ceiling"]["pairs"] == 3


@pytest.mark.integration
def test_paired_benchmark_runs_ddp_with_and_without_its_allreduces():
    cfg = dict(arch="resnet18", image_size=32, batch_size=2, iters=2, batches_per_iter=1, warmup_batches=1)
    r = bench.run_bench(2, ["paired"], timeout_s=120, tag="paired-tiny", backend="ddp", **cfg)
    ranks = r["paired"]["per_rank"]
    assert [x["rank"] for x in ranks] == [0, 1] and all(len(x["pairs"]) == 2 for x in ranks)
    assert all(p["synced"] > 0 and p["local"] > 0 for x in ranks for p in x["pairs"])
    assert ss.paired_vs_ceiling(r)["pairs"] == 2
    with pytest.raises(RuntimeError, match="needs backend 'ddp'"):
        bench.run_bench(1, ["paired"], timeout_s=120, tag="paired-tiny", backend="horovod", **cfg)


def _versus_rank(r, hvd, ddp, hvd_torch_s=0.0, ddp_unnamed_s=0.0, wall_s=4.0):
    """One rank of a ``versus`` run: per pair Horovod's and DDP's img/s, and the phases' CPU."""
    def cpu(torch_s, unnamed_s):
        return {"main_s": 3.6, "other_s": torch_s + unnamed_s, "torch_threads_s": torch_s,
                "unnamed_threads_s": unnamed_s, "wall_s": wall_s}
    return {"rank": r, "pairs": [{"horovod": h, "ddp": d, "cpu": {"horovod": cpu(hvd_torch_s, 0.3),
                                                                  "ddp": cpu(0.2, ddp_unnamed_s)}}
                                 for h, d in zip(hvd, ddp)]}


@pytest.mark.unit
def test_paired_bakeoff_pools_horovod_over_ddp_per_pair_and_charges_the_idle_threads():
    # pair ratios (9+9)/(10+10) = 0.9, 1.0, 1.1; Horovod's idle cycle took 0.4 s of each 4 s DDP phase
    # (a 10 % share) and DDP's threads 0.2 s of each Horovod phase (5 %): charged = ratio * 0.9 / 0.95
    ranks = [_versus_rank(r, [9, 10, 11], [10, 10, 10], hvd_torch_s=0.2, ddp_unnamed_s=0.4) for r in (0, 1)]
    run = {"versus": {"per_rank": ranks, "steps_per_phase": 2, "bucket_mb": 25, "horovod_cycle_time_ms": "50"}}
    p = ss.paired_bakeoff(run)
    assert p["pair_ratios"] == pytest.approx([0.9, 1.0, 1.1]) and (p["pairs"], p["ranks"]) == (3, 2)
    assert p["lower"] < p["ratio"] < p["upper"]
    assert p["charged"]["pair_ratios"] == pytest.approx([q * 0.9 / 0.95 for q in (0.9, 1.0, 1.1)])
    assert p["charged"]["ratio"] == pytest.approx(p["ratio"] * 0.9 / 0.95)
    assert p["cpu"]["ddp"]["unnamed_threads_s_per_step"] == pytest.approx(0.2)  # 0.4 s over 2 steps
    assert p["cpu"]["horovod"]["wall_s_per_step"] == pytest.approx(2.0)
    assert (p["bucket_mb"], p["horovod_cycle_time_ms"]) == (25, "50")  # the setting, in the printed summary
    # no idle threads: charging changes nothing
    free = ss.paired_bakeoff({"versus": {"per_rank": [_versus_rank(0, [9, 10], [10, 10])], "steps_per_phase": 1}})
    assert free["charged"]["ratio"] == pytest.approx(free["ratio"])
    with pytest.raises(ValueError, match="needs a run with the 'versus' benchmark mode"):
        ss.paired_bakeoff({"paired": {}})
    with pytest.raises(ValueError, match="at least 2 pairs"):
        ss.paired_bakeoff({"versus": {"per_rank": [_versus_rank(0, [9], [10])], "steps_per_phase": 1}})
    assert ss.summary({"versus": run}, G)["paired_bakeoff"]["pairs"] == 3
    m = {x.name: x.value for x in ss.paired_bakeoff_metrics(p, "resnet50")}
    assert m["resnet50_horovod_ddp_paired_charged_lower"] == p["charged"]["lower"]
    assert m["resnet50_versus_hvd_idle_s_per_step"] == pytest.approx(0.2) and m["resnet50_horovod_ddp_paired_pairs"] == 3


@pytest.mark.unit
def test_pooled_bakeoff_takes_its_interval_over_the_jobs_not_their_pairs():
    # two jobs whose pairs agree within each job (0.9, 0.9 and 1.0, 1.0): each job's own interval is
    # a point, the pooled one spans both jobs' ratios
    def job(ratio, idle_s=0.0):
        return {"versus": {"per_rank": [_versus_rank(0, [ratio * 10] * 2, [10, 10], ddp_unnamed_s=idle_s)],
                           "steps_per_phase": 2, "bucket_mb": 25, "horovod_cycle_time_ms": "50"}}
    runs = [job(0.9), job(1.0, idle_s=0.4)]
    p = ss.pooled_bakeoff(runs)
    assert (p["runs"], p["pairs"]) == (2, 4) and p["run_ratios"] == pytest.approx([0.9, 1.0])
    assert p["pair_ratios"] == pytest.approx([0.9, 0.9, 1.0, 1.0])
    assert [r["lower"] for r in p["per_run"]] == pytest.approx([0.9, 1.0])
    assert p["ratio"] == pytest.approx(math.sqrt(0.9)) and p["lower"] < 0.9 and p["upper"] > 1.0
    assert p["charged"]["run_ratios"] == pytest.approx([0.9, 1.0 * 0.9])  # the 2nd job's idle cycle: 10 % of 4 s
    assert p["cpu"]["ddp"]["unnamed_threads_s_per_step"] == pytest.approx(0.1)  # mean of 0 and 0.2 s
    assert set(p) >= set(ss.paired_bakeoff(runs[0])), "the notebook reads either one with the same keys"
    with pytest.raises(ValueError, match="at least 2 versus jobs, got 1"):
        ss.pooled_bakeoff(runs[:1])
    m = {x.name: x.value for x in ss.paired_bakeoff_metrics(p, "resnet50")}
    assert (m["resnet50_horovod_ddp_paired_runs"], m["resnet50_horovod_ddp_paired_pairs"]) == (2, 4)
    s = ss.summary({"versus": runs[0], "versus_runs": runs}, G)
    assert s["pooled_bakeoff"]["runs"] == 2 and s["paired_bakeoff"]["pairs"] == 2


@pytest.mark.integration
def test_versus_interleaves_horovod_and_ddp_in_one_horovodrun_job():
    cfg = dict(arch="resnet18", image_size=32, batch_size=2, iters=2, batches_per_iter=1, warmup_batches=1,
               bucket_mb=25)
    r = bench.run_bench(2, ["versus"], timeout_s=120, tag="versus-tiny", backend="horovod", **cfg)
    ranks = r["versus"]["per_rank"]
    assert [x["rank"] for x in ranks] == [0, 1] and all(len(x["pairs"]) == 2 for x in ranks)
    phases = [p for x in ranks for p in x["pairs"]]
    assert all(p["horovod"] > 0 and p["ddp"] > 0 and p["cpu"]["ddp"]["wall_s"] > 0 for p in phases)
    # torch.distributed's Gloo threads (named) do the DDP phase's allreduces, Horovod's (unnamed) its own
    assert sum(p["cpu"]["ddp"]["torch_threads_s"] for p in phases) > 0
    assert sum(p["cpu"]["horovod"]["unnamed_threads_s"] for p in phases) > 0
    assert ss.paired_bakeoff(r)["pairs"] == 2
    with pytest.raises(RuntimeError, match="runs under horovodrun"):
        bench.run_bench(2, ["versus"], timeout_s=120, tag="versus-tiny", backend="ddp", **cfg)
