"""Price snapshot, request builders and the parsers of recorded AWS answers (hpcml.cost.prices)."""

import json
from datetime import datetime
from pathlib import Path

import pytest

from hpcml.aws import requests as aws_requests
from hpcml.cost import prices

pytestmark = pytest.mark.unit

FIX = Path(__file__).parent / "fixtures"
REQUIRED = ["p3.2xlarge", "p3.8xlarge", "p3.16xlarge", "p4d.24xlarge", "p5.48xlarge", "g4dn.xlarge",
            "g4dn.12xlarge", "g5.xlarge", "g5.12xlarge", "hpc6a.48xlarge", "hpc7a.96xlarge"]


@pytest.fixture(scope="module")
def table():
    return prices.load_snapshot()


def test_snapshot_holds_every_candidate_type(table):
    missing = [t for t in REQUIRED if t not in table.instances]
    assert not missing, missing
    assert any(t.startswith("c5.") for t in table.instances) and any(t.startswith("c6i.") for t in table.instances)


def test_every_price_names_a_source_and_estimates_say_so(table):
    data = json.loads(prices.SNAPSHOT.read_text())
    assert data["compiled"] and data["sources"]
    for p in table.instances.values():
        assert p.on_demand is not None and p.on_demand > 0, p.instance_type
        assert len(p.on_demand_source) > 20 and len(p.spot_source) > 20, p.instance_type
        if p.spot_estimate:
            assert "ESTIMATE" in p.spot_source, p.instance_type
        if p.on_demand_estimate:
            assert "ESTIMATE" in p.on_demand_source, p.instance_type


@pytest.mark.parametrize("itype,gpus,gpu_type,efa", [
    ("p3.2xlarge", 1, "V100", False), ("p4d.24xlarge", 8, "A100", True), ("p5.48xlarge", 8, "H100", True),
    ("g4dn.xlarge", 1, "T4", False), ("g5.12xlarge", 4, "A10G", True), ("hpc6a.48xlarge", 0, None, True),
], ids=lambda v: str(v))
def test_shapes(table, itype, gpus, gpu_type, efa):
    p = table.get(itype)
    assert (p.gpus, p.gpu_type, p.efa) == (gpus, gpu_type, efa)


def test_hpc_types_have_no_smt_and_no_spot(table):
    p = table.get("hpc6a.48xlarge")
    assert p.physical_cores == p.vcpu and p.region == "us-east-2"
    with pytest.raises(prices.MissingPriceError, match="no spot price for hpc6a.48xlarge"):
        p.price("spot")


def test_unknown_type_names_it_and_lists_known(table):
    with pytest.raises(prices.UnknownInstanceError, match="unknown instance type 'p9.huge'.*p3.2xlarge"):
        table.get("p9.huge")


def test_unknown_market(table):
    with pytest.raises(ValueError, match="market must be one of"):
        table.get("p3.2xlarge").price("reserved")


@pytest.mark.parametrize("field,value,msg", [
    ("on_demand", -1.0, "'on_demand' must not be negative"),
    ("vcpu", "eight", "'vcpu' must be a finite number"),
    ("instance_type", "P3 2XL", "instance_type must look like"),
    ("on_demand_source", "", "'on_demand_source' is required"),
], ids=["negative-price", "bad-vcpu", "bad-type", "no-source"])
def test_bad_records_are_rejected(table, field, value, msg):
    rec = {**table.get("p3.2xlarge").__dict__, field: value}
    with pytest.raises(ValueError, match=msg):
        prices.make_record(rec)


def test_bad_snapshot_file(tmp_path):
    bad = json.loads(prices.SNAPSHOT.read_text())
    bad["instances"][0]["on_demand"] = -3
    path = tmp_path / "p.json"
    path.write_text(json.dumps(bad))
    with pytest.raises(ValueError, match=r"instances\[0\] p3.2xlarge: field 'on_demand' must not be negative"):
        prices.load_snapshot(path)
    with pytest.raises(FileNotFoundError):
        prices.load_snapshot(tmp_path / "missing.json")


def test_requests_match_botocore_models():
    aws_requests.validate_request("pricing", "GetProducts", prices.get_products_request("p3.2xlarge", "us-east-1"))
    aws_requests.validate_request("ec2", "DescribeSpotPriceHistory",
                         prices.spot_history_request(["p3.2xlarge"], datetime(2026, 11, 29)))
    with pytest.raises(ValueError, match="region 'mars-1'"):
        prices.get_products_request("p3.2xlarge", "mars-1")


