"""v2 conformance: the request cases, the differences between servers, and the project's own
server answering every case as the protocol expects (a real server on loopback)."""

import json

import numpy as np
import pytest

from hpcml.serve import conformance, export, protocol
from hpcml.serve.process import ServerProcess

X = np.random.default_rng(0).normal(size=(2, 784)).astype(np.float32)


@pytest.mark.unit
def test_cases_cover_the_issue_and_are_valid_where_they_should_be():
    cs = conformance.cases("mnist", 32, X)
    names = {c.name for c in cs}
    for want in ("server metadata", "model metadata", "server live", "model ready", "infer JSON",
                 "infer binary extension", "unknown model (infer)", "malformed JSON", "wrong datatype", "wrong shape",
                 "unknown input name", "batch over the limit (33 > 32)"):
        assert want in names
    by = {c.name: c for c in cs}
    assert protocol.parse_infer(by["infer JSON"].body, 32).x.shape == (1, 1, 28, 28)
    for c in cs:
        if c.error_case and c.expect == 400:
            with pytest.raises(protocol.BadRequest):
                protocol.parse_infer(c.body, 32)
    with pytest.raises(ValueError, match="max_batch must be >= 1"):
        conformance.cases("mnist", 0, X)


def _rows(statuses, details=None):
    cs = conformance.cases("mnist", 4, X)[:len(statuses)]
    return [{"case": c.name, "expect": c.expect, "status": s, "ok": s == c.expect, "error_case": c.error_case,
             "detail": (details or {}).get(c.name, "")} for c, s in zip(cs, statuses)]


@pytest.mark.unit
def test_differences_list_status_and_detail_disagreements():
    a = _rows([200] * 7 + [404, 404, 400])
    b = _rows([200] * 7 + [404, 404, 500], {"model metadata": "platform='python'"})
    diffs = conformance.differences({"a": a, "b": b})
    assert [(d["case"], d["kind"]) for d in diffs] == [("model metadata", "detail"), ("malformed JSON", "status")]
    assert [d["case"] for d in conformance.client_visible(diffs, ["a", "b"])] == ["malformed JSON"]
    assert conformance.differences({"a": a, "a2": a}) == []


@pytest.mark.unit
def test_digest_keeps_what_may_differ():
    cs = {c.name: c for c in conformance.cases("mnist", 4, X)}
    out = {"id": "c1", "outputs": [{"name": "logits", "datatype": "FP32", "shape": [1, 10], "data": [0] * 10}]}
    assert conformance.digest(cs["infer JSON"], 200, json.dumps(out).encode()) == "logits FP32 [1, 10]; id=echoed"
    assert conformance.digest(cs["malformed JSON"], 400, b'{"error": "bad"}') == "error: bad"
    assert conformance.digest(cs["malformed JSON"], 500, b"<html>") == "non-JSON body (6 bytes)"


@pytest.mark.integration
def test_the_project_server_answers_every_case_as_expected(tiny_cnn, tmp_path):
    model = export.to_onnx(tiny_cnn(), tmp_path / "model.onnx")
    with ServerProcess.start(model, workers=1, max_batch_size=32, max_request_rows=32) as srv:
        rows = conformance.run(srv.url, conformance.cases("mnist", 32, X))
    assert [r for r in rows if not r["ok"]] == []
    meta = next(r for r in rows if r["case"] == "server metadata")["detail"]
    assert "binary_tensor_data" in meta
