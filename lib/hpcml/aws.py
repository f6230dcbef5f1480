"""AWS plumbing shared by the stages: request validation against botocore's own service
models (offline), submission only with credentials, and a local S3-compatible endpoint.

The live path is one parameter away: every ``submit`` validates the request against
the service model that boto3 itself uses, then sends it only when credentials are
configured (or ``dry_run=False`` is forced); otherwise it returns the validated request.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Any


class AWSRequestError(ValueError):
    """A request does not match the service model; the message names the field."""


def has_credentials() -> bool:
    """True when boto3 can find AWS credentials (env, profile, instance role)."""
    import boto3

    try:
        return boto3.Session().get_credentials() is not None
    except Exception:  # noqa: BLE001
        return False


def validate_request(service: str, operation: str, params: dict[str, Any]) -> dict[str, Any]:
    """Check ``params`` against ``service.operation``'s input shape; return them unchanged.

    Args:
        service: botocore service name, e.g. ``"emr-containers"``, ``"batch"``, ``"sagemaker"``.
        operation: API operation name, e.g. ``"StartJobRun"`` (PascalCase) or ``"start_job_run"``.
        params: the request, as it would be passed to the boto3 client method.

    Raises:
        AWSRequestError: with botocore's report of every invalid/missing field.
    """
    import botocore.session
    from botocore.exceptions import ParamValidationError
    from botocore.validate import validate_parameters

    model = botocore.session.get_session().get_service_model(service)
    op_name = operation if operation[:1].isupper() else "".join(p.title() for p in operation.split("_"))
    if op_name not in model.operation_names:
        raise AWSRequestError(f"{service} has no operation {operation!r}")
    shape = model.operation_model(op_name).input_shape
    # boto3 fills idempotency tokens (e.g. clientToken) itself before validating; do the same.
    checked = dict(params)
    for member, mshape in shape.members.items():
        if mshape.metadata.get("idempotencyToken") and member not in checked:
            checked[member] = "00000000-0000-0000-0000-000000000000"
    try:
        validate_parameters(checked, shape)
    except ParamValidationError as exc:
        raise AWSRequestError(f"{service}.{op_name} request is invalid: {exc.kwargs.get('report', exc)}") from None
    return params


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
    client = boto3.client(service, region_name=region or os.environ.get("AWS_REGION", "us-east-1"))
    return {"sent": True, "response": getattr(client, method)(**params)}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class LocalS3:
    """A local S3-compatible endpoint (moto's server) on loopback, stopped by pid.

    Example:
        >>> with LocalS3.start() as s3:
        ...     client = s3.client()
    """

    endpoint: str
    proc: subprocess.Popen | None = field(default=None, repr=False)

    @classmethod
    def start(cls, port: int | None = None, timeout: float = 30.0) -> "LocalS3":
        port = port or _free_port()
        proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"local S3 endpoint (moto server) exited with {proc.returncode}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    return cls(f"http://127.0.0.1:{port}", proc)
            except OSError:
                time.sleep(0.2)
        proc.kill()
        raise TimeoutError(f"local S3 endpoint did not listen on 127.0.0.1:{port} within {timeout}s")

    def client(self):
        import boto3

        return boto3.client(
            "s3", endpoint_url=self.endpoint, region_name="us-east-1",
            aws_access_key_id="local", aws_secret_access_key="local",
        )

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __enter__(self) -> "LocalS3":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def s3_client(endpoint_url: str | None = None):
    """A boto3 S3 client: AWS when credentials exist and no endpoint is given, else the endpoint."""
    import boto3

    if endpoint_url:
        return boto3.client("s3", endpoint_url=endpoint_url, region_name="us-east-1",
                            aws_access_key_id="local", aws_secret_access_key="local")
    return boto3.client("s3")
