"""Open Inference Protocol (KServe v2) request parsing and validation, framework-free.

A v2 inference request is JSON::

    {"id": "42", "inputs": [{"name": "input", "shape": [N, 784], "datatype": "FP32",
                              "data": [... N*784 numbers, flat or nested ...]}]}

``shape`` may also be ``[N, 1, 28, 28]``.

The **binary tensor data extension** (KServe v2 / Triton) is accepted too: the body is
the JSON header followed by the raw little-endian FP32 bytes, the HTTP header
``Inference-Header-Content-Length`` gives the JSON part's length, and the input carries
``"parameters": {"binary_data_size": N*784*4}`` instead of ``"data"``. It skips parsing
784 decimal numbers per image, which costs several times the small CNN's own model time.
Responses stay JSON (the client did not ask for binary outputs).

Everything a client can get wrong is caught
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
#: The one input tensor the served models declare (``model_metadata``); a request naming another is a 400.
INPUT_NAME = "input"
#: HTTP header of the binary tensor data extension (length of the JSON part of the body).
BINARY_HEADER = "inference-header-content-length"
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


def _split_binary(body: bytes, header_length) -> tuple[bytes, bytes]:
    """``(json part, binary part)`` of a binary-extension body."""
    if isinstance(header_length, bytes):
        header_length = header_length.decode("latin-1")
    hl = str(header_length).strip()
    if not hl.isdigit() or not 0 < int(hl) <= len(body):
        raise BadRequest(400, f"Inference-Header-Content-Length must be an integer in 1..{len(body)} "
                              f"(the body's length), got {header_length!r}")
    return body[:int(hl)], body[int(hl):]


def parse_infer(body: bytes, max_rows: int, header_length: str | bytes | None = None) -> InferRequest:
    """Validate a v2 infer request and return its input as a model-ready array.

    Args:
        body: the raw HTTP body.
        max_rows: the largest N one request may carry.
        header_length: the ``Inference-Header-Content-Length`` header when the client uses
            the binary tensor data extension (``None``: a plain JSON body).

    Raises:
        BadRequest: malformed JSON, missing/extra inputs, an input name the model does not
            declare, wrong datatype or shape, a data
            length that does not match the shape, non-numeric or non-finite values, a
            binary part whose size disagrees with ``binary_data_size`` or the shape.
    """
    raw = b""
    if header_length is not None:
        body, raw = _split_binary(body, header_length)
    obj = parse_json(body)
    inputs = obj.get("inputs")
    if not isinstance(inputs, list) or len(inputs) != 1 or not isinstance(inputs[0], dict):
        raise BadRequest(400, "'inputs' must be a list with exactly one tensor object")
    t = inputs[0]
    name = t.get("name")
    if name != INPUT_NAME:
        raise BadRequest(400, f"inputs[0].name {name!r} is not an input of this model: it declares one input, "
                              f"{INPUT_NAME!r} (FP32, shape [-1, {FEATURES}])")
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
    expected = n * FEATURES
    params = t.get("parameters")
    bsize = params.get("binary_data_size") if isinstance(params, dict) else None
    if bsize is not None or raw:
        x = _binary_tensor(bsize, raw, shape, expected, header_length is not None, "data" in t)
    else:
        x = _json_tensor(t.get("data"), shape, expected)
    if not np.isfinite(x).all():
        raise BadRequest(400, "inputs[0].data contains NaN or infinite values: inputs must be finite")
    rid = obj.get("id")
    return InferRequest(id=None if rid is None else str(rid), x=x.reshape(n, 1, 28, 28))


def _json_tensor(data, shape: list, expected: int) -> np.ndarray:
    if not isinstance(data, list):
        raise BadRequest(400, f"inputs[0].data must be a list of numbers, got {type(data).__name__}")
    try:
        x = np.asarray(data, dtype=np.float32)
    except (ValueError, TypeError):
        raise BadRequest(400, "inputs[0].data must contain only numbers (FP32), nested evenly") from None
    if x.size != expected:
        raise BadRequest(400, f"inputs[0].data has {x.size} values but shape {shape} needs {expected}")
    return x


def _binary_tensor(bsize, raw: bytes, shape: list, expected: int, has_header: bool, has_data: bool) -> np.ndarray:
    if not has_header:
        raise BadRequest(400, "inputs[0].parameters.binary_data_size is set but the request has no "
                              "Inference-Header-Content-Length header (binary tensor data extension)")
    if bsize is None:
        raise BadRequest(400, f"{len(raw)} bytes of binary data follow the JSON header but inputs[0] has no "
                              "parameters.binary_data_size")
    if has_data:
        raise BadRequest(400, "inputs[0] has both 'data' and parameters.binary_data_size: send one of them")
    if isinstance(bsize, bool) or not isinstance(bsize, int) or bsize != len(raw):
        raise BadRequest(400, f"inputs[0].parameters.binary_data_size is {bsize!r} but {len(raw)} bytes "
                              "follow the JSON header")
    if bsize != expected * 4:
        raise BadRequest(400, f"inputs[0] carries {bsize} bytes of binary data but shape {shape} needs "
                              f"{expected * 4} (FP32, 4 bytes each)")
    return np.frombuffer(raw, dtype="<f4").astype(np.float32)  # a writable, native-order copy


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


#: What ``GET /v2`` (server metadata) says: the server's name and the protocol extensions it supports.
SERVER_NAME = "hpcml"
EXTENSIONS = ("binary_tensor_data",)


def server_metadata() -> dict:
    """The v2 server metadata response (``GET /v2``)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        v = version("hpcml")
    except PackageNotFoundError:
        v = "0"
    return {"name": SERVER_NAME, "version": v, "extensions": list(EXTENSIONS)}


def model_metadata(model: str, platform: str) -> dict:
    return {
        "name": model, "versions": ["1"], "platform": platform,
        "inputs": [{"name": INPUT_NAME, "datatype": "FP32", "shape": [-1, FEATURES]}],
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


def make_binary_infer_request(x: np.ndarray, req_id: str | None = None) -> tuple[bytes, dict[str, str]]:
    """Encode ``x`` with the binary tensor data extension: ``(body, extra HTTP headers)``."""
    x = np.ascontiguousarray(np.asarray(x, dtype="<f4").reshape(-1, FEATURES))
    obj = {"inputs": [{"name": INPUT_NAME, "shape": [int(x.shape[0]), FEATURES], "datatype": "FP32",
                       "parameters": {"binary_data_size": x.nbytes}}]}
    if req_id is not None:
        obj["id"] = req_id
    head = json.dumps(obj, separators=(",", ":")).encode()
    return head + x.tobytes(), {"Inference-Header-Content-Length": str(len(head))}


def make_infer_body(x: np.ndarray, req_id: str | None = None) -> bytes:
    """Encode ``x`` (N×784 or N×1×28×28) as a v2 infer request body (for clients and tests)."""
    x = np.asarray(x, dtype=np.float32).reshape(-1, FEATURES)
    obj = {"inputs": [{"name": INPUT_NAME, "shape": [int(x.shape[0]), FEATURES], "datatype": "FP32",
                       "data": [round(float(v), 5) for v in x.ravel()]}]}
    if req_id is not None:
        obj["id"] = req_id
    return json.dumps(obj, separators=(",", ":")).encode()
