"""S3 staging of the raw lake with boto3: upload the raw files, download them back.

Against Amazon S3 when credentials are configured and no endpoint is given, otherwise
against the local object store (:class:`hpcml.aws.local_s3.ObjectStore`, SeaweedFS on
loopback, one identity per role). :func:`publish_dataset` uploads the shards first and the
manifest last; :func:`abort_stale_uploads` clears multipart uploads a crash left behind. The job itself reads local files: on a cluster the same code downloads the
raw prefix to the node's local disk (NVMe) first — no s3a connector needed here.

Lake layout (one bucket per account)::

    s3://hpcml-data-<account>/raw/mnist/part-00000.csv …        landed as-is (bronze)
    s3://hpcml-data-<account>/processed/mnist/{train,val,test}/  Parquet shards (gold)
    s3://hpcml-data-<account>/processed/mnist/_quarantine/       rejected rows with reason
    s3://hpcml-data-<account>/processed/mnist/_manifest.json     uploaded last

The Spark role reads ``raw/`` and writes ``processed/`` only (:mod:`hpcml.k8s.iam`), so the
job's whole output, quarantine included, sits under ``processed/``.

The requests are exactly those the rendered policies allow (``tests/test_s3_policy_coherence.py``
records them against moto's server and evaluates each one; ``tests/test_object_store.py`` has
the SeaweedFS store refuse the rest): listing is always prefix-scoped
(``s3:ListBucket`` is granted under an ``s3:prefix`` condition, so no ``HeadBucket``), and every
write carries ``ServerSideEncryption=aws:kms`` with the project's data key (the bucket policy
denies any other ``PutObject``; the roles may use that key only) — except on the SeaweedFS
store, which has no KMS (:func:`write_args`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

from hpcml.aws.s3errors import StoreError, s3_call
from hpcml.data.spec import MANIFEST


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/prefix`` -> (bucket, prefix without a leading slash).

    Raises:
        ValueError: not an ``s3://`` URI or no bucket.
    """
    if not uri.startswith("s3://") or len(uri) <= 5 or uri[5] == "/":
        raise ValueError(f"expected an S3 URI like s3://bucket/prefix, got {uri!r}")
    bucket, _, prefix = uri[5:].partition("/")
    return bucket, prefix


