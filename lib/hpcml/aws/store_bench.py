"""Throughput through the object store against the local disk: shards and checkpoints.

:func:`shard_rates` uploads a dataset's shards to the store (as the role that publishes them)
and downloads them back, and copies the same files to and from a local folder (written with
fsync, as the store's volume files are not); :func:`checkpoint_rates` times one checkpoint
file written to the bucket against an atomic local write. Both run on this machine's loopback
and disk, so they measure the store's software path, not a network: a cloud bucket's numbers
differ (``python -m hpcml.aws.store_bench`` reproduces these).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

from hpcml import paths
from hpcml.aws.s3errors import s3_call
from hpcml.data import staging


def _files(root: Path) -> list[Path]:
    return sorted(p for p in Path(root).rglob("*") if p.is_file())


def _copy_fsync(src: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    with open(src, "rb") as fi, open(dest, "wb") as fo:
        shutil.copyfileobj(fi, fo, 1 << 20)
        fo.flush()
        os.fsync(fo.fileno())


def shard_rates(client, bucket: str, prefix: str, dataset_dir: Path) -> dict[str, float]:
    """Upload and download MB/s of ``dataset_dir``'s files through the store and on local disk.

    Args:
        client: a client of a role that may write and read ``prefix`` (the Spark role for processed/).
        bucket: the data bucket.
        prefix: where the timing copy goes (e.g. ``processed/_bench``); removed afterwards.
        dataset_dir: the published dataset (its shards).

    Returns:
        ``{"bytes", "store_upload_mb_per_s", "store_download_mb_per_s", "local_write_mb_per_s",
        "local_read_mb_per_s"}``.
    """
    files = _files(dataset_dir)
    nbytes = sum(f.stat().st_size for f in files)
    if not nbytes:
        raise FileNotFoundError(f"no bytes to time under {dataset_dir}")
    keys = [f"{prefix.strip('/')}/{f.relative_to(dataset_dir).as_posix()}" for f in files]
    with tempfile.TemporaryDirectory(dir=paths.ensure(paths.build_dir() / "tmp")) as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        for f, k in zip(files, keys):
            with s3_call("PutObject", bucket, k, client):
                client.upload_file(str(f), bucket, k)
        up = time.perf_counter() - t0
        t0 = time.perf_counter()
        for k in keys:
            with s3_call("GetObject", bucket, k, client):
                client.download_file(bucket, k, str(tmp / "dl"))
        down = time.perf_counter() - t0
        t0 = time.perf_counter()
        for i, f in enumerate(files):
            _copy_fsync(f, tmp / "local" / str(i))
        lw = time.perf_counter() - t0
        t0 = time.perf_counter()
        for i in range(len(files)):
            (tmp / "local" / str(i)).read_bytes()  # page cache, as the store's reads may be
        lr = time.perf_counter() - t0
    staging.delete_keys(client, bucket, keys)
    mb = nbytes / 1e6
    return {"bytes": nbytes, "store_upload_mb_per_s": mb / up, "store_download_mb_per_s": mb / down,
            "local_write_mb_per_s": mb / lw, "local_read_mb_per_s": mb / lr}


def checkpoint_rates(client, bucket: str, prefix: str, ckpt_file: Path, repeats: int = 3) -> dict[str, float]:
    """Seconds to write ``ckpt_file`` to the bucket against an atomic local write (fsync + rename).

    Returns:
        ``{"bytes", "bucket_write_s", "local_write_s", "bucket_mb_per_s", "local_mb_per_s"}``:
        the medians of ``repeats`` writes each.
    """
    data = Path(ckpt_file).read_bytes()
    key = f"{prefix.strip('/')}/_bench-{Path(ckpt_file).name}"
    bt, lt = [], []
    with tempfile.TemporaryDirectory(dir=paths.ensure(paths.build_dir() / "tmp")) as tmp:
        for _ in range(repeats):
            t0 = time.perf_counter()
            with s3_call("PutObject", bucket, key, client):
                client.upload_file(str(ckpt_file), bucket, key)
            bt.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            paths.atomic_write_bytes(Path(tmp) / "ckpt.pt", data)
            lt.append(time.perf_counter() - t0)
    with s3_call("DeleteObject", bucket, key, client):
        client.delete_object(Bucket=bucket, Key=key)
    b, lo = sorted(bt)[len(bt) // 2], sorted(lt)[len(lt) // 2]
    return {"bytes": len(data), "bucket_write_s": b, "local_write_s": lo,
            "bucket_mb_per_s": len(data) / 1e6 / b, "local_mb_per_s": len(data) / 1e6 / lo}


def main() -> int:
    """Time the published dataset and a 02 checkpoint through the running (or a new) store."""
    from hpcml.aws.local_s3 import ObjectStore
    from hpcml.train import checkpoint as ck

    store = ObjectStore.start()
    print("shards:", shard_rates(store.client("spark"), store.bucket, "processed/_bench", paths.dataset_dir()))
    runs = sorted(paths.build_dir().glob("runs/*/checkpoints"))
    ckpt = next((ck.latest_checkpoint(r) for r in runs if ck.latest_checkpoint(r)), None)
    if ckpt is not None:
        print("checkpoint:", checkpoint_rates(store.client("trainer"), store.bucket, "checkpoints", ckpt))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
