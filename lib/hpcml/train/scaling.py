"""The synthetic benchmark's scaling summary: 1 worker vs N, pinning, the cycle time, the ceiling.

Notebook 02 launches the runs (:func:`hpcml.train.bench.run_bench` for Horovod,
:func:`hpcml.train.bench.ceiling` for plain PyTorch) and this module turns their results into
what it shows and records: one row per rank and run (img/s ± 1.96σ), one row per rank of
the pinned runs with what the process spent besides the step (context switches, kernel and
CPU time shares), the scaling efficiencies (:func:`hpcml.train.stats.scaling_efficiency`)
and the metrics (:func:`metrics`, recorded with :func:`hpcml.report.record_all`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import pandas as pd

from hpcml.report import Metric
from hpcml.train.stats import scaling_efficiency


@dataclass(frozen=True)
class ScalingRuns:
    """The benchmark results the summary compares (each ``run_bench(...)`` JSON, whole).

    Attributes:
        one: 1 worker, pinned, with the tuned cycle time.
        pinned: ``world_size`` workers, pinned, tuned cycle.
        unpinned: ``world_size`` workers, not pinned, tuned cycle (None: not measured; the
            pinning comparison needs both runs on the same host, see notebook 02).
        default_cycle: ``world_size`` workers, pinned, Horovod's default 1 ms cycle.
        ddp: ``world_size`` workers under PyTorch DDP (None: not run), shown beside Horovod's.
        ceiling: :func:`hpcml.train.bench.ceiling`'s result (plain PyTorch, alone and together).
        world_size: workers of the multi-worker runs.
        cycle: the tuned cycle as the tables name it, e.g. ``"50 ms cycle"``.
    """

    one: dict[str, Any]
    pinned: dict[str, Any]
    unpinned: dict[str, Any] | None
    default_cycle: dict[str, Any]
    ceiling: dict[str, Any]
    world_size: int
    cycle: str
    ddp: dict[str, Any] | None = None

    def horovod_runs(self) -> list[tuple[str, dict[str, Any]]]:
        """(label, result) of the data-parallel runs that were made, in the tables' order (DDP last)."""
        n, cyc = self.world_size, self.cycle
        runs = [(f"1 worker, {cyc}", self.one), (f"{n} pinned, {cyc}", self.pinned),
                (f"{n} unpinned, {cyc}", self.unpinned), (f"{n} pinned, 1 ms cycle", self.default_cycle),
                (f"{n} DDP", self.ddp)]
        return [(label, r) for label, r in runs if r is not None]


@dataclass(frozen=True)
class ScalingSummary:
    """What the runs show.

    Attributes:
        runs: the runs summarised.
        rows: one dict per rank and run: ``run``, ``rank``, ``img_per_s``, ``conf95``.
        per_rank: ``rows`` as a table.
        processes: per rank of the two pinned ``world_size`` runs: ``ctx_switches_per_s``,
            ``system_share`` (kernel time / wall) and ``cpu_share`` ((user + kernel) / wall).
        efficiency: pinned N workers vs N × the 1-worker run.
        efficiency_ci95: its 95 % half-width (:func:`efficiency_with_ci95`).
        efficiency_default_cycle: the same with the 1 ms cycle (vs the tuned 1-worker run).
        efficiency_vs_plain: pinned N Horovod workers vs N × one plain PyTorch process alone.
        ceiling: plain PyTorch processes together / each alone.
        per_worker_img_per_s: mean img/s per worker of the pinned N-worker run.
    """

    runs: ScalingRuns
    rows: list[dict[str, Any]]
    per_rank: pd.DataFrame
    processes: pd.DataFrame
    efficiency: float
    efficiency_ci95: float
    efficiency_default_cycle: float
    efficiency_vs_plain: float
    ceiling: float
    per_worker_img_per_s: float

    @property
    def vs_ceiling(self) -> float:
        """Horovod's scaling efficiency as a fraction of the hardware ceiling."""
        return self.efficiency / self.ceiling


def per_rank_rows(runs: ScalingRuns) -> list[dict[str, Any]]:
    """One row per rank of every Horovod run, then per process of the ceiling (alone, together)."""
    rows = [dict(run=name, rank=p["rank"], img_per_s=p["img_per_s"], conf95=p["conf95"])
            for name, r in runs.horovod_runs() for p in r["synthetic"]["per_rank"]]
    rows += [dict(run=f"plain PyTorch, {phase}", rank=p["slot"], img_per_s=p[phase]["img_per_s"],
                  conf95=p[phase]["conf95"])
             for phase in ("alone", "together") for p in runs.ceiling["per_process"]]
    return rows