def test_parse_recorded_price_list():
    resp = json.loads((FIX / "pricing_get_products.json").read_text())
    assert all(isinstance(s, str) for s in resp["PriceList"])  # the API returns JSON strings
    recs = prices.parse_price_list(resp["PriceList"])
    assert recs["p3.2xlarge"]["on_demand"] == 3.06 and recs["p3.2xlarge"]["vcpu"] == 8
    assert recs["p3.2xlarge"]["network_gbps"] == 10 and recs["p3.2xlarge"]["network_up_to"]
    assert recs["c6i.xlarge"]["on_demand"] == 0.17 and recs["c6i.xlarge"]["gpus"] == 0
    assert "2026-11-01" in recs["p3.2xlarge"]["on_demand_source"]


def test_parse_recorded_spot_history_takes_latest_per_az_then_median():
    resp = json.loads((FIX / "ec2_describe_spot_price_history.json").read_text())
    spot = prices.parse_spot_history(resp["SpotPriceHistory"])
    # p3.2xlarge latest per AZ: 1a 0.9792 (not the older 1.1047), 1b 0.918, 1d 1.2874 -> median 0.9792
    assert spot["p3.2xlarge"]["spot"] == pytest.approx(0.9792)
    assert spot["c6i.xlarge"]["spot"] == pytest.approx((0.0712 + 0.0669) / 2)
    with pytest.raises(ValueError, match="negative SpotPrice"):
        prices.parse_spot_history([{**resp["SpotPriceHistory"][0], "SpotPrice": "-1"}])


# ---- commitments, Capacity Blocks, the load balancer and data transfer ---------------------------

def test_priced_sections_are_sourced_and_dated(table):
    data = json.loads(prices.SNAPSHOT.read_text())
    for name in ("savings_plans", "capacity_blocks", "load_balancer", "data_transfer"):
        sec = getattr(table, name)
        assert sec and sec["source"] == data["sources"][data[name]["source"]], name
        assert len(sec["source"]) > 60, name
    assert "ESTIMATE" in table.savings_plans["source"]
    assert "January 1, 2025" in table.capacity_blocks["source"]  # the page's own date is carried
    assert "2025" in data["sources"]["aws-gpu-price-cut-2025"] and "45 %" in data["sources"]["aws-gpu-price-cut-2025"]


@pytest.mark.parametrize("plan,disc", [("compute_1yr", 0.25), ("compute_3yr", 0.45), ("instance_1yr", 0.30),
                                       ("instance_3yr", 0.50)])
def test_savings_plan_rates_for_gpu_types(table, plan, disc):
    for t in table.types(gpu=True):
        assert table.savings_plan_rate(t, plan) == pytest.approx(table.get(t).on_demand * (1 - disc), abs=1e-4)


def test_savings_plan_rate_refusals(table):
    with pytest.raises(prices.MissingPriceError, match="c6i.xlarge"):
        table.savings_plan_rate("c6i.xlarge", "compute_1yr")
    with pytest.raises(ValueError, match="plan must be one of"):
        table.savings_plan_rate("p5.48xlarge", "reserved_5yr")


def test_capacity_blocks_only_for_p4d_and_p5(table):
    assert table.capacity_block_rate("p5.48xlarge") == 39.33 and table.capacity_block_rate("p4d.24xlarge") == 14.75
    assert table.capacity_block_rate("p3.16xlarge") is None


@pytest.mark.parametrize("section,key,value,msg", [
    ("load_balancer", "usd_per_hour", -1, "load_balancer: field 'usd_per_hour' must not be negative"),
    ("data_transfer", "source", "nowhere", "data_transfer.source must name one of the sources"),
    ("savings_plans", "discount_assumed", {"compute_1yr": 1.2}, "savings_plans.discount_assumed.compute_1yr"),
], ids=["negative", "unsourced", "bad-discount"])
def test_bad_sections_are_rejected(tmp_path, section, key, value, msg):
    bad = json.loads(prices.SNAPSHOT.read_text())
    bad[section][key] = value
    path = tmp_path / "p.json"
    path.write_text(json.dumps(bad))
    with pytest.raises(ValueError, match=msg):
        prices.load_snapshot(path)
