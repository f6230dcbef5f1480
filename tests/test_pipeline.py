"""The pipeline runner: selection, parameter validation, failure reporting, and the CLI's
one-line errors. Uses tiny notebooks written by the test, executed for real."""

import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from hpcml import pipeline
from hpcml.params import ParameterError

ROOT = Path(__file__).resolve().parent.parent


def _nb(path: Path, params: str, body: list[str]) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "hpcml", "display_name": "Python (hpcml)", "language": "python"}
    cell = nbformat.v4.new_code_cell(params)
    cell.metadata["tags"] = ["parameters"]
    nb.cells = [nbformat.v4.new_markdown_cell("# t\nWhat you will learn: nothing")]
    nb.cells += [cell] + [nbformat.v4.new_code_cell(b) for b in body]
    nbformat.write(nb, str(path))
    return path


@pytest.fixture
def nb_dir(tmp_path):
    d = tmp_path / "nbs"
    d.mkdir()
    _nb(d / "00_ok.ipynb", "n: int = 1  # a number", [
        "from hpcml import report\nreport.begin('00_ok', params={'n': n})\nreport.record('twice', 2 * n, headline=True)"])
    _nb(d / "01_boom.ipynb", "x: int = 0  # x", ["y = 1", "raise ValueError(f'boom {x}')", "print('never')"])
    _nb(d / "02_after.ipynb", "z: int = 0  # z", ["print(z)"])
    (tmp_path / "p.yaml").write_text("00_ok:\n  n: 21\n")
    return d


@pytest.mark.unit
def test_discover_and_select(nb_dir):
    nbs = pipeline.discover(nb_dir)
    assert [p.stem for p in nbs] == ["00_ok", "01_boom", "02_after"]
    assert [p.stem for p in pipeline.select(nbs, ["02", "00_ok"])] == ["00_ok", "02_after"]
    with pytest.raises(pipeline.PipelineError, match=r"unknown notebook '07' \(available: 00_ok, 01_boom, 02_after\)"):
        pipeline.select(nbs, ["07"])


@pytest.mark.integration
def test_runs_and_stops_at_failure(nb_dir, build_tmp, tmp_path):
    lines = []
    runs = pipeline.run_pipeline(profile=tmp_path / "p.yaml", nb_dir=nb_dir, log=lambda *a, **k: lines.append(" ".join(map(str, a))))
    assert [r.status for r in runs] == ["ok", "failed", "skipped"]
    from hpcml import report
    assert report.value("00_ok", "twice") == 42  # the profile's n=21 reached the notebook
    err = runs[1].error
    assert "raise ValueError" in err["source"] and err["ename"] == "ValueError" and "boom 0" in err["evalue"]
    out = "\n".join(lines)
    assert "FAILED: 01_boom" in out and "raise ValueError(f'boom {x}')" in out
    assert "partially executed copy:" in out
    assert Path(runs[1].executed).exists()
    site = build_tmp / "site"
    assert (site / "index.html").exists() and (site / "00_ok.html").exists()
    failed_page = (site / "01_boom.html").read_text()
    assert "This notebook failed" in failed_page and "boom 0" in failed_page


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "hpcml.pipeline", *args], capture_output=True, text=True, cwd=ROOT)


@pytest.mark.integration
def test_cli_exit_code_names_the_cell(nb_dir, build_tmp, tmp_path):
    import os
    env = {**os.environ, "HPCML_BUILD": str(build_tmp)}
    res = subprocess.run([sys.executable, "-m", "hpcml.pipeline", "--notebooks-dir", str(nb_dir), "--only", "01",
                          "--no-render", "-f", str(tmp_path / "p.yaml")], capture_output=True, text=True, env=env)
    assert res.returncode == 1
    assert "FAILED: 01_boom (cell 3)" in res.stdout and "boom 0" in res.stdout


@pytest.mark.unit
@pytest.mark.parametrize(
    "args, message",
    [
        (["--only", "42"], "error: unknown notebook '42'"),
        (["-p", "00_cluster_setup.matmul_size=big"], "error: 00_cluster_setup: parameter 'matmul_size' must be int"),
        (["-f", "no/such/params.yaml"], "error: parameters file not found: no/such/params.yaml"),
    ],
    ids=["unknown-notebook", "bad-type", "missing-params-file"],
)
def test_cli_bad_input_one_clear_line(args, message):
    res = _cli(*args, "--no-render")
    assert res.returncode == 2
    assert res.stderr.strip().splitlines() == [res.stderr.strip()], f"expected one line, got:\n{res.stderr}"
    assert res.stderr.startswith(message), res.stderr
    assert "Traceback" not in res.stderr
