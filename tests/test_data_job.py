"""The Spark preprocessing job with a real local SparkSession (one for the whole module):
nothing lost, clear errors, atomic publish, deterministic re-runs, balanced shards."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from hpcml.data import dataset, job, raw, transforms
from hpcml.data.spec import MANIFEST
from hpcml.data.transforms import DataInputError

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def spark(tmp_path_factory):
    build = tmp_path_factory.mktemp("data-build")
    old = os.environ.get("HPCML_BUILD")
    os.environ["HPCML_BUILD"] = str(build)
    from hpcml.data.spark import get_session

    yield get_session()
    if old is None:
        os.environ.pop("HPCML_BUILD", None)
    else:
        os.environ["HPCML_BUILD"] = old


@pytest.fixture(scope="module")
def bad_lake(tmp_path_factory):
    """60 real digits + every kind of malformed row + duplicates (one row twice more, one once more)."""
    d = tmp_path_factory.mktemp("bad-lake")
    x, y = raw.load_mnist_source()
    x, y = x[::83][:60], y[::83][:60]
    bad = raw.malformed_lines(x[0], int(y[0]))
    dups = raw.format_rows(x[[3, 3, 7]], y[[3, 3, 7]])
    (d / "part-00000.csv").write_text(raw.HEADER + "\n" + raw.format_rows(x[:30], y[:30]) + dups)
    lines = [ln for v in bad.values() for ln in v]
    (d / "part-00001.csv").write_text(raw.HEADER + "\n" + raw.format_rows(x[30:], y[30:]) + "\n".join(lines) + "\n")
    return {"dir": d, "good": 60, "dups": 3, "bad": bad}


@pytest.fixture(scope="module")
def built(spark, bad_lake, tmp_path_factory):
    out = tmp_path_factory.mktemp("out") / "ds"
    manifest = job.run_job(bad_lake["dir"], out, n_shards=3, spark=spark)
    return out, manifest


def test_nothing_lost(built, bad_lake):
    out, m = built
    c = m["counts"]
    n_bad = sum(len(v) for v in bad_lake["bad"].values())
    assert c["input"] == bad_lake["good"] + bad_lake["dups"] + n_bad
    assert c["input"] == c["output"] + c["quarantined"] + c["duplicates_removed"]
    assert (c["output"], c["duplicates_removed"], c["quarantined"]) == (bad_lake["good"], bad_lake["dups"], n_bad)
    assert c["quarantine_by_reason"] == {r: len(v) for r, v in bad_lake["bad"].items()}


def test_quarantine_keeps_each_raw_line_with_its_reason(built, bad_lake):
    import pyarrow.dataset as ds

    q = ds.dataset(built[0] / "_quarantine", format="parquet").to_table().to_pylist()
    got = sorted((r["reason"], r["raw"]) for r in q)
    want = sorted((reason, ln) for reason, lines in bad_lake["bad"].items() for ln in lines)
    assert got == want
    assert {r["source_file"] for r in q} == {"part-00001.csv"}


def test_shards_balanced_within_one_row(built):
    out, m = built
    for split, info in m["splits"].items():
        rows = [s["rows"] for s in info["shards"]]
        assert len(rows) == 3 and max(rows) - min(rows) <= 1, (split, rows)
        assert sum(len(dataset.read_split(out, split, k)[1]) for k in range(3)) == info["rows"]


def test_manifest_and_read_split(built):
    out, m = built
    on_disk = dataset.load_manifest(out)
    assert on_disk["format"] == "hpcml-dataset/1" and on_disk["n_shards"] == 3
    assert on_disk["schema"]["pixels"] == "list<float32>[784]"
    for info in on_disk["splits"].values():
        for s in info["shards"]:
            assert job.parquet_digests(out / s["file"]) == (s["sha256"], s["data_sha256"])
    assert {Path(s["file"]).name for s in on_disk["sources"]} == {"part-00000.csv", "part-00001.csv"}
    x, y = dataset.read_split(out, "train")
    assert x.dtype == np.float32 and x.shape == (len(y), 784) and y.dtype == np.int64
    assert set(np.unique(y)) <= set(range(10))
    # statistics were fit on train: the normalised train pixels have mean 0, std 1
    assert abs(float(x.mean())) < 1e-4 and abs(float(x.std()) - 1) < 1e-3
    norm = on_disk["normalization"]
    assert norm["fit_on"] == "train" and norm["scale"] == pytest.approx(1 / 255)
    assert sum(sum(d.values()) for d in on_disk["label_distribution"].values()) == on_disk["counts"]["output"]


def test_shards_store_pixels_as_one_repeated_float(spark, built):
    """Each pixel is a bare repeated float in the file (no list group per value), readers see
    ``list<float>`` with no nulls, and the session's own Parquet setting is back after the job."""
    import pyarrow.parquet as pq

    out, m = built
    for info in m["splits"].values():
        for s in info["shards"]:
            f = pq.ParquetFile(out / s["file"])
            assert [f.schema.column(i).path for i in range(2)] == ["label", "pixels.array"], s["file"]
            assert f.schema_arrow.field("pixels").type.value_field.nullable is False
    assert spark.conf.get("spark.sql.parquet.writeLegacyFormat") == "false"


