"""Pure cost models: training time and cost on K instances, Spot with Young/Daly
checkpointing, serving cost per million requests, storage, and the Pareto front.

Every assumption is a named constant or argument, listed by :func:`assumptions`, so a
notebook can print them next to the numbers they produce. Nothing here measures: the
measured inputs (throughput, scaling efficiency, per-replica capacity) come from the
stages' recorded metrics.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Iterable

from hpcml.cost.prices import InstancePrice, PriceTable

HOURS_PER_MONTH = 730.0

#: ResNet-50 v1.5 training throughput per GPU (images/s, mixed precision, large batch),
#: rounded from NVIDIA's published Deep Learning Examples / MLPerf-era numbers. These
#: are planning assumptions, not measurements of this project; they set the GPU/CPU
#: speed ratio as (GPU img/s) / (this machine's measured CPU img/s per worker).
GPU_RESNET50_IMG_S: dict[str, float] = {"T4": 250.0, "A10G": 550.0, "V100": 1200.0, "A100": 2500.0, "H100": 5000.0}
GPU_RATIO_SOURCE = ("ResNet-50 v1.5 AMP training img/s per GPU, rounded from NVIDIA Deep Learning Examples "
                    "performance tables (T4 ~250, A10G ~550, V100 ~1200, A100 ~2500, H100 ~5000); assumed, "
                    "not measured here")


def _pos(name: str, value: float, allow_zero: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    if value < 0 or (value == 0 and not allow_zero):
        raise ValueError(f"{name} must be {'>= 0' if allow_zero else '> 0'}, got {value!r}")
    return float(value)


@dataclass(frozen=True)
class Workload:
    """What to train: ``samples`` per epoch for ``epochs`` epochs."""

    name: str
    samples: int
    epochs: int

    def __post_init__(self) -> None:
        _pos("Workload.samples", self.samples)
        _pos("Workload.epochs", self.epochs)

    @property
    def total_samples(self) -> float:
        return float(self.samples) * self.epochs


@dataclass(frozen=True)
class Basis:
    """Measured inputs that every projection starts from.

    Attributes:
        cpu_samples_per_s_per_core: training samples/s of the model on one core, one worker
            (from 02: all-worker throughput / (workers x scaling efficiency)).
        scaling_efficiency_2: measured throughput(2 workers) / (2 x throughput(1 worker)).
        cpu_resnet50_img_s: measured ResNet-50 synthetic img/s of one CPU worker (from 02).
        host_core_speed: speed of a cloud core relative to this machine's core (1.0 assumed).
    """

    cpu_samples_per_s_per_core: float
    scaling_efficiency_2: float
    cpu_resnet50_img_s: float
    host_core_speed: float = 1.0

    def __post_init__(self) -> None:
        _pos("Basis.cpu_samples_per_s_per_core", self.cpu_samples_per_s_per_core)
        _pos("Basis.cpu_resnet50_img_s", self.cpu_resnet50_img_s)
        _pos("Basis.host_core_speed", self.host_core_speed)
        if not 0 < self.scaling_efficiency_2 <= 1.05:
            raise ValueError(f"Basis.scaling_efficiency_2 must be in (0, 1.05], got {self.scaling_efficiency_2!r}")

    def gpu_speedup(self, gpu_type: str) -> float:
        """How many of this machine's CPU workers one GPU of ``gpu_type`` is worth."""
        if gpu_type not in GPU_RESNET50_IMG_S:
            raise ValueError(f"no speed assumption for GPU type {gpu_type!r} (known: {', '.join(GPU_RESNET50_IMG_S)})")
        return GPU_RESNET50_IMG_S[gpu_type] / self.cpu_resnet50_img_s


def scaling_efficiency(workers: int, eff_2: float) -> float:
    """Modelled efficiency at ``workers``: every doubling keeps the measured 1->2 fraction.

    eff(n) = eff_2 ** log2(n). Conservative for ring-allreduce inside a node, optimistic
    across slow networks; the measured 2-worker number is the only anchor we have.
    """
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    return min(1.0, eff_2) ** math.log2(workers)


def per_worker_throughput(inst: InstancePrice, basis: Basis) -> float:
    """Samples/s of one worker on ``inst``: one GPU, or one physical core."""
    if inst.gpus:
        return basis.cpu_samples_per_s_per_core * basis.gpu_speedup(inst.gpu_type or "")
    return basis.cpu_samples_per_s_per_core * basis.host_core_speed


