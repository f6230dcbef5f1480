"""Export agreement: TorchScript and ONNX Runtime logits match eager PyTorch within
the stated tolerance; runtimes reject what they cannot load; TensorRT is detected, not faked."""

import pytest

from hpcml.serve import export
from hpcml.serve.spec import RUNTIMES

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def exported(tmp_path_factory, tiny_cnn):
    model = tiny_cnn()
    return model, export.export_all(model, tmp_path_factory.mktemp("export"))


def test_exports_agree_with_eager(exported, sample_inputs):
    model, files = exported
    rows = export.agreement(model, files, sample_inputs())
    assert {r["runtime"] for r in rows} == {"onnx", "torchscript"}
    for r in rows:
        assert r["ok"], r
        assert r["max_abs_diff"] <= export.TOLERANCE
        assert r["argmax_agreement"] == 1.0


def test_agreement_detects_a_different_model(exported, tmp_path, tiny_cnn, sample_inputs):
    model, _ = exported
    other = export.to_onnx(tiny_cnn(seed=1), tmp_path / "other.onnx")
    (row,) = export.agreement(model, {"onnx": other}, sample_inputs(50))
    assert not row["ok"] and row["max_abs_diff"] > export.TOLERANCE


def test_runtimes_handle_any_batch(exported, sample_inputs):
    model, files = exported
    x = export.as_images(sample_inputs(37))
    for kind in RUNTIMES:
        fn = export.load_runtime(kind, files.get(kind, model))
        assert fn(x).shape == (37, 10)
    timings = export.benchmark_runtimes({"onnx": export.load_runtime("onnx", files["onnx"])}, x, (1, 4), repeats=3)
    assert [t.batch for t in timings] == [1, 4] and all(t.us_per_sample > 0 for t in timings)


def test_unknown_runtime_and_missing_artifact(tmp_path):
    with pytest.raises(ValueError, match="runtime must be one of"):
        export.load_runtime("tensorflow", tmp_path / "x")
    with pytest.raises(FileNotFoundError, match="02_horovod_training"):
        export.load_artifact(tmp_path / "missing.pt")


def test_tensorrt_detected_or_skipped_with_reason(exported, tmp_path, sample_inputs):
    st = export.tensorrt_status()
    assert set(st) == {"available", "provider", "reason"} and st["reason"]
    if not st["available"]:
        with pytest.raises(RuntimeError, match="TensorRT path skipped"):
            export.run_tensorrt(exported[1]["onnx"], sample_inputs(2), tmp_path)
    else:
        y = export.run_tensorrt(exported[1]["onnx"], sample_inputs(8), tmp_path)
        assert y.shape == (8, 10)
