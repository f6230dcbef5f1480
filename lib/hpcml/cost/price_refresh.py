"""Refresh the price table from AWS: the Price List API and the Spot price history.

Only with credentials (or clients passed in): the requests are built and the answers parsed
and validated by :mod:`hpcml.cost.prices`, so the refreshed table is the same kind of object
as the shipped snapshot. Without credentials the snapshot stays the source of truth.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Iterable

from hpcml.aws import requests as aws_requests
from hpcml.aws import send as aws_send
from hpcml.aws.account import REGION
from hpcml.cost.prices import (PriceTable, get_products_request, load_snapshot, merge, parse_price_list,
                               parse_spot_history, spot_history_request)


def refresh_live(table: PriceTable | None = None, instance_types: Iterable[str] | None = None,
                 region: str = REGION, pricing_client=None, ec2_client=None) -> PriceTable:
    """Refresh prices from AWS. Needs credentials unless clients are passed in.

    Raises:
        RuntimeError: no AWS credentials (the snapshot stays the source of truth).
    """
    table = table or load_snapshot()
    types = sorted(instance_types or [t for t, p in table.instances.items() if p.region == region])
    if pricing_client is None or ec2_client is None:
        if not aws_send.has_credentials():
            raise RuntimeError("refresh_live needs AWS credentials (pricing:GetProducts, "
                               "ec2:DescribeSpotPriceHistory); using the snapshot instead is the offline path")
        import boto3

        # the Price List API answers from us-east-1 whatever region it prices
        pricing_client = pricing_client or boto3.client("pricing", region_name="us-east-1")
        ec2_client = ec2_client or boto3.client("ec2", region_name=region)
    price_list: list[str] = []
    for itype in types:
        req = aws_requests.validate_request("pricing", "GetProducts", get_products_request(itype, region))
        price_list += pricing_client.get_products(**req).get("PriceList", [])
    req = aws_requests.validate_request("ec2", "DescribeSpotPriceHistory",
                                        spot_history_request(types, datetime.now(timezone.utc) - timedelta(hours=6)))
    history = ec2_client.describe_spot_price_history(**req).get("SpotPriceHistory", [])
    return merge(table, parse_price_list(price_list), parse_spot_history(history), origin=f"live {region}")