def sse_kms_args(kms_key_id: str | None = None) -> dict[str, str]:
    """The SSE-KMS request parameters every write to the data bucket carries.

    The bucket policy denies a ``PutObject`` without ``x-amz-server-side-encryption: aws:kms``
    and the roles may use only the project's data key (:mod:`hpcml.k8s.iam`), so the key is
    named explicitly: ``kms_key_id`` or, by default, :attr:`hpcml.k8s.iam.IamSpec.key_arn` —
    the one ARN the rendered policies grant.
    """
    if kms_key_id is None:
        from hpcml.k8s.iam import IamSpec

        kms_key_id = IamSpec().key_arn
    if not kms_key_id or not kms_key_id.startswith(("arn:aws:kms:", "alias/")):
        raise ValueError(f"kms_key_id: expected a KMS key ARN (arn:aws:kms:...) or alias/..., got {kms_key_id!r}")
    return {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": kms_key_id}


def _is_aws(client) -> bool:
    host = client.meta.endpoint_url.split("://", 1)[-1].split("/", 1)[0]
    return host.endswith(".amazonaws.com") or host.endswith(".amazonaws.com.cn")


def _ensure_bucket(client, bucket: str, prefix: str) -> None:
    """Create ``bucket`` on a local endpoint when it is missing; on AWS it must exist already.

    The check is a prefix-scoped ``ListObjectsV2`` (what the roles' ``s3:ListBucket`` grant
    allows, under an ``s3:prefix`` condition), not ``HeadBucket`` (which needs an unscoped
    ``s3:ListBucket``). No role may create buckets, so on AWS a missing bucket is an error.
    """
    folder = f"{prefix.rstrip('/')}/" if prefix.strip("/") else ""
    try:
        with s3_call("ListObjectsV2", bucket, folder, client):
            client.list_objects_v2(Bucket=bucket, Prefix=folder, MaxKeys=1)
    except StoreError as e:
        if e.code != "NoSuchBucket":
            raise
        if _is_aws(client) or getattr(client, "_hpcml_no_kms", False):
            raise FileNotFoundError(f"bucket {bucket!r} does not exist (it is provisioned with the IAM "
                                    "policies or the store; the pipeline roles cannot create it)") from None
        with s3_call("CreateBucket", bucket, "", client):
            client.create_bucket(Bucket=bucket)


def write_args(client, kms_key_id: str | None) -> dict[str, str]:
    """SSE-KMS on AWS (and on moto); none on the local SeaweedFS store, which has no KMS."""
    return {} if getattr(client, "_hpcml_no_kms", False) else sse_kms_args(kms_key_id)


def upload_dir(client, local_dir: Path, uri: str, pattern: str = "*", kms_key_id: str | None = None) -> list[str]:
    """Upload the files of ``local_dir`` matching ``pattern`` (recursively) under ``uri``; the keys written.

    Every upload (single ``PutObject`` or multipart) is SSE-KMS encrypted with the project's
    data key (:func:`sse_kms_args`). Creates the bucket when it does not exist yet on a local
    endpoint (never on AWS).

    Raises:
        FileNotFoundError: no file matches ``pattern``; the bucket is missing on AWS.
        ValueError: ``kms_key_id`` is not a KMS key ARN or alias.
    """
    bucket, prefix = parse_s3_uri(uri)
    extra = write_args(client, kms_key_id)
    local_dir = Path(local_dir)
    files: Iterable[Path] = sorted(p for p in local_dir.rglob(pattern) if p.is_file())
    if not files:
        raise FileNotFoundError(f"no files matching {pattern!r} under {local_dir} to upload")
    _ensure_bucket(client, bucket, prefix)
    keys = []
    for f in files:
        key = f"{prefix.rstrip('/')}/{f.relative_to(local_dir).as_posix()}".lstrip("/")
        with s3_call("PutObject", bucket, key, client):
            client.upload_file(str(f), bucket, key, ExtraArgs=dict(extra))
        keys.append(key)
    return keys


def list_keys(client, bucket: str, prefix: str) -> list[str]:
    """Every key in ``bucket`` that starts with ``prefix``, sorted (all pages)."""
    with s3_call("ListObjectsV2", bucket, prefix, client):
        pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        return sorted(o["Key"] for page in pages for o in page.get("Contents", []))


def delete_keys(client, bucket: str, keys: list[str]) -> list[str]:
    """Delete ``keys`` from ``bucket`` one by one (each failure names its key); the keys."""
    for k in keys:
        with s3_call("DeleteObject", bucket, k, client):
            client.delete_object(Bucket=bucket, Key=k)
    return keys


def download_prefix(client, uri: str, local_dir: Path) -> list[Path]:
    """Download every object under ``uri`` into ``local_dir`` (keeping relative paths); the files.

    Raises:
        FileNotFoundError: nothing under that prefix.
    """
    bucket, prefix = parse_s3_uri(uri)
    local_dir = Path(local_dir)
    out = []
    for key in list_keys(client, bucket, prefix):
        rel = key[len(prefix):].lstrip("/") or Path(key).name
        dest = local_dir / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        with s3_call("GetObject", bucket, key, client):
            client.download_file(bucket, key, str(dest))
        out.append(dest)
    if not out:
        raise FileNotFoundError(f"no objects under {uri}")
    return sorted(out)


def publish_dataset(client, dataset_dir: Path, uri: str, kms_key_id: str | None = None) -> list[str]:
    """Publish a built dataset under ``uri``: every shard first, the manifest last.

    A reader that finds the manifest (:func:`dataset_complete`) finds every object it lists;
    a publish cut short (the store or the job killed) leaves no manifest, and re-running the
    publish completes it (uploads are idempotent puts of the same keys).

    Raises:
        FileNotFoundError: ``dataset_dir`` has no manifest (not a complete local dataset).
        StoreError: a request failed (names action, bucket and key).
    """
    dataset_dir = Path(dataset_dir)
    if not (dataset_dir / MANIFEST).is_file():
        raise FileNotFoundError(f"no complete dataset at {dataset_dir} ({MANIFEST} missing): build it first")
    bucket, prefix = parse_s3_uri(uri)
    shards = [p for p in sorted(dataset_dir.rglob("*")) if p.is_file() and p.name != MANIFEST]
    keys = []
    extra = write_args(client, kms_key_id)
    _ensure_bucket(client, bucket, prefix)
    for f in shards:
        key = f"{prefix.rstrip('/')}/{f.relative_to(dataset_dir).as_posix()}".lstrip("/")
        with s3_call("PutObject", bucket, key, client):
            client.upload_file(str(f), bucket, key, ExtraArgs=dict(extra))
        keys.append(key)
    return keys + upload_dir(client, dataset_dir, uri, pattern=MANIFEST, kms_key_id=kms_key_id)


def dataset_complete(client, uri: str) -> bool:
    """True when ``uri`` holds a manifest (published last by :func:`publish_dataset`)."""
    bucket, prefix = parse_s3_uri(uri)
    key = f"{prefix.rstrip('/')}/{MANIFEST}".lstrip("/")
    with s3_call("ListObjectsV2", bucket, key, client):
        got = client.list_objects_v2(Bucket=bucket, Prefix=key, MaxKeys=1).get("Contents", [])
    return any(o["Key"] == key for o in got)


def abort_stale_uploads(client, uri: str) -> list[str]:
    """Abort every incomplete multipart upload under ``uri`` (left by a crash); the keys aborted."""
    bucket, prefix = parse_s3_uri(uri)
    with s3_call("ListMultipartUploads", bucket, prefix, client):
        ups = client.list_multipart_uploads(Bucket=bucket, Prefix=prefix).get("Uploads", [])
    for u in ups:
        with s3_call("AbortMultipartUpload", bucket, u["Key"], client):
            client.abort_multipart_upload(Bucket=bucket, Key=u["Key"], UploadId=u["UploadId"])
    return [u["Key"] for u in ups]
