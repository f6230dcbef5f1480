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


def _write_contract_dataset(root: Path, n_shards: int = 2, rows: tuple[int, int, int] = (384, 96, 96),
                            eval_shards: int | None = None, noise: float = 1.5, seed: int = 0, poison: bool = False,
                            fit_on: str | None = "train") -> Path:
    """Tiny learnable digits-shaped data in the hpcml.data contract layout (shards + manifest).

    Args:
        rows: rows of the train, val and test splits.
        eval_shards: shards of val and test (default: ``n_shards``, like train).
        noise: the spread of each digit around its prototype.
        poison: train pixels are all NaN (a job must fail loudly on them).
        fit_on: the manifest's ``normalization.fit_on`` (omitted when None).
    """
    import hashlib
    import json

    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    protos = rng.normal(0, 1, (10, 784)).astype(np.float32)
    splits = {}
    for split, n in zip(("train", "val", "test"), rows):
        (root / split).mkdir(parents=True, exist_ok=True)
        y = rng.integers(0, 10, n)
        x = (protos[y] + rng.normal(0, noise, (n, 784))).astype(np.float32)
        if poison and split == "train":
            x[:] = np.nan
        shards = []
        k = n_shards if split == "train" or eval_shards is None else eval_shards
        for i, idx in enumerate(np.array_split(np.arange(n), k)):
            f = root / split / f"shard-{i:05d}.parquet"
            pq.write_table(pa.table({"label": pa.array(y[idx].astype(np.int32), pa.int32()),
                                     "pixels": pa.array(list(x[idx]), pa.list_(pa.float32()))}), f)
            shards.append({"file": f"{split}/{f.name}", "rows": len(idx),
                           "sha256": hashlib.sha256(f.read_bytes()).hexdigest()})
        splits[split] = {"rows": n, "shards": shards}
    norm = {"scale": 1 / 255, "mean": 0.13, "std": 0.31, **({"fit_on": fit_on} if fit_on else {})}
    (root / "_manifest.json").write_text(json.dumps({
        "format": "hpcml-dataset/1", "n_shards": n_shards, "splits": splits, "normalization": norm}))
    return root


@pytest.fixture(scope="session")
def contract_dataset():
    """A factory of tiny datasets in the contract layout: ``contract_dataset(root, n_shards=2, ...)``."""
    return _write_contract_dataset


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
