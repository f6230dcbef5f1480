"""Pure cost models: training time and cost on K instances, Spot with Young/Daly checkpointing, serving cost per million requests, storage, and the Pareto front.

Multi-worker scaling comes from the interconnect model of :mod:`hpcml.cost.interconnect`
(GPU types: NVLink/NVSwitch or PCIe inside an instance, the instance's own network between
instances); the cores of one CPU instance scale as measured on this machine. What a run
bills beside the instances (Savings Plans, Capacity Blocks, the load balancer, data
transfer) is priced from the same snapshot.

Every assumption is a named constant or argument, listed by :func:`assumptions`, so a
notebook can print them next to the numbers they produce. Nothing here measures: the
measured inputs (throughput, scaling efficiency, per-replica capacity) come from the
stages' recorded metrics.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Any, Iterable

from hpcml.cost import interconnect
from hpcml.cost.prices import SAVINGS_PLANS, InstancePrice, PriceTable

HOURS_PER_MONTH = 730.0

#: ResNet-50 v1.5 training throughput per GPU (images/s, mixed precision, large batch),
#: rounded from NVIDIA's published Deep Learning Examples / MLPerf-era numbers. These
#: are planning assumptions, not measurements of this project; they set the GPU/CPU
#: speed ratio as (GPU img/s) / (this machine's measured CPU img/s per worker).
GPU_RESNET50_IMG_S: dict[str, float] = {"T4": 250.0, "A10G": 550.0, "V100": 1200.0, "A100": 2500.0, "H100": 5000.0}
GPU_RATIO_SOURCE = ("ResNet-50 v1.5 AMP training img/s per GPU, rounded from NVIDIA Deep Learning Examples "
                    "performance tables (T4 ~250, A10G ~550, V100 ~1200, A100 ~2500, H100 ~5000); assumed, "
                    "not measured here")


_pos = interconnect.checked_number  # one validator for the cost maths


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
        cpu_samples_per_s_per_core: training samples/s of the model on one core, one worker,
            at the workload's real input size (from 02).
        scaling_efficiency_2: measured throughput(2 workers) / (2 x throughput(1 worker)),
            CPU workers on one machine; used only for the cores inside one CPU instance.
        cpu_resnet50_img_s: ResNet-50 img/s of one CPU worker at 224 px (measured there by
            02, or projected to it by counted FLOPs), the denominator of the GPU/CPU ratio.
        host_core_speed: speed of a cloud core relative to this machine's core (1.0 assumed).
        grad_bytes: bytes all-reduced per step (the model's float32 gradients).
        batch_per_worker: samples per worker per step (fixed: weak scaling).
        overlap: allreduce overlapped with backward (``True``) or after it (``False``, the
            conservative bound), see :func:`hpcml.cost.interconnect.step_time`.
    """

    cpu_samples_per_s_per_core: float
    scaling_efficiency_2: float
    cpu_resnet50_img_s: float
    host_core_speed: float = 1.0
    grad_bytes: float = 0.0
    batch_per_worker: int = 32
    overlap: bool = False

    def __post_init__(self) -> None:
        _pos("Basis.cpu_samples_per_s_per_core", self.cpu_samples_per_s_per_core)
        _pos("Basis.cpu_resnet50_img_s", self.cpu_resnet50_img_s)
        _pos("Basis.host_core_speed", self.host_core_speed)
        _pos("Basis.grad_bytes", self.grad_bytes, allow_zero=True)
        _pos("Basis.batch_per_worker", self.batch_per_worker)
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


