"""The notebook's serving helpers for real: ``quick_model`` trains through hpcml.train on a
contract-layout dataset and saves an artifact the server loads and serves; the side-by-side
batching comparison reports both servers; bad encodings are rejected."""

import hashlib
import json

import numpy as np
import pytest

from hpcml import paths
from hpcml.serve import bench, export, loadgen, protocol
from hpcml.serve.server import ServerProcess

pytestmark = pytest.mark.integration


def write_dataset(root, n=240, seed=0):
    """A tiny learnable dataset in the hpcml.data contract layout (2 train shards)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    protos = rng.normal(0, 1, (10, 784)).astype(np.float32)
    splits = {}
    for split, n_shards in (("train", 2), ("val", 1), ("test", 1)):
        (root / split).mkdir(parents=True, exist_ok=True)
        y = rng.integers(0, 10, n)
        x = (protos[y] + rng.normal(0, 1, (n, 784))).astype(np.float32)
        shards = []
        for i, idx in enumerate(np.array_split(np.arange(n), n_shards)):
            f = root / split / f"shard-{i:05d}.parquet"
            pq.write_table(pa.table({"label": pa.array(y[idx].astype(np.int32), pa.int32()),
                                     "pixels": pa.array(list(x[idx]), pa.list_(pa.float32()))}), f)
            shards.append({"file": f"{split}/{f.name}", "rows": len(idx),
                           "sha256": hashlib.sha256(f.read_bytes()).hexdigest()})
        splits[split] = {"rows": n, "shards": shards}
    (root / "_manifest.json").write_text(json.dumps({
        "format": "hpcml-dataset/1", "n_shards": 2, "splits": splits,
        "normalization": {"scale": 1 / 255, "mean": 0.13, "std": 0.31}}))
    return root


def test_quick_model_trains_saves_and_serves(build_tmp):
    write_dataset(paths.dataset_dir())
    assert bench.find_model() is None
    path = bench.quick_model(epochs=1)
    assert path == paths.models_dir() / "cnn" / "model.pt" and bench.find_model() == path
    model, art = export.load_artifact(path)
    assert art["arch"] == "cnn" and art["normalization"]["std"] == 0.31
    assert art["metrics"]["trained_by"] == "04_serving quick_model" and 0 <= art["metrics"]["val_accuracy"] <= 1
    x, _ = bench.test_set(8)
    with ServerProcess.start(path, workers=1) as srv:  # the artifact is exported to ONNX by the server
        r = loadgen.closed_loop(srv.url + bench.INFER, bench.bodies_for(x, encoding="binary"), 2, n_requests=20)
    assert r.ok == 20 and r.error_count == 0


def test_batching_at_saturation_reports_both_sides(tmp_path, tiny_cnn):
    f = export.to_onnx(tiny_cnn(), tmp_path / "m.onnx")
    x = np.random.default_rng(0).normal(size=(16, 784)).astype(np.float32)
    out = bench.batching_at_saturation(f, bench.bodies_for(x, encoding="binary"), concurrency=16, n_requests=300,
                                       duration_s=5, workers=1, max_batch_size=16, rounds=1)
    assert out["size1"]["mean_batch"] == 1.0 and out["batched"]["mean_batch"] > 1.0
    assert out["batched"]["errors"] == out["size1"]["errors"] == 0
    assert out["ratio"] == pytest.approx(out["batched"]["rps"] / out["size1"]["rps"])


def test_bodies_for_rejects_unknown_encoding():
    with pytest.raises(ValueError, match="encoding must be one of"):
        bench.bodies_for(np.zeros((1, 784), np.float32), encoding="protobuf")
    body, headers = bench.bodies_for(np.zeros((1, 784), np.float32), encoding="binary")[0]
    assert protocol.parse_infer(body, 1, headers["Inference-Header-Content-Length"]).x.shape == (1, 1, 28, 28)
