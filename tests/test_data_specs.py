"""Pure parts of the data stage, table-style: Spark session configuration per master, raw
record formatting, normalisation maths, S3 URIs, and the scale-out definitions."""

from __future__ import annotations

import re

import numpy as np
import pytest

from hpcml.aws import requests as aws_requests, send as aws_send
from hpcml.data import raw, spark_conf, staging, transforms
from hpcml.data.spec import DataJobSpec
from hpcml.k8s import data as kdata

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("master, key, want", [
    ("local[*]", "spark.ui.enabled", "false"),
    ("local[*]", "spark.sql.execution.arrow.pyspark.enabled", "true"),
    ("local[*]", "spark.driver.bindAddress", "127.0.0.1"),
    ("local[*]", "spark.sql.shuffle.partitions", "200"),
    ("spark://10.0.0.5:7077", "spark.cores.max", "4"),
    ("k8s://https://api:6443", "spark.kubernetes.namespace", "hpcml"),
    ("k8s://https://api:6443", "spark.kubernetes.authenticate.driver.serviceAccountName", "spark"),
    ("k8s://https://api:6443", "spark.kubernetes.container.image", "ghcr.io/example/hpcml-spark:0.1.0"),
    ("k8s://https://api:6443", "spark.executor.instances", "2"),
    ("k8s://https://api:6443", "spark.hadoop.fs.s3a.aws.credentials.provider",
     "software.amazon.awssdk.auth.credentials.WebIdentityTokenFileCredentialsProvider"),
], ids=["ui-off", "arrow", "loopback", "shuffle-2-cores", "standalone-cores", "k8s-ns", "k8s-sa", "k8s-image",
        "k8s-executors", "k8s-irsa"])
def test_session_conf(master, key, want):
    assert spark_conf.session_conf(master, cores=2, driver_memory="2g")[key] == want


@pytest.mark.parametrize("master", ["yarn", "mesos://x", ""], ids=["yarn", "mesos", "empty"])
def test_session_conf_rejects_unknown_master(master):
    with pytest.raises(ValueError, match="Spark master must be"):
        spark_conf.session_conf(master, driver_memory="1g")


@pytest.mark.parametrize("total_gib, want", [(2, "1g"), (24, "6g"), (256, "8g")], ids=["small", "laptop", "big"])
def test_default_driver_memory(total_gib, want):
    assert spark_conf.default_driver_memory(total_gib * 2**30) == want


def test_mnist_source_format():
    x, y = raw.load_mnist_source()
    assert x.shape == (5000, 784) and x.dtype == np.uint8 and np.bincount(y).tolist() == [500] * 10


def test_malformed_lines_cover_every_reason():
    x, y = raw.load_mnist_source()
    bad = raw.malformed_lines(x[0], int(y[0]))
    assert set(bad) == set(raw.REASONS)
    good = raw.format_rows(x[:1], y[:1]).strip()
    assert len(good.split(",")) == 785
    assert all(ln != good for lines in bad.values() for ln in lines)


@pytest.mark.parametrize("stats, mean, std", [
    ([{"split": "train", "label": 0, "rows": 1, "copies": 1, "s": 784 * 255, "ss": 784 * 255.0**2}], 1.0, 1e-6),
    ([{"split": "train", "label": 0, "rows": 2, "copies": 2, "s": 784 * 255, "ss": 784 * 255.0**2},
      {"split": "val", "label": 1, "rows": 9, "copies": 9, "s": 0, "ss": 0}], 0.5, 0.5),
], ids=["constant-white", "half-white-ignores-val"])
def test_normalization_fit_on_train_only(stats, mean, std):
    norm = transforms.normalization_from_stats(stats)
    assert norm["mean"] == pytest.approx(mean) and norm["std"] == pytest.approx(std, abs=1e-5)


def test_normalization_needs_train_rows():
    with pytest.raises(transforms.DataInputError, match="train split is empty"):
        transforms.normalization_from_stats([{"split": "val", "label": 0, "rows": 3, "copies": 3, "s": 1, "ss": 1}])


@pytest.mark.parametrize("uri, want", [
    ("s3://b/raw/mnist/", ("b", "raw/mnist/")), ("s3://b", ("b", "")),
], ids=["prefix", "bucket-only"])
def test_parse_s3_uri(uri, want):
    assert staging.parse_s3_uri(uri) == want


