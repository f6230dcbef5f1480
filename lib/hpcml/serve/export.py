"""Package a trained model for inference: TorchScript, ONNX, and (where present) TensorRT.

The training stage saves an ``hpcml-model/1`` artifact (``model.pt``: arch, config,
state_dict, normalisation). Serving does not want Python model code on the hot path,
so the model is exported once into a self-contained graph:

* **TorchScript** (``torch.jit.trace``): runs in libtorch without the model's Python
  class; what TorchServe and Triton's PyTorch backend load.
* **ONNX** (``torch.onnx.export``, opset 17, dynamic batch axis): runs in ONNX
  Runtime, and is the entry point to TensorRT and most accelerators.
* **TensorRT**: on an NVIDIA GPU, the ONNX graph is compiled into a TensorRT engine —
  either ahead of time (``trtexec --onnx=model.onnx --saveEngine=model.plan --fp16
  --minShapes=input:1x1x28x28 --optShapes=input:32x1x28x28 --maxShapes=input:256x1x28x28``,
  the engine then loaded by Triton's TensorRT backend), or lazily by ONNX Runtime's
  ``TensorrtExecutionProvider`` (with an engine cache). Engines are specific to the GPU
  model and TensorRT version, so they are built on the target node type (in the image
  build for a fixed instance family, or at pod start with a cache on a volume).
  :func:`tensorrt_status` detects whether that path can run here; when it cannot, the
  reason is reported and the path is skipped — never faked.

Every export is checked against eager PyTorch on real inputs (:func:`agreement`): the
largest absolute logit difference must stay under a stated tolerance and the predicted
classes must match.

Inputs are the data contract's already-normalised pixels, shape ``(N, 1, 28, 28)``
float32; outputs are logits ``(N, 10)``. :func:`prepare_model` resolves the runtime and
file a server worker loads (exporting an artifact on the way when needed).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from hpcml.serve.protocol import INPUT_NAME  # the ONNX graph's input is the v2 input peers serve by name
from hpcml.serve.spec import RUNTIMES

#: Max |logit difference| accepted between an exported runtime and eager PyTorch (float32).
TOLERANCE = 1e-3
OUTPUT_NAME = "logits"
INPUT_SHAPE = (1, 28, 28)


def load_artifact(path: str | Path):
    """Load an ``hpcml-model/1`` artifact saved by the training stage.

    Returns:
        ``(model in eval mode, artifact dict)``.

    Raises:
        FileNotFoundError: naming the path and the notebook that writes it.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"model artifact {path} does not exist: run notebooks/02_horovod_training.ipynb first")
    from hpcml.train.checkpoint import load_model

    model, artifact = load_model(path)
    return model.eval(), artifact


def as_images(x: np.ndarray) -> np.ndarray:
    """Reshape ``(N, 784)`` pixels to the model's ``(N, 1, 28, 28)`` float32 input."""
    x = np.asarray(x, dtype=np.float32)
    return np.ascontiguousarray(x.reshape((-1, *INPUT_SHAPE)))


def to_torchscript(model, out: str | Path, batch: int = 2) -> Path:
    """Trace ``model`` into a TorchScript file (no Python model class needed to load it)."""
    import torch

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        traced = torch.jit.trace(model.eval(), torch.zeros(batch, *INPUT_SHAPE), check_trace=False)
    tmp = out.with_suffix(".tmp")
    traced.save(str(tmp))
    os.replace(tmp, out)
    return out


def to_onnx(model, out: str | Path, opset: int = 17, batch: int = 2) -> Path:
    """Export ``model`` to ONNX with a dynamic batch axis (TorchScript-based exporter)."""
    import torch

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    with torch.no_grad():
        torch.onnx.export(
            model.eval(), (torch.zeros(batch, *INPUT_SHAPE),), str(tmp), dynamo=False,
            input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], opset_version=opset,
            dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
        )
    os.replace(tmp, out)
    return out


# ---- runtimes: one callable per engine, np (N,1,28,28) float32 -> np (N,10) logits ----