def process_rows(runs: ScalingRuns) -> list[dict[str, Any]]:
    """Per rank of the pinned ``world_size`` runs (tuned and 1 ms cycle): what the process spent."""
    labelled = dict((id(r), label) for label, r in runs.horovod_runs())
    pinned = [(labelled[id(r)], r) for r in (runs.pinned, runs.default_cycle)]  # the tuned cycle, then 1 ms
    return [dict(run=name, rank=p["rank"], ctx_switches_per_s=p["process"]["ctx_switches_per_s"],
                 system_share=p["process"]["system_s"] / p["process"]["wall_s"],
                 cpu_share=(p["process"]["user_s"] + p["process"]["system_s"]) / p["process"]["wall_s"])
            for name, r in pinned for p in r["synthetic"]["per_rank"]]


def summarize(runs: ScalingRuns) -> ScalingSummary:
    """The tables and efficiencies of ``runs``."""
    one, n = runs.one["synthetic"]["total_img_per_s"], runs.world_size
    rows = per_rank_rows(runs)
    return ScalingSummary(
        runs=runs, rows=rows, per_rank=pd.DataFrame(rows), processes=pd.DataFrame(process_rows(runs)),
        efficiency=scaling_efficiency(runs.pinned["synthetic"]["total_img_per_s"], one, n),
        efficiency_ci95=efficiency_with_ci95(runs.pinned, runs.one, n)[1],
        efficiency_default_cycle=scaling_efficiency(runs.default_cycle["synthetic"]["total_img_per_s"], one, n),
        efficiency_vs_plain=scaling_efficiency(runs.pinned["synthetic"]["total_img_per_s"],
                                               runs.ceiling["alone_img_per_s"], n),
        ceiling=runs.ceiling["efficiency"],
        per_worker_img_per_s=runs.pinned["synthetic"]["per_worker_img_per_s"],
    )


def metrics(s: ScalingSummary, arch: str, image_size: int, batch: int) -> list[Metric]:
    """The metrics notebook 02 records for the summary, in its order.

    Args:
        s: the summary.
        arch: the synthetic benchmark's model (names the per-worker throughput metric).
        image_size: its image side, for the description.
        batch: its per-worker batch, for the description.
    """
    n, cyc = s.runs.world_size, s.runs.cycle
    ctx = s.processes.groupby("run", sort=False)["ctx_switches_per_s"].mean().round(0).to_dict()
    return [
        Metric("scaling_efficiency", s.efficiency, headline=True,
               description=f"{arch} synthetic: {n}×1 thread vs 2×(1×1 thread), same per-worker batch, {cyc}"),
        Metric("scaling_efficiency_ci95", s.efficiency_ci95,
               description="95 % half-width: each rank's 1.96σ over its timed iterations, summed over ranks in "
                           "quadrature, propagated to the ratio (pinned N-worker run vs the 1-worker run)"),
        Metric("scaling_efficiency_default_cycle", s.efficiency_default_cycle,
               description=f"the same with Horovod's default 1 ms cycle (vs the {cyc} 1-worker run)"),
        Metric("scaling_ceiling", s.ceiling, headline=True,
               description=f"{n} plain PyTorch processes together / the same processes each alone: no communication"),
        Metric("scaling_vs_ceiling", s.vs_ceiling,
               description="Horovod's scaling efficiency as a fraction of the hardware ceiling"),
        Metric("scaling_efficiency_vs_plain", s.efficiency_vs_plain,
               description=f"{n} Horovod workers vs {n} × one plain PyTorch process (no Horovod at all)"),
        Metric(f"{arch}_img_per_s_per_worker", s.per_worker_img_per_s, unit="img/s", headline=True,
               description=f"{arch} synthetic {image_size}px batch {batch}, CPU, mean over {n} ranks"),
        Metric("synthetic_per_rank", s.rows, description="img/s per rank (mean ± 1.96σ over timed iterations)"),
        Metric("ctx_switches_per_s", ctx, unit="1/s",
               description="context switches per second per worker over the timed iterations, by cycle time"),
    ]