@pytest.mark.parametrize("uri", ["/local/path", "s3://", "s3:///key"], ids=["local", "empty", "no-bucket"])
def test_parse_s3_uri_rejects(uri):
    with pytest.raises(ValueError, match="expected an S3 URI"):
        staging.parse_s3_uri(uri)


def test_spark_application_is_restricted_and_uses_irsa():
    app = kdata.spark_application(DataJobSpec(n_shards=4))
    s = app["spec"]
    assert app["metadata"]["namespace"] == "hpcml" and s["mode"] == "cluster"
    for role in ("driver", "executor"):
        pod = s[role]
        assert pod["serviceAccount"] == "spark"
        sc = pod["securityContext"]
        assert sc["runAsNonRoot"] and sc["readOnlyRootFilesystem"] and not sc["allowPrivilegeEscalation"]
        assert sc["capabilities"] == {"drop": ["ALL"]} and sc["seccompProfile"]["type"] == "RuntimeDefault"
        assert pod["labels"]["hpcml.io/stage"] == "data"
    assert s["arguments"][s["arguments"].index("--n-shards") + 1] == "4"
    assert all(a.startswith("s3://hpcml-data-111122223333/") for a in s["arguments"][1:4:2])
    assert "WebIdentity" in s["hadoopConf"]["fs.s3a.aws.credentials.provider"]


def test_emr_request_validates_against_botocore():
    req = kdata.emr_start_job_run(DataJobSpec())
    assert aws_requests.validate_request("emr-containers", "start_job_run", req) is req
    assert req["executionRoleArn"] == "arn:aws:iam::111122223333:role/hpcml-spark"
    broken = dict(req, jobDriver={"sparkSubmitJobDriver": {"entryPointArguments": ["x"]}})
    with pytest.raises(aws_requests.AWSRequestError, match="entryPoint"):
        aws_requests.validate_request("emr-containers", "start_job_run", broken)


@pytest.mark.parametrize("release, spark_version, error", [
    ("emr-spark-8.0.0-latest", "4.0.1", None),  # AWS runtime for Apache Spark 8.0.0: Spark 4.0.2
    ("emr-spark-8.0.0-20260421", "4.0.1", None),
    ("emr-spark-8.0.0-latest", "4.3.0", None),  # another minor: allowed, recorded (emr_spark_mismatch)
    ("emr-7.9.0-latest", "4.0.1", "emr-7.9.0 runs Spark 3.5.5"),  # the old default: Spark 3.5 under a Spark 4 job
    ("emr-7.13.0-latest", "4.3.0", "emr-7.13.0 runs Spark 3.5.6"),
    ("emr-7.9.0-latest", "3.5.1", None),
    ("emr-spark-8.0.0-latest", "3.5.1", "emr-spark-8.0.0 runs Spark 4.0.2"),
    ("emr-9.9.9-latest", "4.0.1", "of a release in EMR_SPARK"),
    ("emr-spark-8.0.0", "4.0.1", "'<release>-latest' or '<release>-YYYYMMDD'"),
], ids=["spark4-latest", "spark4-dated", "spark4-other-minor", "emr7-spark4-job", "emr7.13-spark4-job",
        "emr7-spark35-job", "spark4-release-spark35-job", "unknown-release", "no-suffix"])
def test_emr_release_runs_the_spark_of_the_job(release, spark_version, error):
    if error is None:
        spec = DataJobSpec(emr_release=release, spark_version=spark_version)
        assert spec.emr_spark().split(".")[0] == spark_version.split(".")[0]
        assert kdata.emr_start_job_run(spec)["releaseLabel"] == release
    else:
        with pytest.raises(ValueError, match=r"DataJobSpec.emr_release: .*" + re.escape(error)):
            DataJobSpec(emr_release=release, spark_version=spark_version)


def _pinned_pyspark() -> str:
    from hpcml import paths

    pins = [ln.split("==", 1)[1].strip() for ln in (paths.repo_root() / "requirements.txt").read_text().splitlines()
            if ln.strip().lower().startswith("pyspark==")]
    assert len(pins) == 1, f"requirements.txt pins pyspark {len(pins)} times"
    return pins[0]


