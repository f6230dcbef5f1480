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


def _write_notebook(folder, stem, params_cell):
    nb = {"cells": [{"cell_type": "markdown", "metadata": {}, "source": ["# t\n"]},
                    {"cell_type": "code", "metadata": {"tags": ["parameters"]}, "source": params_cell,
                     "outputs": [], "execution_count": None}],
          "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    (folder / f"{stem}.ipynb").write_text(json.dumps(nb))


def test_begin_reads_the_parameters_from_the_kernel(build_tmp, tmp_path, monkeypatch):
    """Names from the notebook's parameters cell, values from the calling namespace (the kernel's
    globals, where papermill's injected cell has overridden the defaults)."""
    _write_notebook(tmp_path, "98_params", ["n: int = 1  # n\n", "name: str = \"x\"  # a name\n",
                                            "sizes: list = [1, 2]  # sizes"])
    monkeypatch.chdir(tmp_path)
    kernel = {"n": 5, "name": "y", "sizes": (3, 4), "not_a_parameter": 1}
    exec("from hpcml import report\nreport.begin('98_params')", kernel)
    assert report.load("98_params")["params"] == {"n": 5, "name": "y", "sizes": [3, 4]}
    assert report.notebook_parameters("98_params", {"n": 2}) == {"n": 2}
    assert report.begin("98_params", params={"k": 1}) and report.load("98_params")["params"] == {"k": 1}


def test_begin_without_a_notebook_file_records_no_parameters(build_tmp, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert report.find_notebook("97_nowhere") is None
    report.begin("97_nowhere")
    assert report.load("97_nowhere")["params"] == {}


def test_every_notebook_is_found_and_its_parameters_read():
    from hpcml import paths
    from hpcml.params import parameters_source, parse_parameters_cell

    for nb in sorted(paths.notebooks_dir().glob("*.ipynb")):
        assert report.find_notebook(nb.stem) == nb
        declared = [p.name for p in parse_parameters_cell(parameters_source(nb))]
        namespace = {name: i for i, name in enumerate(declared)}
        assert report.notebook_parameters(nb.stem, namespace) == namespace


def test_record_all_records_each_metric_in_order(build_tmp):
    report.begin("99_demo")
    got = report.record_all([report.Metric("a", 1, unit="s", headline=True), report.Metric("b", [1.5], description="d")])
    assert got == {"a": 1, "b": [1.5]}
    assert report.load("99_demo")["metrics"] == {
        "a": {"value": 1, "unit": "s", "description": "", "headline": True},
        "b": {"value": [1.5], "unit": "", "description": "d", "headline": False}}
