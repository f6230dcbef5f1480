"""Horovod vs DDP across the nodes, and the link sweep, as numbers: pure functions of the runs.

:mod:`hpcml.train.sweep` launches the runs (each a :func:`hpcml.train.bench.run_bench` JSON);
this module turns them into what notebook 02 shows and records:

* :func:`backend_ratio`: Horovod/DDP total throughput with its 95 % half-width (the ranks'
  1.96σ over timed iterations, propagated: :func:`hpcml.train.scaling.ratio_with_ci95`);
* :func:`pooled_ratio`: the same over several run pairs (ABBA), with an interval from their
  spread, which includes run-to-run variation; :func:`pooled_vs_ceiling` pools scaling
  efficiency / ceiling over rounds the same way, and :func:`paired_vs_ceiling` measures it
  inside one DDP job (steps with and without the allreduces, interleaved);
* :func:`allreduce_gap_s` / :func:`gap_explained`: how much of a step-time gap the allreduce
  micro-benchmark's per-size time difference accounts for (gradients cut into buckets);
* :func:`sweep_points` / :func:`fit_sweep`: scaling efficiency per link profile and the
  interconnect model (:func:`hpcml.cost.interconnect.fit_step_time`) fitted to it, serial and
  overlapped; :func:`metrics` the Metric list.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from hpcml.cost import interconnect as ic
from hpcml.report import Metric
from hpcml.train.scaling import efficiency_with_ci95, ratio_with_ci95, total_with_ci95
from hpcml.train.stats import ci95_half_width

MIB = 1024 * 1024
#: The relative error the fitted model may have at any profile (issue 25's target).
FIT_TOLERANCE = 0.15


def step_s(run: Mapping[str, Any]) -> float:
    """Seconds per step of one worker of a synthetic run: per-worker batch / mean per-worker img/s."""
    syn = run["synthetic"]
    return float(run["config"]["batch_size"]) / float(syn["per_worker_img_per_s"])


def backend_ratio(hvd: Mapping[str, Any], ddp: Mapping[str, Any]) -> dict[str, float]:
    """Horovod / DDP total img/s of the same synthetic benchmark, with its 95 % interval.

    Returns:
        ``{"ratio", "ci95", "lower", "upper", "horovod_img_per_s", "ddp_img_per_s"}``.
    """
    h, d = total_with_ci95(hvd), total_with_ci95(ddp)
    r, hw = ratio_with_ci95(h, d)
    return {"ratio": r, "ci95": hw, "lower": r - hw, "upper": r + hw, "horovod_img_per_s": h[0],
            "ddp_img_per_s": d[0]}


def pooled_ratio(pairs: Sequence[Mapping[str, Mapping[str, Any]]]) -> dict[str, Any]:
    """Horovod / DDP total img/s pooled over run pairs: the geometric mean of the pairs' ratios
    and its 95 % interval from their spread (Student's t on the logs, n - 1 degrees of freedom).

    Unlike :func:`backend_ratio`'s interval (the iterations inside one run), this one includes
    what moves from run to run: placement, the other tenants of a shared machine, drift.

    Raises:
        ValueError: fewer than two pairs (no spread to measure).
    """
    if len(pairs) < 2:
        raise ValueError(f"pooled_ratio needs at least 2 Horovod/DDP run pairs, got {len(pairs)}")
    ratios = [backend_ratio(p["horovod"], p["ddp"])["ratio"] for p in pairs]
    return {**geometric_mean_ci95(ratios), "pairs": len(ratios), "pair_ratios": ratios}


def geometric_mean_ci95(ratios: Sequence[float]) -> dict[str, float]:
    """``{"ratio", "lower", "upper"}``: the geometric mean of positive ratios and its 95 % interval
    (Student's t on the logs, n - 1 degrees of freedom)."""
    logs = np.log(ratios)
    half = ci95_half_width(list(logs))
    mid = float(logs.mean())
    return {"ratio": math.exp(mid), "lower": math.exp(mid - half), "upper": math.exp(mid + half)}


def paired_vs_ceiling(run: Mapping[str, Any]) -> dict[str, Any]:
    """DDP's throughput with its gradient allreduces / without them, from one ``paired`` run
    (:func:`hpcml.train.bench_worker.paired`): per pair, the ranks' summed img/s synced over
    their summed img/s under ``no_sync``; the geometric mean of the pairs and its Student-t 95 %
    interval.

    This is the scaling efficiency over the no-communication ceiling: efficiency = synced /
    (n × one process's throughput) and ceiling = together-without-communication / (n × the same),
    so their ratio is synced / local. Both phases run in the same processes, interleaved, so the
    host's drift pairs out; separate 1-node, 2-node and ceiling runs (:func:`pooled_vs_ceiling`)
    carry it.

    Raises:
        ValueError: no ``paired`` result, or fewer than two pairs.
    """
    return _pair_ratios(run, "paired", "synced", "local", "paired_vs_ceiling")


def _pair_ratios(run: Mapping[str, Any], mode: str, num: str, den: str, who: str) -> dict[str, Any]:
    """Per pair of an interleaved ``mode`` run, the ranks' summed img/s in phase ``num`` over their
    summed img/s in phase ``den``; the geometric mean of the pairs with its Student-t 95 % interval."""
    ranks = (run.get(mode) or {}).get("per_rank")
    if not ranks:
        raise ValueError(f"{who} needs a run with the {mode!r} benchmark mode")
    n_pairs = min(len(r["pairs"]) for r in ranks)
    if n_pairs < 2:
        raise ValueError(f"{who} needs at least 2 pairs (iters), got {n_pairs}")
    ratios = [sum(r["pairs"][k][num] for r in ranks) / sum(r["pairs"][k][den] for r in ranks)
              for k in range(n_pairs)]
    return {**geometric_mean_ci95(ratios), "pairs": n_pairs, "pair_ratios": ratios, "ranks": len(ranks)}


def paired_bakeoff(run: Mapping[str, Any]) -> dict[str, Any]:
    """Horovod / DDP total img/s from one ``versus`` run (:func:`hpcml.train.bench_worker.versus`):
    per pair, the ranks' summed img/s in the Horovod phase over the DDP phase; the geometric mean
    of the pairs and its Student-t 95 % interval. Both tools run in the same processes,
    interleaved, so the host's drift pairs out; separate run pairs (:func:`pooled_ratio`) carry it.

    Also, per tool, the CPU seconds per step of the ranks' main threads, of their other
    threads (Horovod's background thread, the Gloo loops) and of those split by owner, and the
    wall seconds per step, averaged over pairs and ranks: on a rank with one core, the other
    threads' CPU is taken from the step.

    Each phase also carries the other tool's idle threads: Horovod's negotiation cycle keeps
    running in the DDP phase (its ``unnamed_threads_s``), DDP's Gloo threads sleep in the
    Horovod phase (its ``torch_threads_s``). ``charged`` is the same pooling with each pair's
    ratio multiplied by (1 − the Horovod-thread share of the DDP phase's wall time) / (1 − the
    torch-thread share of the Horovod phase's): as if every such CPU second had cost the
    phase one wall second. The measured ratio takes them to cost nothing; the truth lies
    between, so a target is met only when ``charged``'s lower bound clears it.

    Raises:
        ValueError: no ``versus`` result, or fewer than two pairs.
    """
    res = _pair_ratios(run, "versus", "horovod", "ddp", "paired_bakeoff")
    ranks, steps, n = run["versus"]["per_rank"], float(run["versus"]["steps_per_phase"]), res["pairs"]
    keys = ("main_s", "other_s", "torch_threads_s", "unnamed_threads_s", "wall_s")
    cpu = {tool: {f"{k}_per_step": float(np.mean([p["cpu"][tool][k] for r in ranks for p in r["pairs"][:n]])) / steps
                  for k in keys} for tool in ("horovod", "ddp")}

    def share(k: int, tool: str, owner: str) -> float:  # the ranks' mean share of the phase's wall time
        return float(np.mean([r["pairs"][k]["cpu"][tool][f"{owner}_threads_s"] / r["pairs"][k]["cpu"][tool]["wall_s"]
                              for r in ranks]))

    charged = [q * (1 - share(k, "ddp", "unnamed")) / (1 - share(k, "horovod", "torch"))
               for k, q in enumerate(res["pair_ratios"])]
    return {**res, "cpu": cpu, "charged": {**geometric_mean_ci95(charged), "pair_ratios": charged},
            "bucket_mb": run["versus"].get("bucket_mb"), "horovod_cycle_time_ms": run["versus"].get("horovod_cycle_time_ms")}


def pooled_bakeoff(runs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """:func:`paired_bakeoff` pooled over separate ``versus`` jobs, for a target that must hold
    from one job to the next: the geometric mean of the jobs' ratios (measured and charged) and
    a Student-t 95 % interval over the jobs (jobs - 1 degrees of freedom).

    One job's interval holds only the spread of its pairs. What moves from job to job (where
    each job's memory and threads land, the host's load that hour) moves all of a job's pairs
    together: here, three 12-pair jobs of the same command moved apart by more than one job's
    interval is wide. The interval over jobs includes that.

    Returns:
        :func:`paired_bakeoff`'s keys, pooled (``pairs``: all of them, ``pair_ratios``: the jobs'
        in order, ``cpu``: the mean over jobs), plus ``runs``, ``run_ratios`` and ``per_run``
        (each job's ratio and interval, measured and charged).

    Raises:
        ValueError: fewer than two jobs (no spread to measure), or a job :func:`paired_bakeoff` refuses.
    """
    if len(runs) < 2:
        raise ValueError(f"pooled_bakeoff needs at least 2 versus jobs, got {len(runs)}")
    each = [paired_bakeoff(r) for r in runs]
    cpu = {t: {k: float(np.mean([e["cpu"][t][k] for e in each])) for k in each[0]["cpu"][t]} for t in each[0]["cpu"]}

    def pooled(get: Callable[[dict], dict]) -> dict[str, Any]:
        ratios = [get(e)["ratio"] for e in each]
        return {**geometric_mean_ci95(ratios), "run_ratios": ratios,
                "pair_ratios": [q for e in each for q in get(e)["pair_ratios"]]}

    bounds = ("ratio", "lower", "upper")
    return {**pooled(lambda e: e), "charged": pooled(lambda e: e["charged"]), "runs": len(each),
            "pairs": sum(e["pairs"] for e in each), "ranks": each[0]["ranks"], "cpu": cpu,
            "per_run": [{**{k: e[k] for k in bounds}, "charged": {k: e["charged"][k] for k in bounds}} for e in each],
            "bucket_mb": each[0]["bucket_mb"], "horovod_cycle_time_ms": each[0]["horovod_cycle_time_ms"]}


def pooled_vs_ceiling(rounds: Sequence[Mapping[str, Mapping[str, Any]]], n: int) -> dict[str, Any]:
    """Scaling efficiency / the no-communication ceiling, pooled over rounds of
    (:func:`hpcml.train.sweep.ceiling_rounds`): the geometric mean of the rounds' ratios and its
    95 % interval from their spread, which includes run-to-run drift (one round's interval holds
    only the spread of its iterations).

    Args:
        rounds: ``{"one", "nodes", "ceiling"}`` per round.
        n: nodes of the ``nodes`` runs.

    Raises:
        ValueError: fewer than two rounds (no spread to measure).
    """
    if len(rounds) < 2:
        raise ValueError(f"pooled_vs_ceiling needs at least 2 rounds, got {len(rounds)}")
    effs = [efficiency_with_ci95(r["nodes"], r["one"], n)[0] for r in rounds]
    ceils = [float(r["ceiling"]["efficiency"]) for r in rounds]
    ratios = [e / c for e, c in zip(effs, ceils)]
    return {**geometric_mean_ci95(ratios), "rounds": len(ratios), "round_ratios": ratios,
            "round_efficiencies": effs, "round_ceilings": ceils}


def interp_time_s(times: Mapping[int | float, float], size_bytes: float) -> float:
    """The allreduce time of ``size_bytes``, interpolated log-log between the measured sizes
    (extrapolated linearly in size beyond the largest: the bandwidth term)."""
    if not times:
        raise ValueError("interp_time_s: no measured sizes")
    sizes = np.array(sorted(float(s) for s in times))
    ts = np.array([float(times[k]) for k in sorted(times, key=float)])
    if np.any(sizes <= 0) or np.any(ts <= 0):
        raise ValueError(f"interp_time_s: sizes and times must be > 0, got {dict(times)}")
    if size_bytes >= sizes[-1]:
        return float(ts[-1] * size_bytes / sizes[-1])
    if size_bytes <= sizes[0]:
        return float(ts[0])
    return float(np.exp(np.interp(np.log(size_bytes), np.log(sizes), np.log(ts))))


def buckets(grad_bytes: float, bucket_mb: float) -> list[float]:
    """The gradient cut into buckets of ``bucket_mb`` MiB (the last one the remainder)."""
    if not bucket_mb > 0 or not grad_bytes > 0:
        raise ValueError(f"buckets: grad_bytes and bucket_mb must be > 0, got {grad_bytes} and {bucket_mb}")
    b = bucket_mb * MIB
    full = int(grad_bytes // b)
    rest = grad_bytes - full * b
    return [b] * full + ([rest] if rest > 0 else [])


def allreduce_gap_s(times_a: Mapping[int | float, float], times_b: Mapping[int | float, float], grad_bytes: float,
                    bucket_mb: float) -> float:
    """Seconds per step by which tool A's allreduce of the gradients is slower than tool B's:
    the per-bucket time difference of the micro-benchmark, summed over the buckets."""
    return sum(interp_time_s(times_a, s) - interp_time_s(times_b, s) for s in buckets(grad_bytes, bucket_mb))


def allreduce_times(records: Sequence[Mapping[str, Any]], profile: str = "unshaped",
                    tools: Mapping[str, str] | None = None) -> dict[str, dict[int, float]]:
    """Each backend's allreduce time per message size at ``profile``, from the micro-benchmark's rows
    (``hpcml.train.allreduce``'s table as records: ``profile``, ``tool``, ``size_bytes``, ``time_med_s``).

    Args:
        records: the rows (``df.to_dict("records")``).
        profile: the link profile the bake-off ran at.
        tools: backend -> the micro-benchmark's tool name (default: horovod -> horovod, ddp -> torch).

    Raises:
        ValueError: a backend's tool has no row at ``profile``.
    """
    tools = dict(tools or {"horovod": "horovod", "ddp": "torch"})
    out: dict[str, dict[int, float]] = {}
    for backend, tool in tools.items():
        out[backend] = {int(r["size_bytes"]): float(r["time_med_s"]) for r in records
                        if r["profile"] == profile and r["tool"] == tool}
        if not out[backend]:
            raise ValueError(f"allreduce_times: no {tool!r} rows at profile {profile!r} in the micro-benchmark")
    return out


def gap_explained(step_a_s: float, step_b_s: float, allreduce_gap: float) -> float:
    """The share of the step-time gap ``step_a - step_b`` that ``allreduce_gap`` accounts for
    (NaN when there is no gap to explain)."""
    gap = step_a_s - step_b_s
    return allreduce_gap / gap if gap > 0 else math.nan


def sweep_points(one: Mapping[str, Any], runs: Mapping[str, Mapping[str, Any]], rates_bps: Mapping[str, float],
                 n: int) -> list[dict[str, Any]]:
    """One row per link profile: the link rate, step time and scaling efficiency (± 95 %).

    Args:
        one: the 1-worker run (the compute per step).
        runs: profile name -> the ``n``-worker run at that profile.
        rates_bps: profile name -> link rate in bits/s (tc rate; measured for ``unshaped``).
        n: workers of the runs.
    """
    missing = sorted(set(runs) - set(rates_bps))
    if missing:
        raise ValueError(f"sweep_points: no link rate for profile(s) {missing}")
    rows = []
    for prof, run in runs.items():
        eff, hw = efficiency_with_ci95(run, one, n)
        rows.append({"profile": prof, "rate_bps": float(rates_bps[prof]), "step_s": step_s(run),
                     "compute_s": step_s(one), "efficiency": eff, "efficiency_ci95": hw,
                     "img_per_s": run["synthetic"]["total_img_per_s"]})
    return sorted(rows, key=lambda r: -r["rate_bps"])


def fit_sweep(points: Sequence[Mapping[str, Any]], grad_bytes: float, n: int) -> dict[str, ic.InterconnectFit]:
    """The interconnect model fitted to the sweep's points, serial and overlapped."""
    bws = [p["rate_bps"] / 8 for p in points]
    steps = [p["step_s"] for p in points]
    compute = points[0]["compute_s"]
    return {"serial": ic.fit_step_time(bws, steps, compute, grad_bytes, n, overlap=False),
            "overlap": ic.fit_step_time(bws, steps, compute, grad_bytes, n, overlap=True)}


def fit_rows(points: Sequence[Mapping[str, Any]], fits: Mapping[str, ic.InterconnectFit]) -> list[dict[str, Any]]:
    """Per profile: measured efficiency, each fit's efficiency and relative error."""
    rows = []
    for i, p in enumerate(points):
        row = {"profile": p["profile"], "link_mbit_s": p["rate_bps"] / 1e6, "measured": p["efficiency"],
               "measured_ci95": p["efficiency_ci95"]}
        for name, f in fits.items():
            row[f"fit_{name}"] = f.efficiency(p["rate_bps"] / 8)
            row[f"err_{name}"] = f.rel_errors[i]
        rows.append(row)
    return rows


def best_fit(fits: Mapping[str, ic.InterconnectFit]) -> str:
    """The name of the fit with the smallest largest relative error."""
    return min(fits, key=lambda k: fits[k].max_abs_rel_error)


def knee_reading(fit: ic.InterconnectFit) -> str:
    """Why the knee is where it is, in the fit's own terms (no measured numbers in the text)."""
    return ("At the knee one ring allreduce of the gradients takes as long as a step's compute. Above it the "
            "link is fast enough that communication is a small addition to the compute (or hides under the "
            "backward pass), and the curve is flat; below it the allreduce grows as 1/bandwidth and takes over "
            "the step. The knee moves right (needs more bandwidth) when compute per step shrinks (a faster "
            "chip, a smaller batch, smaller images) or gradients grow, and left when the allreduce reaches "
            "more of the link rate.")


def metrics(points: Sequence[Mapping[str, Any]], fits: Mapping[str, ic.InterconnectFit], backend: str,
            arch: str, image_size: int) -> list[Metric]:
    """The sweep's metrics for notebook 02, in order."""
    best = best_fit(fits)
    knee = fits[best].knee_bytes_per_s * 8 / 1e6
    ms = [Metric("sweep_efficiency", {p["profile"]: p["efficiency"] for p in points},
                 description=f"{arch} {image_size}px, {backend}, 2 nodes x 1 rank vs 1, per link profile"),
          Metric("sweep_efficiency_ci95", {p["profile"]: p["efficiency_ci95"] for p in points},
                 description="95 % half-widths of the sweep's efficiencies (ranks' 1.96σ, propagated)"),
          Metric("sweep_link_mbit_s", {p["profile"]: p["rate_bps"] / 1e6 for p in points}, unit="Mbit/s",
                 description="link rate of each profile: the tc rate, or iperf3's measured rate unshaped")]
    for name, f in fits.items():
        ms += [Metric(f"interconnect_fit_eta_{name}", f.eta,
                      description=f"{name} model: share of the link rate the allreduce reaches (fitted)"),
               Metric(f"interconnect_fit_overhead_s_{name}", f.overhead_s, unit="s",
                      description=f"{name} model: per-step time no bandwidth removes (fitted)"),
               Metric(f"interconnect_fit_max_err_{name}", f.max_abs_rel_error,
                      description=f"{name} model: largest |fitted - measured| / measured efficiency over the profiles")]
    ms += [Metric("interconnect_best_fit", best, description="the model form with the smaller largest error"),
           Metric("interconnect_fit_max_err", fits[best].max_abs_rel_error, headline=True,
                  description=f"best fit's largest relative efficiency error (target <= {FIT_TOLERANCE:.0%})"),
           Metric("interconnect_knee_mbit_s", knee, unit="Mbit/s",
                  description="link rate where the fitted allreduce time equals the compute per step")]
    return ms


def describe_setting(run: Mapping[str, Any]) -> str:
    """How a run's gradients were bucketed and (Horovod) cycled, from its own config."""
    cfg = run["config"]
    mb = cfg.get("bucket_mb")
    if run.get("backend", cfg.get("backend")) == "horovod":
        cyc, poll = cfg.get("cycle_time_ms"), cfg.get("hvd_poll_ms")
        return (f"Horovod fusion threshold {'its default' if mb is None else f'{mb:g} MiB'}, "
                f"cycle {'its default 1 ms' if not cyc else f'{cyc:g} ms'}"
                f"{'' if poll is None else f', waits sleeping {poll:g} ms between polls'}")
    return f"DDP bucket_cap_mb {'its default 25' if mb is None else f'{mb:g}'}"


def ratio_metrics(pairs: Mapping[str, Mapping[str, Mapping[str, Any]]], arch: str) -> list[Metric]:
    """Per setting (``matched``, ``defaults``): the Horovod/DDP ratio, its half-width and both throughputs.

    Args:
        pairs: setting -> {"horovod": run, "ddp": run}.
        arch: the benchmark's model (names the metrics).
    """
    ms = []
    for setting, pair in pairs.items():
        r = backend_ratio(pair["horovod"], pair["ddp"])
        how = f"{describe_setting(pair['horovod'])} vs {describe_setting(pair['ddp'])}"
        ms += [Metric(f"{arch}_horovod_ddp_ratio_{setting}", r["ratio"], unit="x", headline=setting == "matched",
                      description=f"{arch} synthetic, total img/s Horovod / DDP across the nodes, {setting}: {how}"),
               Metric(f"{arch}_horovod_ddp_ratio_{setting}_ci95", r["ci95"], unit="x",
                      description="95 % half-width: each run's ranks' 1.96σ in quadrature, propagated to the ratio"),
               Metric(f"{arch}_img_per_s_horovod_{setting}", r["horovod_img_per_s"], unit="img/s",
                      description=f"total img/s, Horovod, {setting}"),
               Metric(f"{arch}_img_per_s_ddp_{setting}", r["ddp_img_per_s"], unit="img/s",
                      description=f"total img/s, DDP, {setting}")]
    return ms


def gap_metrics(pair: Mapping[str, Mapping[str, Any]], times: Mapping[str, Mapping[int | float, float]],
                grad_bytes: float, bucket_mb: float, arch: str, setting: str = "matched") -> list[Metric]:
    """How much of the Horovod-DDP step gap the allreduce micro-benchmark accounts for.

    Args:
        pair: {"horovod": run, "ddp": run} of one setting.
        times: {"horovod": {bytes: s}, "ddp": {bytes: s}}: each tool's allreduce time per message
            size across the same nodes (the micro-benchmark's medians).
        grad_bytes: gradient bytes per step.
        bucket_mb: the bucket size of the setting (MiB).
        arch: names the metrics.
        setting: names the metrics.
    """
    sh, sd = step_s(pair["horovod"]), step_s(pair["ddp"])
    ar = allreduce_gap_s(times["horovod"], times["ddp"], grad_bytes, bucket_mb)
    return [Metric(f"{arch}_step_gap_s_{setting}", sh - sd, unit="s",
                   description="Horovod step - DDP step per worker (batch / per-worker img/s)"),
            Metric(f"{arch}_allreduce_gap_s_{setting}", ar, unit="s",
                   description=f"Horovod - torch.distributed allreduce time of the gradients in {bucket_mb:g} MiB "
                               "buckets, from the micro-benchmark's per-size times"),
            Metric(f"{arch}_gap_explained_{setting}", gap_explained(sh, sd, ar),
                   description="allreduce gap / step gap (NaN: Horovod was not slower)")]


def paired_bakeoff_metrics(pb: Mapping[str, Any], arch: str) -> list[Metric]:
    """Notebook 02's metrics of :func:`paired_bakeoff`'s or :func:`pooled_bakeoff`'s result ``pb``, in order."""
    ms = [Metric(f"{arch}_horovod_ddp_paired_pairs", pb["pairs"], description="Horovod/DDP phase pairs, interleaved"),
          Metric(f"{arch}_horovod_ddp_paired_runs", pb.get("runs", 1),
                 description="separate interleaved jobs (>= 2: the interval is over the jobs)")]
    for key, what in (("", "measured: the other tool's idle threads cost nothing"),
                      ("_charged", "charged: their CPU billed as wall time")):
        r = pb["charged"] if key else pb
        ms += [Metric(f"{arch}_horovod_ddp_paired{key}_ratio", r["ratio"], headline=not key,
                      description=f"Horovod / DDP img/s in the same processes, geometric mean of the pairs ({what})"),
               Metric(f"{arch}_horovod_ddp_paired{key}_lower", r["lower"], description="its 95 % lower bound"),
               Metric(f"{arch}_horovod_ddp_paired{key}_upper", r["upper"], description="its 95 % upper bound")]
    cpu = pb["cpu"]
    return ms + [
        Metric(f"{arch}_versus_hvd_threads_s_per_step", cpu["horovod"]["unnamed_threads_s_per_step"], unit="s",
               description="CPU of Horovod's threads per Horovod step (background cycle, its Gloo loop)"),
        Metric(f"{arch}_versus_torch_threads_s_per_step", cpu["ddp"]["torch_threads_s_per_step"], unit="s",
               description="CPU of torch.distributed's Gloo threads per DDP step"),
        Metric(f"{arch}_versus_hvd_idle_s_per_step", cpu["ddp"]["unnamed_threads_s_per_step"], unit="s",
               description="CPU of Horovod's idle negotiation cycle per DDP step (what 'charged' bills)"),
        Metric(f"{arch}_versus_main_s_per_step", {t: cpu[t]["main_s_per_step"] for t in cpu}, unit="s",
               description="main-thread CPU per step, per tool"),
        Metric(f"{arch}_versus_wall_s_per_step", {t: cpu[t]["wall_s_per_step"] for t in cpu}, unit="s",
               description="wall time per step, per tool")]


def critical_rank(run: Mapping[str, Any]) -> dict[str, Any]:
    """The rank the others waited for: the one that spent least time waiting on the allreduce."""
    return min(run["synthetic"]["per_rank"], key=lambda r: r["time_split"]["allreduce"])


def where_gap_goes(pair: Mapping[str, Mapping[str, Any]]) -> dict[str, float]:
    """Where Horovod's extra wall time went, on the rank the others waited for (pure).

    Each rank runs on one core, so its timed window splits into its main thread's CPU
    (forward, backward, the optimizer, and under Horovod the spin in ``synchronize``), its
    other threads' CPU (Horovod's background cycle: fusion copies, scaling, negotiation;
    both tools' Gloo loops) and time off the CPU (waiting for bytes or for Horovod's next
    cycle). The three differences (Horovod - DDP, per step) add up to the wall-time gap.

    Returns:
        ``{"gap_s", "main_thread_s", "other_threads_s", "off_cpu_s"}`` per step, and
        ``"horovod_other_threads_s"`` / ``"ddp_other_threads_s"`` per step.
    """
    out: dict[str, float] = {}
    parts: dict[str, dict[str, float]] = {}
    for b in ("horovod", "ddp"):
        r = critical_rank(pair[b])
        cfg = pair[b]["config"]
        steps = cfg["iters"] * cfg["batches_per_iter"]
        p = r["process"]
        parts[b] = {"wall": p["wall_s"] / steps, "main": p["main_thread_s"] / steps,
                    "other": p["other_threads_s"] / steps}
        parts[b]["off"] = parts[b]["wall"] - parts[b]["main"] - parts[b]["other"]
        out[f"{b}_other_threads_s"] = parts[b]["other"]
    h, d = parts["horovod"], parts["ddp"]
    out.update(gap_s=h["wall"] - d["wall"], main_thread_s=h["main"] - d["main"],
               other_threads_s=h["other"] - d["other"], off_cpu_s=h["off"] - d["off"])
    return out


def thread_gap_metrics(pair: Mapping[str, Mapping[str, Any]], arch: str, setting: str = "matched") -> list[Metric]:
    """:func:`where_gap_goes` as metrics (seconds per step, Horovod - DDP on the critical rank)."""
    g = where_gap_goes(pair)
    what = {"gap_s": "wall time per step", "main_thread_s": "main-thread CPU per step",
            "other_threads_s": "CPU of the other threads per step", "off_cpu_s": "time off the CPU per step"}
    out = [Metric(f"{arch}_hvd_minus_ddp_{k}_{setting}", g[k], unit="s",
                  description=f"Horovod - DDP {v}, on the rank the others waited for") for k, v in what.items()]
    out += [Metric(f"{arch}_{b}_other_threads_s_{setting}", g[f"{b}_other_threads_s"], unit="s",
                   description=f"{b}: CPU its rank's non-main threads took per step, on that rank's one core")
            for b in ("horovod", "ddp")]
    return out


#: Per-GPU batch of the GPU carry: NVIDIA DeepLearningExamples' ResNet-50 v1.5 for PyTorch
#: trains with 256 images per GPU under mixed precision (its README, "Default configuration"
#: and the performance tables); the per-GPU throughput is ``hpcml.cost.models.GPU_RESNET50_IMG_S``.
GPU_BATCH = 256


def gpu_carry(fit: ic.InterconnectFit, nodes: Sequence[int] = (1, 2, 4, 8, 16), gpu_type: str = "H100",
              batch_per_gpu: int = GPU_BATCH) -> list[dict[str, Any]]:
    """The interconnect model on 8-GPU nodes (p5's EFA vs 100 Gbit/s TCP, :func:`hpcml.cost.interconnect.carry_to_gpus`),
    with the link rate at which this sweep's runs had the same communication/compute ratio
    (``cpu_sweep_equivalent_mbit_s``: where the GPU job sits on the measured curve).

    Args:
        fit: the sweep's fit (compute per step, gradients, workers and ``eta`` of the CPU runs).
        nodes: instance counts.
        gpu_type: the GPU (its published ResNet-50 throughput and its link inside a node).
        batch_per_gpu: images per GPU per step.
    """
    from hpcml.cost.models import GPU_RESNET50_IMG_S

    rows = ic.carry_to_gpus(GPU_RESNET50_IMG_S[gpu_type], batch_per_gpu, fit.grad_bytes, nodes, gpu_type=gpu_type)
    for r in rows:
        r["cpu_sweep_equivalent_mbit_s"] = ic.equivalent_bandwidth(
            r["comm_over_compute"], fit.compute_s, fit.grad_bytes, fit.n, fit.eta) * 8 / 1e6
    return rows


def carry_metrics(rows: Sequence[Mapping[str, Any]], at_nodes: int = 2) -> list[Metric]:
    """The GPU carry's metrics: the table, and EFA vs TCP at ``at_nodes`` instances."""
    pick = {r["network"].split()[-1]: r for r in rows if r["nodes"] == at_nodes}
    ms = [Metric("gpu_carry", [dict(r) for r in rows],
                 description="MODEL, not measured: ResNet-50 on 8-GPU nodes, EFA vs TCP (published inputs)")]
    for net, r in pick.items():
        key = net.lower()
        ms += [Metric(f"gpu_{key}_efficiency_{at_nodes}nodes", r["efficiency"],
                      description=f"MODEL: {r['network']}, {r['gpus']} GPUs, allreduce after backward"),
               Metric(f"gpu_{key}_efficiency_overlap_{at_nodes}nodes", r["efficiency_overlap"],
                      description=f"MODEL: {r['network']}, {r['gpus']} GPUs, allreduce overlapped with backward"),
               Metric(f"gpu_{key}_cpu_equivalent_mbit_s", r["cpu_sweep_equivalent_mbit_s"], unit="Mbit/s",
                      description=f"the link rate at which this sweep's CPU runs had {r['network']}'s "
                                  "communication/compute ratio")]
    return ms


def summary(out: Mapping[str, Any], grad_bytes: float) -> dict[str, Any]:
    """The key numbers of a ``python -m hpcml.train.sweep`` JSON: ratios, sweep points, both fits,
    the knee, the cross-node ceiling and the GPU carry (what its command line prints)."""
    res: dict[str, Any] = {}
    if out.get("bakeoff"):
        res["ratios"] = {k: backend_ratio(v["horovod"], v["ddp"]) for k, v in out["bakeoff"].items()}
        pooled = {k: pooled_ratio(v["pairs"]) for k, v in out["bakeoff"].items() if len(v.get("pairs", ())) >= 2}
        if pooled:
            res["pooled"] = pooled
    if out.get("sweep"):
        sw = out["sweep"]
        pts = sweep_points(sw["one"], sw["runs"], sw["rates_bps"], int(sw["world_size"]))
        res["points"] = pts
        if len(pts) >= 2:
            fits = fit_sweep(pts, grad_bytes, int(sw["world_size"]))
            best = best_fit(fits)
            res["fits"] = {k: {"eta": f.eta, "overhead_s": f.overhead_s, "max_abs_rel_error": f.max_abs_rel_error,
                               "rel_errors": f.rel_errors} for k, f in fits.items()}
            res["best_fit"] = best
            res["knee_mbit_s"] = fits[best].knee_bytes_per_s * 8 / 1e6
            res["gpu_carry"] = gpu_carry(fits[best], nodes=(2,))
    if out.get("ceiling"):
        res["ceiling"] = out["ceiling"]["efficiency"]
        unshaped = [p for p in res.get("points", []) if p["profile"] == "unshaped"]
        if unshaped:
            res["unshaped_vs_ceiling"] = unshaped[0]["efficiency"] / res["ceiling"]
    if out.get("paired"):
        res["paired_vs_ceiling"] = paired_vs_ceiling(out["paired"])
    if out.get("versus"):
        res["paired_bakeoff"] = paired_bakeoff(out["versus"])
    if len(out.get("versus_runs", ())) >= 2:
        res["pooled_bakeoff"] = pooled_bakeoff(out["versus_runs"])
    if len(out.get("ceiling_rounds", ())) >= 2:
        res["pooled_vs_ceiling"] = pooled_vs_ceiling(out["ceiling_rounds"], int(out["sweep"]["world_size"]))
    return res