def test_the_spec_states_the_tested_spark():
    """TESTED_SPARK is the pyspark requirements.txt pins (and the venv runs); the image's Spark
    (spec.spark_version, rendered as sparkVersion) is it."""
    import pyspark

    from hpcml import paths
    from hpcml.data.spec import TESTED_SPARK

    assert TESTED_SPARK == _pinned_pyspark() == pyspark.__version__
    assert DataJobSpec().spark_version == TESTED_SPARK
    app = (paths.manifests_dir() / "data/spark-application.yaml").read_text()
    assert f"sparkVersion: {TESTED_SPARK}" in app


@pytest.mark.parametrize("release", ["emr-spark-8.0.0-latest", "emr-spark-8.0.0-20260421"], ids=["latest", "dated"])
def test_emr_spark_minor_mismatch_is_named(release, monkeypatch):
    from hpcml.data import spec as dspec

    tested = ".".join(dspec.TESTED_SPARK.split(".")[:2])
    got = DataJobSpec(emr_release=release).emr_spark_mismatch
    if dspec.EMR_SPARK["emr-spark-8.0.0"].startswith(tested + "."):
        assert got is None
    else:
        assert got is not None and "\n" not in got, got
        assert f"emr-spark-8.0.0 runs Spark {dspec.EMR_SPARK['emr-spark-8.0.0']}, not the Spark {tested}" in got, got
    monkeypatch.setitem(dspec.EMR_SPARK, "emr-spark-8.0.0", f"{tested}.9")  # a release with the tested minor
    assert DataJobSpec(emr_release=release).emr_spark_mismatch is None
    monkeypatch.setitem(dspec.EMR_SPARK, "emr-spark-8.0.0", "4.99.0")  # and one without
    assert "runs Spark 4.99.0" in DataJobSpec(emr_release=release).emr_spark_mismatch


def test_rendered_emr_request_runs_spark_4():
    import json

    from hpcml import paths
    from hpcml.data.spec import EMR_SPARK

    req = json.loads((paths.manifests_dir() / "data/emr-on-eks-start-job-run.json").read_text())
    label = req["releaseLabel"]
    assert label == "emr-spark-8.0.0-latest" and EMR_SPARK[label.removesuffix("-latest")].startswith("4.")


def test_emr_request_is_not_sent_without_credentials(monkeypatch):
    monkeypatch.setattr(aws_send, "has_credentials", lambda: False)
    out = aws_send.submit("emr-containers", "start_job_run", kdata.emr_start_job_run(DataJobSpec()))
    assert out["sent"] is False


@pytest.mark.parametrize("field, value, match", [
    ("n_shards", 0, "n_shards"), ("account_id", "123", "account_id"),
    ("image", "ghcr.io/example/hpcml-spark:latest", "image"), ("executor_memory", "4GB", "executor_memory"),
], ids=["zero-shards", "short-account", "latest-tag", "memory-unit"])
def test_job_spec_rejects(field, value, match):
    with pytest.raises(ValueError, match=match):
        DataJobSpec(**{field: value})


def test_render_paths_and_sbatch():
    out = kdata.render()
    assert set(out) == {"data/spark-application.yaml", "data/emr-on-eks-start-job-run.json", "data/preprocess.sbatch"}
    sb = out["data/preprocess.sbatch"]
    assert sb.startswith("#!/bin/bash") and "#SBATCH --job-name=hpcml-preprocess" in sb
    assert "-m hpcml.data.cli" in sb and 'local[${SLURM_CPUS_PER_TASK' in sb


@pytest.mark.unit
@pytest.mark.parametrize("stats, want", [
    pytest.param([], [], id="empty"),
    pytest.param([{"split": "train", "bucket": 3, "rows": 5}, {"split": "train", "bucket": -2, "rows": 4},
                  {"split": "train", "bucket": 3, "rows": 1}],
                 [("train", -2, 0), ("train", 3, 4)], id="buckets-in-hash-order-labels-summed"),
    pytest.param([{"split": "val", "bucket": 0, "rows": 2}, {"split": "train", "bucket": 0, "rows": 7},
                  {"split": "val", "bucket": 1, "rows": 3}],
                 [("train", 0, 0), ("val", 0, 0), ("val", 1, 2)], id="offsets-restart-per-split"),
])
def test_bucket_offsets(stats, want):
    assert transforms.bucket_offsets(stats) == want


