"""The inference server, for real (subprocess, uvicorn workers, loopback HTTP): the v2
routes, every bad-input case answered 4xx with a message while the server stays healthy,
dynamic batching that actually batches, metrics, latency injection, a killed worker, and
graceful shutdown."""

import json
import os
import signal
import threading
import time
import urllib.error
import urllib.request

import numpy as np
import pytest

from hpcml.serve import export, loadgen, protocol
from hpcml.serve.server import ServerProcess
from hpcml.serve.spec import METRIC_BATCH_SIZE, METRIC_ERRORS, METRIC_INFLIGHT, METRIC_REQUESTS

pytestmark = pytest.mark.integration

X = np.random.default_rng(0).normal(size=(64, 784)).astype(np.float32)  # stand-in pixels (the sample_inputs fixture's)
GOOD = protocol.make_infer_body(X[:1])


def call(url, body=None, method=None, headers=None):
    req = urllib.request.Request(url, data=body, method=method or ("POST" if body is not None else "GET"),
                                 headers=headers or {"content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


@pytest.fixture(scope="module")
def onnx_model(tmp_path_factory, tiny_cnn):
    return export.to_onnx(tiny_cnn(), tmp_path_factory.mktemp("m") / "model.onnx")


@pytest.fixture(scope="module")
def srv(onnx_model):
    s = ServerProcess.start(onnx_model, workers=2, max_batch_size=32, max_wait_ms=5, max_body_bytes=200_000)
    yield s
    s.stop()


def metric(srv, name, **labels):
    """Sum of the samples of ``name`` whose labels include ``labels``."""
    from prometheus_client.parser import text_string_to_metric_families

    text = call(srv.url + "/metrics")[1].decode()
    return sum(s.value for fam in text_string_to_metric_families(text) for s in fam.samples
               if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))


def test_routes(srv, onnx_model):
    assert call(srv.url + "/v2/health/live")[0] == 200
    assert call(srv.url + "/v2/health/ready")[0] == 200
    assert call(srv.url + "/v2/models/mnist/ready")[0] == 200
    meta = json.loads(call(srv.url + "/v2/models/mnist")[1])
    assert meta["name"] == "mnist" and meta["inputs"][0]["datatype"] == "FP32"
    st, body = call(srv.url + "/v2/models/mnist/infer", protocol.make_infer_body(X[:3], req_id="r1"))
    out = json.loads(body)
    assert st == 200 and out["id"] == "r1"
    logits = np.array(out["outputs"][0]["data"]).reshape(3, 10)
    want = export.load_runtime("onnx", onnx_model)(export.as_images(X[:3]))
    np.testing.assert_allclose(logits, want, atol=1e-4)
    assert out["outputs"][1]["data"] == want.argmax(1).tolist()
    assert call(srv.url + "/invocations", GOOD)[0] == 200 and call(srv.url + "/ping")[0] == 200


def _tensor(**over):
    t = {"name": "input", "shape": [1, 784], "datatype": "FP32", "data": [0.0] * 784}
    t.update(over)
    return json.dumps({"inputs": [t]}).encode()


BAD = [
    ("malformed-json", "/v2/models/mnist/infer", b'{"inputs": [', 400, "malformed JSON"),
    ("not-an-object", "/v2/models/mnist/infer", b"[1, 2]", 400, "JSON object"),
    ("no-inputs", "/v2/models/mnist/infer", b"{}", 400, "'inputs'"),
    ("wrong-shape", "/v2/models/mnist/infer", _tensor(shape=[1, 100], data=[0.0] * 100), 400, "shape must be one of"),
    ("shape-data-mismatch", "/v2/models/mnist/infer", _tensor(shape=[2, 784]), 400, "needs 1568"),
    ("batch-too-large", "/v2/models/mnist/infer", _tensor(shape=[1000, 784]), 400, "batch"),
    ("wrong-datatype", "/v2/models/mnist/infer", _tensor(datatype="INT8"), 400, "datatype must be 'FP32'"),
    ("unknown-input-name", "/v2/models/mnist/infer", _tensor(name="pixels"), 400, "'pixels' is not an input"),
    ("strings-in-data", "/v2/models/mnist/infer", _tensor(data=["a"] * 784), 400, "only numbers"),
    ("nan-token", "/v2/models/mnist/infer", _tensor().replace(b"0.0]", b"NaN]"), 400, "non-finite"),
    ("inf-overflow", "/v2/models/mnist/infer", _tensor().replace(b"0.0]", b"1e999]"), 400, "NaN or infinite"),
    ("wrong-model", "/v2/models/resnet/infer", GOOD, 404, "unknown model 'resnet'"),
    ("unknown-route", "/v3/whatever", b"", 404, "no route"),
    ("oversized-body", "/v2/models/mnist/infer", b"[" + b"0," * 150_000 + b"0]", 413, "exceeds the limit"),
    ("admin-bad-ms", "/admin/latency", b'{"ms": -5}', 400, "'ms' must be"),
]


@pytest.mark.parametrize("path,body,code,msg", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_input_is_4xx_and_server_stays_healthy(srv, path, body, code, msg):
    st, out = call(srv.url + path, body, method="POST")
    assert st == code, out
    assert msg in json.loads(out)["error"]
    assert call(srv.url + "/v2/health/ready")[0] == 200
    assert call(srv.url + "/v2/models/mnist/infer", GOOD)[0] == 200


def test_binary_tensor_extension_matches_json(srv, onnx_model):
    body, headers = protocol.make_binary_infer_request(X[:3], req_id="b")
    st, out = call(srv.url + "/v2/models/mnist/infer", body, headers={"content-type": "application/octet-stream",
                                                                      **headers})
    assert st == 200, out
    logits = np.array(json.loads(out)["outputs"][0]["data"]).reshape(3, 10)
    want = export.load_runtime("onnx", onnx_model)(export.as_images(X[:3]))
    np.testing.assert_allclose(logits, want, atol=1e-4)
    r = loadgen.closed_loop(srv.url + "/v2/models/mnist/infer", [(body, headers)], concurrency=4, n_requests=40)
    assert r.ok == 40 and r.error_count == 0


def test_bad_binary_request_is_400_and_server_stays_healthy(srv):
    body, headers = protocol.make_binary_infer_request(X[:1])
    st, out = call(srv.url + "/v2/models/mnist/infer", body[:-4], headers={**headers, "content-type": "x"})
    assert st == 400 and "binary_data_size" in json.loads(out)["error"]
    assert call(srv.url + "/v2/models/mnist/infer", GOOD)[0] == 200


def test_errors_are_counted_by_code(srv):
    before = metric(srv, METRIC_ERRORS, code="404")
    call(srv.url + "/v2/models/nope/infer", GOOD)
    assert metric(srv, METRIC_ERRORS, code="404") == before + 1


def test_batching_batches_under_concurrency(srv):
    count0, sum0 = metric(srv, f"{METRIC_BATCH_SIZE}_count"), metric(srv, f"{METRIC_BATCH_SIZE}_sum")
    bodies = [protocol.make_infer_body(X[i:i + 1]) for i in range(16)]
    r = loadgen.closed_loop(srv.url + "/v2/models/mnist/infer", bodies, concurrency=16, n_requests=400)
    assert r.ok == 400 and r.error_count == 0
    count, rows = metric(srv, f"{METRIC_BATCH_SIZE}_count") - count0, metric(srv, f"{METRIC_BATCH_SIZE}_sum") - sum0
    assert rows == 400
    assert rows / count > 1.0, f"mean batch size {rows / count:.2f}: requests were not batched"
    assert metric(srv, METRIC_REQUESTS, model="mnist", code="200") >= 400
    assert metric(srv, METRIC_INFLIGHT) == 0


def test_open_loop_and_latency_injection(srv):
    url = srv.url + "/v2/models/mnist/infer"
    r = loadgen.open_loop(url, [GOOD], rate=100, n_requests=100, duration_s=5)
    assert r.ok == r.sent == 100 and r.summary()["p99_ms"] > 0
    assert call(srv.url + "/admin/latency", b'{"ms": 150}')[0] == 200
    try:
        time.sleep(0.25)  # workers re-read the shared setting every 100 ms
        slow = loadgen.closed_loop(url, [GOOD], concurrency=2, n_requests=6)
        assert slow.pct(50) >= 150
    finally:
        assert call(srv.url + "/admin/latency", b'{"ms": 0}')[0] == 200


def test_worker_killed_under_load_recovers(onnx_model):
    with ServerProcess.start(onnx_model, workers=2, max_batch_size=8) as s:
        victim = s.worker_pids()[0]
        url = s.url + "/v2/models/mnist/infer"
        box = {}
        t = threading.Thread(target=lambda: box.update(r=loadgen.closed_loop(url, [GOOD], 8, 100_000, duration_s=4)))
        t.start()
        time.sleep(1.0)
        os.kill(victim, signal.SIGKILL)
        t.join()
        r = box["r"]
        print("load under worker kill:", r.summary())
        assert r.ok > 0 and r.sent == r.ok + r.error_count  # every failure is counted, none lost
        s.wait_ready(60)  # the supervisor replaced the worker
        assert victim not in s.worker_pids() and len(s.worker_pids()) == 2
        after = loadgen.closed_loop(url, [GOOD], 8, 200)
        assert after.error_count == 0 and after.ok == 200


def test_graceful_shutdown_finishes_in_flight(onnx_model):
    s = ServerProcess.start(onnx_model, workers=1, max_batch_size=8)
    call(s.url + "/admin/latency", b'{"ms": 800}')
    time.sleep(0.25)
    box = {}
    t = threading.Thread(target=lambda: box.update(r=loadgen.closed_loop(
        s.url + "/v2/models/mnist/infer", [GOOD], concurrency=6, n_requests=6)))
    t.start()
    time.sleep(0.4)  # the six requests are in the server, sleeping in the injected delay
    code = s.stop()
    t.join()
    assert code == 0
    assert box["r"].ok == 6 and box["r"].error_count == 0, box["r"].summary()
    assert not any(_alive(p) for p in [s.proc.pid])


def _alive(pid):
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False


def test_start_rejects_bad_arguments(onnx_model, tmp_path):
    with pytest.raises(FileNotFoundError, match="02_horovod_training"):
        ServerProcess.start(tmp_path / "nope.onnx")
    with pytest.raises(ValueError, match="max_batch_size"):
        ServerProcess.start(onnx_model, max_batch_size=0)
    with pytest.raises(ValueError, match="workers"):
        ServerProcess.start(onnx_model, workers=0)