@dataclass(frozen=True)
class TrainEstimate:
    instance_type: str
    instances: int
    workers: int
    efficiency: float
    samples_per_s: float
    hours: float
    usd_per_hour: float
    cost_usd: float
    market: str

    def as_row(self) -> dict[str, Any]:
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def train_estimate(inst: InstancePrice, k: int, workload: Workload, basis: Basis,
                   market: str = "on_demand") -> TrainEstimate:
    """Time and cost to run ``workload`` on ``k`` instances of ``inst`` (data parallel)."""
    if not isinstance(k, int) or k < 1:
        raise ValueError(f"instances (k) must be an integer >= 1, got {k!r}")
    price = inst.price(market)
    workers = k * (inst.gpus or inst.physical_cores)
    eff = scaling_efficiency(workers, basis.scaling_efficiency_2)
    rate = workers * per_worker_throughput(inst, basis) * eff
    hours = workload.total_samples / rate / 3600.0
    billed = max(hours, 60.0 / 3600.0)  # per-second billing, 60 s minimum
    return TrainEstimate(inst.instance_type, k, workers, eff, rate, hours, price * k, price * k * billed, market)


def cost_table(table: PriceTable, workload: Workload, basis: Basis, ks: Iterable[int] = (1, 2, 4, 8),
               types: Iterable[str] | None = None, market: str = "on_demand") -> list[TrainEstimate]:
    """:func:`train_estimate` for every type x instance count."""
    return [train_estimate(table.get(t), k, workload, basis, market)
            for t in (types or table.types()) for k in ks]


def pareto_front(estimates: Iterable[TrainEstimate]) -> list[TrainEstimate]:
    """Estimates that no other is both cheaper and faster than, sorted by time."""
    pts = sorted(estimates, key=lambda e: (e.hours, e.cost_usd))
    front, best = [], math.inf
    for e in pts:
        if e.cost_usd < best - 1e-12:
            front.append(e)
            best = e.cost_usd
    return front


# ---- Spot: interruptions, Young/Daly checkpointing -------------------------------------

def rate_from_monthly_pct(pct_per_month: float) -> float:
    """Interruptions per instance-hour from the Spot Instance Advisor's monthly frequency."""
    _pos("interruption pct per month", pct_per_month, allow_zero=True)
    if pct_per_month >= 100:
        raise ValueError(f"interruption pct per month must be < 100, got {pct_per_month}")
    return -math.log(1 - pct_per_month / 100.0) / HOURS_PER_MONTH


def young_daly_interval(checkpoint_s: float, mtbf_s: float) -> float:
    """Optimal checkpoint interval sqrt(2 C M) (Young 1974; Daly 2006 first order)."""
    return math.sqrt(2 * _pos("checkpoint_s", checkpoint_s) * _pos("mtbf_s", mtbf_s))


def daly_expected_walltime(solve_s: float, checkpoint_s: float, restart_s: float,
                           mtbf_s: float, interval_s: float) -> float:
    """Expected wall time with exponential failures (Daly 2006, eq. 20).

    T_w = M e^{R/M} (e^{(tau + C)/M} - 1) T_s / tau
    """
    _pos("solve_s", solve_s)
    _pos("restart_s", restart_s, allow_zero=True)
    c, m, tau = _pos("checkpoint_s", checkpoint_s), _pos("mtbf_s", mtbf_s), _pos("interval_s", interval_s)
    return m * math.exp(restart_s / m) * (math.exp((tau + c) / m) - 1) * solve_s / tau


@dataclass(frozen=True)
class SpotEstimate:
    instance_type: str
    instances: int
    on_demand_hours: float
    on_demand_usd: float
    interruptions_per_hour: float
    mtbf_hours: float
    checkpoint_interval_min: float
    spot_hours: float
    spot_usd: float
    saving_pct: float
    time_penalty_pct: float