def test_empty_shard_has_the_spark_shards_arrow_type(tmp_path, built):
    import pyarrow.parquet as pq

    job._empty_shard(tmp_path / "empty.parquet")
    spark_shard = built[1]["splits"]["train"]["shards"][0]["file"]
    assert pq.read_schema(tmp_path / "empty.parquet").equals(pq.read_schema(built[0] / spark_shard))


def test_fast_parse_path_never_changes_a_result(spark):
    """Lines that JSON reads differently from split + try_cast, or only partly, give the same
    label, pixels and reason with the from_json fast path as with the exact path alone."""
    px = [str(i % 256) for i in range(raw.N_PIXELS)]

    def line(label, pixels):
        return ",".join([label, *pixels])

    lines = [line("3", px), line("3", px) + "\r", line(" 3", [" 7 ", *px[1:]]), line("007", px), line("+3", px),
             line("3", ["5.0", *px[1:]]), line("3", ["1e2", *px[1:]]), line("3", ["null", *px[1:]]),
             line("3", ['"5"', *px[1:]]), line("3", ["[1]", *px[1:]]), line("3", px) + "],3",
             line("3", px[:-1] + ["9]"]), line("3", px) + ",", line("3", px + ["0"]), line("3", px[:-1]),
             line("-0", px), line("12", px), line("3", px[:-1] + ["256"]), line("3", px[:-1] + ["-1"]),
             line("99999999999", px), line("3", ["", *px[1:]]), "", "[", "]", line("3", px).replace(",", ", ")]
    df = spark.createDataFrame([(ln, "f.csv") for ln in lines], "value string, source_file string")
    cols = ["value", "label", "pixels", "reason"]
    got = {r["value"]: r for r in transforms.parse(df).select(cols).collect()}
    want = {r["value"]: r for r in transforms.parse(df, fast=False).select(cols).collect()}
    assert got == want
    assert {r["reason"] for r in want.values()} >= {None, "wrong_column_count", "null_value", "non_numeric_label",
                                                  "label_out_of_range", "non_numeric_pixel", "pixel_out_of_range"}


def test_rerun_is_byte_identical(spark, bad_lake, built, tmp_path):
    again = job.run_job(bad_lake["dir"], tmp_path / "again", n_shards=3, spark=spark)
    assert again["splits"] == built[1]["splits"]


def test_rerun_in_a_new_jvm_writes_the_same_data(bad_lake, built, tmp_path):
    """A second run in its own process (a fresh JVM, as sbatch or a SparkApplication starts) writes
    the same rows in the same pages: every shard's data digest matches."""
    import subprocess
    import sys

    out = tmp_path / "fresh"
    env = dict(os.environ, HPCML_BUILD=str(tmp_path / "build"))
    subprocess.run([sys.executable, "-m", "hpcml.data.cli", "--input", str(bad_lake["dir"]), "--output", str(out),
                    "--n-shards", "3"], check=True, env=env, capture_output=True, timeout=600)
    fresh = dataset.load_manifest(out)["splits"]
    data = {split: [(s["rows"], s["data_sha256"]) for s in info["shards"]] for split, info in fresh.items()}
    assert data == {split: [(s["rows"], s["data_sha256"]) for s in info["shards"]]
                    for split, info in built[1]["splits"].items()}


def test_cached_rows_carry_their_hash(spark, bad_lake):
    """After persist_plan, the split, statistics and shard window read ``h``/``split``/``bucket``
    from the cache: no ``xxhash64`` is left above the cached relation."""
    plan = transforms.persist_plan(transforms.build_plan(spark, bad_lake["dir"], 3))
    try:
        for name in ("split", "deduped", "quarantine"):
            tree = plan[name]._jdf.queryExecution().optimizedPlan().toString()
            assert "InMemoryRelation" in tree, name
            assert "xxhash64" not in tree.split("InMemoryRelation")[0], (name, tree)
        assert {"h", "split", "bucket"} <= set(plan["split"].columns)
        assert plan["deduped"].columns == ["label", "pixels", "copies"]
    finally:
        plan["grouped"].unpersist()


