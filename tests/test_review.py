"""hpcml.review: the results table from recorded metrics, trade-offs, practices and their files.

Fake metrics are written only into the test's temporary HPCML_BUILD (build_tmp)."""

import json
import re

import pytest

from hpcml import report, review

pytestmark = pytest.mark.unit


def fake_stage(nb, metrics, params=None):
    """Record fake metrics for ``nb`` into the temporary build (tests only)."""
    report.begin(nb, params=params or {})
    for name, value in metrics.items():
        report.record(name, value, unit="u", headline=True)


def fake_all(skip=()):
    for nb, names in review.CONTRACT.items():
        if nb not in skip:
            extra = {"spark_rows_per_s_20k": 900.0, "spark_rows_per_s_100k": 2500.0} if nb.startswith("01") else {}
            fake_stage(nb, {**{n: i + 1.5 for i, n in enumerate(names)}, **extra})


def test_largest_size_metric_picks_the_biggest_run(build_tmp):
    fake_stage("01_spark_preprocessing", {"spark_rows_per_s_20k": 1.0, "spark_rows_per_s_1m": 3.0,
                                          "spark_rows_per_s_100k": 2.0, "spark_rows_per_s_note": 9.0})
    assert review.largest_size_metric("01_spark_preprocessing", "spark_rows_per_s_") == ("1m", 3.0)
    fake_stage("01_spark_preprocessing", {"dataset_rows_clean": 1})
    with pytest.raises(report.MissingMetricsError, match="no spark_rows_per_s_<size>"):
        review.largest_size_metric("01_spark_preprocessing", "spark_rows_per_s_")


def test_results_table_has_every_stage(build_tmp):
    fake_all()
    fake_stage("02_horovod_training", {**{n: 2.0 for n in review.CONTRACT["02_horovod_training"]},
                                       "loss_curve": [1, 2, 3], "note": "text"})
    rows = review.results_table()
    assert {r["notebook"] for r in rows} == set(review.CONTRACT)
    names = {(r["notebook"], r["metric"]) for r in rows}
    assert ("02_horovod_training", "loss_curve") not in names  # lists stay in their notebook
    assert ("02_horovod_training", "note") in names
    assert all(set(r) >= {"notebook", "metric", "value", "unit"} for r in rows)


@pytest.mark.parametrize("missing", ["01_spark_preprocessing", "04_serving", "06_cost_review"])
def test_missing_stage_names_the_notebook_to_run(build_tmp, missing):
    fake_all(skip=(missing,))
    with pytest.raises(report.MissingMetricsError, match=f"run notebooks/{missing}.ipynb first"):
        review.results_table()


def test_missing_contracted_metric_is_named(build_tmp):
    fake_all()
    fake_stage("05_monitoring", {"targets_up": 3})
    with pytest.raises(report.MissingMetricsError, match="05_monitoring recorded no metric 'alert_time_to_firing_s'"):
        review.results_table()


def test_tradeoff_tables_are_rectangular():
    assert set(review.TRADEOFFS) == {"On-prem HPC vs cloud HPC", "EMR vs Spark on EKS", "SageMaker training vs MPIJob on EKS",
                                     "KServe vs a custom server", "Karpenter vs Cluster Autoscaler"}
    for title, t in review.TRADEOFFS.items():
        assert t["rows"], title
        assert all(len(r) == len(t["columns"]) for r in t["rows"]), title


def test_every_practice_is_verified_by_tests_and_checks():
    rows = review.practices(checkpoint_s=1.0)
    assert {r["area"] for r in rows} == {"reliability", "security", "performance"}
    assert all(r["tests"] for r in review.PRACTICES), "every practice names the tests that verify it"
    unverified = [(r["practice"], r["tests_collected"], r["problems"]) for r in rows if not r["verified"]]
    assert not unverified, unverified
    from hpcml.k8s import coherence
    assert {p["check"] for p in review.PRACTICES if p["check"]} <= set(coherence.CHECKS)


def test_practices_table_reports_a_failing_check_and_a_missing_test(monkeypatch):
    """The verified column comes from running the checks and collecting the tests, not from a grep."""
    monkeypatch.setattr(review, "PRACTICES", [
        {"area": "reliability", "practice": "grace", "how": "", "file": "manifests/train/mpijob.yaml",
         "check": "grace", "tests": ["tests/test_manifest_coherence.py::test_grace_check_catches"]},
        {"area": "security", "practice": "ghost", "how": "", "file": "manifests/cluster/quota.yaml",
         "check": None, "tests": ["tests/test_manifest_coherence.py::test_that_does_not_exist"]},
    ])
    grace, ghost = review.practices(checkpoint_s=600.0)  # a 10-minute checkpoint outlasts any grace period
    assert not grace["verified"] and "terminationGracePeriodSeconds" in grace["problems"]
    assert not ghost["verified"] and ghost["tests_collected"] == "0/1"


