import json

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pytest

from hpcml import report

pytestmark = pytest.mark.unit


def test_record_and_read_back(build_tmp):
    path = report.begin("99_demo", params={"n": 3})
    assert report.record("speed", np.float64(2.5), unit="img/s", headline=True) == 2.5
    report.record("table", [{"a": 1, "b": float("nan")}])
    data = json.loads(path.read_text())
    assert data["params"] == {"n": 3}
    assert data["metrics"]["speed"] == {"value": 2.5, "unit": "img/s", "description": "", "headline": True}
    assert data["metrics"]["table"]["value"] == [{"a": 1, "b": None}]
    assert report.value("99_demo", "speed") == 2.5
    assert report.headlines(report.load("99_demo")) == [("speed", 2.5, "img/s")]


def test_begin_replaces_earlier_results(build_tmp):
    report.begin("99_demo")
    report.record("old", 1)
    report.begin("99_demo")
    assert report.load("99_demo")["metrics"] == {}


def test_figure_saved_and_listed(build_tmp):
    report.begin("99_demo")
    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    out = report.figure(fig, "line", caption="a line", main=True)
    plt.close(fig)
    assert out.exists() and out.read_bytes()[:4] == b"\x89PNG"
    figs = report.load("99_demo")["figures"]
    assert figs == [{"name": "line", "path": str(out), "caption": "a line", "main": True}]


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: report.load("42_nothing"), "run notebooks/42_nothing.ipynb first"),
        (lambda: report.value("99_demo", "nope"), "recorded no metric 'nope'"),
    ],
    ids=["missing-notebook", "missing-metric"],
)
def test_missing_results_name_what_to_run(build_tmp, call, match):
    report.begin("99_demo")
    with pytest.raises(report.MissingMetricsError, match=match):
        call()


def test_bad_names_rejected(build_tmp):
    with pytest.raises(ValueError, match="stem"):
        report.begin("a/b")
    report.begin("99_demo")
    with pytest.raises(ValueError, match="snake_case"):
        report.record("bad name!", 1)
