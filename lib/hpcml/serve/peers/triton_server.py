"""Standalone Triton peer: one ONNX model behind NVIDIA's tritonserver (PyTriton 0.7.0), v2 REST.

Runs in the Triton peer's own virtual environment (``ci/setup_peers triton``), where hpcml is
NOT installed: this file imports only PyTriton, NumPy and ONNX Runtime.

The ``tritonserver`` binary that the ``nvidia-pytriton`` wheel bundles has only the Python
backend (``pytriton/tritonserver/backends/python``), no ONNX Runtime backend, so the model runs
through PyTriton's Python binding: Triton's HTTP front-end, scheduler and dynamic batcher
hand each batch to ``infer`` here, which calls ONNX Runtime. ``--instances`` model instances
(Triton's instance group: one infer callable and one ONNX Runtime session each) play the role
of the project server's worker processes.

Usage: ``python triton_server.py --model m.onnx --port 8000 --name mnist --max-batch 32
--max-delay-ms 0 --instances 2 --threads 1 [--no-batching]``
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import sysconfig
from pathlib import Path

import numpy as np


def _session(path: str, threads: int):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


def _infer_fn(path: str, threads: int):
    from pytriton.decorators import batch

    sess = _session(path, threads)

    @batch
    def infer(input):  # noqa: A002 - the tensor's name in the request
        y = sess.run(["logits"], {"input": np.ascontiguousarray(input, dtype=np.float32).reshape(-1, 1, 28, 28)})[0]
        return {"logits": y.astype(np.float32), "label": y.argmax(1).astype(np.int64).reshape(-1, 1)}
    return infer


def _match_libpython() -> None:
    """Make Triton's Python-backend stub load this interpreter's libpython, not the system's.

    The stub links ``libpython3.X.so.1.0`` by name; on a machine whose ``python3`` is not the
    system one (pyenv here: 3.11.7 beside Debian's 3.11.2) it would load the system library
    with this interpreter's standard library and fail in ``multiprocessing`` on the mismatch.
    """
    libdir = sysconfig.get_config_var("LIBDIR")
    if libdir and (Path(libdir) / sysconfig.get_config_var("LDLIBRARY")).exists():
        os.environ["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in (libdir, os.environ.get("LD_LIBRARY_PATH")) if p)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--name", default="mnist")
    ap.add_argument("--max-batch", type=int, default=32)
    ap.add_argument("--max-delay-ms", type=float, default=0.0)
    ap.add_argument("--instances", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--no-batching", action="store_true", help="no dynamic batcher: one request per model call")
    a = ap.parse_args(argv)
    # SIGTERM unwinds the `with Triton` block below, so PyTriton stops tritonserver cleanly (it then
    # removes its temporary copy of the model) instead of this process dying and leaving it behind
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
    from pytriton.triton import Triton, TritonConfig

    logging.basicConfig(level=logging.WARNING)
    _match_libpython()
    cfg = TritonConfig(http_address="127.0.0.1", http_port=a.port, allow_grpc=False, allow_metrics=False,
                       exit_on_error=True)
    batcher = None if a.no_batching else DynamicBatcher(max_queue_delay_microseconds=int(a.max_delay_ms * 1000))
    with Triton(config=cfg) as triton:
        triton.bind(model_name=a.name, infer_func=[_infer_fn(a.model, a.threads) for _ in range(a.instances)],
                    inputs=[Tensor(name="input", dtype=np.float32, shape=(784,))],
                    outputs=[Tensor(name="logits", dtype=np.float32, shape=(10,)),
                             Tensor(name="label", dtype=np.int64, shape=(1,))],  # Triton needs dims: [N, 1]
                    config=ModelConfig(max_batch_size=a.max_batch, batcher=batcher), strict=False)
        print(f"triton peer: serving {a.name} on 127.0.0.1:{a.port}", flush=True)
        triton.serve()


if __name__ == "__main__":
    main()