def test_atomic_write_leaves_the_old_file_on_failure(tmp_path, monkeypatch):
    from hpcml import paths

    target = tmp_path / "state.json"
    paths.atomic_write_text(target, "old")
    monkeypatch.setattr(paths.os, "replace", lambda *a: (_ for _ in ()).throw(OSError("disk gone")))
    with pytest.raises(OSError, match="disk gone"):
        paths.atomic_write_text(target, "new")
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["state.json"]


def test_targets_use_the_interval_not_the_point_estimate(build_tmp):
    fake_all()
    fake_stage("02_horovod_training", {**{n: 1.0 for n in review.CONTRACT["02_horovod_training"]},
                                       "test_accuracy": 0.984, "test_count": 1000.0, "horovod_overhead_pct": 0.6,
                                       "horovod_overhead_ci95_pct": 5.5, "scaling_efficiency": 0.93})
    fake_stage("05_monitoring", {**{n: 1.0 for n in review.CONTRACT["05_monitoring"]},
                                 "exporter_overhead_pct": -0.4, "exporter_overhead_ci95_pct": 0.3})
    rows = {r["metric"]: r for r in review.targets()}
    assert rows["horovod_overhead_pct"]["verdict"] == "undecided"  # 0.6 % +- 5.5 against <= 5 %
    assert rows["test_accuracy"]["verdict"] == "met"  # 0.984 +- 0.008 over 1,000 samples clears 0.97
    assert rows["scaling_efficiency"]["verdict"] == "undecided" and rows["scaling_efficiency"]["ci95"] is None
    assert rows["exporter_overhead_pct"]["verdict"] == "met"
    assert rows["exporter_overhead_pct"]["ratio_to_target"] == pytest.approx(-0.2)  # finite, not 2e9
    assert all(abs(r["ratio_to_target"]) < 1e3 for r in rows.values())
    review.targets_figure(list(rows.values()))


def test_iam_policies_are_shipped():
    pols = review.iam_policies()
    assert "hpcml-s3-trainer.json" in pols
    assert all(json.loads(t)["Version"] == "2012-10-17" for t in pols.values())


UPSTREAM_VALUES = {"node_cpus": 2, "dataset_rows_clean": 4990, "train_samples_per_s": 1800.0, "scaling_efficiency": 0.93,
                   "resnet50_img_per_s_per_worker": 4.2, "max_rps_at_p99_50ms": 350.0}


#: Values the fakes use where 1.0 would not do (a dict, a flag, a parameter).
UPSTREAM_SPECIAL = {"encoding_rps": {"binary": 350.0, "json": 200.0}, "max_rps_at_p99_50ms_is_lower_bound": True,
                    "checkpoint_projection_resnet50_s": 3.0}
UPSTREAM_PARAMS = {"world_size": 2, "bench_image_size": 64, "width": 32, "batch_size": 64}


def fake_upstream():
    """Fake metrics of notebooks 00-05 in the temporary build (never in build/, never shown as results):
    the contracted metrics, the intervals 07's targets read, and whatever 06 declares it reads
    (hpcml.cost.measured.READS/READS_PARAMS)."""
    from hpcml.cost import measured

    for nb, names in review.CONTRACT.items():
        if nb == "06_cost_review":
            continue
        intervals = [i[1] for n, _, _, _, i in review.TARGETS if n == nb and i and i[0] == "metric"]
        wanted = dict.fromkeys([*names, *measured.READS.get(nb, ()), *intervals])
        extra = {"spark_rows_per_s_100k": 2500.0} if nb.startswith("01") else {}
        params = {p: UPSTREAM_PARAMS[p] for p in measured.READS_PARAMS.get(nb, ())}
        fake_stage(nb, {**{n: UPSTREAM_SPECIAL.get(n, UPSTREAM_VALUES.get(n, 1.0)) for n in wanted}, **extra},
                   params=params)
    fake_stage("00_cluster_setup", {**{n: 1.0 for n in review.CONTRACT["00_cluster_setup"]}, "node_cpus": 2})


@pytest.mark.slow
@pytest.mark.integration
@pytest.mark.notebooks
def test_cost_and_review_notebooks_run_on_recorded_upstream(build_tmp):
    from hpcml import pipeline

    fake_upstream()
    runs = pipeline.run_pipeline(only=["06", "07"], render=False, overrides=["07.copy_site_picture=false"],
                                 log=lambda *a, **k: None)
    assert [(r.name, r.status) for r in runs] == [("06_cost_review", "ok"), ("07_architecture_review", "ok")], \
        [r.error for r in runs]
    cost = report.load("06_cost_review")["metrics"]
    for name in review.CONTRACT["06_cost_review"]:
        assert cost[name]["headline"], name
    assert report.value("07_architecture_review", "results_table_rows") >= 20
    assert (build_tmp / "figures" / "diagrams" / "pipeline_eks.png").exists()


