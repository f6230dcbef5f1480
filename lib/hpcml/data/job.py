"""The preprocessing job: raw CSV lines -> validated, de-duplicated, normalised, split,
sharded Parquet for N training workers — pure Spark DataFrame code, no Python UDFs.

Stages (each a function returning a DataFrame, so the notebook can ``explain()`` them):

1. :func:`read_raw` — every input file's header is checked against the record contract
   (:data:`hpcml.data.raw.HEADER`); lines are read as text with an explicit one-column
   schema, so the CSV parser can neither drop nor silently null-fill a malformed row.
2. :func:`parse` — tokens -> ``label`` int and ``pixels`` array<int> with ``try_cast``;
   a ``reason`` column names the first rule a row breaks (:data:`hpcml.data.raw.REASONS`).
3. :func:`dedup` — exact duplicates (same label and pixels) collapse to one row; the
   ``copies`` column keeps the count, so input = clean + quarantined + duplicates, exactly.
4. :func:`assign_split` — ``pmod(xxhash64(seed, label, pixels), 1000)`` -> train/val/test,
   the same on every run and every cluster size (it depends on the content only).
5. :func:`split_stats` + :func:`normalization_from_stats` fit on train only; :func:`assign_shards` numbers each split's
   rows in a deterministic order (``row_number``) and deals them round-robin to N shards,
   so shard sizes differ by at most one row.
6. :func:`hpcml.data.publish.write_dataset` writes the Parquet shards, the quarantine and
   ``_manifest.json`` into a temporary folder and publishes it with a rename.
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path
from typing import Sequence

from hpcml.data.raw import HEADER, N_PIXELS

SPLITS = ("train", "val", "test")


class DataInputError(ValueError):
    """The job's input or arguments are unusable; the message names the file/field."""


def list_inputs(inputs: Path | str | Sequence[Path | str]) -> list[Path]:
    """The raw files to read: a folder's ``*.csv``/``*.csv.gz`` (sorted) or the given files.

    Raises:
        DataInputError: a path is missing or unreadable, a folder holds no CSV, or a
            file's header is not the record contract.
    """
    items = [inputs] if isinstance(inputs, (str, Path)) else list(inputs)
    files: list[Path] = []
    for item in items:
        p = Path(item)
        if not p.exists():
            raise DataInputError(f"input path {p} does not exist (expected a CSV file or a folder of *.csv)")
        if p.is_dir():
            found = sorted([*p.glob("*.csv"), *p.glob("*.csv.gz")])
            if not found:
                raise DataInputError(f"input folder {p} holds no *.csv or *.csv.gz files")
            files += found
        else:
            files.append(p)
    for f in files:
        check_header(f)
    return files


def check_header(path: Path) -> None:
    """Raise :class:`DataInputError` unless ``path`` is readable and starts with :data:`HEADER`."""
    try:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rt", encoding="utf-8") as fh:
            first = fh.readline().rstrip("\r\n")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataInputError(f"cannot read input file {path}: {exc}") from None
    if first != HEADER:
        cols = first.split(",")
        raise DataInputError(
            f"schema mismatch in {path}: header has {len(cols)} columns starting {','.join(cols[:3])!r}; "
            f"expected {N_PIXELS + 1} columns 'label,px0,…,px{N_PIXELS - 1}'")


def read_raw(spark, files: Sequence[Path]):
    """Raw lines with their source file: columns ``value`` (string), ``source_file``."""
    from pyspark.sql import functions as F
    from pyspark.sql.types import StringType, StructField, StructType

    schema = StructType([StructField("value", StringType(), nullable=True)])
    df = spark.read.schema(schema).text([str(f) for f in files])
    return (df.withColumn("source_file", F.element_at(F.split(F.input_file_name(), "/"), -1))
              .where(F.col("value") != HEADER))


def parse(raw):
    """Tokenise and type every line; ``reason`` is null for a clean row, else the first rule broken.

    Columns: ``value``, ``source_file``, ``label`` int, ``pixels`` array<int>, ``reason``.
    """
    from pyspark.sql import functions as F

    tok = F.split(F.regexp_replace("value", "\r$", ""), ",", -1)
    df = raw.withColumn("tokens", tok)
    df = df.withColumn("label", F.expr("try_cast(tokens[0] as int)"))
    # one array cast (code-generated), not a per-element lambda: invalid tokens become null
    df = df.withColumn("pixels", F.expr(f"try_cast(slice(tokens, 2, {N_PIXELS}) as array<int>)"))
    reason = (
        F.when(F.size("tokens") != N_PIXELS + 1, F.lit("wrong_column_count"))
        .when(F.array_contains("tokens", ""), F.lit("null_value"))
        .when(F.col("label").isNull(), F.lit("non_numeric_label"))
        .when(~F.col("label").between(0, 9), F.lit("label_out_of_range"))
        .when(F.expr("exists(pixels, x -> x is null)"), F.lit("non_numeric_pixel"))
        .when((F.array_min("pixels") < 0) | (F.array_max("pixels") > 255), F.lit("pixel_out_of_range"))
    )
    return df.withColumn("reason", reason).drop("tokens")


def quarantine(parsed):
    """The rejected rows, nothing dropped: ``reason``, ``source_file``, ``raw`` (the line as read)."""
    from pyspark.sql import functions as F

    return parsed.where(F.col("reason").isNotNull()).select("reason", "source_file", F.col("value").alias("raw"))


def dedup(parsed):
    """Clean rows, one per distinct (label, pixels); ``copies`` counts how many were read."""
    from pyspark.sql import functions as F

    clean = parsed.where(F.col("reason").isNull()).select("label", "pixels")
    return clean.groupBy("label", "pixels").agg(F.count(F.lit(1)).alias("copies"))


