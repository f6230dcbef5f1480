"""The serving spec (validated) and turning a model artifact into a runtime file."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from hpcml.serve.export import RUNTIMES


@dataclass
class ServeConfig:
    """One worker's settings.

    Args:
        model_file: the runtime file (``.onnx`` / ``.ts``) or, for ``eager``, the ``model.pt`` artifact.
        runtime: ``onnx``, ``torchscript`` or ``eager``.
        model_name: the name in the v2 routes.
        max_batch_size: rows per model call; 1 disables batching.
        max_wait_ms: 0 = adaptive batching (run when the model is free with what is queued);
            > 0 = fixed window a batch waits to fill after its first request.
        max_request_rows: the largest N a single request may carry.
        max_body_bytes: larger bodies get 413.
        threads: intra-op threads per worker.
        frontend: ``asgi`` (raw) or ``fastapi``.
        state_dir: ready files and the injected latency live here.
        graceful_timeout_s: how long shutdown waits for in-flight requests.
        limit_concurrency: connections per worker beyond which uvicorn answers 503.
    """

    model_file: str
    runtime: str = "onnx"
    model_name: str = "mnist"
    max_batch_size: int = 32
    max_wait_ms: float = 0.0
    max_request_rows: int = 64
    max_body_bytes: int = 2_000_000
    threads: int = 1
    frontend: str = "asgi"
    state_dir: str = ""
    graceful_timeout_s: float = 20.0
    limit_concurrency: int = 1000

    def __post_init__(self):
        if self.runtime not in RUNTIMES:
            raise ValueError(f"ServeConfig.runtime must be one of {RUNTIMES}, got {self.runtime!r}")
        if self.frontend not in ("asgi", "fastapi"):
            raise ValueError(f"ServeConfig.frontend must be 'asgi' or 'fastapi', got {self.frontend!r}")
        for name in ("max_batch_size", "max_request_rows", "max_body_bytes", "threads", "limit_concurrency"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"ServeConfig.{name} must be a positive integer, got {getattr(self, name)!r}")
        if not 0 <= self.max_wait_ms <= 1000:
            raise ValueError(f"ServeConfig.max_wait_ms must be in 0..1000 ms, got {self.max_wait_ms!r}")
        if not self.model_name or "/" in self.model_name:
            raise ValueError(f"ServeConfig.model_name must be a non-empty name without '/', got {self.model_name!r}")


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
    from hpcml.serve import export

    net, _ = export.load_artifact(model)
    fn = export.to_onnx if rt == "onnx" else export.to_torchscript
    return rt, fn(net, Path(out_dir) / ("model.onnx" if rt == "onnx" else "model.ts"))
