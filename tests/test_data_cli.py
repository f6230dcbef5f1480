"""The preprocessing job's command line (``python -m hpcml.data.cli``) on unusable input:
one ``error:`` line on stderr, exit status 2, no traceback, nothing written, no Spark started."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit


def _bad_header(p: Path) -> Path:
    (p / "a.csv").write_text("id,label,pixels\n1,2,3\n")
    return p


@pytest.mark.parametrize("make_input, message", [
    (lambda p: p / "missing", "error: input path {p}/missing does not exist"),
    (lambda p: p, "error: input folder {p} holds no *.csv"),
    (_bad_header, "error: schema mismatch in {p}/a.csv"),
], ids=["missing-path", "empty-folder", "schema-mismatch"])
def test_bad_input_one_clear_line(tmp_path, make_input, message):
    src = tmp_path / "in"
    src.mkdir()
    env = {**os.environ, "HPCML_BUILD": str(tmp_path / "build")}
    res = subprocess.run([sys.executable, "-m", "hpcml.data.cli", "--input", str(make_input(src)),
                          "--output", str(tmp_path / "out"), "--n-shards", "2"],
                         capture_output=True, text=True, env=env, timeout=120)
    assert res.returncode == 2, res.stderr
    assert res.stderr.strip().splitlines() == [res.stderr.strip()], f"expected one line, got:\n{res.stderr}"
    assert res.stderr.startswith(message.format(p=src)), res.stderr
    assert "Traceback" not in res.stderr and res.stdout == ""
    assert not (tmp_path / "out").exists() and not (tmp_path / "build" / "spark-tmp").exists()