def assign_split(df, val_frac: float = 0.1, test_frac: float = 0.1, seed: int = 0):
    """Add ``h`` (xxhash64 of seed, label, pixels) and ``split`` (train/val/test by ``h`` mod 1000)."""
    from pyspark.sql import functions as F

    if not (0 <= val_frac < 1 and 0 <= test_frac < 1 and val_frac + test_frac < 1):
        raise DataInputError(f"val_frac and test_frac must be in [0, 1) with a sum < 1, got {val_frac}, {test_frac}")
    df = df.withColumn("h", F.xxhash64(F.lit(seed), "label", "pixels"))
    b = F.pmod("h", F.lit(1000))
    train_hi, val_hi = round(1000 * (1 - val_frac - test_frac)), round(1000 * (1 - test_frac))
    split = F.when(b < train_hi, "train").when(b < val_hi, "val").otherwise("test")
    return df.withColumn("split", split)


def split_stats(split_df) -> list[dict]:
    """One aggregation pass: per (split, label) the distinct rows, rows read, pixel sum and sum of squares.

    Returns:
        Rows as dicts ``{"split", "label", "rows", "copies", "s", "ss"}`` (small: ≤ 30 of them).
    """
    from pyspark.sql import functions as F

    agg = split_df.groupBy("split", "label").agg(
        F.count(F.lit(1)).alias("rows"),
        F.sum("copies").alias("copies"),
        F.sum(F.expr("aggregate(pixels, 0L, (a, x) -> a + x)")).alias("s"),
        F.sum(F.expr("aggregate(pixels, 0D, (a, x) -> a + cast(x as double) * x)")).alias("ss"))
    return [r.asDict() for r in agg.orderBy("split", "label").collect()]


def normalization_from_stats(stats: list[dict]) -> dict:
    """Mean and std of all train pixel values scaled by 1/255, from :func:`split_stats` rows.

    Returns:
        ``{"scale": 1/255, "mean": m, "std": s, "fit_on": "train", "n_images": n}``.

    Raises:
        DataInputError: the train split is empty.
    """
    train = [r for r in stats if r["split"] == "train"]
    n = sum(r["rows"] for r in train)
    if not n:
        raise DataInputError("the train split is empty: no clean rows left after validation and de-duplication")
    n_vals = n * N_PIXELS
    mean = sum(r["s"] for r in train) / n_vals / 255.0
    var = sum(r["ss"] for r in train) / n_vals / 255.0**2 - mean**2
    return {"scale": 1 / 255, "mean": mean, "std": max(var, 1e-12) ** 0.5, "fit_on": "train", "n_images": n}


def assign_shards(split_df, n_shards: int):
    """Number each split's rows in (h, label, pixels) order and deal them to ``n_shards`` shards.

    Adds ``idx`` (0-based position within the split) and ``shard`` (= idx mod n_shards).
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    if not isinstance(n_shards, int) or n_shards < 1:
        raise DataInputError(f"n_shards must be an int >= 1 (one shard per training worker), got {n_shards!r}")
    w = Window.partitionBy("split").orderBy("h", "label", "pixels")
    df = split_df.withColumn("idx", F.row_number().over(w) - 1)
    return df.withColumn("shard", F.pmod("idx", F.lit(n_shards)).cast("int"))


def normalize(sharded, norm: dict):
    """Final columns: ``split``, ``shard``, ``idx``, ``label`` int, ``pixels`` array<float> normalised."""
    from pyspark.sql import functions as F

    m, s = float(norm["mean"]), float(norm["std"])
    px = F.expr(f"transform(pixels, x -> cast((x / 255.0D - {m!r}D) / {s!r}D as float))")
    return sharded.select("split", "shard", "idx", F.col("label").cast("int"), px.alias("pixels"))


def build_plan(spark, inputs, n_shards: int, val_frac: float = 0.1, test_frac: float = 0.1, seed: int = 0) -> dict:
    """All the job's DataFrames, lazily (nothing runs until an action): the notebook explains them.

    Returns:
        ``{"files", "parsed", "quarantine", "deduped", "split"}``; the sharded output needs
        the train statistics, so it is built by :func:`finish_plan`.
    """
    if not isinstance(n_shards, int) or n_shards < 1:
        raise DataInputError(f"n_shards must be an int >= 1 (one shard per training worker), got {n_shards!r}")
    files = list_inputs(inputs)
    parsed = parse(read_raw(spark, files))
    deduped = dedup(parsed)
    return {"files": files, "parsed": parsed, "quarantine": quarantine(parsed), "deduped": deduped,
            "split": assign_split(deduped, val_frac, test_frac, seed)}


def finish_plan(plan: dict, n_shards: int, persist: bool = True) -> dict:
    """Fit the normalisation on train and add ``stats``, ``norm`` and the final ``output`` DataFrame.

    Args:
        plan: from :func:`build_plan`.
        n_shards: shards per split.
        persist: keep the de-duplicated rows (memory, spilling to disk) between the
            statistics pass and the shard pass, so the raw files are parsed once for both.
    """
    if persist:
        from pyspark import StorageLevel

        plan["split"] = plan["split"].persist(StorageLevel.MEMORY_AND_DISK)
    plan["stats"] = split_stats(plan["split"])
    plan["norm"] = normalization_from_stats(plan["stats"])
    plan["output"] = normalize(assign_shards(plan["split"], n_shards), plan["norm"])
    return plan


def file_bytes(files: Sequence[Path]) -> int:
    return sum(os.path.getsize(f) for f in files)