def efficiency(inst: InstancePrice, k: int, basis: Basis) -> tuple[float, str]:
    """Scaling efficiency of ``k`` instances of ``inst`` and the link that sets it.

    GPU types: :func:`hpcml.cost.interconnect.efficiency` of one step (the worker's batch
    at its projected speed) over the slowest link (:func:`hpcml.cost.interconnect.link_for`).
    CPU types: the measured per-doubling efficiency over the cores of one instance, times
    the interconnect model over the instances' network when ``k > 1``.
    """
    per_inst = inst.gpus or inst.physical_cores
    n = k * per_inst
    compute_s = basis.batch_per_worker / per_worker_throughput(inst, basis)
    if inst.gpus:
        if n == 1:
            return 1.0, "none (one GPU)"
        link = interconnect.link_for(inst.gpu_type, inst.gpus, inst.network_gbps, inst.efa, k)
        return interconnect.efficiency(compute_s, basis.grad_bytes, n, link, basis.overlap), link.name
    inside = scaling_efficiency(per_inst, basis.scaling_efficiency_2)
    if k == 1:
        return inside, "measured (CPU cores)"
    link = interconnect.link_for(None, 0, inst.network_gbps, inst.efa, k)
    return inside * interconnect.efficiency(compute_s, basis.grad_bytes, n, link, basis.overlap), \
        f"measured (CPU cores) + {link.name}"


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
    link: str = ""

    def as_row(self) -> dict[str, Any]:
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def train_estimate(inst: InstancePrice, k: int, workload: Workload, basis: Basis,
                   market: str = "on_demand") -> TrainEstimate:
    """Time and cost to run ``workload`` on ``k`` instances of ``inst`` (data parallel)."""
    if not isinstance(k, int) or k < 1:
        raise ValueError(f"instances (k) must be an integer >= 1, got {k!r}")
    price = inst.price(market)
    workers = k * (inst.gpus or inst.physical_cores)
    eff, link = efficiency(inst, k, basis)
    rate = workers * per_worker_throughput(inst, basis) * eff
    hours = workload.total_samples / rate / 3600.0
    billed = max(hours, 60.0 / 3600.0)  # per-second billing, 60 s minimum
    return TrainEstimate(inst.instance_type, k, workers, eff, rate, hours, price * k, price * k * billed, market, link)


def scaling_table(table: PriceTable, basis: Basis, types: Iterable[str], ks: Iterable[int] = (1, 2, 4, 8)
                  ) -> list[dict[str, Any]]:
    """Efficiency of each type at each instance count, without and with overlap, and the link."""
    rows = []
    for t in types:
        inst = table.get(t)
        for k in ks:
            off, link = efficiency(inst, k, replace(basis, overlap=False))
            on, _ = efficiency(inst, k, replace(basis, overlap=True))
            rows.append({"instance_type": t, "instances": k, "workers": k * (inst.gpus or inst.physical_cores),
                         "link": link, "network_gbps": inst.network_gbps, "efa": inst.efa,
                         "efficiency_no_overlap": round(off, 4), "efficiency_overlap": round(on, 4)})
    return rows


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
    """Spot against On-Demand for one configuration at one interruption rate.

    ``young_daly_interval_min`` is the formula's interval sqrt(2 C M); ``checkpoint_interval_min``
    is the interval applied, capped at the run's length (``interval_capped``): a run shorter
    than the Young/Daly interval checkpoints once, at its end.
    """

    instance_type: str
    instances: int
    on_demand_hours: float
    on_demand_usd: float
    interruptions_per_hour: float
    mtbf_hours: float
    young_daly_interval_min: float
    checkpoint_interval_min: float
    interval_capped: bool
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
        m, yd, tau = math.inf, math.inf, solve_s
        wall = solve_s + checkpoint_s
    else:
        m = 3600.0 / (k * lam)
        yd = young_daly_interval(checkpoint_s, m)
        tau = min(yd, solve_s)  # at least one checkpoint per run
        wall = daly_expected_walltime(solve_s, checkpoint_s, restart_s, m, tau)
    spot_usd = spot_price * k * wall / 3600
    return SpotEstimate(inst.instance_type, k, od.hours, od.cost_usd, lam, m / 3600, yd / 60, tau / 60, yd > solve_s,
                        wall / 3600, spot_usd, 100 * (1 - spot_usd / od.cost_usd), 100 * (wall / solve_s - 1))


@dataclass(frozen=True)
class BreakEven:
    """The interruption rate at which Spot stops saving: ``rate_per_h`` (per instance-hour),
    found by bisection to ``tolerance``, or ``None`` when Spot still saves at ``searched_up_to``."""

    rate_per_h: float | None
    searched_up_to: float
    monthly_pct: float | None


def spot_breakeven(inst: InstancePrice, k: int, workload: Workload, basis: Basis, checkpoint_s: float,
                   restart_s: float, max_rate_per_h: float = 100.0, rel_tol: float = 1e-4) -> BreakEven:
    """Bisection over the per-instance interruption rate for ``saving_pct == 0``.

    The saving falls monotonically as the rate grows (Daly's expected wall time grows with
    it), so the root is bracketed between 0 (the plain Spot discount) and the first of
    1e-4, 1e-3, ... ``max_rate_per_h`` at which Spot costs more than On-Demand.
    """
    saving = lambda r: spot_estimate(inst, k, workload, basis, r, checkpoint_s, restart_s).saving_pct  # noqa: E731
    if saving(0.0) <= 0:
        return BreakEven(0.0, 0.0, 0.0)
    lo, hi = 0.0, 1e-4
    while saving(hi) > 0:
        if hi >= max_rate_per_h:
            return BreakEven(None, max_rate_per_h, None)
        lo, hi = hi, min(hi * 10, max_rate_per_h)
    while hi - lo > rel_tol * hi:
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if saving(mid) > 0 else (lo, mid)
    rate = (lo + hi) / 2
    return BreakEven(rate, max_rate_per_h, 100 * (1 - math.exp(-rate * HOURS_PER_MONTH)))


