"""The dynamic batcher's policies (adaptive vs fixed window), batch limits, result routing
and failure isolation, and the v2 binary tensor extension's parsing — in-process units."""

import asyncio
import json

import numpy as np
import pytest

from hpcml.serve import protocol
from hpcml.serve.batching import DynamicBatcher

pytestmark = pytest.mark.unit


def model(x: np.ndarray) -> np.ndarray:
    """A real row-wise computation: each row's output depends on that row only."""
    flat = x.reshape(len(x), -1)
    return flat[:, :10] * 2 + flat.sum(1, keepdims=True)


def rows(i: int, n: int) -> np.ndarray:
    return np.full((n, 1, 28, 28), float(i), np.float32) + np.arange(n, dtype=np.float32)[:, None, None, None]


async def _burst(sizes, **kw):
    """Submit every request at once; returns (rows per model call, outputs, inputs)."""
    calls = []
    b = DynamicBatcher(model, on_batch=lambda n, s: calls.append(n), **kw)
    await b.start()
    xs = [rows(i, n) for i, n in enumerate(sizes)]
    outs = await asyncio.gather(*(b.submit(x) for x in xs))
    await b.stop()
    return calls, outs, xs


@pytest.mark.parametrize("sizes,kw,want_calls", [
    ([1] * 10, dict(max_batch_size=4), [4, 4, 2]),
    ([1] * 10, dict(max_batch_size=1), [1] * 10),
    ([20, 20, 5], dict(max_batch_size=32), [20, 25]),          # 40 > 32: the second waits for the next batch
    ([40], dict(max_batch_size=32), [40]),                      # one larger request runs alone
    ([3, 3, 3], dict(max_batch_size=8, max_wait_ms=200), [6, 3]),
], ids=["adaptive-fills-to-max", "size-1-baseline", "carry-over", "oversize-alone", "window-respects-max"])
def test_batches_and_routes_results(sizes, kw, want_calls):
    calls, outs, xs = asyncio.run(_burst(sizes, **kw))
    assert calls == want_calls
    for x, y in zip(xs, outs):
        np.testing.assert_allclose(y, model(x))


async def _staggered(max_wait_ms):
    calls = []
    b = DynamicBatcher(model, max_batch_size=3, max_wait_ms=max_wait_ms, on_batch=lambda n, s: calls.append(n))
    await b.start()
    first = asyncio.ensure_future(b.submit(rows(0, 1)))
    await asyncio.sleep(0.02)  # the lone first request meets an idle model
    rest = [asyncio.ensure_future(b.submit(rows(i, 1))) for i in (1, 2)]
    await asyncio.gather(first, *rest)
    await b.stop()
    return calls


def test_adaptive_runs_a_lone_request_at_once_window_waits_for_company():
    assert asyncio.run(_staggered(0)) == [1, 2]          # adaptive: no wait when idle
    assert asyncio.run(_staggered(10_000)) == [3]        # window: waits until the batch is full


def test_model_failure_fails_only_its_batch():
    state = {"n": 0}

    def flaky(x):
        state["n"] += 1
        if state["n"] == 1:
            raise RuntimeError("boom")
        return model(x)

    async def go():
        b = DynamicBatcher(flaky, max_batch_size=2)
        await b.start()
        res = await asyncio.gather(*(b.submit(rows(i, 1)) for i in range(4)), return_exceptions=True)
        await b.stop()
        return res

    res = asyncio.run(go())
    assert [type(r).__name__ for r in res] == ["RuntimeError", "RuntimeError", "ndarray", "ndarray"]


@pytest.mark.parametrize("kw,msg", [(dict(max_batch_size=0), "max_batch_size"), (dict(max_wait_ms=-1), "max_wait_ms")],
                         ids=["zero-batch", "negative-wait"])
def test_rejects_bad_settings(kw, msg):
    with pytest.raises(ValueError, match=msg):
        DynamicBatcher(model, **kw)


# ---------------- v2 binary tensor data extension ----------------

X = np.random.default_rng(0).normal(size=(3, 784)).astype(np.float32)


def test_binary_and_json_bodies_parse_to_the_same_tensor():
    body, headers = protocol.make_binary_infer_request(X, req_id="b1")
    rb = protocol.parse_infer(body, 64, headers["Inference-Header-Content-Length"])
    rj = protocol.parse_infer(protocol.make_infer_body(X), 64)
    assert rb.id == "b1" and rb.x.shape == (3, 1, 28, 28) and rb.x.flags.writeable
    np.testing.assert_array_equal(rb.x.reshape(3, 784), X)
    np.testing.assert_allclose(rj.x, rb.x, atol=1e-5)  # JSON carries 5 decimals


def _binary(shape=(1, 784), size=None, payload=None, extra=None, header=None):
    x = np.zeros(shape, "<f4") if payload is None else payload
    raw = x.tobytes()
    t = {"name": "input", "shape": list(shape), "datatype": "FP32",
         "parameters": {"binary_data_size": len(raw) if size is None else size}, **(extra or {})}
    head = json.dumps({"inputs": [t]}).encode()
    return head + raw, str(len(head)) if header is None else header


BAD_BINARY = [
    ("size-disagrees", *_binary(size=100), "binary_data_size is 100"),
    ("shape-needs-more", *_binary(shape=(2, 784), payload=np.zeros((1, 784), "<f4"), size=3136), "needs 6272"),
    ("both-data-and-binary", *_binary(extra={"data": [0.0] * 784}), "both 'data'"),
    ("header-not-a-number", *_binary(header="abc"), "Inference-Header-Content-Length"),
    ("header-past-the-body", *_binary(header="999999"), "Inference-Header-Content-Length"),
    ("nan-in-binary", *_binary(payload=np.full((1, 784), np.nan, "<f4")), "NaN or infinite"),
    ("binary-without-size", json.dumps({"inputs": [{"name": "input", "shape": [1, 784], "datatype": "FP32"}]}).encode()
     + b"\0" * 3136, "60", "binary data follow"),
]


@pytest.mark.parametrize("body,header,msg", [b[1:] for b in BAD_BINARY], ids=[b[0] for b in BAD_BINARY])
def test_bad_binary_requests_are_400_with_the_reason(body, header, msg):
    if header == "60":  # the JSON part's real length for the hand-built body
        header = str(body.index(b"\0"))
    with pytest.raises(protocol.BadRequest, match=msg) as e:
        protocol.parse_infer(body, 64, header)
    assert e.value.status == 400


def test_binary_size_without_the_header_is_rejected():
    body, _ = _binary()
    with pytest.raises(protocol.BadRequest, match="no Inference-Header-Content-Length"):
        protocol.parse_infer(body[:body.index(b"}]}") + 3], 64)


@pytest.mark.parametrize("name", ["pixels", "", None, 7])
def test_an_input_name_the_model_does_not_declare_is_400(name):
    t = {"shape": [1, 784], "datatype": "FP32", "data": [0.0] * 784}
    if name is not None:
        t["name"] = name
    with pytest.raises(protocol.BadRequest, match=f"inputs\\[0\\].name {name!r} is not an input of this model") as e:
        protocol.parse_infer(json.dumps({"inputs": [t]}).encode(), 64)
    assert e.value.status == 400 and "'input'" in e.value.message
    t["name"] = protocol.model_metadata("m", "onnxruntime_onnx")["inputs"][0]["name"]
    assert protocol.parse_infer(json.dumps({"inputs": [t]}).encode(), 64).x.shape == (1, 1, 28, 28)
