"""EC2 and storage prices: a dated snapshot shipped with the package, and the pure half of a
live refresh.

The snapshot (``data/prices_snapshot.json``) names a source and date for every price and
marks estimates as such. :func:`hpcml.cost.price_refresh.refresh_live` asks the AWS Price List
API (``pricing:GetProducts``) and ``ec2:DescribeSpotPriceHistory`` for the same rows — only
when credentials exist — with the requests built here (:func:`get_products_request`,
:func:`spot_history_request`), and feeds the answers through the parsers here and the same
record validation the snapshot goes through (:func:`make_record`), so a live table and a
snapshot table are the same kind of object.

Example:
    >>> from hpcml.cost import prices
    >>> table = prices.load_snapshot()
    >>> table.get("p3.2xlarge").price("on_demand")
    3.06
"""

from __future__ import annotations

import json
import math
import re
import statistics
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable

from hpcml.aws.account import REGION

SNAPSHOT = Path(__file__).resolve().parent / "data" / "prices_snapshot.json"
MARKETS = ("on_demand", "spot")

#: Price List API ``location`` names of the regions the snapshot uses.
LOCATIONS = {
    "us-east-1": "US East (N. Virginia)",
    "us-east-2": "US East (Ohio)",
    "us-west-2": "US West (Oregon)",
}