def breakeven_template(b: BreakEven) -> str:
    """The sentence that states ``b`` (for :func:`hpcml.report.say`): the rate when bisection
    found one, else "none up to" the top of the searched range, never a missing number."""
    if b.rate_per_h is None:
        return ("Spot saves at every interruption rate up to {spot_breakeven_lower_bound_per_h:g} per "
                "instance-hour, the top of the searched range: there is no break-even rate below it.")
    return ("Spot stops saving at {spot_breakeven_rate_per_h:.3g} interruptions per instance-hour (bisection "
            "over the rate): one reclaim every {breakeven_minutes:.0f} minutes per instance.")


def spot_sensitivity(inst: InstancePrice, k: int, workload: Workload, basis: Basis, rates: Iterable[float],
                     checkpoint_s: float, restart_s: float) -> list[dict[str, Any]]:
    """Saving and wall-time penalty of Spot at each per-instance interruption rate, with the
    Spot Instance Advisor's monthly frequency that rate corresponds to."""
    rows = []
    for r in rates:
        e = spot_estimate(inst, k, workload, basis, r, checkpoint_s, restart_s)
        rows.append({"interruptions_per_instance_hour": r,
                     "advisor_pct_per_month": round(100 * (1 - math.exp(-r * HOURS_PER_MONTH)), 2),
                     "job_mtbf_h": round(e.mtbf_hours, 2) if math.isfinite(e.mtbf_hours) else None,
                     "checkpoint_every_min": round(e.checkpoint_interval_min, 1),
                     "spot_hours": round(e.spot_hours, 2), "spot_usd": round(e.spot_usd, 2),
                     "saving_pct": round(e.saving_pct, 2), "time_penalty_pct": round(e.time_penalty_pct, 2)})
    return rows


# ---- what a training run bills under each way of buying the instances ------------------------

def purchase_options(table: PriceTable, est: TrainEstimate, interruptions_per_instance_hour: float,
                     basis: Basis, workload: Workload, checkpoint_s: float, restart_s: float) -> dict[str, Any]:
    """One configuration priced On-Demand, on Spot (expected, with interruptions), under each
    Savings Plan (commitment fully used elsewhere) and as a Capacity Block (whole days, up front).

    A price the table does not hold is ``None`` with the reason in ``notes``.
    """
    inst = table.get(est.instance_type)
    billed_h = max(est.hours, 60.0 / 3600.0)
    row: dict[str, Any] = {"instance_type": est.instance_type, "instances": est.instances, "hours": round(est.hours, 3),
                           "on_demand_usd": round(est.cost_usd, 2)}
    notes = []
    try:
        s = spot_estimate(inst, est.instances, workload, basis, interruptions_per_instance_hour, checkpoint_s, restart_s)
        row["spot_usd"] = round(s.spot_usd, 2)
        row["spot_hours"] = round(s.spot_hours, 3)
    except LookupError as e:
        row["spot_usd"] = row["spot_hours"] = None
        notes.append(str(e))
    for plan in SAVINGS_PLANS:
        try:
            row[f"sp_{plan}_usd"] = round(table.savings_plan_rate(est.instance_type, plan) * est.instances * billed_h, 2)
        except LookupError as e:
            row[f"sp_{plan}_usd"] = None
            notes.append(str(e))
    cb = table.capacity_block_rate(est.instance_type)
    if cb is None:
        row["capacity_block_usd"] = row["capacity_block_billed_h"] = None
        notes.append(f"no Capacity Block for {est.instance_type}")
    else:
        try:
            hrs = table.capacity_block_billed_hours(est.hours, est.instances)
            row["capacity_block_usd"], row["capacity_block_billed_h"] = round(cb * hrs, 2), hrs
        except ValueError as e:
            row["capacity_block_usd"] = row["capacity_block_billed_h"] = None
            notes.append(str(e))
    row["notes"] = "; ".join(notes)
    return row


