"""The notebook's serving helpers for real: ``quick_model`` trains through hpcml.train on a
contract-layout dataset and saves an artifact the server loads and serves; the side-by-side
batching comparison reports both servers; bad encodings are rejected."""

import numpy as np
import pytest

from hpcml import paths
from hpcml.serve import bench, export, loadgen, protocol
from hpcml.serve.server import ServerProcess

pytestmark = pytest.mark.integration


def test_quick_model_trains_saves_and_serves(build_tmp, contract_dataset):
    contract_dataset(paths.dataset_dir(), rows=(240, 240, 240), eval_shards=1, noise=1.0, fit_on=None)
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
