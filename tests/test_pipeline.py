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
        "from hpcml import report\nreport.begin('00_ok')\nreport.record('twice', 2 * n, headline=True)"])
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
    assert report.load("00_ok")["params"] == {"n": 21}  # and report.begin recorded it, as the kernel saw it
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
    assert "without encryption" not in res.stderr, res.stderr  # the kernel's start-up warning stays off the console


@pytest.mark.unit
@pytest.mark.parametrize(
    "current, expected",
    [
        (None, "-Dlog4j2.configurationFile=file:/b/log4j2.properties"),
        ("-Xmx1g", "-Xmx1g -Dlog4j2.configurationFile=file:/b/log4j2.properties"),
        ("-Dlog4j2.configurationFile=file:/mine.properties", "-Dlog4j2.configurationFile=file:/mine.properties"),
    ],
    ids=["unset", "other-options-kept", "user-config-wins"],
)
def test_spark_submit_opts(current, expected):
    assert pipeline.spark_submit_opts(current, Path("/b/log4j2.properties")) == expected


@pytest.mark.unit
def test_quiet_spark_start_sets_and_restores_the_environment(build_tmp, monkeypatch):
    import os

    monkeypatch.setenv("SPARK_SUBMIT_OPTS", "-Xmx1g")
    with pipeline.quiet_spark_start() as conf:
        assert conf.read_text() == pipeline.SPARK_LOG4J2 and conf.parent == build_tmp / "pipeline"
        assert os.environ["SPARK_SUBMIT_OPTS"] == f"-Xmx1g -Dlog4j2.configurationFile=file:{conf}"
        assert "rootLogger.level = error" in conf.read_text()
    assert os.environ["SPARK_SUBMIT_OPTS"] == "-Xmx1g"
    monkeypatch.delenv("SPARK_SUBMIT_OPTS")
    with pipeline.quiet_spark_start():
        assert "SPARK_SUBMIT_OPTS" in os.environ
    assert "SPARK_SUBMIT_OPTS" not in os.environ


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


@pytest.mark.integration
def test_console_shows_progress_not_start_up_noise(build_tmp, tmp_path):
    """A notebook that starts Spark: the console has the progress line, and neither the kernel's
    TCP warning nor Spark's log4j start-up lines; Spark's errors still reach it."""
    import os

    d = tmp_path / "spark-nbs"
    d.mkdir()
    _nb(d / "00_spark.ipynb", "n: int = 3  # rows", [
        "from hpcml.data.spark import get_session\nspark = get_session()\nprint(spark.range(n).count())",
        "from py4j.java_gateway import java_import\n"
        "java_import(spark._jvm, 'org.apache.logging.log4j.LogManager')\n"
        "spark._jvm.LogManager.getLogger('hpcml.test').error('an error the user must see')"])
    (tmp_path / "empty.yaml").write_text("{}\n")
    env = {**os.environ, "HPCML_BUILD": str(build_tmp)}
    env.pop("SPARK_SUBMIT_OPTS", None)
    res = subprocess.run([sys.executable, "-m", "hpcml.pipeline", "--notebooks-dir", str(d), "--no-render",
                          "-f", str(tmp_path / "empty.yaml")], capture_output=True, text=True, env=env, timeout=600)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "[1/1] 00_spark ... ok in" in res.stdout
    for noise in ("without encryption", "KeyboardInterrupt caught", "Setting default log level", "log4j profile",
                  "NativeCodeLoader", " WARN "):
        assert noise not in res.stderr, f"{noise!r} on the console:\n{res.stderr}"
    assert "ERROR test: an error the user must see" in res.stderr, res.stderr