def purchase_summary(row: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """A sentence (template, values) comparing the ways of buying one configuration of
    :func:`purchase_options`, naming only the prices the table holds."""
    vals = {k: v for k, v in row.items() if v is not None}
    parts = ["{instances}x {instance_type} for {hours:.2f} h: On-Demand {on_demand_usd:,.0f} USD"]
    if "spot_usd" in vals:
        parts.append("Spot {spot_usd:,.0f} USD expected (estimated Spot price, interruptions included)")
    if "sp_instance_3yr_usd" in vals:
        parts.append("between {sp_instance_3yr_usd:,.0f} and {sp_compute_1yr_usd:,.0f} USD under a Savings Plan "
                     "(estimated rates, only if the commitment is used all term)")
    if "capacity_block_usd" in vals:
        vals["cb_ratio"] = vals["capacity_block_usd"] / vals["on_demand_usd"]
        parts.append("{capacity_block_usd:,.0f} USD as a Capacity Block, which bills {capacity_block_billed_h:.0f} "
                     "instance-hours up front ({cb_ratio:.1f}x On-Demand: blocks are sold in whole days)")
    else:
        parts.append("no Capacity Block is sold for this type")
    return "; ".join(parts) + ".", vals


def inter_az_allreduce_usd(table: PriceTable, est: TrainEstimate, grad_bytes: float, batch_per_worker: int,
                           workload: Workload) -> dict[str, Any]:
    """What the gradient traffic of a multi-instance run would bill if its instances sat in
    different Availability Zones: every instance sends (and receives) ``2(n-1)/n x grad_bytes``
    per step through its NIC, and inter-AZ bytes are charged in each direction. In one AZ
    (a cluster placement group, or a Capacity Block) the same traffic is free.
    """
    n = est.workers
    steps = workload.total_samples / (n * _pos("batch_per_worker", batch_per_worker))
    per_instance_gb = steps * interconnect.allreduce_s(grad_bytes, n, 1.0) / 1e9 if n > 1 else 0.0
    gb = per_instance_gb * est.instances if est.instances > 1 else 0.0
    rate = table.data_transfer["inter_az_usd_per_gb_each_direction"]
    return {"instance_type": est.instance_type, "instances": est.instances, "steps": round(steps),
            "inter_instance_tb": round(gb / 1e3, 3), "usd_if_spread_over_azs": round(gb * rate * 2, 2),
            "usd_in_one_az": 0.0, "share_of_on_demand_pct": round(100 * gb * rate * 2 / est.cost_usd, 2)}


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


@dataclass(frozen=True)
class ServingBill:
    """A month of serving ``load_rps`` behind an ALB, as the bill lists it (USD)."""

    load_rps: float
    instance_type: str
    instances: int
    floor_instances: int
    instances_usd: float
    alb_hours_usd: float
    lcus: float
    lcu_driver: str
    alb_lcu_usd: float
    egress_gb: float
    egress_usd: float
    inter_az_usd: float
    total_usd: float
    usd_per_million: float
    instances_share_pct: float


#: Seconds one client connection stays open (an assumption; a generous bound for one short
#: inference request per connection). Only the ALB's active-connections dimension uses it.
CONNECTION_LIFETIME_S = 1.0


def alb_lcus(table: PriceTable, load_rps: float, request_bytes: float, response_bytes: float,
             requests_per_connection: float = 1.0, rules: int = 1) -> tuple[float, str]:
    """Load Balancer Capacity Units of an ALB at ``load_rps``: the largest of its four dimensions
    (new connections, active connections, processed bytes, rule evaluations), and which one."""
    lcu = table.load_balancer["lcu"]
    new_conn = load_rps / _pos("requests_per_connection", requests_per_connection)
    dims = {
        "new connections": new_conn / lcu["new_connections_per_s"],
        "active connections": new_conn * CONNECTION_LIFETIME_S / lcu["active_connections_per_min"],
        "processed bytes": load_rps * (request_bytes + response_bytes) * 3600 / 1e9 / lcu["processed_gb_per_h"],
        "rule evaluations": load_rps * max(0, rules - lcu["free_rules_per_request"]) / lcu["rule_evaluations_per_s"],
    }
    driver = max(dims, key=dims.get)
    return dims[driver], driver


def serving_month(table: PriceTable, inst: InstancePrice, rps_per_instance: float, load_rps: float, floor_instances: int,
                  request_bytes: float, response_bytes: float, target_utilization: float = 0.6,
                  requests_per_connection: float = 1.0, hours: float = HOURS_PER_MONTH) -> ServingBill:
    """What a month of serving bills: the instances (never fewer than ``floor_instances``, the
    HPA's ``minReplicas`` with one replica per instance), the ALB's hours and LCUs, internet
    egress of the responses (requests come in free), and the ALB-to-target hop (no inter-AZ
    charge for an ALB). On-Demand prices."""
    _pos("load_rps", load_rps)
    n = max(int(floor_instances), replicas_for(load_rps, rps_per_instance, target_utilization))
    inst_usd = inst.price("on_demand") * n * hours
    lb, dt = table.load_balancer, table.data_transfer
    lcus, driver = alb_lcus(table, load_rps, request_bytes, response_bytes, requests_per_connection)
    alb_h, alb_lcu = lb["usd_per_hour"] * hours, lcus * lb["usd_per_lcu_hour"] * hours
    egress_gb = load_rps * response_bytes * hours * 3600 / 1e9
    egress_usd = max(0.0, egress_gb - dt["internet_egress_free_gb_per_month"] * hours / HOURS_PER_MONTH) \
        * dt["internet_egress_usd_per_gb"]
    inter_az = load_rps * (request_bytes + response_bytes) * hours * 3600 / 1e9 * lb["inter_az_to_targets_usd_per_gb"]
    total = inst_usd + alb_h + alb_lcu + egress_usd + inter_az
    million = load_rps * hours * 3600 / 1e6
    return ServingBill(load_rps, inst.instance_type, n, int(floor_instances), inst_usd, alb_h, lcus, driver, alb_lcu,
                       egress_gb, egress_usd, inter_az, total, total / million, 100 * inst_usd / total)


def serving_bills(table: PriceTable, inst: InstancePrice, rps_per_instance: float, loads: Iterable[float],
                  floor_instances: int, request_bytes: float, response_bytes: float, target_utilization: float = 0.6,
                  requests_per_connection: float = 1.0) -> list[dict[str, Any]]:
    """:func:`serving_month` at each load, as table rows (USD per month)."""
    rows = []
    for load in loads:
        b = serving_month(table, inst, rps_per_instance, load, floor_instances, request_bytes, response_bytes,
                          target_utilization, requests_per_connection)
        rows.append({k: (round(v, 4) if isinstance(v, float) else v) for k, v in asdict(b).items()})
    return rows


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
    ic = interconnect
    links = "; ".join(f"{g}: {lk.name} {lk.bytes_per_s / 1e9:g} GB/s" for g, lk in ic.GPU_LINKS.items())
    out = {
        "gpu_speed": GPU_RATIO_SOURCE,
        "cpu_core_speed": "a cloud physical core trains as fast as one core of this machine (host_core_speed)",
        "image_size": "the ResNet-50 workload runs at 224 px; a CPU throughput measured at another size is "
                      "projected by the ratio of counted training FLOPs (see the measured inputs' provenance)",
        "scaling_gpu": "interconnect model (hpcml.cost.interconnect): step = compute + 2(n-1)/n x gradient bytes / "
                       "bandwidth + 2(n-1) alpha, over the slowest link a ring crosses; inside an instance (one "
                       f"direction, nominal) {links}; between instances the instance's own network_gbps, EFA "
                       f"(alpha {ic.ALPHA_EFA_S * 1e6:g} us) or TCP (alpha {ic.ALPHA_TCP_S * 1e6:g} us); "
                       "'up to' bandwidths are burst ceilings, so those rows are optimistic",
        "overlap": "cost tables use " + ("overlap: step = forward + max(backward, allreduce)" if basis and basis.overlap
                                         else "no overlap: step = compute + allreduce (the conservative bound)")
                   + f"; backward = {ic.BACKWARD_FRACTION:.2f} of compute",
        "scaling_cpu": "the cores of one CPU instance: measured 2-worker efficiency ** log2(cores); between CPU "
                       "instances the interconnect model over their network",
        "billing": "per-second billing with a 60 s minimum; no EBS or idle time counted; data transfer and the "
                   "load balancer are priced in their own tables",
        "spot": "job MTBF = 1/(k x per-instance interruption rate); checkpoint every sqrt(2 C M), capped at the "
                "run's length; Daly's expected wall time; restarts re-read the last checkpoint",
        "commitments": "Savings Plan prices assume the commitment is used in full all term (a one-off run pays "
                       "the rest of the commitment idle); Capacity Blocks bill whole days up front",
        "serving": "replica capacity = measured max RPS at p99 <= 50 ms; capacity scales with physical cores; "
                   "one replica per instance, never fewer than the HPA's minReplicas; HPA holds replicas at "
                   "the target utilization",
    }
    if basis is not None:
        out["gpu_ratio_values"] = ", ".join(f"{g}: {basis.gpu_speedup(g):.0f}x a CPU worker" for g in GPU_RESNET50_IMG_S)
        out["gradient"] = f"{basis.grad_bytes / 1e6:.1f} MB all-reduced per step, {basis.batch_per_worker} samples per worker"
    return out
