"""The SageMaker endpoint of the serving stage: send the requests :mod:`hpcml.k8s.serve` renders.

Each request is validated against botocore's service model first; it is sent only when AWS
credentials exist (otherwise the result says it stayed local), see :func:`hpcml.aws.send.submit`.
"""

from __future__ import annotations

from hpcml.aws import send as aws_send
from hpcml.k8s.serve import PRODUCTION_SPEC, sagemaker_requests
from hpcml.serve.spec import ServeSpec


def deploy(spec: ServeSpec | None = None, dry_run: bool | None = None) -> list[dict]:
    """CreateModel, CreateEndpointConfig and CreateEndpoint for ``spec``, in that order.

    Args:
        spec: the serving spec (default :data:`hpcml.k8s.serve.PRODUCTION_SPEC`: the model in the
            data bucket's ``models/`` prefix).
        dry_run: ``True`` validates only; ``None`` sends when credentials exist.

    Returns:
        One :func:`hpcml.aws.send.submit` result per request.
    """
    spec = spec or PRODUCTION_SPEC
    return [aws_send.submit("sagemaker", op, req, dry_run=dry_run, region=spec.region)
            for op, req in sagemaker_requests(spec).items()]
