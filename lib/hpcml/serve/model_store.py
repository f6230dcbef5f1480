"""Models in the bucket: 02 publishes its artifact to ``models/<name>/model.pt``, 04 loads it from there.

The local folder (:func:`hpcml.paths.models_dir`) stays the cache: :func:`fetch_model`
downloads the bucket's copy, as the inference role (which may read ``models/`` only), into
``build/models/bucket/<name>/model.pt`` and says which it used; when the bucket has no copy it
returns the local file and says so.
"""

from __future__ import annotations

from pathlib import Path

from hpcml import paths
from hpcml.aws.s3errors import StoreError, s3_call
from hpcml.data.staging import write_args

PREFIX = "models"


def model_key(name: str) -> str:
    """``models/<name>/model.pt``: where model ``name`` (``cnn``, ``best``) lives in the bucket."""
    if not name or "/" in name:
        raise ValueError(f"model name: expected a folder name such as 'cnn', got {name!r}")
    return f"{PREFIX}/{name}/model.pt"


def publish_model(client, bucket: str, name: str, path: Path) -> str:
    """Upload the ``hpcml-model/1`` artifact at ``path`` as ``models/<name>/model.pt`` (the trainer role); the key."""
    key = model_key(name)
    with s3_call("PutObject", bucket, key, client):
        client.upload_file(str(path), bucket, key, ExtraArgs=write_args(client, None))
    return key


def fetch_model(client, bucket: str, name: str, local: Path | None = None) -> tuple[Path, str]:
    """The model to load and where it came from: ``(path, "bucket" | "local disk")``.

    Args:
        client: the inference role's client.
        bucket: the data bucket.
        name: the model's folder (``cnn``, ``best``).
        local: the local file to fall back on when the bucket has none.

    Raises:
        FileNotFoundError: neither the bucket nor ``local`` has the model.
        StoreError: any other failure (denied, no bucket, no endpoint).
    """
    key = model_key(name)
    dest = paths.ensure(paths.models_dir() / "bucket" / name) / "model.pt"
    try:
        with s3_call("GetObject", bucket, key, client):
            client.download_file(bucket, key, str(dest))
        return dest, "bucket"
    except StoreError as e:
        if e.code not in ("404", "NoSuchKey"):
            raise
    if local is not None and Path(local).exists():
        return Path(local), "local disk"
    raise FileNotFoundError(f"model {name!r}: no s3://{bucket}/{key} and no local copy ({local})")
