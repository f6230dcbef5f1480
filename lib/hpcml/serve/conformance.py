"""Open Inference Protocol (v2) conformance: the same requests to every server, every difference listed.

:func:`cases` builds the requests (pure: no server is needed to build them); :func:`run` sends
them to one server over loopback and keeps, per case, the HTTP status and the part of the
answer that can differ between servers (:func:`digest`); :func:`differences` lists every case
where the servers disagree with the expected status or with each other.

The cases: server metadata, live, ready, model metadata and model ready; an inference in JSON
and one with the binary tensor data extension; and the error cases a client relies on (each
with the status the v2 protocol and the project expect): an unknown model (404), malformed JSON,
a wrong datatype, a wrong shape, a data length that disagrees with the shape, an unknown input
name and a batch over the limit (each 400).
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass, field

import numpy as np

from hpcml.serve import protocol

#: Statuses that count as "the request was refused as the client's fault".
CLIENT_ERROR = range(400, 500)


@dataclass(frozen=True)
class Case:
    """One request and what a conforming server answers.

    Attributes:
        name: the case's name in the table.
        method: ``GET`` or ``POST``.
        path: the URL path, e.g. ``/v2/models/mnist/infer``.
        expect: the status a conforming server returns.
        body: the request body (POST).
        headers: extra HTTP headers.
        error_case: True for the error cases a client relies on.
    """

    name: str
    method: str
    path: str
    expect: int
    body: bytes = b""
    headers: dict = field(default_factory=dict)
    error_case: bool = False


def _tensor(**over) -> bytes:
    t = {"name": protocol.INPUT_NAME, "shape": [1, protocol.FEATURES], "datatype": "FP32",
         "data": [0.0] * protocol.FEATURES}
    t.update(over)
    return json.dumps({"inputs": [t]}).encode()


def cases(model: str, max_batch: int, x: np.ndarray) -> list[Case]:
    """The conformance requests for ``model`` whose batch limit is ``max_batch``.

    Args:
        model: the model's name in the URL.
        max_batch: the largest batch each server was configured to take in one request.
        x: one or more input rows (N×784) for the successful inferences.
    """
    if max_batch < 1:
        raise ValueError(f"max_batch must be >= 1, got {max_batch}")
    m, j = f"/v2/models/{model}", {"content-type": "application/json"}
    n = protocol.FEATURES
    bin_body, bin_headers = protocol.make_binary_infer_request(x[:1], req_id="c2")
    over = max_batch + 1
    return [
        Case("server metadata", "GET", "/v2", 200),
        Case("server live", "GET", "/v2/health/live", 200),
        Case("server ready", "GET", "/v2/health/ready", 200),
        Case("model metadata", "GET", m, 200),
        Case("model ready", "GET", f"{m}/ready", 200),
        Case("infer JSON", "POST", f"{m}/infer", 200, protocol.make_infer_body(x[:1], req_id="c1"), j),
        Case("infer binary extension", "POST", f"{m}/infer", 200, bin_body,
             {"content-type": "application/octet-stream", **bin_headers}),
        Case("unknown model (metadata)", "GET", "/v2/models/no-such-model", 404, error_case=True),
        Case("unknown model (infer)", "POST", "/v2/models/no-such-model/infer", 404,
             protocol.make_infer_body(x[:1]), j, True),
        Case("malformed JSON", "POST", f"{m}/infer", 400, b'{"inputs": [', j, True),
        Case("wrong datatype", "POST", f"{m}/infer", 400, _tensor(datatype="INT32", data=[0] * n), j, True),
        Case("wrong shape", "POST", f"{m}/infer", 400, _tensor(shape=[1, 100], data=[0.0] * 100), j, True),
        Case("data length disagrees with shape", "POST", f"{m}/infer", 400, _tensor(shape=[2, n]), j, True),
        Case("unknown input name", "POST", f"{m}/infer", 400, _tensor(name="pixels"), j, True),
        Case(f"batch over the limit ({over} > {max_batch})", "POST", f"{m}/infer", 400,
             _tensor(shape=[over, n], data=[0.0] * (over * n)), j, True),
    ]


def digest(case: Case, status: int, body: bytes) -> str:
    """The part of an answer that may differ between conforming servers, as one short string."""
    try:
        obj = json.loads(body) if body else {}
    except ValueError:
        return f"non-JSON body ({len(body)} bytes)"
    if not isinstance(obj, dict):
        return type(obj).__name__
    if status >= 400:
        return "error: " + str(obj.get("error", obj))[:90]
    if case.path == "/v2":
        return f"extensions={sorted(obj.get('extensions') or [])}"
    if case.path.endswith("/infer"):
        outs = obj.get("outputs") or []
        return "; ".join(f"{o.get('name')} {o.get('datatype')} {o.get('shape')}" for o in outs) + \
            f"; id={'echoed' if obj.get('id') in ('c1', 'c2') else obj.get('id', 'absent') and 'generated'}"
    if case.path.startswith("/v2/models/") and case.path.count("/") == 3:
        io = lambda ts: ", ".join(f"{t.get('name')} {t.get('datatype')} {t.get('shape')}" for t in ts or [])  # noqa: E731
        return f"platform={obj.get('platform')!r}; inputs [{io(obj.get('inputs'))}]; outputs [{io(obj.get('outputs'))}]"
    return ""


def run(url: str, all_cases: list[Case], timeout_s: float = 30.0) -> list[dict]:
    """Send every case to the server at ``url``; one row per case: ``case, expect, status, ok, detail``."""
    rows = []
    for c in all_cases:
        req = urllib.request.Request(url + c.path, data=c.body if c.method == "POST" else None, method=c.method,
                                     headers=c.headers)
        try:
            with urllib.request.urlopen(req, timeout=timeout_s) as r:
                status, body = r.status, r.read()
        except urllib.error.HTTPError as e:
            status, body = e.code, e.read()
        except OSError as e:
            status, body = 0, json.dumps({"error": f"{type(e).__name__}: {e}"}).encode()
        rows.append({"case": c.name, "expect": c.expect, "status": status, "ok": status == c.expect,
                     "error_case": c.error_case, "detail": digest(c, status, body)})
    return rows


def differences(results: dict[str, list[dict]]) -> list[dict]:
    """Every case where a server answered another status than expected, or the servers' details differ.

    Args:
        results: ``{server: run(...) rows}``, all over the same cases.

    Returns:
        One row per such case: ``case``, ``expect``, ``error_case``, then per server its status
        and detail (``<server>`` and ``<server> detail``), and ``kind``: ``status`` (someone
        answered another status than expected) or ``detail`` (same status, different content).
    """
    servers = list(results)
    out = []
    for i, row in enumerate(results[servers[0]]):
        per = {s: results[s][i] for s in servers}
        wrong = [s for s in servers if not per[s]["ok"]]
        details = {per[s]["detail"] for s in servers}
        if not wrong and (len(details) == 1 or row["status"] >= 400):
            continue
        d = {"case": row["case"], "expect": row["expect"], "error_case": row["error_case"],
             "kind": "status" if wrong else "detail"}
        for s in servers:
            d[s], d[f"{s} detail"] = per[s]["status"], per[s]["detail"]
        out.append(d)
    return out


def client_visible(diffs: list[dict], servers: list[str]) -> list[dict]:
    """The differences a client relies on: an error case where some server did not refuse the
    request with a 4xx (it answered 2xx or 5xx)."""
    return [d for d in diffs if d["error_case"] and any(d[s] not in CLIENT_ERROR for s in servers)]