def spot_estimate(inst: InstancePrice, k: int, workload: Workload, basis: Basis,
                  interruptions_per_instance_hour: float, checkpoint_s: float, restart_s: float) -> SpotEstimate:
    """Expected cost and time on Spot (checkpointing at the Young/Daly interval) vs On-Demand.

    Any of the ``k`` instances being reclaimed stops the synchronous job, so the job's
    MTBF is 1 / (k x rate). Without interruptions (rate 0) only checkpoint writes remain.
    """
    lam = _pos("interruptions_per_instance_hour", interruptions_per_instance_hour, allow_zero=True)
    od = train_estimate(inst, k, workload, basis, "on_demand")
    spot_price = inst.price("spot")
    solve_s = od.hours * 3600
    if lam == 0:
        m, tau = math.inf, solve_s
        wall = solve_s + checkpoint_s
    else:
        m = 3600.0 / (k * lam)
        tau = min(young_daly_interval(checkpoint_s, m), solve_s)  # at least one checkpoint per run
        wall = daly_expected_walltime(solve_s, checkpoint_s, restart_s, m, tau)
    spot_usd = spot_price * k * wall / 3600
    return SpotEstimate(inst.instance_type, k, od.hours, od.cost_usd, lam, m / 3600, tau / 60, wall / 3600,
                        spot_usd, 100 * (1 - spot_usd / od.cost_usd), 100 * (wall / solve_s - 1))


# ---- serving -------------------------------------------------------------------------------

def serving_usd_per_million(usd_per_hour: float, rps_per_instance: float, target_utilization: float = 0.6) -> float:
    """USD per million requests at ``target_utilization`` of a replica's measured capacity."""
    _pos("usd_per_hour", usd_per_hour)
    _pos("rps_per_instance", rps_per_instance)
    if not 0 < target_utilization <= 1:
        raise ValueError(f"target_utilization must be in (0, 1], got {target_utilization!r}")
    return usd_per_hour / (rps_per_instance * target_utilization * 3600) * 1e6


def instance_rps(inst: InstancePrice, measured_rps: float, measured_cores: int) -> float:
    """Capacity of a CPU instance running replicas sized like the measured one.

    Assumes inference throughput scales with physical cores (one replica per
    ``measured_cores`` cores, no shared bottleneck) — stated, not measured.
    """
    _pos("measured_rps", measured_rps)
    if measured_cores < 1:
        raise ValueError(f"measured_cores must be >= 1, got {measured_cores}")
    if inst.gpus:
        raise ValueError(f"{inst.instance_type} is a GPU type: the CPU replica capacity does not transfer to it")
    return measured_rps * inst.physical_cores / measured_cores


def replicas_for(target_rps: float, rps_per_replica: float, target_utilization: float = 0.6) -> int:
    """Replicas an HPA would settle on for ``target_rps`` at the utilization target."""
    _pos("target_rps", target_rps, allow_zero=True)
    return max(1, math.ceil(target_rps / (_pos("rps_per_replica", rps_per_replica) * target_utilization)))


# ---- storage -------------------------------------------------------------------------------

def storage_costs(table: PriceTable, size_gb: float, months: float = 1.0) -> list[dict[str, Any]]:
    """Monthly-style cost of keeping ``size_gb`` in each storage tier for ``months``."""
    _pos("size_gb", size_gb, allow_zero=True)
    _pos("months", months)
    rows = []
    for tier, s in table.storage.items():
        billed = max(size_gb, s.get("min_gb", 0.0))
        rows.append({"tier": tier, "size_gb": size_gb, "billed_gb": billed,
                     "usd": round(billed * s["usd_per_gb_month"] * months, 4), "note": s.get("note", "")})
    return rows


def assumptions(basis: Basis | None = None) -> dict[str, str]:
    """Every modelling assumption, in words, for display beside the numbers."""
    out = {
        "gpu_speed": GPU_RATIO_SOURCE,
        "cpu_core_speed": "a cloud physical core trains as fast as one core of this machine (host_core_speed)",
        "scaling": "efficiency(n workers) = measured 2-worker efficiency ** log2(n), one worker per GPU or core",
        "billing": "per-second billing with a 60 s minimum; no EBS, data transfer or idle time counted",
        "spot": "job MTBF = 1/(k x per-instance interruption rate); checkpoint every sqrt(2 C M); Daly's "
                "expected wall time; restarts re-read the last checkpoint",
        "serving": "replica capacity = measured max RPS at p99 <= 50 ms; capacity scales with physical cores; "
                   "HPA holds replicas at the target utilization",
    }
    if basis is not None:
        out["gpu_ratio_values"] = ", ".join(f"{g}: {basis.gpu_speedup(g):.0f}x a CPU worker" for g in GPU_RESNET50_IMG_S)
    return out
