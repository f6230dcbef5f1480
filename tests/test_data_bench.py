"""The benchmark's pandas and DuckDB engines do the job's transform: on a small synthetic lake
with every malformed kind injected, each accounts for every input line, finds the injected
rows, and writes balanced, normalised shards of the same rows."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from hpcml.data import bench, raw

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def lake(tmp_path_factory):
    d = tmp_path_factory.mktemp("lake") / "raw"
    raw.write_synthetic_lake(3000, lake_dir=d, chunk_rows=500, rows_per_file=1000, bad_per_chunk=2, dup_fraction=0.02)
    return d


def _shards(out):
    files = sorted(p for p in out.rglob("*.parquet") if p.name != "quarantine.parquet")
    return {str(f.relative_to(out)): pq.read_table(f) for f in files}


@pytest.mark.parametrize("engine", ["pandas", "duckdb"])
def test_engine_accounts_for_every_line(engine, lake, tmp_path):
    meta = json.loads((lake / "_SUCCESS").read_text())
    r = getattr(bench, f"_{engine}")(lake, tmp_path, 2)
    c = r["counts"]
    assert c["input"] == meta["rows"] == 3000 + 12
    assert c["quarantined"] == sum(meta["injected_bad"].values()) == 12
    assert c["input"] == c["output"] + c["duplicates_removed"] + c["quarantined"]
    assert c["duplicates_removed"] > 0
    assert pq.read_table(tmp_path / "quarantine.parquet").num_rows == 12
    tables = _shards(tmp_path)
    assert len(tables) == 6 and sum(t.num_rows for t in tables.values()) == c["output"]
    for split in ("train", "val", "test"):
        sizes = [t.num_rows for name, t in tables.items() if split in name]
        assert len(sizes) == 2 and max(sizes) - min(sizes) <= 1, (split, sizes)
    train = np.concatenate([np.stack(t.column("pixels").to_numpy(zero_copy_only=False))
                            for name, t in tables.items() if "train" in name])
    assert train.dtype == np.float32 and train.shape[1] == raw.N_PIXELS
    assert abs(train.mean()) < 1e-3 and abs(train.std() - 1.0) < 1e-3  # normalised with train statistics


def test_engines_keep_the_same_rows(lake, tmp_path):
    """Same clean, de-duplicated rows from both (their hash splits differ, the rows do not)."""
    labels = {}
    for engine in ("pandas", "duckdb"):
        out = tmp_path / engine
        out.mkdir()
        getattr(bench, f"_{engine}")(lake, out, 2)
        labels[engine] = np.sort(np.concatenate([t.column("label").to_numpy() for t in _shards(out).values()]))
    assert np.array_equal(labels["pandas"], labels["duckdb"])


def test_pandas_fits_estimate_grows_with_rows():
    small, _ = bench.pandas_fits({"rows": 1000})
    huge, why = bench.pandas_fits({"rows": 10**11})
    assert small and not huge and "GiB" in why
