"""S3 staging of the raw lake with boto3: upload the raw files, download them back.

Against Amazon S3 when credentials are configured and no endpoint is given, otherwise
against a local S3-compatible endpoint (:class:`hpcml.aws.local_s3.LocalS3`, moto's server on
loopback). The job itself reads local files: on a cluster the same code downloads the
raw prefix to the node's local disk (NVMe) first — no s3a connector needed here.

Lake layout (one bucket per account)::

    s3://hpcml-data-<account>/raw/mnist/part-00000.csv …        landed as-is (bronze)
    s3://hpcml-data-<account>/processed/mnist/{train,val,test}/  Parquet shards (gold)
    s3://hpcml-data-<account>/processed/mnist/_quarantine/       rejected rows with reason
    s3://hpcml-data-<account>/processed/mnist/_manifest.json     uploaded last

The Spark role reads ``raw/`` and writes ``processed/`` only (:mod:`hpcml.k8s.iam`), so the
job's whole output, quarantine included, sits under ``processed/``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/prefix`` -> (bucket, prefix without a leading slash).

    Raises:
        ValueError: not an ``s3://`` URI or no bucket.
    """
    if not uri.startswith("s3://") or len(uri) <= 5 or uri[5] == "/":
        raise ValueError(f"expected an S3 URI like s3://bucket/prefix, got {uri!r}")
    bucket, _, prefix = uri[5:].partition("/")
    return bucket, prefix


def upload_dir(client, local_dir: Path, uri: str, pattern: str = "*") -> list[str]:
    """Upload the files of ``local_dir`` matching ``pattern`` (recursively) under ``uri``; the keys written.

    Creates the bucket when it does not exist yet (local endpoint).
    """
    bucket, prefix = parse_s3_uri(uri)
    try:
        client.head_bucket(Bucket=bucket)
    except client.exceptions.ClientError:
        client.create_bucket(Bucket=bucket)
    keys = []
    local_dir = Path(local_dir)
    files: Iterable[Path] = sorted(p for p in local_dir.rglob(pattern) if p.is_file())
    for f in files:
        key = f"{prefix.rstrip('/')}/{f.relative_to(local_dir).as_posix()}".lstrip("/")
        client.upload_file(str(f), bucket, key)
        keys.append(key)
    if not keys:
        raise FileNotFoundError(f"no files matching {pattern!r} under {local_dir} to upload")
    return keys


def download_prefix(client, uri: str, local_dir: Path) -> list[Path]:
    """Download every object under ``uri`` into ``local_dir`` (keeping relative paths); the files.

    Raises:
        FileNotFoundError: nothing under that prefix.
    """
    bucket, prefix = parse_s3_uri(uri)
    local_dir = Path(local_dir)
    out = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            rel = obj["Key"][len(prefix):].lstrip("/") or Path(obj["Key"]).name
            dest = local_dir / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            client.download_file(bucket, obj["Key"], str(dest))
            out.append(dest)
    if not out:
        raise FileNotFoundError(f"no objects under {uri}")
    return sorted(out)
