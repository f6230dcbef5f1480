"""The live price refresh (hpcml.cost.price_refresh): recorded AWS answers through the same validation."""

import json
from datetime import datetime
from pathlib import Path

import pytest

from hpcml.aws import send as aws_send
from hpcml.cost import price_refresh, prices

pytestmark = pytest.mark.unit

FIX = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="module")
def table():
    return prices.load_snapshot()


def test_refresh_live_goes_through_the_same_validation(table):
    """Real botocore clients answered from the recorded responses (Stubber checks requests too)."""
    import boto3
    from botocore.stub import ANY, Stubber

    kw = dict(aws_access_key_id="x", aws_secret_access_key="x")
    pricing = boto3.client("pricing", region_name="us-east-1", **kw)
    ec2 = boto3.client("ec2", region_name="us-east-1", **kw)
    pl = json.loads((FIX / "pricing_get_products.json").read_text())
    hist = json.loads((FIX / "ec2_describe_spot_price_history.json").read_text())
    for h in hist["SpotPriceHistory"]:
        h["Timestamp"] = datetime.fromisoformat(h["Timestamp"])
    with Stubber(pricing) as sp, Stubber(ec2) as se:
        for itype in ("c6i.xlarge", "p3.2xlarge"):
            sp.add_response("get_products", {"FormatVersion": "aws_v1", "PriceList": [
                s for s in pl["PriceList"] if f'"{itype}"' in s]}, prices.get_products_request(itype))
        se.add_response("describe_spot_price_history", {"SpotPriceHistory": hist["SpotPriceHistory"]},
                        {"InstanceTypes": ["c6i.xlarge", "p3.2xlarge"], "ProductDescriptions": ["Linux/UNIX"],
                         "StartTime": ANY, "MaxResults": 1000})
        live = price_refresh.refresh_live(table, ["p3.2xlarge", "c6i.xlarge"], pricing_client=pricing, ec2_client=ec2)
    p = live.get("p3.2xlarge")
    assert live.origin == "live us-east-1"
    assert p.spot == pytest.approx(0.9792) and not p.spot_estimate and "DescribeSpotPriceHistory" in p.spot_source
    assert p.gpu_type == "V100"  # kept from the snapshot: the Price List has no GPU model field
    assert live.get("g5.xlarge") == table.get("g5.xlarge")  # not asked: unchanged


def test_refresh_live_without_credentials_says_so(monkeypatch, table):
    monkeypatch.setattr(aws_send, "has_credentials", lambda: False)
    with pytest.raises(RuntimeError, match="needs AWS credentials"):
        price_refresh.refresh_live(table, ["p3.2xlarge"])