@pytest.mark.unit
@pytest.mark.parametrize("spark_s, pandas_s, expect", [
    pytest.param((8.0, 16.0), (4.0, 20.0), "overtake pandas near 30,000 rows", id="spark-cheaper-per-row"),
    pytest.param((6.0, 26.0), (1.0, 21.0), "no crossover", id="spark-dearer-per-row"),
])
def test_bench_summary_states_crossover_from_fit(spark_s, pandas_s, expect):
    from hpcml.data import viz

    res = {n: [{"engine": "spark", "seconds": s, "rows_per_s": n / s}, {"engine": "pandas", "seconds": p,
               "rows_per_s": n / p}] for n, s, p in zip((10_000, 50_000), spark_s, pandas_s)}
    text = "\n".join(viz.bench_summary(res))
    assert expect in text
    assert "fastest pandas" in text.splitlines()[0] or "fastest spark" in text.splitlines()[0]


@pytest.mark.unit
def test_memory_growth_per_engine_over_its_sizes():
    from hpcml.data import viz

    gib = 2**30
    res = {10**6: [{"engine": "spark", "peak_rss_bytes": 4 * gib}, {"engine": "pandas", "peak_rss_bytes": 3 * gib}],
           10**7: [{"engine": "spark", "peak_rss_bytes": 10 * gib}, {"engine": "pandas", "skipped": "too big"}]}
    assert viz.memory_growth(res) == {"spark": (10**6, 10**7, 2.5)}
    assert "spark: 10x the rows (1,000,000 -> 10,000,000) took 2.50x the peak memory" in viz.bench_summary(res)


@pytest.mark.unit
def test_bench_metrics_keep_the_spark_stage_seconds():
    from hpcml.data import viz

    res = {10**6: [{"engine": "spark", "rows_per_s": 1e4, "peak_rss_bytes": 2**30, "seconds": 100.0,
                    "stages": {"quarantine": 50.04, "stats": 9.96, "shards": 40.0}},
                   {"engine": "pandas", "rows_per_s": 2e4, "peak_rss_bytes": 2**31, "seconds": 50.0}]}
    m = viz.bench_metrics(res)
    assert m["spark_stage_seconds_1m"] == ({"quarantine": 50.0, "stats": 10.0, "shards": 40.0}, "s")
    assert not any(k.startswith("pandas_stage") for k in m)


@pytest.mark.parametrize("nbytes, cores, expect", [
    (0, 2, 4), (180 * 2**20, 2, 4), (1_800 * 2**20, 2, 29), (18_000 * 2**20, 2, 282), (10**13, 2, 2000),
], ids=["empty", "100k-rows", "1M-rows", "10M-rows", "capped"])
def test_shuffle_partitions_follow_the_input_size(nbytes, cores, expect):
    from hpcml.data.transforms import shuffle_partitions

    assert shuffle_partitions(nbytes, cores) == expect


def test_shuffle_partitions_rejects_bad_sizes():
    from hpcml.data.transforms import shuffle_partitions

    with pytest.raises(ValueError, match="cores >= 1"):
        shuffle_partitions(100, 0)


PLAN = """== Physical Plan ==
AdaptiveSparkPlan isFinalPlan=false
+- Sort [split#23 ASC NULLS FIRST], false, 0
   +- Exchange hashpartitioning(split#23, shard#584, 6), REPARTITION_BY_NUM, [plan_id=547]
      +- Window [row_number() windowspecdefinition(split#23, bucket#24, h#22L ASC NULLS FIRST)]
         +- Exchange hashpartitioning(split#23, bucket#24, 29), ENSURE_REQUIREMENTS, [plan_id=542]
            :     +- Filter (isnotnull(value#0) AND NOT (value#0 = label,px0,px1,px2,px3,px4,px5,px6,px7,px8,px9,px10))
               +- Project [CASE WHEN EndsWith(value#0, \r
) THEN substring(value#0, 1, (length(value#0) - 1)) ELSE value#0 END AS tokens#5]
                  +- Exchange hashpartitioning(reason#8, pixels#14, 29), ENSURE_REQUIREMENTS, [plan_id=151]
"""


