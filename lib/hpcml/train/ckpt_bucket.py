"""Checkpoints in the bucket: ``checkpoints/<run>/`` mirrors the run's local checkpoint folder.

The local folder (:mod:`hpcml.train.checkpoint`, atomic writes, ``latest.json`` with the
SHA-256) stays the cache; :func:`push` uploads the checkpoint object first and the
``latest.json`` pointer last, then rotates (deletes) objects beyond the last
:data:`~hpcml.train.checkpoint.KEEP`. A crash mid-upload (the store or the trainer killed)
leaves the pointer on the previous, complete checkpoint, so :func:`pull` resumes from the last
good one (its hash is verified on load). An incomplete multipart upload left by the crash
holds no object; :func:`hpcml.data.staging.abort_stale_uploads` removes it.

Workers use it through the environment (:func:`env`): ``HPCML_CKPT_S3=s3://<bucket>/checkpoints/<run>``
with the trainer's credentials in ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` and the
endpoint in ``AWS_ENDPOINT_URL_S3`` (boto3 reads them); unset, nothing is uploaded. A job on
the cluster's nodes reaches the store at the head's bridge address, where the store listens
while the cluster is up (``env(..., nodes=True)`` refuses a loopback endpoint).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from hpcml import paths
from hpcml.aws.s3errors import StoreError, s3_call
from hpcml.aws.account import REGION
from hpcml.data.staging import delete_keys, list_keys, parse_s3_uri, write_args
from hpcml.train import checkpoint as ck

ENV = "HPCML_CKPT_S3"
#: Set to 1 for the local store, which has no KMS (writes then carry no SSE-KMS headers).
NO_KMS_ENV = "HPCML_S3_NO_KMS"
POINTER = "latest.json"


def push(client, uri: str, ckpt_path: Path) -> dict[str, Any]:
    """Upload one local checkpoint and then its pointer; delete the bucket's older ones.

    Args:
        client: boto3 S3 client with the trainer's rights (write and delete ``checkpoints/``).
        uri: ``s3://bucket/checkpoints/<run>``.
        ckpt_path: a checkpoint written by :func:`hpcml.train.checkpoint.save_checkpoint`
            (its folder's ``latest.json`` names it).

    Returns:
        ``{"key", "bytes", "seconds"}``: what was uploaded and how long the upload took.

    Raises:
        StoreError: a request failed (names action, bucket and key).
    """
    bucket, prefix = parse_s3_uri(uri)
    prefix = prefix.rstrip("/")
    ckpt_path = Path(ckpt_path)
    pointer = json.loads((ckpt_path.parent / POINTER).read_text(encoding="utf-8"))
    if pointer["path"] != ckpt_path.name:
        raise ValueError(f"{ckpt_path.parent / POINTER} names {pointer['path']}, not {ckpt_path.name}")
    key = f"{prefix}/{ckpt_path.name}"
    t0 = time.perf_counter()
    extra = write_args(client, None)  # SSE-KMS on AWS; none on the local store (no KMS)
    with s3_call("PutObject", bucket, key, client):
        client.upload_file(str(ckpt_path), bucket, key, ExtraArgs=dict(extra))
    with s3_call("PutObject", bucket, f"{prefix}/{POINTER}", client):  # last: the checkpoint is complete
        client.put_object(Bucket=bucket, Key=f"{prefix}/{POINTER}", Body=json.dumps(pointer).encode(), **extra)
    seconds = time.perf_counter() - t0
    rotate(client, uri)
    return {"key": key, "bytes": ckpt_path.stat().st_size, "seconds": seconds}


def rotate(client, uri: str, keep: int = ck.KEEP) -> list[str]:
    """Delete the bucket's checkpoints beyond the newest ``keep`` (never the one the pointer names); the keys deleted."""
    bucket, prefix = parse_s3_uri(uri)
    prefix = prefix.rstrip("/")
    keys = list_keys(client, bucket, f"{prefix}/ckpt-")
    current = _pointer(client, bucket, prefix)
    return delete_keys(client, bucket, [k for k in keys[:-keep] if current is None or not k.endswith("/" + current["path"])])


def _pointer(client, bucket: str, prefix: str) -> dict | None:
    try:
        with s3_call("GetObject", bucket, f"{prefix}/{POINTER}", client):
            body = client.get_object(Bucket=bucket, Key=f"{prefix}/{POINTER}")["Body"].read()
    except StoreError as e:
        if e.code in ("NoSuchKey", "404"):
            return None
        raise
    return json.loads(body)


def latest(client, uri: str) -> dict | None:
    """The bucket's pointer for ``s3://bucket/checkpoints/<run>`` (``path``, ``step``, SHA-256), or None."""
    bucket, prefix = parse_s3_uri(uri)
    return _pointer(client, bucket, prefix.rstrip("/"))


def clear(client, uri: str) -> list[str]:
    """Delete every object under ``s3://bucket/checkpoints/<run>/`` (a fresh run must not resume an old one); the keys."""
    bucket, prefix = parse_s3_uri(uri)
    return delete_keys(client, bucket, list_keys(client, bucket, prefix.rstrip("/") + "/"))


def pull(client, uri: str, cache_dir: Path) -> Path | None:
    """Download the checkpoint the bucket's pointer names into ``cache_dir`` (with the pointer).

    Returns:
        The local checkpoint path (load it with :func:`hpcml.train.checkpoint.resume_state`,
        which verifies its SHA-256), or None when the bucket has no checkpoint for this run.
    """
    bucket, prefix = parse_s3_uri(uri)
    prefix = prefix.rstrip("/")
    pointer = _pointer(client, bucket, prefix)
    if pointer is None:
        return None
    cache_dir = paths.ensure(Path(cache_dir))
    dest = cache_dir / pointer["path"]
    key = f"{prefix}/{pointer['path']}"
    with s3_call("GetObject", bucket, key, client):
        client.download_file(bucket, key, str(dest))
    paths.atomic_write_text(cache_dir / POINTER, json.dumps(pointer, indent=2))
    return dest


def _env_client():
    import boto3

    client = boto3.client("s3")
    client._hpcml_no_kms = os.environ.get(NO_KMS_ENV) == "1"
    return client


def configured() -> bool:
    """True when ``$HPCML_CKPT_S3`` names where this run's checkpoints go."""
    return bool(os.environ.get(ENV))


def env(store, run: str, role: str = "trainer", nodes: bool = False) -> dict[str, str]:
    """The environment a worker needs to mirror run ``run``'s checkpoints to ``store`` as ``role``.

    Args:
        store: the running :class:`~hpcml.aws.local_s3.ObjectStore`; its endpoint goes in.
        run: the run's folder under ``checkpoints/``.
        role: the identity the worker signs as.
        nodes: the worker runs on the cluster's nodes (an ``sbatch`` job), which reach the
            store only at the head's bridge address, never at 127.0.0.1.

    Raises:
        ValueError: ``nodes`` is set and the store listens on loopback (start it while the
            cluster is up: ``ObjectStore.start()`` then binds the head's address).
        KeyError: ``role`` has no identity on the store.
    """
    if nodes and store.address.startswith("127."):
        raise ValueError(f"the store listens on {store.endpoint}, which the cluster's nodes cannot reach: start it "
                         "with address=<the head's bridge address> (ObjectStore.start() binds it while the "
                         "build tree's cluster is up)")
    if role not in store.credentials:
        raise KeyError(f"no identity {role!r} on the store (known: {', '.join(store.credentials)})")
    ak, sk = store.credentials[role]
    return {ENV: f"s3://{store.bucket}/checkpoints/{run}", "AWS_ACCESS_KEY_ID": ak, "AWS_SECRET_ACCESS_KEY": sk,
            "AWS_ENDPOINT_URL_S3": store.endpoint, "AWS_DEFAULT_REGION": REGION, NO_KMS_ENV: "1"}


def push_from_env(ckpt_path: Path) -> dict[str, Any] | None:
    """:func:`push` to ``$HPCML_CKPT_S3`` when it is set (the worker's hook); None otherwise.

    A failed upload does not stop training (the local checkpoint is written): it returns
    ``{"error": <the StoreError's message>}`` for the worker's event.
    """
    uri = os.environ.get(ENV)
    if not uri:
        return None
    try:
        return push(_env_client(), uri, ckpt_path)
    except StoreError as e:  # the local checkpoint is written: training goes on, the event says what failed
        return {"error": str(e)}


def pull_from_env(cache_dir: Path) -> str:
    """Before a resume: fetch the bucket's latest checkpoint into ``cache_dir`` when ``$HPCML_CKPT_S3``
    is set; returns where the resume reads from (``"bucket"`` or ``"local"``)."""
    uri = os.environ.get(ENV)
    if not uri:
        return "local"
    client = _env_client()
    bucket, prefix = parse_s3_uri(uri)
    remote = _pointer(client, bucket, prefix.rstrip("/"))
    local = Path(cache_dir) / POINTER
    local_step = json.loads(local.read_text(encoding="utf-8"))["step"] if local.exists() else -1
    if remote is None or remote["step"] <= local_step:  # the cache is as new: no download
        return "local"
    pull(client, uri, cache_dir)
    return "bucket"
