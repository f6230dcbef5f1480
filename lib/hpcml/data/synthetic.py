"""Synthetic datasets in the training contract's layout, for tests and drills that run before Spark."""

from __future__ import annotations

from pathlib import Path


def write_contract_dataset(root: Path, n_shards: int = 2, rows: tuple[int, int, int] = (384, 96, 96),
                            eval_shards: int | None = None, noise: float = 1.5, seed: int = 0, poison: bool = False,
                            fit_on: str | None = "train") -> Path:
    """Tiny learnable digit-shaped data in the hpcml.data contract layout (shards + manifest).

    Ten random prototypes of 784 pixels, each row a prototype plus Gaussian noise: not MNIST,
    but the same columns, splits, shards and manifest a training job reads, made in a
    fraction of a second without Spark (tests, and the cluster drills of notebook 00 that run
    before the Spark stage).

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