def test_hash_exchanges_reads_keys_count_and_origin():
    from hpcml.data.transforms import hash_exchanges

    assert hash_exchanges(PLAN) == [("split, shard", 6, "REPARTITION_BY_NUM"),
                                    ("split, bucket", 29, "ENSURE_REQUIREMENTS"),
                                    ("reason, pixels", 29, "ENSURE_REQUIREMENTS")]
    assert hash_exchanges("== Physical Plan ==\n*(1) Range (0, 10)") == []
    from hpcml.data.transforms import exchange_partitions

    assert exchange_partitions(PLAN + PLAN.replace("29", "200")) == {"split, shard": 6, "split, bucket": 29, "reason, pixels": 29}


def test_abridge_plan_cuts_long_lines_and_literal_spills():
    from hpcml.data.transforms import abridge_plan

    short = abridge_plan(PLAN, width=60)
    lines = short.splitlines()
    assert all(len(ln) <= 60 for ln in lines)
    assert not any(ln.lstrip().startswith(") THEN") for ln in lines)  # the spilled literal is gone
    assert lines[0] == "== Physical Plan ==" and lines[-1].lstrip().startswith("+- Exchange")
    assert [ln for ln in lines if ln.endswith("…")], "long lines are marked as cut"
    assert abridge_plan("a\n+- b", width=60) == "a\n+- b"


def test_bench_metrics_partitions_and_memory_per_row():
    from hpcml.data import viz

    res = {10**5: [{"engine": "spark", "rows_per_s": 1e4, "peak_rss_bytes": 3 * 2**30, "shuffle_partitions": 4,
                    "stages": {"stats": 1.0}},
                   {"engine": "pandas", "rows_per_s": 2e4, "peak_rss_bytes": 2**30}],
           10**6: [{"engine": "spark", "rows_per_s": 2e4, "peak_rss_bytes": 4 * 2**30, "shuffle_partitions": 29,
                    "stages": {"stats": 2.0}},
                   {"engine": "pandas", "rows_per_s": 2e4, "peak_rss_bytes": 2 * 2**30}]}
    m = viz.bench_metrics(res)
    assert m["spark_shuffle_partitions_100k"] == (4, "partitions") and m["spark_shuffle_partitions_1m"] == (29, "partitions")
    assert "pandas_shuffle_partitions_1m" not in m
    # the same 1 GiB more over 900k more rows for both, though the ratios differ (4/3 against 2)
    assert m["spark_peak_bytes_per_row"] == m["pandas_peak_bytes_per_row"] == (2**30 / 900_000, "B/row")
    assert m["spark_peak_memory_growth"] == (4 / 3, "x") and m["pandas_peak_memory_growth"] == (2.0, "x")


def test_parquet_digests_split_data_from_footer(tmp_path):
    """Same rows, different footer metadata: the file digests differ, the data digests do not."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from hpcml.data.job import parquet_digests

    t = pa.table({"label": pa.array([1, 2, 3], pa.int32())})
    pq.write_table(t, tmp_path / "a.parquet", compression="zstd", store_schema=False)
    pq.write_table(t.replace_schema_metadata({"note": "x"}), tmp_path / "b.parquet", compression="zstd")
    pq.write_table(pa.table({"label": pa.array([1, 2, 4], pa.int32())}), tmp_path / "c.parquet",
                   compression="zstd", store_schema=False)
    (wa, da), (wb, db), (_, dc) = (parquet_digests(tmp_path / f"{n}.parquet") for n in "abc")
    assert wa != wb and da == db and da != dc
    (tmp_path / "d.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(ValueError, match="not a Parquet file"):
        parquet_digests(tmp_path / "d.parquet")


@pytest.mark.parametrize("val, test, bounds", [(0.1, 0.1, (800, 900)), (0.0, 0.25, (750, 750)), (0.2, 0.0, (800, 1000))])
def test_split_bounds(val, test, bounds):
    assert transforms.split_bounds(val, test) == bounds


@pytest.mark.parametrize("val, test", [(-0.1, 0.1), (0.5, 0.5), (1.0, 0.0)])
def test_split_bounds_reject_bad_fractions(val, test):
    with pytest.raises(transforms.DataInputError, match="val_frac and test_frac must be in"):
        transforms.split_bounds(val, test)