def _eager(model, threads: int) -> Callable[[np.ndarray], np.ndarray]:
    import torch

    torch.set_num_threads(threads)
    model = model.eval()

    def run(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return model(torch.from_numpy(x)).numpy()
    return run


def _torchscript(path: str | Path, threads: int) -> Callable[[np.ndarray], np.ndarray]:
    import torch

    torch.set_num_threads(threads)
    mod = torch.jit.load(str(path)).eval()

    def run(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return mod(torch.from_numpy(x)).numpy()
    return run


def _onnx(path: str | Path, threads: int, providers: list[str] | None = None) -> Callable[[np.ndarray], np.ndarray]:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(path), so, providers=providers or ["CPUExecutionProvider"])

    def run(x: np.ndarray) -> np.ndarray:
        return sess.run([OUTPUT_NAME], {INPUT_NAME: x})[0]
    return run




def load_runtime(kind: str, source, threads: int = 1) -> Callable[[np.ndarray], np.ndarray]:
    """A predict function for ``kind`` in :data:`RUNTIMES`.

    Args:
        kind: ``"onnx"`` (source: .onnx path), ``"torchscript"`` (source: TorchScript
            file) or ``"eager"`` (source: an ``nn.Module`` or an ``hpcml-model/1`` path).
        source: see ``kind``.
        threads: intra-op threads (1 per server worker process on a small node).
    """
    if kind == "onnx":
        return _onnx(source, threads)
    if kind == "torchscript":
        return _torchscript(source, threads)
    if kind == "eager":
        model = load_artifact(source)[0] if isinstance(source, (str, Path)) else source
        return _eager(model, threads)
    raise ValueError(f"runtime must be one of {RUNTIMES}, got {kind!r}")


def export_all(model, out_dir: str | Path) -> dict[str, Path]:
    """Write ``model.ts`` (TorchScript) and ``model.onnx`` into ``out_dir``."""
    out_dir = Path(out_dir)
    return {"torchscript": to_torchscript(model, out_dir / "model.ts"), "onnx": to_onnx(model, out_dir / "model.onnx")}


def agreement(model, files: dict[str, Path], x: np.ndarray, tolerance: float = TOLERANCE,
              batch: int = 256) -> list[dict]:
    """Compare each exported runtime's logits with eager PyTorch on ``x``.

    Returns:
        One row per runtime: ``runtime, n, max_abs_diff, mean_abs_diff,
        argmax_agreement`` (fraction of equal predicted classes), ``tolerance``, ``ok``.
    """
    x = as_images(x)
    ref_fn = _eager(model, threads=max(1, (os.cpu_count() or 1)))
    ref = np.concatenate([ref_fn(x[i:i + batch]) for i in range(0, len(x), batch)])
    rows = []
    for kind, path in files.items():
        fn = load_runtime(kind, path, threads=max(1, (os.cpu_count() or 1)))
        out = np.concatenate([fn(x[i:i + batch]) for i in range(0, len(x), batch)])
        diff = np.abs(out - ref)
        rows.append({
            "runtime": kind, "n": int(len(x)), "max_abs_diff": float(diff.max()),
            "mean_abs_diff": float(diff.mean()),
            "argmax_agreement": float((out.argmax(1) == ref.argmax(1)).mean()),
            "tolerance": tolerance, "ok": bool(diff.max() <= tolerance),
        })
    return rows


@dataclass
class RuntimeTiming:
    runtime: str
    batch: int
    ms_per_batch: float
    us_per_sample: float


def benchmark_runtimes(fns: dict[str, Callable[[np.ndarray], np.ndarray]], x: np.ndarray,
                       batch_sizes: tuple[int, ...] = (1, 8, 32), repeats: int = 30,
                       clock: Callable[[], float] = time.perf_counter) -> list[RuntimeTiming]:
    """Median time of each runtime at each batch size (after 3 warm-up calls).

    Args:
        clock: ``time.perf_counter`` (wall time, the default) or ``time.thread_time`` (CPU time of
            the calling thread: with one intra-op thread ONNX Runtime and TorchScript compute on
            the caller, so this is the model's CPU cost, unaffected by other processes on a
            busy machine).
    """
    x = as_images(x)
    out = []
    for name, fn in fns.items():
        for b in batch_sizes:
            xb = np.ascontiguousarray(np.resize(x, (b, *INPUT_SHAPE)))
            for _ in range(3):
                fn(xb)
            times = []
            for _ in range(repeats):
                t0 = clock()
                fn(xb)
                times.append(clock() - t0)
            med = float(np.median(times))
            out.append(RuntimeTiming(name, b, med * 1e3, med * 1e6 / b))
    return out


def tensorrt_status() -> dict:
    """Whether the TensorRT path can run here, and why not when it cannot.

    Returns:
        ``{"available": bool, "provider": str | None, "reason": str}``. Available when
        ONNX Runtime offers ``TensorrtExecutionProvider`` and an NVIDIA GPU is visible.
    """
    import onnxruntime as ort

    providers = ort.get_available_providers()
    gpu = Path("/dev/nvidia0").exists() or Path("/proc/driver/nvidia/version").exists()
    if not gpu:
        return {"available": False, "provider": None, "reason": "no NVIDIA GPU visible (/dev/nvidia0 absent)"}
    if "TensorrtExecutionProvider" not in providers:
        return {"available": False, "provider": None,
                "reason": f"onnxruntime build has no TensorrtExecutionProvider (has {providers}); "
                          "install onnxruntime-gpu with TensorRT libraries"}
    return {"available": True, "provider": "TensorrtExecutionProvider", "reason": "GPU and TensorRT EP present"}


def run_tensorrt(onnx_path: str | Path, x: np.ndarray, cache_dir: str | Path) -> np.ndarray:
    """Run the ONNX graph through ONNX Runtime's TensorRT provider (engine cached in ``cache_dir``).

    Raises:
        RuntimeError: when :func:`tensorrt_status` says the path is unavailable (with its reason).
    """
    st = tensorrt_status()
    if not st["available"]:
        raise RuntimeError(f"TensorRT path skipped: {st['reason']}")
    import onnxruntime as ort

    opts = {"trt_engine_cache_enable": True, "trt_engine_cache_path": str(cache_dir), "trt_fp16_enable": False}
    sess = ort.InferenceSession(str(onnx_path), providers=[("TensorrtExecutionProvider", opts), "CUDAExecutionProvider"])
    return sess.run([OUTPUT_NAME], {INPUT_NAME: as_images(x)})[0]


_SUFFIX_RUNTIME = {".onnx": "onnx", ".ts": "torchscript"}


def prepare_model(model: str | Path, runtime: str, out_dir: str | Path) -> tuple[str, Path]:
    """Resolve ``(runtime, file)`` for the workers, exporting a ``model.pt`` artifact if needed.

    Args:
        model: ``model.pt`` (hpcml-model/1 artifact), ``*.onnx`` or ``*.ts``.
        runtime: ``auto`` (by suffix; ``onnx`` for an artifact) or one of :data:`RUNTIMES`.
        out_dir: where an export is written.
    """
    model = Path(model)
    if not model.exists():
        raise FileNotFoundError(f"model {model} does not exist: run notebooks/02_horovod_training.ipynb first")
    if model.suffix in _SUFFIX_RUNTIME:
        rt = _SUFFIX_RUNTIME[model.suffix]
        if runtime not in ("auto", rt):
            raise ValueError(f"model {model.name} is a {rt} file; runtime {runtime!r} cannot load it")
        return rt, model
    rt = "onnx" if runtime == "auto" else runtime
    if rt == "eager":
        return rt, model
    net, _ = load_artifact(model)
    fn = to_onnx if rt == "onnx" else to_torchscript
    return rt, fn(net, Path(out_dir) / ("model.onnx" if rt == "onnx" else "model.ts"))