def test_plans_made_inside_sized_shuffle_use_the_jobs_partition_count(spark, bad_lake, built):
    """What notebook 01 prints: a plan explained inside job.sized_shuffle shows run_job's count
    (not the session's), keeps it after the block (a DataFrame is planned once), and the cache
    filled inside the block keeps exactly that many partitions (AQE does not coalesce it)."""
    key = "reason, source_file, raw, label, pixels"
    outside = transforms.build_plan(spark, bad_lake["dir"], 3)["deduped"]
    assert transforms.exchange_partitions(transforms.explain_text(outside))[key] == int(spark.conf.get("spark.sql.shuffle.partitions"))
    plan = transforms.build_plan(spark, bad_lake["dir"], 3)
    with job.sized_shuffle(spark, plan["files"]) as n:
        inside = transforms.explain_text(plan["deduped"])
        transforms.persist_plan(plan)
        plan["grouped"].count()
    try:
        assert n == built[1]["shuffle_partitions"] == transforms.shuffle_partitions(
            transforms.file_bytes(plan["files"]), spark.sparkContext.defaultParallelism)
        assert n != int(spark.conf.get("spark.sql.shuffle.partitions")), "the session's own value is back"
        assert transforms.exchange_partitions(inside)[key] == n
        assert transforms.exchange_partitions(transforms.explain_text(plan["deduped"]))[key] == n
        assert plan["grouped"].rdd.getNumPartitions() == n
    finally:
        plan["grouped"].unpersist()


@pytest.mark.parametrize("expression", ["ArrayTransform", "ArrayAggregate", "ArrayExists"])
def test_array_lambdas_are_code_generated_in_this_spark(spark, expression):
    """Notebook 01 says none of transform, aggregate, exists is a CodegenFallback in this Spark."""
    jvm = spark._jvm
    fallback = jvm.java.lang.Class.forName("org.apache.spark.sql.catalyst.expressions.codegen.CodegenFallback")
    cls = jvm.java.lang.Class.forName(f"org.apache.spark.sql.catalyst.expressions.{expression}")
    assert not fallback.isAssignableFrom(cls), f"{expression} is a CodegenFallback in Spark {spark.version}"
    reflect = jvm.java.lang.Class.forName("org.apache.spark.sql.catalyst.expressions.CallMethodViaReflection")
    assert fallback.isAssignableFrom(reflect), "the check must see a known CodegenFallback (reflect()) as one"


@pytest.mark.parametrize("stage", ["quarantine", "stats", "shards", "before_publish"])
def test_crash_keeps_previous_good_output(spark, bad_lake, tmp_path, stage):
    out = tmp_path / "ds"
    first = job.run_job(bad_lake["dir"], out, n_shards=2, spark=spark)
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}

    def boom(s):
        if s == stage:
            raise KeyboardInterrupt(f"killed at {s}")

    with pytest.raises(KeyboardInterrupt):
        job.run_job(bad_lake["dir"], out, n_shards=3, spark=spark, hook=boom)
    after = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert after == before
    assert dataset.load_manifest(out)["n_shards"] == first["n_shards"] == 2
    assert not [p for p in tmp_path.iterdir() if p.name.startswith((".ds.tmp-", ".ds.old-"))]


def _header_lake(tmp_path: Path, header: str) -> Path:
    (tmp_path / "a.csv").write_text(header + "\n1,2,3\n")
    return tmp_path


@pytest.mark.parametrize("make_input, n_shards, match", [
    (lambda p: p / "missing", 2, "does not exist"),
    (lambda p: p, 2, "holds no"),
    (lambda p: _header_lake(p, "id,label,pixels"), 2, "schema mismatch.*expected 785 columns"),
    (lambda p: (p / "x.csv.gz").write_bytes(b"not gzip") and p / "x.csv.gz", 2, "cannot read input file"),
    (lambda p: _header_lake(p, raw.HEADER), 0, "n_shards must be an int >= 1"),
], ids=["missing-path", "empty-folder", "schema-mismatch", "unreadable-file", "zero-shards"])
def test_bad_input_one_clear_error(spark, tmp_path, make_input, n_shards, match):
    src = make_input(tmp_path)
    with pytest.raises(DataInputError, match=match):
        job.run_job(src, tmp_path / "out", n_shards=n_shards, spark=spark)
    assert not (tmp_path / "out").exists()


def test_ensure_dataset_builds_once_and_reshards(spark, tmp_path):
    from hpcml.data.dataset import ensure_dataset

    d = ensure_dataset(2, tmp_path / "mnist", spark=spark)
    m = dataset.load_manifest(d)
    assert m["counts"]["output"] == 5000 and m["counts"]["quarantined"] > 0
    assert m["counts"]["duplicates_removed"] > 0
    stamp = (d / MANIFEST).stat().st_mtime_ns
    assert ensure_dataset(2, d, spark=spark) == d and (d / MANIFEST).stat().st_mtime_ns == stamp
    ensure_dataset(3, d, spark=spark)
    assert dataset.load_manifest(d)["n_shards"] == 3
    assert len(dataset.read_split(d, "train", 2)[1]) > 0
