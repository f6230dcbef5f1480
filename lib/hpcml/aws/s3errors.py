"""One clear error for a failed S3 request: the action, bucket and key, and what to check.

botocore raises a ``ClientError`` (or a connection error) whose traceback names neither the
key nor the role; :func:`s3_call` turns it into a :class:`StoreError` that does, e.g.::

    StoreError: PutObject s3://hpcml-data-…/checkpoints/x.pt denied (AccessDenied) for
    identity 'spark': its policy does not allow this action on this key
"""

from __future__ import annotations

import re
from contextlib import contextmanager
from typing import Iterator

_HINTS = {
    "AccessDenied": "its policy does not allow this action on this key",
    "SignatureDoesNotMatch": "wrong secret key for this access key",
    "InvalidAccessKeyId": "the access key is not known to this store",
    "NoSuchBucket": "the bucket does not exist (it is provisioned with the store; roles cannot create it)",
    "NoSuchKey": "no object under this key",
    "404": "no object under this key",
    "EndpointConnectionError": "no S3 endpoint answers (is the store running? `python -m hpcml.aws.local_s3 start`)",
    "403": "refused (HEAD requests carry no error code: check the role's rights)",
}


class StoreError(RuntimeError):
    """An S3 request failed; ``code`` is S3's error code (or ``EndpointConnectionError``)."""

    def __init__(self, action: str, bucket: str, key: str, code: str, detail: str, identity: str = ""):
        who = f" for identity {identity!r}" if identity else ""
        super().__init__(f"{action} s3://{bucket}/{key} failed ({code}){who}: {detail}")
        self.action, self.bucket, self.key, self.code, self.identity = action, bucket, key, code, identity


def _identity(client) -> str:
    return getattr(client, "_hpcml_identity", "") if client is not None else ""


@contextmanager
def s3_call(action: str, bucket: str, key: str = "", client=None) -> Iterator[None]:
    """Run an S3 request; a botocore failure becomes one :class:`StoreError` naming it.

    Args:
        action: the S3 operation (``PutObject``, ``GetObject``, ``ListObjectsV2``, ...).
        bucket: the bucket addressed.
        key: the key or prefix addressed.
        client: the boto3 client used (its endpoint and identity go into the message).

    Raises:
        StoreError: the request failed; chained from botocore's exception.
    """
    from botocore.exceptions import ClientError, ConnectTimeoutError, ConnectionClosedError, EndpointConnectionError

    try:
        yield
    except ClientError as exc:
        err = exc.response.get("Error", {})
        code = str(err.get("Code") or exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", "?"))
        detail = _HINTS.get(code, err.get("Message") or str(exc))
        raise StoreError(action, bucket, key, code, detail, _identity(client)) from None
    except (EndpointConnectionError, ConnectionClosedError, ConnectTimeoutError) as exc:  # refused, cut, or silent (an address that is gone)
        endpoint = getattr(getattr(client, "meta", None), "endpoint_url", "?")
        raise StoreError(action, bucket, key, "EndpointConnectionError",
                         f"no S3 endpoint answers at {endpoint} (is the store running? "
                         f"`python -m hpcml.aws.local_s3 start`)", _identity(client)) from None
    except Exception as exc:  # boto3's transfer manager wraps the cause in S3UploadFailedError
        if type(exc).__name__ != "S3UploadFailedError":
            raise
        found = re.search(r"\((\w+)\)", str(exc))
        code = found.group(1) if found else ("EndpointConnectionError" if "connect" in str(exc).lower() else "?")
        raise StoreError(action, bucket, key, code, _HINTS.get(code, str(exc)), _identity(client)) from None
