"""Standalone KServe peer: one ONNX model behind KServe's ModelServer (kserve 0.21.0), v2 REST.

Runs in the KServe peer's own virtual environment (``ci/setup_peers kserve``), where hpcml is
NOT installed: this file imports only KServe, NumPy and ONNX Runtime.

KServe's in-process ModelServer has no dynamic batcher (batching is a separate sidecar in a
KServe cluster), so every request is one model call. ``--workers`` are uvicorn worker
processes (KServe's own ``workers`` option), each with its own ONNX Runtime session.
KServe binds ``0.0.0.0`` with no option to change it; this script makes uvicorn bind
127.0.0.1 instead, as every server of the project does.

Usage: ``python kserve_server.py --model m.onnx --port 8080 --name mnist --workers 2 --threads 1``
"""

from __future__ import annotations

import argparse
import sys
import uuid

import numpy as np

if __name__ in ("__main__", "__mp_main__"):  # the peer or one of its spawned workers, not an import
    # KServe parses sys.argv when imported (in every spawned worker too): no per-request log lines,
    # like the project's server (access_log=False); its own arguments are parse_known_args'ed.
    sys.argv += ["--configure_logging", "false", "--enable_latency_logging", "false"]
try:
    import kserve
    from kserve.protocol.infer_type import InferOutput, InferResponse
    _Base = kserve.Model
except ModuleNotFoundError:  # imported outside the KServe venv (hpcml's docs check): nothing to serve
    kserve = InferOutput = InferResponse = None
    _Base = object


def _loopback_only() -> None:
    """Force uvicorn's ``host`` to 127.0.0.1 (KServe hard-codes ``0.0.0.0``)."""
    import uvicorn

    init = uvicorn.Config.__init__

    def loopback_init(self, *args, **kw):
        kw["host"] = "127.0.0.1"
        init(self, *args, **kw)
    uvicorn.Config.__init__ = loopback_init


class OnnxModel(_Base):
    """The exported ONNX model (input ``input`` [N, 784], outputs ``logits`` and ``label``).

    Module level so KServe's spawned workers can unpickle it.
    """

    def __init__(self, name: str, path: str, threads: int):
        super().__init__(name)
        self.path, self.threads, self.sess, self.quiet = path, threads, None, False

    def _quiet(self) -> None:
        """No log line per request (a worker configures logging when it starts serving)."""
        import logging

        for name in ("uvicorn.access", "kserve.trace"):
            logging.getLogger(name).setLevel(logging.WARNING)
        self.quiet = True

    def load(self) -> bool:
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = self.threads
        so.inter_op_num_threads = 1
        self.sess = ort.InferenceSession(self.path, so, providers=["CPUExecutionProvider"])
        self.ready = True
        return True

    def get_input_types(self) -> list[dict]:
        """The v2 model metadata's inputs (KServe leaves them empty unless the model says)."""
        return [{"name": "input", "datatype": "FP32", "shape": [-1, 784]}]

    def get_output_types(self) -> list[dict]:
        return [{"name": "logits", "datatype": "FP32", "shape": [-1, 10]},
                {"name": "label", "datatype": "INT64", "shape": [-1]}]

    def __getstate__(self):  # a worker re-creates its own session
        return {k: v for k, v in self.__dict__.items() if k != "sess"} | {"sess": None, "quiet": False}

    def __setstate__(self, state):
        self.__dict__.update(state)
        if self.ready:
            self.load()

    def predict(self, payload, headers=None, response_headers=None):
        if self.sess is None or not self.quiet:
            self._quiet()
        x = payload.inputs[0].as_numpy().astype(np.float32, copy=False).reshape(-1, 1, 28, 28)
        y = self.sess.run(["logits"], {"input": x})[0]
        out = [InferOutput("logits", list(y.shape), "FP32", y.astype(np.float32)),
               InferOutput("label", [len(y)], "INT64", y.argmax(1).astype(np.int64))]
        return InferResponse(payload.id or str(uuid.uuid4()), self.name, out)  # KServe requires an id


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--name", default="mnist")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1)
    a, _ = ap.parse_known_args(argv)
    _loopback_only()
    model = OnnxModel(a.name, a.model, a.threads)
    model.load()
    print(f"kserve peer: serving {a.name} on 127.0.0.1:{a.port}", flush=True)
    kserve.ModelServer(http_port=a.port, workers=a.workers, enable_grpc=False,
                       enable_latency_logging=False).start([model])


if __name__ == "__main__":
    main()
