"""The preprocessing job's entry point: :func:`run_job` runs the Spark transforms
(:mod:`hpcml.data.transforms`) on the raw files and publishes the dataset atomically.

Layout of a published dataset folder (the contract every training worker reads, through
:mod:`hpcml.data.dataset`)::

    <dataset>/_manifest.json              written last inside the temp folder
    <dataset>/{train,val,test}/shard-00000.parquet … shard-{N-1}
    <dataset>/_quarantine/part-*.parquet  rejected rows: reason, source_file, raw

Publishing: everything is written under ``.<name>.tmp-<id>`` next to the target, checked
(one file per shard, row counts add up), then swapped in with two renames (old -> aside,
new -> target) and the old copy removed. A job that dies before the swap leaves the
previous good dataset untouched; a folder without ``_manifest.json`` is never read.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np

from hpcml import paths
from hpcml.data import transforms
from hpcml.data.raw import N_PIXELS, REASONS
from hpcml.data.spec import FORMAT, MANIFEST, SPLITS


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


def _lock(target: Path) -> AbstractContextManager[None]:
    return paths.file_lock(target.parent / f".{target.name}.lock")


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


@contextmanager
def sized_shuffle(spark, files: Sequence[Path]) -> Iterator[int]:
    """Run the block with ``spark.sql.shuffle.partitions`` sized to the input, and yield that count.

    The count is :func:`hpcml.data.transforms.shuffle_partitions` of the files' bytes and the
    session's default parallelism. Every exchange Spark plans inside the block to satisfy an
    operator (``ENSURE_REQUIREMENTS``: the de-duplication ``groupBy``, the shard window) gets
    it; a ``repartition(n, …)`` keeps its own ``n``. A DataFrame is planned once, at its first
    action or ``explain()``, so one planned inside the block keeps the count afterwards, and a
    ``persist()`` inside the block fixes the cached plan's count. :func:`run_job` runs inside
    it; notebook 01 explains its plans inside it, so they show the job's count. The session's
    own value is put back afterwards.
    """
    partitions = transforms.shuffle_partitions(transforms.file_bytes(files), spark.sparkContext.defaultParallelism)
    with _sql_conf(spark, {"spark.sql.shuffle.partitions": str(partitions)}):
        yield partitions


def _empty_shard(path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    # the Arrow type pyarrow reads back from Spark's shards (transforms.PARQUET_WRITE_CONF's layout)
    pixels = pa.list_(pa.field("array", pa.float32(), nullable=False))
    schema = pa.schema([("label", pa.int32()), ("pixels", pixels)])
    pq.write_table(schema.empty_table(), path)


def _collect_shards(spark_out: Path, tmp: Path, n_shards: int) -> None:
    """Move Spark's ``split=S/shard=K/part-*.parquet`` to ``S/shard-0000K.parquet`` (one file each)."""
    for split in SPLITS:
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
    for split in SPLITS:
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
    labels: dict[str, dict[str, int]] = {sp: {} for sp in SPLITS}
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
        The manifest (also written to ``out_dir/_manifest.json``), plus ``"seconds"`` per stage
        and ``"shuffle_partitions"``, the count :func:`sized_shuffle` gave the job.

    Raises:
        DataInputError: bad inputs or arguments (missing/unreadable file, schema mismatch, n_shards < 1).
    """
    from hpcml.data.spark import get_session

    hook = hook or (lambda stage: None)
    out_dir = Path(out_dir)
    spark = spark or get_session()
    plan = transforms.build_plan(spark, inputs, n_shards, val_frac, test_frac, seed)
    times: dict[str, float] = {}
    # shuffle partitions sized to this job's input, for this job only
    with _lock(out_dir), sized_shuffle(spark, plan["files"]) as partitions:
        for stale in out_dir.parent.glob(f".{out_dir.name}.tmp-*"):
            shutil.rmtree(stale, ignore_errors=True)
        tmp = out_dir.parent / f".{out_dir.name}.tmp-{uuid.uuid4().hex[:12]}"
        # The sources' SHA-256 is read in a thread while Spark works: at 10M rows the 18 GB of
        # text is not in the page cache, and hashing it after the job cost its full disk time.
        hasher = ThreadPoolExecutor(1, thread_name_prefix="hpcml-sha256")
        sources = hasher.submit(source_entries, plan["files"])
        try:
            t0 = time.perf_counter()
            transforms.persist_plan(plan)  # the text is read once: the quarantine write fills the cache
            plan["quarantine"].write.parquet(str(tmp / "_quarantine"))
            for junk in (tmp / "_quarantine").glob("_SUCCESS"):
                junk.unlink()
            times["quarantine"] = time.perf_counter() - t0
            hook("quarantine")
            t0 = time.perf_counter()
            transforms.finish_plan(plan, n_shards)
            times["stats"] = time.perf_counter() - t0
            hook("stats")
            t0 = time.perf_counter()
            with _sql_conf(spark, transforms.PARQUET_WRITE_CONF):
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


