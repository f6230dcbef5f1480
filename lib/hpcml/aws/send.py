"""Sending AWS requests: validated first against the service model, sent only with credentials.

The live path is one parameter away: :func:`submit` validates the request against the
service model that boto3 itself uses, then sends it only when credentials are configured
(or ``dry_run=False`` is forced); otherwise it returns the validated request.
"""

from __future__ import annotations

import os
from typing import Any

from hpcml.aws.account import REGION
from hpcml.aws.requests import validate_request


def has_credentials() -> bool:
    """True when boto3 can find AWS credentials (env, profile, instance role)."""
    import boto3

    try:
        return boto3.Session().get_credentials() is not None
    except Exception:  # noqa: BLE001
        return False


def submit(service: str, operation: str, params: dict[str, Any], dry_run: bool | None = None,
           region: str | None = None) -> dict[str, Any]:
    """Validate, then send the request when credentials exist (``dry_run=None``) or when forced.

    Returns:
        ``{"sent": False, "service":…, "operation":…, "request": params}`` on a dry run,
        else ``{"sent": True, "response": …}``.
    """
    validate_request(service, operation, params)
    if dry_run is None:
        dry_run = not has_credentials()
    if dry_run:
        return {"sent": False, "service": service, "operation": operation, "request": params}
    import boto3

    method = operation if not operation[:1].isupper() else "".join(
        "_" + c.lower() if c.isupper() else c for c in operation).lstrip("_")
    client = boto3.client(service, region_name=region or os.environ.get("AWS_REGION", REGION))
    return {"sent": True, "response": getattr(client, method)(**params)}


def s3_client(endpoint_url: str | None = None):
    """A boto3 S3 client: AWS when credentials exist and no endpoint is given, else the endpoint."""
    import boto3

    if endpoint_url:
        return boto3.client("s3", endpoint_url=endpoint_url, region_name=REGION,
                            aws_access_key_id="local", aws_secret_access_key="local")
    return boto3.client("s3")
