"""Shared fixtures. The expensive one, ``pipeline_run``, executes every notebook once per
session (CI profile) into a temporary build tree; the notebook, metrics and site tests
all read that one run."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def build_tmp(tmp_path, monkeypatch):
    """A fresh, empty build tree for one test (HPCML_BUILD points at it)."""
    monkeypatch.setenv("HPCML_BUILD", str(tmp_path / "build"))
    return tmp_path / "build"


@pytest.fixture(scope="session")
def pipeline_build(tmp_path_factory):
    return tmp_path_factory.mktemp("pipeline") / "build"


@pytest.fixture(scope="session")
def pipeline_run(pipeline_build):
    """Run the whole pipeline on the CI profile once; yield (runs, build dir)."""
    from hpcml import pipeline

    old = os.environ.get("HPCML_BUILD")
    os.environ["HPCML_BUILD"] = str(pipeline_build)
    try:
        runs = pipeline.run_pipeline()
        yield runs, pipeline_build
    finally:
        if old is None:
            os.environ.pop("HPCML_BUILD", None)
        else:
            os.environ["HPCML_BUILD"] = old
