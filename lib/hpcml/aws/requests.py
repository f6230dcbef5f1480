"""AWS requests as data: offline validation of a request body against botocore's own
service model (the shapes boto3 uses).

Pure: nothing here sends a request or opens a socket; :mod:`hpcml.aws.send` sends them.
The placeholder account and region are in :mod:`hpcml.aws.account`.
"""

from __future__ import annotations

from typing import Any


class AWSRequestError(ValueError):
    """A request does not match the service model; the message names the field."""


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
