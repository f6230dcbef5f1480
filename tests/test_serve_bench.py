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


def test_served_model_is_named_and_scored_against_the_others(build_tmp, contract_dataset):
    """04 says which model it serves and how its test accuracy compares with the other trained
    models on the same rows; a model that is the served file (or a copy of it) is left out."""
    from hpcml import report

    contract_dataset(paths.dataset_dir(), rows=(240, 240, 240), eval_shards=1, noise=1.0, fit_on=None)
    first = bench.quick_model(epochs=1, seed=0)
    x, y = bench.test_set()
    model, _ = export.load_artifact(first)
    alone = bench.served_vs_others(first, model, x, y)
    assert alone["others"] == {} and alone["test_rows"] == len(x)
    assert alone["served_test_accuracy"] == pytest.approx(float((model(__import__("torch").from_numpy(
        export.as_images(x))).argmax(1).numpy() == y).mean()))
    best = paths.models_dir() / "best" / "model.pt"
    best.parent.mkdir(parents=True)
    best.write_bytes(first.read_bytes())  # served: a copy of this CNN, promoted
    bench.quick_model(epochs=1, seed=1)  # 02's CNN is now another model
    served = bench.served_vs_others(best, model, x, y)
    assert set(served["others"]) == {"cnn"} and served["source"].startswith("04's quick CNN")
    report.begin("04_serving", params={})
    text = bench.say_served(served)._repr_markdown_()
    word = "at least as accurate as" if served["served_test_accuracy"] >= served["others"]["cnn"] else "less accurate than"
    assert f"so it is {word} 02's CNN" in text and f"{len(x):,} test rows" in text
    assert report.check_conclusions() == {"served_vs_cnn": served["served_test_accuracy"] >= served["others"]["cnn"]}


def test_batching_at_saturation_reports_both_sides(tmp_path, tiny_cnn):
    f = export.to_onnx(tiny_cnn(), tmp_path / "m.onnx")
    x = np.random.default_rng(0).normal(size=(16, 784)).astype(np.float32)
    out = bench.batching_at_saturation(f, bench.bodies_for(x, encoding="binary"), concurrency=16, n_requests=300,
                                       duration_s=5, workers=1, max_batch_size=16, rounds=2)
    assert out["size1"]["mean_batch"] == 1.0 and out["batched"]["mean_batch"] > 1.0
    assert out["batched"]["errors"] == out["size1"]["errors"] == 0
    assert out["ratio"] == pytest.approx(out["batched"]["rps"] / out["size1"]["rps"])
    assert len(out["ratio_rounds"]) == 2 and out["ratio_ci95"] >= 0
    for side in ("batched", "size1"):  # where the CPU of one request went, measured on each server
        assert out[side]["server_cpu_ms_per_req"] > 0 and out[side]["client_cpu_ms_per_req"] > 0
        assert 0 < out[side]["model_wall_ms_per_row"] < out[side]["p99_ms"]


def test_capacity_search_extends_until_the_objective_is_crossed(tmp_path, tiny_cnn):
    f = export.to_onnx(tiny_cnn(), tmp_path / "m.onnx")
    bodies = bench.bodies_for(np.random.default_rng(0).normal(size=(8, 784)).astype(np.float32), encoding="binary")
    with ServerProcess.start(f, workers=1) as srv:
        never = bench.capacity_search(srv, bodies, [1, 2], 40, 2, p99_ms=1e9, max_concurrency=8)
        at_once = bench.capacity_search(srv, bodies, [1, 2], 40, 2, p99_ms=1e-6, max_concurrency=8)
        with pytest.raises(ValueError, match="max_concurrency"):
            bench.capacity_search(srv, bodies, [1, 4], 40, 2, p99_ms=50, max_concurrency=2)
    assert [r.concurrency for r in never] == [1, 2, 4, 8]  # doubled up to the bound: a lower bound
    assert loadgen.capacity_at_slo(never, 1e9).is_lower_bound
    assert [r.concurrency for r in at_once] == [1, 2]  # already over the objective: no extension
    assert loadgen.capacity_at_slo(at_once, 1e-6).concurrency is None


def test_ci95_half_width():
    assert np.isnan(bench.ci95_half_width([1.0])) and np.isnan(bench.ci95_half_width([1.0, float("nan")]))
    assert bench.ci95_half_width([2.0, 2.0, 2.0]) == 0.0
    assert bench.ci95_half_width([1.0, 3.0]) == pytest.approx(12.706 * np.sqrt(2) / np.sqrt(2), rel=1e-3)


def test_bodies_for_rejects_unknown_encoding():
    with pytest.raises(ValueError, match="encoding must be one of"):
        bench.bodies_for(np.zeros((1, 784), np.float32), encoding="protobuf")
    body, headers = bench.bodies_for(np.zeros((1, 784), np.float32), encoding="binary")[0]
    assert protocol.parse_infer(body, 1, headers["Inference-Header-Content-Length"]).x.shape == (1, 1, 28, 28)
