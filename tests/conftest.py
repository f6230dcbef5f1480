"""Shared fixtures. The expensive one, ``pipeline_run``, executes every notebook once per
session (CI profile) into a temporary build tree; the notebook, metrics and site tests
all read that one run."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _tiny_cnn(seed: int = 0):
    """A small CNN with the training contract's input (N, 1, 28, 28) and 10 logits (tests only)."""
    import torch

    torch.manual_seed(seed)
    n = torch.nn
    return n.Sequential(n.Conv2d(1, 8, 3, padding=1), n.ReLU(), n.MaxPool2d(2), n.Conv2d(8, 16, 3, padding=1),
                        n.ReLU(), n.MaxPool2d(2), n.Flatten(), n.Linear(16 * 49, 10)).eval()


def _sample_inputs(n: int = 200, seed: int = 0):
    """Deterministic stand-in for normalised test pixels (N, 784)."""
    import numpy as np

    return np.random.default_rng(seed).normal(size=(n, 784)).astype(np.float32)


@pytest.fixture(scope="session")
def contract_dataset():
    """A factory of tiny datasets in the contract layout: ``contract_dataset(root, n_shards=2, ...)``."""
    from hpcml.data.synthetic import write_contract_dataset

    return write_contract_dataset


@pytest.fixture(scope="session")
def tiny_cnn():
    """A factory of small CNNs: ``tiny_cnn(seed=0)``."""
    return _tiny_cnn


@pytest.fixture(scope="session")
def sample_inputs():
    """A factory of deterministic stand-in pixels: ``sample_inputs(n=200, seed=0)``."""
    return _sample_inputs


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


def _cannot_run(why: str) -> None:
    """Skip a test that needs what this machine lacks; under ``CI=true`` fail instead (CI installs it)."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"must run under CI=true, but: {why}")
    pytest.skip(why)


@pytest.fixture(scope="session")
def mcluster(tmp_path_factory):
    """One 2-node cluster for the whole session, named ``hpcmlt`` (``HPCML_TEST_CLUSTER`` overrides it,
    so two sessions on one machine don't share one) and never the pipeline's ``hpcml``."""
    from hpcml.cluster import local, netns
    from hpcml.cluster.fabric import LocalClusterSpec
    from hpcml.cluster.slurm import daemons

    name = os.environ.get("HPCML_TEST_CLUSTER", "hpcmlt")
    why = netns.available() or daemons.available()
    if why:
        _cannot_run(f"the multi-node cluster: {why}")
    cl = local.up(LocalClusterSpec(nodes=2, name=name), tmp_path_factory.mktemp("mcluster"))
    yield cl
    local.down(cl.state_dir, prefix=name)
    assert not any(local.leftovers(name).values()), local.leftovers(name)


@pytest.fixture(scope="session")
def object_store(tmp_path_factory):
    """One SeaweedFS store (:class:`hpcml.aws.local_s3.ObjectStore`) for the whole session: it takes
    ~15 s to stop, so tests share it (and restart it only to inject faults)."""
    from hpcml.aws import local_s3

    try:
        local_s3.weed_binary()
    except FileNotFoundError as e:
        _cannot_run(str(e))
    store = local_s3.ObjectStore.start(tmp_path_factory.mktemp("objectstore"))
    yield store
    running = local_s3.ObjectStore.attach(store.data_dir)  # fault tests restart it: the pid may differ
    if running is not None:
        running.stop()