@pytest.mark.slow
@pytest.mark.integration
@pytest.mark.notebooks
def test_cost_notebook_without_upstream_names_the_notebook_to_run(build_tmp):
    from hpcml import pipeline

    runs = pipeline.run_pipeline(only=["06"], render=False, log=lambda *a, **k: None)
    assert runs[0].status == "failed"
    assert re.search(r"run notebooks/0\d_\w+\.ipynb( first)?", runs[0].error["evalue"]), runs[0].error["evalue"]


def fake_cost_review():
    """Fake metrics of 06 (what 07 reads from it) in the temporary build."""
    fake_stage("06_cost_review", {**{n: 1.0 for n in review.CONTRACT["06_cost_review"]},
                                  "fastest_train_hours": 9.5, "checkpoint_interval_min": 40.0, "spot_run_min": 570.0,
                                  "young_daly_interval_min": 40.0})
    report.record("pareto_front", [{"instance_type": "p4d.24xlarge", "instances": 1, "hours": 9.5, "cost_usd": 310.0}])


@pytest.mark.slow
@pytest.mark.integration
@pytest.mark.notebooks
def test_review_notebook_runs_on_recorded_upstream(build_tmp):
    """07 on faked 00-06: targets judged on intervals, the coherence checks and practices verified."""
    from hpcml import pipeline

    fake_upstream()
    fake_stage("02_horovod_training", {**{n: UPSTREAM_VALUES.get(n, 1.0) for n in review.CONTRACT["02_horovod_training"]},
                                       "horovod_overhead_pct": 0.6, "horovod_overhead_ci95_pct": 5.5,
                                       "test_accuracy": 0.984, "test_count": 1000.0}, params=UPSTREAM_PARAMS)
    fake_cost_review()
    runs = pipeline.run_pipeline(only=["07"], render=False, overrides=["07.copy_site_picture=false"],
                                 log=lambda *a, **k: None)
    assert [(r.name, r.status) for r in runs] == [("07_architecture_review", "ok")], [r.error for r in runs]
    m = report.load("07_architecture_review")
    verdicts = {r["metric"]: r["verdict"] for r in m["metrics"]["targets"]["value"]}
    assert verdicts["horovod_overhead_pct"] == "undecided" and verdicts["test_accuracy"] == "met"
    assert m["metrics"]["coherence_problems"]["value"] == 0
    assert any("undecided" in c for c in m["claims"])


# (stage, metrics it records, target metric, verdict, 95 % half-width 07 uses, how 07 says it got it)
@pytest.mark.parametrize("nb, recorded, metric, verdict, ci, how", [
    ("02_horovod_training", {"scaling_efficiency": 0.95, "scaling_efficiency_ci95": 0.02}, "scaling_efficiency",
     "met", 0.02, "recorded (scaling_efficiency_ci95)"),
    ("02_horovod_training", {"scaling_efficiency": 0.75, "scaling_efficiency_ci95": 0.17}, "scaling_efficiency",
     "undecided", 0.17, "recorded (scaling_efficiency_ci95)"),
    ("02_horovod_training", {"scaling_efficiency": 0.5, "scaling_efficiency_ci95": 0.1}, "scaling_efficiency",
     "missed", 0.1, "recorded (scaling_efficiency_ci95)"),
    # the engine benchmark runs once per engine and size: no interval, even if one were recorded
    ("01_spark_preprocessing", {"spark_vs_pandas_speedup": 5.0, "spark_vs_pandas_speedup_ci95": 0.1},
     "spark_vs_pandas_speedup", "undecided", None, "no interval recorded"),
    ("01_spark_preprocessing", {"spark_vs_fastest_ratio": 0.9, "spark_vs_fastest_ratio_ci95": 0.1},
     "spark_vs_fastest_ratio", "undecided", None, "no interval recorded"),
    ("04_serving", {"batching_throughput_ratio_weight_bound": 4.24, "batching_throughput_ratio_weight_bound_ci95": 1.0},
     "batching_throughput_ratio_weight_bound", "met", 1.0, "recorded (batching_throughput_ratio_weight_bound_ci95)"),
    ("04_serving", {"batching_throughput_ratio_weight_bound": 3.5, "batching_throughput_ratio_weight_bound_ci95": 1.0},
     "batching_throughput_ratio_weight_bound", "undecided", 1.0, "recorded (batching_throughput_ratio_weight_bound_ci95)"),
])
def test_target_intervals_read_from_their_stage(build_tmp, nb, recorded, metric, verdict, ci, how):
    fake_all()
    fake_stage(nb, {**{k: v["value"] for k, v in report.load(nb)["metrics"].items()}, **recorded})
    row = {r["metric"]: r for r in review.targets()}[metric]
    assert (row["verdict"], row["interval"]) == (verdict, how)
    assert row["ci95"] == (None if ci is None else pytest.approx(ci))
