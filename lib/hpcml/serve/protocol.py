"""Open Inference Protocol (KServe v2) request parsing and validation, framework-free.

A v2 inference request is JSON::

    {"id": "42", "inputs": [{"name": "input", "shape": [N, 784], "datatype": "FP32",
                              "data": [... N*784 numbers, flat or nested ...]}]}

``shape`` may also be ``[N, 1, 28, 28]``. Everything a client can get wrong is caught
here and turned into a :class:`BadRequest` carrying the HTTP status and a message that
names the field and what was expected — the server never lets a bad request reach the
model (where it would surface as a 500 or kill a worker).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import numpy as np

FEATURES = 784
ACCEPTED_SHAPES = ("[N, 784]", "[N, 1, 28, 28]")


class BadRequest(Exception):
    """A client error: ``status`` (4xx) and a message naming the problem."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class InferRequest:
    id: str | None
    x: np.ndarray  # (N, 1, 28, 28) float32, finite


def _reject_constant(token: str):
    raise BadRequest(400, f"non-finite number {token} in request body: inputs must be finite FP32 values")


def parse_json(body: bytes) -> dict:
    """Decode a JSON object body; NaN/Infinity tokens are rejected (400)."""
    try:
        obj = json.loads(body, parse_constant=_reject_constant)
    except BadRequest:
        raise
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(400, f"malformed JSON body: {exc}") from None
    if not isinstance(obj, dict):
        raise BadRequest(400, f"request body must be a JSON object, got {type(obj).__name__}")
    return obj


def parse_infer(body: bytes, max_rows: int) -> InferRequest:
    """Validate a v2 infer request and return its input as a model-ready array.

    Args:
        body: the raw HTTP body.
        max_rows: the largest N one request may carry.

    Raises:
        BadRequest: malformed JSON, missing/extra inputs, wrong datatype or shape, a data
            length that does not match the shape, non-numeric or non-finite values.
    """
    obj = parse_json(body)
    inputs = obj.get("inputs")
    if not isinstance(inputs, list) or len(inputs) != 1 or not isinstance(inputs[0], dict):
        raise BadRequest(400, "'inputs' must be a list with exactly one tensor object")
    t = inputs[0]
    dt = t.get("datatype")
    if dt != "FP32":
        raise BadRequest(400, f"inputs[0].datatype must be 'FP32', got {dt!r}")
    shape = t.get("shape")
    if (not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) for d in shape)):
        raise BadRequest(400, f"inputs[0].shape must be a list of integers, got {shape!r}")
    if not (len(shape) == 2 and shape[1] == FEATURES) and not (len(shape) == 4 and shape[1:] == [1, 28, 28]):
        raise BadRequest(400, f"inputs[0].shape must be one of {', '.join(ACCEPTED_SHAPES)}, got {shape}")
    n = shape[0]
    if not 1 <= n <= max_rows:
        raise BadRequest(400, f"inputs[0].shape[0] (batch) must be in 1..{max_rows}, got {n}")
    data = t.get("data")
    if not isinstance(data, list):
        raise BadRequest(400, f"inputs[0].data must be a list of numbers, got {type(data).__name__}")
    try:
        x = np.asarray(data, dtype=np.float32)
    except (ValueError, TypeError):
        raise BadRequest(400, "inputs[0].data must contain only numbers (FP32), nested evenly") from None
    expected = n * FEATURES
    if x.size != expected:
        raise BadRequest(400, f"inputs[0].data has {x.size} values but shape {shape} needs {expected}")
    if not np.isfinite(x).all():
        raise BadRequest(400, "inputs[0].data contains NaN or infinite values: inputs must be finite")
    rid = obj.get("id")
    return InferRequest(id=None if rid is None else str(rid), x=x.reshape(n, 1, 28, 28))


def infer_response(model: str, req_id: str | None, logits: np.ndarray) -> dict:
    """The v2 response: ``logits`` (FP32, N×10) and ``label`` (INT64, N)."""
    n = int(logits.shape[0])
    out = {
        "model_name": model, "model_version": "1",
        "outputs": [
            {"name": "logits", "datatype": "FP32", "shape": [n, int(logits.shape[1])],
             "data": [round(float(v), 6) for v in logits.ravel()]},
            {"name": "label", "datatype": "INT64", "shape": [n], "data": logits.argmax(1).tolist()},
        ],
    }
    if req_id is not None:
        out["id"] = req_id
    return out


def model_metadata(model: str, platform: str) -> dict:
    return {
        "name": model, "versions": ["1"], "platform": platform,
        "inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, FEATURES]}],
        "outputs": [{"name": "logits", "datatype": "FP32", "shape": [-1, 10]},
                    {"name": "label", "datatype": "INT64", "shape": [-1]}],
    }


def parse_latency(body: bytes) -> float:
    """``{"ms": number}`` for /admin/latency, 0..60000 ms."""
    obj = parse_json(body)
    ms = obj.get("ms")
    if isinstance(ms, bool) or not isinstance(ms, (int, float)) or not math.isfinite(ms) or not 0 <= ms <= 60000:
        raise BadRequest(400, f"'ms' must be a number of milliseconds in 0..60000, got {ms!r}")
    return float(ms)


def make_infer_body(x: np.ndarray, req_id: str | None = None) -> bytes:
    """Encode ``x`` (N×784 or N×1×28×28) as a v2 infer request body (for clients and tests)."""
    x = np.asarray(x, dtype=np.float32).reshape(-1, FEATURES)
    obj = {"inputs": [{"name": "input", "shape": [int(x.shape[0]), FEATURES], "datatype": "FP32",
                       "data": [round(float(v), 5) for v in x.ravel()]}]}
    if req_id is not None:
        obj["id"] = req_id
    return json.dumps(obj, separators=(",", ":")).encode()