class UnknownInstanceError(KeyError):
    """An instance type that the price table does not hold."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0])


class MissingPriceError(LookupError):
    """The table holds the instance type but no price for the market asked for."""


@dataclass(frozen=True)
class InstancePrice:
    """One instance type: its shape, its On-Demand and Spot price, and where they come from."""

    instance_type: str
    vcpu: int
    memory_gib: float
    gpus: int
    gpu_type: str | None
    gpu_memory_gib: float
    network_gbps: float
    network_up_to: bool
    efa: bool
    region: str
    on_demand: float | None
    on_demand_source: str
    on_demand_estimate: bool
    spot: float | None
    spot_source: str
    spot_estimate: bool
    smt: bool = True

    @property
    def physical_cores(self) -> int:
        """Cores that compute (vCPUs are hyper-threads on SMT instances; HPC types disable SMT)."""
        return self.vcpu // 2 if self.smt else self.vcpu

    def price(self, market: str = "on_demand") -> float:
        """USD per instance-hour in ``market`` (``on_demand`` or ``spot``).

        Raises:
            ValueError: unknown market.
            MissingPriceError: naming the instance type, the market and why there is none.
        """
        if market not in MARKETS:
            raise ValueError(f"market must be one of {MARKETS}, got {market!r}")
        value = getattr(self, market)
        if value is None:
            why = getattr(self, f"{market}_source") or "no source"
            raise MissingPriceError(f"no {market} price for {self.instance_type} ({why})")
        return value

    def as_row(self) -> dict[str, Any]:
        """A flat dict for tables."""
        return {
            "instance_type": self.instance_type, "vcpu": self.vcpu, "memory_gib": self.memory_gib,
            "gpus": self.gpus, "gpu_type": self.gpu_type or "-",
            "network_gbps": f"{'up to ' if self.network_up_to else ''}{self.network_gbps:g}",
            "efa": self.efa, "region": self.region, "on_demand_usd_h": self.on_demand,
            "spot_usd_h": None if self.spot is None else round(self.spot, 4),
            "estimate": "on-demand" if self.on_demand_estimate else ("spot" if self.spot_estimate else ""),
            "on_demand_source": self.on_demand_source, "spot_source": self.spot_source,
        }


def _num(rec: dict, name: str, where: str, allow_none: bool = False) -> float | None:
    value = rec.get(name)
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{where}: field {name!r} must be a finite number, got {value!r}")
    if value < 0:
        raise ValueError(f"{where}: field {name!r} must not be negative, got {value!r}")
    return float(value)


def make_record(rec: dict[str, Any], where: str = "price record") -> InstancePrice:
    """Validate one normalised record (snapshot row or parsed API answer).

    Raises:
        ValueError: naming the record and the field that is missing, negative or malformed.
    """
    itype = rec.get("instance_type")
    if not isinstance(itype, str) or not re.fullmatch(r"[a-z0-9-]+\.[a-z0-9-]+", itype):
        raise ValueError(f"{where}: instance_type must look like 'p3.2xlarge', got {itype!r}")
    where = f"{where} {itype}"
    for key in ("on_demand_source", "spot_source", "region"):
        if not rec.get(key):
            raise ValueError(f"{where}: field {key!r} is required (say where the price comes from)")
    return InstancePrice(
        instance_type=itype, vcpu=int(_num(rec, "vcpu", where)), memory_gib=_num(rec, "memory_gib", where),
        gpus=int(_num(rec, "gpus", where)), gpu_type=rec.get("gpu_type"),
        gpu_memory_gib=_num(rec, "gpu_memory_gib", where), network_gbps=_num(rec, "network_gbps", where),
        network_up_to=bool(rec.get("network_up_to", False)), efa=bool(rec.get("efa", False)),
        region=rec["region"], on_demand=_num(rec, "on_demand", where, allow_none=True),
        on_demand_source=rec["on_demand_source"], on_demand_estimate=bool(rec.get("on_demand_estimate")),
        spot=_num(rec, "spot", where, allow_none=True), spot_source=rec["spot_source"],
        spot_estimate=bool(rec.get("spot_estimate")), smt=bool(rec.get("smt", True)),
    )


#: The Savings Plans the snapshot prices: (plan, term) keys of its ``discount_assumed``.
SAVINGS_PLANS = ("compute_1yr", "compute_3yr", "instance_1yr", "instance_3yr")


@dataclass
class PriceTable:
    """Instance prices and storage prices with their provenance, plus the commitments
    (Savings Plans, Capacity Blocks), the load balancer and data transfer, each section with
    its ``source`` resolved to the text of :attr:`sources`."""

    instances: dict[str, InstancePrice]
    storage: dict[str, dict[str, Any]]
    compiled: str
    sources: dict[str, str] = field(default_factory=dict)
    origin: str = "snapshot"
    savings_plans: dict[str, Any] = field(default_factory=dict)
    capacity_blocks: dict[str, Any] = field(default_factory=dict)
    load_balancer: dict[str, Any] = field(default_factory=dict)
    data_transfer: dict[str, Any] = field(default_factory=dict)

    def savings_plan_rate(self, instance_type: str, plan: str) -> float:
        """USD per instance-hour under a Savings Plan (``compute_1yr``, ``compute_3yr``,
        ``instance_1yr``, ``instance_3yr``), when the commitment is fully used.

        Raises:
            ValueError: an unknown plan.
            MissingPriceError: the table holds no Savings Plan price for the type.
        """
        if plan not in SAVINGS_PLANS:
            raise ValueError(f"plan must be one of {SAVINGS_PLANS}, got {plan!r}")
        inst = self.get(instance_type)
        disc = self.savings_plans.get("discount_assumed", {}).get(plan)
        if disc is None or (self.savings_plans.get("applies_to") == "gpu" and not inst.gpus):
            raise MissingPriceError(f"no {plan} Savings Plan price for {instance_type} in the table "
                                    f"({self.savings_plans.get('applies_to', 'no')} types only)")
        return round(inst.price("on_demand") * (1 - disc), 4)

    def capacity_block_rate(self, instance_type: str) -> float | None:
        """USD per instance-hour of a Capacity Block for ML, or ``None`` where none is sold."""
        for r in self.capacity_blocks.get("rates", []):
            if r["instance_type"] == instance_type:
                return float(r["usd_per_instance_hour"])
        return None

    def commitment_rows(self) -> list[dict[str, Any]]:
        """Per GPU type: On-Demand, each Savings Plan rate and the Capacity Block rate (USD/h)."""
        rows = []
        for t in self.types(gpu=True):
            row: dict[str, Any] = {"instance_type": t, "on_demand_usd_h": self.get(t).on_demand}
            row.update({f"sp_{plan}_usd_h": self.savings_plan_rate(t, plan) for plan in SAVINGS_PLANS})
            row["capacity_block_usd_h"] = self.capacity_block_rate(t)
            row["capacity_block_region"] = next((r["region"] for r in self.capacity_blocks.get("rates", [])
                                                 if r["instance_type"] == t), None)
            rows.append(row)
        return rows

    def service_rows(self) -> list[dict[str, Any]]:
        """The load balancer's and data transfer's prices, one row each, with their source."""
        lb, dt = self.load_balancer, self.data_transfer
        return [
            {"item": "ALB, per hour", "usd": lb["usd_per_hour"], "unit": "per ALB-hour", "source": lb["source"]},
            {"item": "ALB, per LCU", "usd": lb["usd_per_lcu_hour"], "unit": "per LCU-hour", "source": lb["source"]},
            {"item": "ALB to targets across AZs", "usd": lb["inter_az_to_targets_usd_per_gb"], "unit": "per GB",
             "source": lb["source"]},
            {"item": "inter-AZ, each direction", "usd": dt["inter_az_usd_per_gb_each_direction"], "unit": "per GB",
             "source": dt["source"]},
            {"item": "internet egress (after the free tier)", "usd": dt["internet_egress_usd_per_gb"], "unit": "per GB",
             "source": dt["source"]},
            {"item": "internet ingress", "usd": dt["ingress_usd_per_gb"], "unit": "per GB", "source": dt["source"]},
        ]

    def capacity_block_billed_hours(self, hours: float, instances: int) -> float:
        """Instance-hours a Capacity Block bills for a run of ``hours`` on ``instances``: the
        block is bought up front in whole days (1-day steps up to 14 days, then 7-day steps),
        for an instance count it offers (the next one up).

        Raises:
            ValueError: a run longer than the longest block, or more instances than the largest.
        """
        cb = self.capacity_blocks
        counts = [c for c in cb["instance_counts"] if c >= instances]
        if not counts:
            raise ValueError(f"Capacity Blocks hold at most {max(cb['instance_counts'])} instances, asked {instances}")
        days = max(1, math.ceil(hours / cb["day_hours"] - 1e-9))
        if days > cb["max_days_in_1_day_steps"]:
            days = math.ceil(days / cb["week_step_days"]) * cb["week_step_days"]
        if days > cb["max_days"]:
            raise ValueError(f"a run of {hours:.0f} h is longer than the longest Capacity Block ({cb['max_days']} days)")
        return days * cb["day_hours"] * counts[0]

    def get(self, instance_type: str) -> InstancePrice:
        """The row of ``instance_type``; :class:`UnknownInstanceError` lists the known ones."""
        try:
            return self.instances[instance_type]
        except KeyError:
            raise UnknownInstanceError(
                f"unknown instance type {instance_type!r}: the price table ({self.origin}, {self.compiled}) "
                f"holds {', '.join(sorted(self.instances))}") from None

    def storage_price(self, tier: str) -> dict[str, Any]:
        try:
            return self.storage[tier]
        except KeyError:
            raise UnknownInstanceError(
                f"unknown storage tier {tier!r}: known tiers are {', '.join(sorted(self.storage))}") from None

    def rows(self) -> list[dict[str, Any]]:
        return [p.as_row() for p in self.instances.values()]

    def types(self, gpu: bool | None = None) -> list[str]:
        """Instance types, optionally only GPU (``True``) or only CPU (``False``) ones."""
        return [t for t, p in self.instances.items() if gpu is None or (p.gpus > 0) == gpu]


def _snapshot_row(row: dict[str, Any], sources: dict[str, str]) -> dict[str, Any]:
    rec = dict(row)
    for key in ("on_demand_source", "spot_source"):
        rec[key] = sources.get(rec.get(key), rec.get(key))
    if rec.get("spot") is None and rec.get("spot_discount_assumed") is not None:
        disc = rec["spot_discount_assumed"]
        if not isinstance(disc, (int, float)) or not 0 <= disc < 1:
            raise ValueError(f"snapshot {row.get('instance_type')}: spot_discount_assumed must be in [0, 1), got {disc!r}")
        if rec.get("on_demand") is None:
            raise ValueError(f"snapshot {row.get('instance_type')}: a Spot estimate needs an On-Demand price")
        rec["spot"] = round(rec["on_demand"] * (1 - disc), 4)
        rec["spot_source"] = f"{rec['spot_source']} [this row: {disc:.0%} off On-Demand]"
    return rec


def load_snapshot(path: Path | None = None) -> PriceTable:
    """Read and validate the shipped snapshot (or another file of the same format)."""
    path = Path(path or SNAPSHOT)
    if not path.exists():
        raise FileNotFoundError(f"price snapshot {path} does not exist")
    data = json.loads(path.read_text(encoding="utf-8"))
    if data.get("format") != "hpcml-prices/1":
        raise ValueError(f"{path}: format must be 'hpcml-prices/1', got {data.get('format')!r}")
    sources = data.get("sources", {})
    instances: dict[str, InstancePrice] = {}
    for i, row in enumerate(data.get("instances", [])):
        rec = make_record(_snapshot_row(row, sources), where=f"{path.name} instances[{i}]")
        instances[rec.instance_type] = rec
    storage = {}
    for s in data.get("storage", []):
        _num(s, "usd_per_gb_month", f"{path.name} storage {s.get('tier')}")
        storage[s["tier"]] = {**s, "source": sources.get(s.get("source"), s.get("source"))}
    sections = {name: _section(data, name, sources, path.name) for name in _SECTIONS}
    return PriceTable(instances, storage, data["compiled"], sources, origin="snapshot", **sections)


#: The snapshot's priced sections beside instances and storage, and the numbers each must hold.
_SECTIONS = {
    "savings_plans": ("discount_assumed",),
    "capacity_blocks": ("day_hours", "max_days_in_1_day_steps", "week_step_days", "max_days"),
    "load_balancer": ("usd_per_hour", "usd_per_lcu_hour", "inter_az_to_targets_usd_per_gb"),
    "data_transfer": ("inter_az_usd_per_gb_each_direction", "internet_egress_usd_per_gb",
                      "internet_egress_free_gb_per_month", "ingress_usd_per_gb"),
}


def _section(data: dict, name: str, sources: dict[str, str], where: str) -> dict[str, Any]:
    """One priced section, validated: a known source, non-negative numbers (discounts in [0, 1))."""
    sec = dict(data.get(name) or {})
    if not sec:
        raise ValueError(f"{where}: section {name!r} is missing")
    if sec.get("source") not in sources:
        raise ValueError(f"{where}: {name}.source must name one of the sources, got {sec.get('source')!r}")
    sec["source"] = sources[sec["source"]]
    for key in _SECTIONS[name]:
        if key == "discount_assumed":
            for plan in SAVINGS_PLANS:
                d = sec[key].get(plan)
                if isinstance(d, bool) or not isinstance(d, (int, float)) or not 0 <= d < 1:
                    raise ValueError(f"{where}: {name}.{key}.{plan} must be a discount in [0, 1), got {d!r}")
        else:
            _num(sec, key, f"{where} {name}")
    for r in sec.get("rates", []):
        _num(r, "usd_per_instance_hour", f"{where} {name} {r.get('instance_type')}")
    for key, val in sec.get("lcu", {}).items():
        _num(sec["lcu"], key, f"{where} {name}.lcu")
    return sec


# ---- live refresh (sent by hpcml.cost.price_refresh): request builders and response parsers ----

def get_products_request(instance_type: str, region: str = REGION) -> dict[str, Any]:
    """The ``pricing.get_products`` request for one Linux, shared-tenancy On-Demand type."""
    if region not in LOCATIONS:
        raise ValueError(f"region {region!r} has no Price List location name here (known: {', '.join(LOCATIONS)})")
    filters = {"instanceType": instance_type, "location": LOCATIONS[region], "operatingSystem": "Linux",
               "tenancy": "Shared", "preInstalledSw": "NA", "capacitystatus": "Used"}
    return {"ServiceCode": "AmazonEC2", "FormatVersion": "aws_v1", "MaxResults": 10,
            "Filters": [{"Type": "TERM_MATCH", "Field": k, "Value": v} for k, v in filters.items()]}


def spot_history_request(instance_types: Iterable[str], start: datetime) -> dict[str, Any]:
    """The ``ec2.describe_spot_price_history`` request for Linux prices since ``start``."""
    return {"InstanceTypes": sorted(instance_types), "ProductDescriptions": ["Linux/UNIX"],
            "StartTime": start, "MaxResults": 1000}


def _gib(text: str) -> float:
    m = re.match(r"([\d.,]+)\s*(GiB|GB|TiB)?", str(text))
    if not m:
        raise ValueError(f"cannot read a memory size from {text!r}")
    val = float(m.group(1).replace(",", ""))
    return val * 1024 if m.group(2) == "TiB" else val


def _network(text: str) -> tuple[float, bool]:
    m = re.search(r"([\d.]+)\s*Gigabit", str(text))
    if not m:
        raise ValueError(f"cannot read a network bandwidth from {text!r}")
    return float(m.group(1)), "up to" in str(text).lower()


def parse_price_list(price_list: list[str | dict]) -> dict[str, dict[str, Any]]:
    """Normalised records from a ``GetProducts`` ``PriceList`` (JSON strings, as the API returns).

    Keeps Linux, shared-tenancy, used-capacity products with an hourly On-Demand price.
    """
    out: dict[str, dict[str, Any]] = {}
    for i, item in enumerate(price_list):
        doc = json.loads(item) if isinstance(item, str) else item
        attrs = doc.get("product", {}).get("attributes", {})
        itype = attrs.get("instanceType")
        if not itype or attrs.get("operatingSystem", "Linux") != "Linux" or attrs.get("tenancy", "Shared") != "Shared":
            continue
        usd, effective = None, None
        for term in doc.get("terms", {}).get("OnDemand", {}).values():
            for dim in term.get("priceDimensions", {}).values():
                if dim.get("unit") == "Hrs" and "USD" in dim.get("pricePerUnit", {}):
                    usd, effective = float(dim["pricePerUnit"]["USD"]), term.get("effectiveDate", "")
        if usd is None:
            raise ValueError(f"PriceList[{i}] {itype}: no hourly USD On-Demand price dimension")
        gbps, up_to = _network(attrs.get("networkPerformance", ""))
        gpus = int(attrs.get("gpu", "0") or 0)
        out[itype] = {
            "instance_type": itype, "vcpu": int(attrs["vcpu"]), "memory_gib": _gib(attrs["memory"]),
            "gpus": gpus, "gpu_memory_gib": _gib(attrs["gpuMemory"]) / max(gpus, 1) if attrs.get("gpuMemory") not in (None, "NA") else 0.0,
            "network_gbps": gbps, "network_up_to": up_to, "region": attrs.get("regionCode", ""),
            "on_demand": usd, "on_demand_estimate": False,
            "on_demand_source": f"AWS Price List API GetProducts, effective {effective[:10]}",
        }
    return out


def parse_spot_history(history: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Typical Spot price per type: the median over AZs of each AZ's latest price."""
    latest: dict[tuple[str, str], tuple[Any, float]] = {}
    for i, h in enumerate(history):
        try:
            key, ts, price = (h["InstanceType"], h["AvailabilityZone"]), h["Timestamp"], float(h["SpotPrice"])
        except (KeyError, ValueError) as exc:
            raise ValueError(f"SpotPriceHistory[{i}] is malformed ({exc}): {h}") from None
        if price < 0:
            raise ValueError(f"SpotPriceHistory[{i}] {key[0]}: negative SpotPrice {price}")
        if key not in latest or ts > latest[key][0]:
            latest[key] = (ts, price)
    by_type: dict[str, list[tuple[str, float]]] = {}
    for (itype, az), (_, price) in latest.items():
        by_type.setdefault(itype, []).append((az, price))
    return {t: {"spot": statistics.median(p for _, p in v), "spot_estimate": False,
                "spot_source": f"EC2 DescribeSpotPriceHistory, median of latest over {len(v)} AZ(s)"}
            for t, v in by_type.items()}


def merge(table: PriceTable, on_demand: dict[str, dict], spot: dict[str, dict], origin: str) -> PriceTable:
    """A new table: API answers override the snapshot fields they carry (same validation)."""
    rows: dict[str, InstancePrice] = {}
    for itype, old in table.instances.items():
        rec = {**old.__dict__, **on_demand.get(itype, {}), **spot.get(itype, {})}
        rec["region"] = rec.get("region") or old.region
        rows[itype] = make_record(rec, where=origin)
    for itype, rec in on_demand.items():
        if itype not in rows:
            rows[itype] = make_record({"gpu_type": None, "efa": False, "spot": None,
                                       "spot_source": "not asked", **rec, **spot.get(itype, {})}, where=origin)
    return replace(table, instances=rows, origin=origin,
                   compiled=datetime.now(timezone.utc).strftime("%Y-%m-%d"))
