"""Benchmark: the same transform in Spark, pandas and DuckDB on the same synthetic lake.

Transform (identical rules in each engine): parse the CSV lines, quarantine malformed rows,
drop exact duplicates, hash-split train/val/test, fit mean/std on train, normalise, and
write ``n_shards`` Parquet shards per split, compressed with the job's codec
(:data:`hpcml.data.spec.PARQUET_CODEC`) in every engine: pyarrow and DuckDB default to
snappy, so their defaults would time a different output. pandas and DuckDB each run in
their own child process (``python -m hpcml.data.bench --engine …``, imports excluded from
the timing) so their peak memory is their own. Spark runs either the same way (a fresh JVM:
start excluded, but its first job pays JIT compilation and query code generation — "cold")
or, when a session is passed, in that already-used session ("warm": the steady state a
long-lived driver or a notebook sees). Peak memory is the RSS of the process tree (Python +
Spark's JVM) sampled every 50 ms with psutil; in-session that tree is the caller's, so its
peak includes what the caller already held (a JVM heap that earlier jobs grew, which the JVM
does not hand back): compare engines by the bytes each extra row cost
(:func:`hpcml.data.viz.memory_per_row`) rather than by the ratio of two peaks. Rows/s counts raw input lines over the
transform's wall time.

pandas reads in chunks but holds the whole clean table in memory (uint8, 785 B a row) and
does not spill; when the estimated peak would exceed the memory available, its run is
skipped and recorded as such (not attempted).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from hpcml.data.transforms import normalization_from_stats, split_bounds
from hpcml.data.raw import HEADER, N_PIXELS
from hpcml.data.spec import PARQUET_CODEC

ENGINES = ("spark", "pandas", "duckdb")
#: DuckDB spills to its temp directory past this (its default, 80% of RAM, leaves nothing
#: for a Spark driver beside it on a laptop).
DUCKDB_MEMORY_LIMIT = "6GB"


def _tree_rss(proc) -> int:
    import psutil

    total = 0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return total


class _PeakRSS:
    """Sample the RSS of a process tree every 50 ms in a thread; ``peak`` holds the maximum."""

    def __init__(self, pid: int):
        import psutil

        self.proc, self.peak, self._stop = psutil.Process(pid), 0, threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, _tree_rss(self.proc))
            self._stop.wait(0.05)

    def __enter__(self) -> "_PeakRSS":
        self._t.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._t.join()


def run_engine(engine: str, lake: Path, out: Path, n_shards: int = 2, timeout_s: float = 1800,
               spark=None) -> dict:
    """Run one engine in a child process (or Spark in ``spark``, this process's session).

    Returns:
        The engine's result (``seconds``, ``counts``) plus ``peak_rss_bytes`` of the process
        tree and ``mode`` (``"child"`` or ``"in-session"``).
    """
    import os

    if engine == "spark" and spark is not None:
        with _PeakRSS(os.getpid()) as mem:
            res = _spark(lake, out, n_shards, spark)
        return dict(res, engine=engine, peak_rss_bytes=mem.peak, mode="in-session")
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as fh:
        result_path = Path(fh.name)
    cmd = [sys.executable, "-m", "hpcml.data.bench", "--engine", engine, "--lake", str(lake), "--out", str(out),
           "--n-shards", str(n_shards), "--result", str(result_path)]
    child = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    with _PeakRSS(child.pid) as mem:
        try:
            _, err = child.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            child.kill()
            child.communicate()
            raise RuntimeError(f"benchmark engine {engine} exceeded {timeout_s}s") from None
    if child.returncode != 0:
        raise RuntimeError(f"benchmark engine {engine} failed (exit {child.returncode}): {err[-2000:]}")
    res = json.loads(result_path.read_text())
    result_path.unlink()
    return dict(res, engine=engine, peak_rss_bytes=mem.peak, mode="child")


def pandas_fits(lake_meta: dict, headroom: float = 0.8) -> tuple[bool, str]:
    """Whether pandas' in-memory table fits the free memory: the clean rows as uint8 (785 B),
    ~48 B a row of hashes and indices, plus ~2.25 GiB for the interpreter, one parsed chunk
    and one write batch (measured peaks: 1.7 GiB at 100k rows, 3.0 GiB at 1M)."""
    import psutil

    need = lake_meta["rows"] * (N_PIXELS + 1 + 48) + 2.25 * 2**30
    avail = psutil.virtual_memory().available
    ok = need < headroom * avail
    return ok, f"pandas needs ~{need / 2**30:.1f} GiB in memory, {avail / 2**30:.1f} GiB available"


# ---- the engines (run inside the child) ---------------------------------------------------

def _files(lake: Path) -> list[Path]:
    return sorted(lake.glob("part-*.csv"))


def _spark(lake: Path, out: Path, n_shards: int, spark=None) -> dict:
    from hpcml.data.job import run_job
    from hpcml.data.spark import get_session

    spark = spark or get_session()
    t0 = time.perf_counter()
    m = run_job(lake, out, n_shards, spark=spark)
    return {"seconds": time.perf_counter() - t0, "counts": m["counts"], "stages": m["seconds"],
            "shuffle_partitions": m["shuffle_partitions"]}


def _pandas(lake: Path, out: Path, n_shards: int, chunk_rows: int = 50_000) -> dict:
    """pandas, written as a careful user would for memory: ``read_csv`` in chunks, each chunk
    validated and its clean rows kept as uint8 in one preallocated table (785 B a row, all of
    it in memory: pandas does not spill); normalised float32 is made one write batch at a time."""
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    t0 = time.perf_counter()
    total = json.loads((lake / "_SUCCESS").read_text())["rows"]
    table = np.empty((total, N_PIXELS + 1), dtype=np.uint8)  # label, pixels of the clean rows
    n_in = n_clean = 0
    bad_parts = []
    for f in _files(lake):
        for df in pd.read_csv(f, header=0, chunksize=chunk_rows, low_memory=False):
            n_in += len(df)
            for c in df.select_dtypes(exclude="number").columns:  # a malformed value makes its column text
                df[c] = pd.to_numeric(df[c], errors="coerce")
            v = df.to_numpy(dtype=np.float64)
            bad = np.isnan(v).any(axis=1) | (v[:, 0] < 0) | (v[:, 0] > 9) | (v[:, 1:] < 0).any(axis=1) | (v[:, 1:] > 255).any(axis=1)
            if bad.any():
                bad_parts.append(df[bad])
            good = v[~bad]
            table[n_clean:n_clean + len(good)] = good
            n_clean += len(good)
    n_q = n_in - n_clean
    if bad_parts:
        pd.concat(bad_parts).to_parquet(out / "quarantine.parquet", compression=PARQUET_CODEC)
    table = table[:n_clean]
    h = pd.util.hash_pandas_object(pd.DataFrame(table, copy=False), index=False).to_numpy()
    first = ~pd.Series(h).duplicated().to_numpy()
    keep = np.flatnonzero(first)
    h = h[keep]
    bucket = h % 1000
    train_hi, val_hi = split_bounds()
    split = np.where(bucket < train_hi, 0, np.where(bucket < val_hi, 1, 2))
    train = keep[split == 0]
    s = ss = 0.0
    for i in range(0, len(train), chunk_rows):  # mean/std on the train split, in batches
        x = table[train[i:i + chunk_rows], 1:].astype(np.float64)
        s, ss = s + x.sum(), ss + (x * x).sum()
    norm = normalization_from_stats([{"split": "train", "rows": len(train), "s": s, "ss": ss}])
    mean, std = norm["mean"], norm["std"]
    schema = pa.schema([("label", pa.int32()), ("pixels", pa.list_(pa.float32(), N_PIXELS))])
    for k_split, sp in enumerate(("train", "val", "test")):
        pos = np.flatnonzero(split == k_split)
        pos = pos[np.argsort(h[pos], kind="stable")]
        for k in range(n_shards):
            rows = keep[pos[k::n_shards]]
            with pq.ParquetWriter(out / f"{sp}-{k:05d}.parquet", schema, compression=PARQUET_CODEC) as w:
                for i in range(0, len(rows), chunk_rows):
                    b = table[rows[i:i + chunk_rows]]
                    x = (b[:, 1:].astype(np.float32) / 255.0 - mean) / std
                    arr = pa.FixedSizeListArray.from_arrays(pa.array(x.ravel()), N_PIXELS)
                    w.write_table(pa.table({"label": b[:, 0].astype(np.int32), "pixels": arr}, schema=schema))
    return {"seconds": time.perf_counter() - t0,
            "counts": {"input": n_in, "quarantined": n_q, "output": len(keep),
                       "duplicates_removed": n_clean - len(keep)}}


def _duckdb(lake: Path, out: Path, n_shards: int) -> dict:
    """DuckDB SQL. The parsed table keeps pixels as UTINYINT[] (784 B a row) and the raw
    text only for quarantined rows: at 10M rows, raw text plus INTEGER[] for every row
    (~5 KB) filled the disk with spilled pages."""
    import duckdb

    t0 = time.perf_counter()
    con = duckdb.connect()
    con.execute(f"SET temp_directory='{out / 'duckdb-tmp'}'")
    con.execute(f"SET memory_limit='{DUCKDB_MEMORY_LIMIT}'")  # spill past it, as Spark does
    con.execute("SET preserve_insertion_order=false")  # no order needed until the shards are numbered
    files = ", ".join(f"'{f}'" for f in _files(lake))
    con.execute(f"""
      CREATE TEMP TABLE parsed AS
      WITH lines AS (SELECT column0 AS value FROM read_csv([{files}], columns={{'column0': 'VARCHAR'}},
                     delim=E'\\x01', header=false, quote='', escape='') WHERE column0 <> '{HEADER}'),
      tok AS (SELECT value, string_split(value, ',') AS t FROM lines),
      typed AS (SELECT value, t, TRY_CAST(t[1] AS INTEGER) AS label,
                list_transform(t[2:], lambda x: TRY_CAST(x AS INTEGER)) AS pixels FROM tok),
      checked AS (SELECT value, label, pixels, CASE
        WHEN len(t) <> {N_PIXELS + 1} THEN 'wrong_column_count'
        WHEN list_contains(t, '') THEN 'null_value'
        WHEN label IS NULL THEN 'non_numeric_label'
        WHEN label < 0 OR label > 9 THEN 'label_out_of_range'
        WHEN list_count(pixels) < {N_PIXELS} THEN 'non_numeric_pixel'
        WHEN list_min(pixels) < 0 OR list_max(pixels) > 255 THEN 'pixel_out_of_range' END AS reason
        FROM typed)
      SELECT reason, CASE WHEN reason IS NOT NULL THEN value END AS raw,
             CASE WHEN reason IS NULL THEN label::UTINYINT END AS label,
             CASE WHEN reason IS NULL THEN pixels::UTINYINT[] END AS pixels
      FROM checked""")
    n_in, n_q = con.execute("SELECT count(*), count(reason) FROM parsed").fetchone()
    con.execute(f"COPY (SELECT reason, raw FROM parsed WHERE reason IS NOT NULL) "
                f"TO '{out / 'quarantine.parquet'}' (FORMAT parquet, COMPRESSION {PARQUET_CODEC})")
    train_hi, val_hi = split_bounds()
    con.execute(f"""CREATE TEMP TABLE sp AS
      SELECT label, pixels, copies, h, CASE WHEN h % 1000 < {train_hi} THEN 'train'
        WHEN h % 1000 < {val_hi} THEN 'val' ELSE 'test' END AS split
      FROM (SELECT label, pixels, count(*) AS copies, hash(label, pixels) AS h FROM parsed
            WHERE reason IS NULL GROUP BY label, pixels)""")
    con.execute("DROP TABLE parsed")
    s, ss, n = con.execute("SELECT sum(list_sum(pixels))::DOUBLE, sum(list_sum(list_transform(pixels, "
                           "lambda x: x::DOUBLE * x))), count(*) FROM sp WHERE split = 'train'").fetchone()
    norm = normalization_from_stats([{"split": "train", "rows": n, "s": s, "ss": ss}])
    mean, std = norm["mean"], norm["std"]
    con.execute(f"""COPY (SELECT split, (row_number() OVER (PARTITION BY split ORDER BY h) - 1) % {n_shards} AS shard,
      label::INTEGER AS label, list_transform(pixels, lambda x: ((x / 255.0 - {mean}) / {std})::FLOAT) AS pixels FROM sp)
      TO '{out / 'shards'}' (FORMAT parquet, COMPRESSION {PARQUET_CODEC}, PARTITION_BY (split, shard))""")
    n_out, copies = con.execute("SELECT count(*), sum(copies) FROM sp").fetchone()
    return {"seconds": time.perf_counter() - t0,
            "counts": {"input": n_in, "quarantined": n_q, "output": n_out, "duplicates_removed": int(copies - n_out)}}


def compare(lake: Path, work: Path, engines: tuple[str, ...] = ENGINES, n_shards: int = 2,
            spark=None) -> list[dict]:
    """Run each engine on ``lake`` (one after another, same run); rows/s and peak memory for each.

    ``spark``: run the Spark engine in this session (warm) instead of a fresh child JVM (cold).
    """
    meta = json.loads((lake / "_SUCCESS").read_text())
    out = []
    for e in engines:
        if e == "pandas":
            ok, why = pandas_fits(meta)
            if not ok:
                out.append({"engine": e, "rows": meta["rows"], "skipped": why})
                continue
        d = work / e
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir(parents=True)
        r = run_engine(e, lake, d / "out" if e == "spark" else d, n_shards, spark=spark)
        r["rows"] = meta["rows"]
        r["rows_per_s"] = meta["rows"] / r["seconds"]
        out.append(r)
        shutil.rmtree(d, ignore_errors=True)
    return out


def run_sizes(sizes: list[int], engines: tuple[str, ...] = ENGINES, n_shards: int = 2, seed: int = 0,
              work: Path | None = None, spark=None) -> dict[int, list[dict]]:
    """Generate (or reuse) a synthetic lake per size and run every engine on it: ``{size: results}``.

    ``spark``: a session to run the Spark engine in (warm); None starts a child JVM per size (cold).
    """
    from hpcml import paths
    from hpcml.data.raw import synthetic_lake_dir, write_synthetic_lake

    work = work or paths.build_dir() / "bench" / "data"
    out = {}
    for n in sizes:
        write_synthetic_lake(n, seed=seed)
        out[n] = compare(synthetic_lake_dir(n), work, engines, n_shards, spark=spark)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m hpcml.data.bench")
    ap.add_argument("--engine", choices=ENGINES, required=True)
    ap.add_argument("--lake", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--n-shards", type=int, default=2)
    ap.add_argument("--result", type=Path, required=True)
    a = ap.parse_args(argv)
    if a.engine != "spark":  # run_job publishes its own output folder (temp + rename)
        a.out.mkdir(parents=True, exist_ok=True)
    res = {"spark": _spark, "pandas": _pandas, "duckdb": _duckdb}[a.engine](a.lake, a.out, a.n_shards)
    a.result.write_text(json.dumps(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())