def headline(s: ScalingSummary) -> str:
    """One line: the efficiencies and the share of the ceiling Horovod reaches."""
    return (f"scaling efficiency {s.efficiency:.3f} ({s.runs.cycle}), {s.efficiency_default_cycle:.3f} (1 ms cycle); "
            f"ceiling {s.ceiling:.3f} -> Horovod reaches {s.vs_ceiling:.0%} of what two independent processes get")


def chart_title(s: ScalingSummary, arch: str) -> str:
    """The title of the per-rank chart."""
    return (f"{arch} synthetic: efficiency {s.efficiency:.2f} ({s.runs.cycle}), {s.efficiency_default_cycle:.2f} "
            f"(1 ms), ceiling {s.ceiling:.2f}")


def total_with_ci95(run: dict[str, Any]) -> tuple[float, float]:
    """(total img/s, its 95 % half-width) of one synthetic run: the sum over ranks, with the
    ranks' half-widths (Horovod's 1.96σ over the timed iterations) added in quadrature."""
    per = run["synthetic"]["per_rank"]
    return (float(sum(p["img_per_s"] for p in per)), math.sqrt(sum(p["conf95"] ** 2 for p in per)))


def ratio_with_ci95(a: tuple[float, float], b: tuple[float, float]) -> tuple[float, float]:
    """``a / b`` and its 95 % half-width from the two (value, half-width) pairs
    (first-order propagation of relative errors, independent runs)."""
    (va, ha), (vb, hb) = a, b
    if va <= 0 or vb <= 0:
        raise ValueError(f"ratio_with_ci95: values must be positive, got {va} and {vb}")
    r = va / vb
    return r, r * math.sqrt((ha / va) ** 2 + (hb / vb) ** 2)


def efficiency_with_ci95(many: dict[str, Any], one: dict[str, Any], n: int) -> tuple[float, float]:
    """Scaling efficiency ``total(many) / (n × total(one))`` and its 95 % half-width.

    The samples are each rank's timed iterations (img/s of one iteration of ``batches_per_iter``
    steps); σ is their population standard deviation, and each rank's half-width is Horovod's
    1.96σ (``conf95``, :func:`hpcml.train.stats.ci95`). A run's total carries its ranks'
    half-widths added in quadrature (:func:`total_with_ci95`); the efficiency is the ratio of the
    two runs' totals (``n`` is exact), so its relative half-width is the two totals' relative
    half-widths added in quadrature (:func:`ratio_with_ci95`: first order, independent runs),
    the same propagation as :func:`pinning_comparison`. 1.96σ of one iteration, not of the
    mean (no division by √iterations: consecutive iterations on a shared machine are not
    independent), so the interval is wide rather than optimistic.

    Args:
        many: the ``n``-worker ``run_bench`` result.
        one: the 1-worker ``run_bench`` result.
        n: workers of ``many``.
    """
    if n < 1:
        raise ValueError(f"efficiency_with_ci95: n must be >= 1, got {n}")
    r, hw = ratio_with_ci95(total_with_ci95(many), total_with_ci95(one))
    return r / n, hw / n


def pinning_comparison(pinned: dict[str, Any], unpinned: dict[str, Any]) -> dict[str, float]:
    """Pinned / unpinned total img/s of the same synthetic benchmark, with its 95 % half-width.

    Returns:
        ``{"ratio", "ci95", "pinned_img_per_s", "unpinned_img_per_s"}``.
    """
    p, u = total_with_ci95(pinned), total_with_ci95(unpinned)
    ratio, hw = ratio_with_ci95(p, u)
    return {"ratio": ratio, "ci95": hw, "pinned_img_per_s": p[0], "unpinned_img_per_s": u[0]}


def pinning_reading(measurable: bool, faster: bool) -> str:
    """The sentence that explains a pinned/unpinned result, chosen by what the run showed.

    Args:
        measurable: the ratio's interval excludes 1.
        faster: pinned was faster (ratio above 1).
    """
    if not measurable:
        return ("Within the noise, as expected for two ranks that each have a core: the scheduler has little to "
                "get wrong here, and nothing to gain from a binding.")
    if faster:
        return ("Pinning kept each rank on its own core and its caches warm; the gain grows with sockets, ranks "
                "per node and background threads.")
    return ("Pinned, a rank cannot leave its core while another process runs there; unpinned, the scheduler moves "
            "it to whichever core is idle. On a machine shared with other work (this one runs the rest of the "
            "pipeline and other jobs) that costs the pinned run; pinning pays only on cores the rank owns "
            "exclusively.")
