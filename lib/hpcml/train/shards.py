"""The data stage's Parquet shards as the training stage reads them: one train shard per
Horovod rank, checked to be complete and to match the world size before a job starts.

Reads through :mod:`hpcml.data.dataset` (the manifest and the splits), so the layout is
defined once, by the stage that writes it.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from hpcml.data import dataset

_SHARD = re.compile(r"shard-(\d{5})\.parquet$")


def list_shards(dataset_dir: Path, split: str = "train") -> list[Path]:
    """The shard files of a split, checked to be numbered 0..n-1 without gaps.

    Raises:
        FileNotFoundError: the split folder or its shards are missing (names the fix).
    """
    d = Path(dataset_dir) / split
    files = sorted(p for p in d.glob("shard-*.parquet") if _SHARD.search(p.name)) if d.is_dir() else []
    if not files:
        raise FileNotFoundError(
            f"no {split} shards under {d} (expected {split}/shard-00000.parquet …): build them with "
            "hpcml.data.dataset.ensure_dataset(n_shards=world_size) or run notebooks/01_spark_preprocessing.ipynb first")
    idx = [int(_SHARD.search(p.name).group(1)) for p in files]
    missing = sorted(set(range(max(idx) + 1)) - set(idx))
    if missing:
        raise FileNotFoundError(f"{d}: shard(s) {missing} missing (have {len(files)} of {max(idx) + 1})")
    return files


def check_world_size(dataset_dir: Path, world_size: int, elastic: bool = False) -> int:
    """Shard count of the train split; it must equal ``world_size`` unless elastic.

    Elastic jobs re-shard on every membership change (shard s goes to rank s % size), so
    they only need at least ``world_size`` shards.
    """
    n = len(list_shards(dataset_dir, "train"))
    if not elastic and n != world_size:
        raise ValueError(
            f"world_size={world_size} but {Path(dataset_dir) / 'train'} has {n} shard(s): each rank reads "
            f"its own shard; rebuild with hpcml.data.dataset.ensure_dataset(n_shards={world_size}) or set world_size={n}")
    if elastic and n < world_size:
        raise ValueError(f"elastic max world_size={world_size} needs >= {world_size} train shards, found {n}")
    return n


def read_split(dataset_dir: Path, split: str, shard: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """:func:`hpcml.data.dataset.read_split`: ``(x float32 (N, 784), y int64 (N,))`` of one shard or all."""
    return dataset.read_split(Path(dataset_dir), split, shard=shard)


def load_normalization(dataset_dir: Path) -> dict[str, Any]:
    """The ``normalization`` block of the dataset's manifest (``{}`` when there is no manifest).

    The model artifact carries it, so a server normalises requests as the data stage did.
    """
    try:
        manifest = dataset.load_manifest(Path(dataset_dir))
    except FileNotFoundError:
        return {}
    return manifest.get("normalization", {})
