"""The serving peers (issue 27): their command lines, and a smoke test of each real peer in its
own virtual environment (built on demand by ci/setup_peers, cached): start, one v2 inference
that must match ONNX Runtime's logits, stop with nothing left behind."""

import json
import os
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from hpcml import proc
from hpcml.serve import export, protocol
from hpcml.serve.peers import launch


@pytest.mark.unit
def test_peer_args_carry_the_same_knobs():
    t = launch.peer_args("triton", "m.onnx", 9000, workers=2, threads=1, max_batch_size=32, max_wait_ms=1.5,
                         batching=True)
    assert t[t.index("--instances") + 1] == "2" and t[t.index("--max-batch") + 1] == "32"
    assert t[t.index("--max-delay-ms") + 1] == "1.5" and "--no-batching" not in t
    assert "--no-batching" in launch.peer_args("triton", "m.onnx", 9000, 2, 1, 32, 0.0, batching=False)
    k = launch.peer_args("kserve", "m.onnx", 9000, 3, 1, 32, 0.0, batching=False)
    assert k[k.index("--workers") + 1] == "3" and k[k.index("--threads") + 1] == "1"


@pytest.mark.unit
def test_bad_peer_requests_say_what_is_wrong():
    with pytest.raises(ValueError, match="unknown peer 'torchserve'"):
        launch.peer_args("torchserve", "m.onnx", 1, 1, 1, 1, 0.0, False)
    with pytest.raises(ValueError, match="kserve has no dynamic batcher"):
        launch.peer_args("kserve", "m.onnx", 1, 1, 1, 32, 0.0, batching=True)


def peer_venv(peer):
    """The peer's environment; without network (no cached one) the test skips with the reason,
    except under CI=true or HPCML_REQUIRE_PEERS=1, where a peer that cannot be built fails."""
    try:
        return launch.venv(peer)
    except launch.PeerUnavailable as exc:
        if os.environ.get("CI") == "true" or os.environ.get("HPCML_REQUIRE_PEERS") == "1":
            raise
        pytest.skip(str(exc))


@pytest.mark.integration
@pytest.mark.parametrize("peer", launch.PEERS)
def test_peer_smoke_start_infer_stop(peer, tiny_cnn, sample_inputs, tmp_path):
    peer_venv(peer)
    model = export.to_onnx(tiny_cnn(), tmp_path / "model.onnx")
    x = sample_inputs(2)
    want = export.load_runtime("onnx", model)(export.as_images(x))
    before = set(Path("/tmp").glob("folder*"))  # tritonserver's own copy of a loaded model (mkdtemp, /tmp)
    with launch.PeerProcess.start(peer, model, workers=1, batching=launch.HAS_BATCHER[peer]) as p:
        req = urllib.request.Request(p.url + "/v2/models/mnist/infer", data=protocol.make_infer_body(x, "s1"),
                                     headers={"content-type": "application/json"})
        out = json.loads(urllib.request.urlopen(req, timeout=30).read())
        pids = [p.proc.pid]
    logits = next(o for o in out["outputs"] if o["name"] == "logits")
    assert logits["shape"] == [2, 10]
    np.testing.assert_allclose(np.asarray(logits["data"]).reshape(2, 10), want, atol=1e-4)
    assert not any(proc.pid_alive(pid) for pid in pids)
    assert not p.log_path.exists(), "the peer's temporary folder (log, PyTriton workspace) is removed"
    assert not set(Path("/tmp").glob("folder*")) - before, "tritonserver's copy of the model is removed"


@pytest.mark.integration
def test_a_peer_that_cannot_be_installed_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("HPCML_PEERS_CACHE", str(tmp_path / "peers"))
    monkeypatch.setenv("PYTHON", "/bin/false")  # no interpreter: the venv cannot be made
    with pytest.raises(launch.PeerUnavailable, match=r"^triton: could not be installed: setup_peers: triton could not"):
        launch.venv("triton")
    assert not any((tmp_path / "peers").glob("triton-*")), "a failed build leaves no half-made environment"


@pytest.mark.integration
def test_a_peer_that_does_not_start_says_so_with_its_log_tail(tmp_path):
    peer_venv("kserve")
    bad = tmp_path / "model.onnx"
    bad.write_bytes(b"not an onnx file")
    with pytest.raises(launch.PeerUnavailable, match=r"^kserve: did not start \(kserve peer exited") as e:
        launch.PeerProcess.start("kserve", bad, workers=1, batching=False, timeout_s=60)
    assert "onnxruntime" in str(e.value).lower() or "INVALID_PROTOBUF" in str(e.value)
