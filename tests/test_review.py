"""hpcml.review: the results table from recorded metrics, trade-offs, practices and their files.

Fake metrics are written only into the test's temporary HPCML_BUILD (build_tmp)."""

import json

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


def test_every_practice_points_to_a_file_that_implements_it():
    rows = review.practices()
    assert {r["area"] for r in rows} == {"reliability", "security"}
    missing = [r["file"] for r in rows if not r["exists"]]
    assert not missing, f"practices point to files that do not exist: {missing}"
    no_evidence = [(r["file"], r["evidence"]) for r in rows if not r["evidence_found"]]
    assert not no_evidence, f"files do not contain what the practice claims: {no_evidence}"


def test_iam_policies_are_shipped():
    pols = review.iam_policies()
    assert "hpcml-s3-trainer.json" in pols
    assert all(json.loads(t)["Version"] == "2012-10-17" for t in pols.values())


UPSTREAM_VALUES = {"node_cpus": 2, "dataset_rows_clean": 4990, "train_samples_per_s": 1800.0, "scaling_efficiency": 0.93,
                   "resnet50_img_per_s_per_worker": 4.2, "max_rps_at_p99_50ms": 350.0}


def fake_upstream():
    """Fake metrics of notebooks 00-05 in the temporary build (never in build/, never shown as results)."""
    for nb, names in review.CONTRACT.items():
        if nb == "06_cost_review":
            continue
        extra = {"spark_rows_per_s_100k": 2500.0} if nb.startswith("01") else {}
        fake_stage(nb, {**{n: UPSTREAM_VALUES.get(n, 1.0) for n in names}, **extra},
                   params={"world_size": 2} if nb.startswith("02") else {})
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
    assert "run notebooks/00_cluster_setup.ipynb first" in runs[0].error["evalue"]
