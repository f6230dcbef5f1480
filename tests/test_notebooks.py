"""Every numbered notebook executes on the CI profile through the pipeline runner, records
its metrics and figures, and renders to the site."""

import json

import pytest

from hpcml import pipeline

pytestmark = [pytest.mark.notebooks, pytest.mark.slow, pytest.mark.integration]


def test_every_notebook_succeeds(pipeline_run):
    runs, build = pipeline_run
    assert [r.name for r in runs] == [p.stem for p in pipeline.discover()]
    failed = [(r.name, r.error) for r in runs if r.status != "ok"]
    assert not failed, failed


def test_metrics_and_figures_recorded(pipeline_run):
    runs, build = pipeline_run
    for r in runs:
        data = json.loads((build / "metrics" / f"{r.name}.json").read_text())
        assert data["metrics"], f"{r.name} recorded no metrics"
        assert any(m["headline"] for m in data["metrics"].values()), f"{r.name} has no headline metric"
        assert data["figures"], f"{r.name} recorded no figure"


def test_site_and_summary_written(pipeline_run):
    runs, build = pipeline_run
    assert (build / "site" / "index.html").exists()
    for r in runs:
        assert (build / "executed" / f"{r.name}.ipynb").exists()
        assert (build / "site" / f"{r.name}.html").exists()
    summary = json.loads((build / "pipeline.json").read_text())
    assert [n["status"] for n in summary["notebooks"]] == ["ok"] * len(runs)
