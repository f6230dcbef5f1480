"""The inference server: Open Inference Protocol v2 over REST, with dynamic batching.

Routes (identical in both front-ends):

==========================================  =========================================
``GET  /v2``                                server metadata (name, version, extensions)
``GET  /v2/health/live``                    200 while the process serves HTTP
``GET  /v2/health/ready``                   200 once the model is loaded (503 before/while stopping)
``GET  /v2/models/{name}``                  model metadata (404 for another name)
``GET  /v2/models/{name}/ready``            200 when that model is ready
``POST /v2/models/{name}/infer``            v2 inference, through the dynamic batcher
``GET  /metrics``                           Prometheus text, aggregated over all workers
``POST /admin/latency``                     ``{"ms": 200}`` adds a delay to every inference (loopback only)
``GET /ping``, ``POST /invocations``        SageMaker's container contract, same handlers
==========================================  =========================================

Process model: ``python -m hpcml.serve.server`` is a small supervisor with N worker
processes, each running uvicorn on its own ``SO_REUSEPORT`` socket bound to the same
127.0.0.1 port (the kernel spreads new connections across them); the supervisor
restarts a worker that dies. Each worker loads the exported model, runs its own :class:`DynamicBatcher`,
and writes Prometheus metrics in multiprocess mode (``PROMETHEUS_MULTIPROC_DIR``) so any
worker's ``/metrics`` reports the sum over all of them. SIGTERM stops accepting, lets
in-flight requests finish, drains the batcher, then exits.

Two interchangeable front-ends over the same core (:class:`ServingCore`): ``asgi``
(a raw ASGI callable) and ``fastapi``; the notebook measures both and picks.
:class:`ServerProcess` (in :mod:`hpcml.serve.process`) starts it as a subprocess.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import time
from pathlib import Path

from hpcml.serve.batching import DynamicBatcher
from hpcml.serve.process import ServerProcess  # noqa: F401 - the contract names it here
from hpcml.serve.protocol import (BINARY_HEADER, BadRequest, infer_response, model_metadata, parse_infer,
                                  parse_latency, server_metadata)
from hpcml.serve.spec import (METRIC_BATCH_SIZE, METRIC_ERRORS, METRIC_INFLIGHT, METRIC_MODEL_SECONDS,
                              METRIC_QUEUE_DEPTH, METRIC_REQUEST_SECONDS, METRIC_REQUESTS, ServeConfig)

_PLATFORMS = {"onnx": "onnxruntime_onnx", "torchscript": "pytorch_torchscript", "eager": "pytorch_eager"}
_LOOPBACK = {"127.0.0.1", "::1", "localhost"}
BINARY_HEADER_B = BINARY_HEADER.encode()


class _Metrics:
    """The contract's metric names, written to the multiprocess directory (no registry)."""

    def __init__(self, model: str):
        from prometheus_client import Counter, Gauge, Histogram

        lat = (.001, .002, .005, .01, .02, .05, .1, .2, .5, 1, 2, 5)
        self.model = model
        self.requests = Counter(METRIC_REQUESTS, "Requests by model and HTTP code",
                                ["model", "code"], registry=None)
        self.duration = Histogram(METRIC_REQUEST_SECONDS, "Inference request latency",
                                  ["model"], buckets=lat, registry=None)
        self.batch = Histogram(METRIC_BATCH_SIZE, "Rows per model call",
                               buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256), registry=None)
        self.model_seconds = Histogram(METRIC_MODEL_SECONDS, "Model execution time per batch",
                                       buckets=lat, registry=None)
        self.queue = Gauge(METRIC_QUEUE_DEPTH, "Requests waiting for a batch",
                           multiprocess_mode="livesum", registry=None)
        self.inflight = Gauge(METRIC_INFLIGHT, "Inference requests being handled",
                              multiprocess_mode="livesum", registry=None)
        self.errors = Counter(METRIC_ERRORS, "Error responses by HTTP code", ["code"], registry=None)

    def observe(self, code: int, seconds: float | None) -> None:
        self.requests.labels(self.model, str(code)).inc()
        if code >= 400:
            self.errors.labels(str(code)).inc()
        if seconds is not None:
            self.duration.labels(self.model).observe(seconds)


def _clean_dead_workers(mp_dir: str) -> None:
    """Drop live-gauge files of worker pids that no longer exist (a killed worker)."""
    from prometheus_client import multiprocess

    for f in Path(mp_dir).glob("gauge_live*_*.db"):
        pid = int(f.stem.rsplit("_", 1)[1])
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            multiprocess.mark_process_dead(pid, mp_dir)
        except PermissionError:
            pass


class ServingCore:
    """Framework-free request handling shared by both front-ends (one per worker process)."""

    def __init__(self, cfg: ServeConfig):
        self.cfg = cfg
        self.ready = False
        self.metrics: _Metrics | None = None
        self.batcher: DynamicBatcher | None = None
        self._latency_file = Path(cfg.state_dir) / "latency_ms" if cfg.state_dir else None
        self._latency = (0.0, 0.0)  # (checked at, ms)

    async def startup(self) -> None:
        from hpcml.serve.export import load_runtime

        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            _clean_dead_workers(os.environ["PROMETHEUS_MULTIPROC_DIR"])
        self.metrics = _Metrics(self.cfg.model_name)
        predict = load_runtime(self.cfg.runtime, self.cfg.model_file, threads=self.cfg.threads)
        m = self.metrics
        self.batcher = DynamicBatcher(predict, self.cfg.max_batch_size, self.cfg.max_wait_ms,
                                      on_batch=lambda rows, s: (m.batch.observe(rows), m.model_seconds.observe(s)),
                                      on_queue=m.queue.set)
        await self.batcher.start()
        self.ready = True
        if self.cfg.state_dir:
            (Path(self.cfg.state_dir) / f"ready-{os.getpid()}").write_text(str(time.time()))

    async def shutdown(self) -> None:
        self.ready = False
        if self.batcher:
            await self.batcher.stop()
        if self.cfg.state_dir:
            (Path(self.cfg.state_dir) / f"ready-{os.getpid()}").unlink(missing_ok=True)

    def _delay_s(self) -> float:
        if self._latency_file is None:
            return 0.0
        now = time.monotonic()
        if now - self._latency[0] > 0.1:
            try:
                ms = float(self._latency_file.read_text())
            except (OSError, ValueError):
                ms = 0.0
            self._latency = (now, ms)
        return self._latency[1] / 1e3

    async def handle(self, method: str, path: str, body: bytes, client: str | None,
                     binary_header: str | bytes | None = None) -> tuple[int, bytes, str]:
        """Route one request; returns ``(status, body, content type)``; never raises.

        ``binary_header`` is the request's ``Inference-Header-Content-Length`` (binary
        tensor data extension), ``None`` for a plain JSON body.
        """
        t0 = time.perf_counter()
        infer = False
        try:
            status, payload, ctype, infer = await self._route(method, path, body, client, binary_header)
        except BadRequest as exc:
            status, payload, ctype = exc.status, {"error": exc.message}, "application/json"
        except Exception as exc:  # noqa: BLE001 - report, keep the worker alive
            status, payload, ctype = 500, {"error": f"internal error: {type(exc).__name__}: {exc}"}, "application/json"
        if self.metrics is not None and (infer or status >= 400) and path != "/metrics":
            self.metrics.observe(status, time.perf_counter() - t0 if infer else None)
        data = payload if isinstance(payload, bytes) else json.dumps(payload, separators=(",", ":")).encode()
        return status, data, ctype

    async def _route(self, method: str, path: str, body: bytes, client: str | None, binary_header=None):
        j = "application/json"
        cfg = self.cfg
        if path == "/v2/health/live":
            return 200, {"live": True}, j, False
        if path == "/v2":
            return 200, server_metadata(), j, False
        if path in ("/v2/health/ready", "/ping"):  # /ping: SageMaker's container contract
            return (200 if self.ready else 503), {"ready": self.ready}, j, False
        if path == "/invocations":  # SageMaker: same v2 body, the one model this server serves
            if method != "POST":
                raise BadRequest(405, "/invocations accepts POST only")
            return (*await self._infer(body, binary_header), j, True)
        if path == "/metrics":
            return 200, self._metrics_text(), "text/plain; version=0.0.4; charset=utf-8", False
        if path == "/admin/latency":
            if method != "POST":
                raise BadRequest(405, "/admin/latency accepts POST only")
            if client not in _LOOPBACK:
                raise BadRequest(403, f"/admin/latency is accepted from loopback only, not from {client}")
            ms = parse_latency(body)
            from hpcml.paths import atomic_write_text

            atomic_write_text(self._latency_file, str(ms))
            self._latency = (0.0, ms)
            return 200, {"latency_ms": ms}, j, False
        if path.startswith("/v2/models/"):
            parts = path[len("/v2/models/"):].split("/")
            name, rest = parts[0], "/".join(parts[1:])
            if name != cfg.model_name:
                raise BadRequest(404, f"unknown model {name!r}: this server serves {cfg.model_name!r}")
            if rest == "":
                return 200, model_metadata(name, _PLATFORMS[cfg.runtime]), j, False
            if rest == "ready":
                return (200 if self.ready else 503), {"name": name, "ready": self.ready}, j, False
            if rest == "infer":
                if method != "POST":
                    raise BadRequest(405, "infer accepts POST only")
                return (*await self._infer(body, binary_header), j, True)
        raise BadRequest(404, f"no route {method} {path}")

    async def _infer(self, body: bytes, binary_header=None):
        if not self.ready:
            raise BadRequest(503, "model is not ready")
        req = parse_infer(body, self.cfg.max_request_rows, binary_header)
        m = self.metrics
        m.inflight.inc()
        try:
            delay = self._delay_s()
            if delay:
                import asyncio

                await asyncio.sleep(delay)
            y = await self.batcher.submit(req.x)
        finally:
            m.inflight.dec()
        return 200, infer_response(self.cfg.model_name, req.id, y)

    @staticmethod
    def _metrics_text() -> bytes:
        from prometheus_client import CollectorRegistry, generate_latest, multiprocess

        reg = CollectorRegistry()
        multiprocess.MultiProcessCollector(reg)
        return generate_latest(reg)


# ------------------------------ front-ends ------------------------------

def asgi_app(cfg: ServeConfig):
    """A raw ASGI application (no framework): the lowest-overhead front-end."""
    core = ServingCore(cfg)

    async def app(scope, receive, send):
        if scope["type"] == "lifespan":
            while True:
                msg = await receive()
                if msg["type"] == "lifespan.startup":
                    await core.startup()
                    await send({"type": "lifespan.startup.complete"})
                elif msg["type"] == "lifespan.shutdown":
                    await core.shutdown()
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        body, status, data, ctype = b"", None, b"", "application/json"
        headers = dict(scope["headers"])
        clen = headers.get(b"content-length")
        if clen is not None and clen.isdigit() and int(clen) > cfg.max_body_bytes:
            status, data = 413, json.dumps({"error": f"request body of {int(clen)} bytes exceeds the limit of "
                                                     f"{cfg.max_body_bytes} bytes"}).encode()
        else:
            more = True
            while more:
                msg = await receive()
                body += msg.get("body", b"")
                more = msg.get("more_body", False)
                if len(body) > cfg.max_body_bytes:
                    status, data = 413, json.dumps({"error": f"request body exceeds the limit of "
                                                             f"{cfg.max_body_bytes} bytes"}).encode()
                    break
        if status is None:
            client = scope.get("client")
            status, data, ctype = await core.handle(scope["method"], scope["path"], body, client[0] if client else None,
                                                    headers.get(BINARY_HEADER_B))
        elif core.metrics is not None:
            core.metrics.observe(status, None)
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", ctype.encode()), (b"content-length", str(len(data)).encode())]})
        await send({"type": "http.response.body", "body": data})

    return app


def fastapi_app(cfg: ServeConfig):
    """The same routes declared with FastAPI (same core, same validation)."""
    from contextlib import asynccontextmanager

    from fastapi import FastAPI, Request, Response

    core = ServingCore(cfg)

    @asynccontextmanager
    async def lifespan(_app):
        await core.startup()
        yield
        await core.shutdown()

    app = FastAPI(lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)

    async def _do(request: Request) -> Response:
        clen = request.headers.get("content-length")
        if clen and clen.isdigit() and int(clen) > cfg.max_body_bytes:
            if core.metrics is not None:
                core.metrics.observe(413, None)
            return Response(json.dumps({"error": f"request body of {clen} bytes exceeds the limit of "
                                                 f"{cfg.max_body_bytes} bytes"}), 413, media_type="application/json")
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > cfg.max_body_bytes:
                return Response(json.dumps({"error": f"request body exceeds the limit of {cfg.max_body_bytes} bytes"}),
                                413, media_type="application/json")
        status, data, ctype = await core.handle(request.method, request.url.path, body,
                                                request.client.host if request.client else None,
                                                request.headers.get(BINARY_HEADER))
        return Response(data, status, media_type=ctype)

    _do.__annotations__.update(request=Request, return_=None)  # resolved objects: no forward refs for FastAPI
    _do.__annotations__.pop("return_")
    _do.__annotations__["return"] = Response

    for route in ("/v2", "/v2/health/live", "/v2/health/ready", "/metrics", "/ping", "/v2/models/{name}", "/v2/models/{name}/ready"):
        app.add_api_route(route, _do, methods=["GET"], include_in_schema=False)
    app.add_api_route("/v2/models/{name}/infer", _do, methods=["POST"], include_in_schema=False)
    app.add_api_route("/admin/latency", _do, methods=["POST"], include_in_schema=False)
    app.add_api_route("/invocations", _do, methods=["POST"], include_in_schema=False)
    return app


FRONTENDS = {"asgi": asgi_app, "fastapi": fastapi_app}


def create_app():
    """Build the configured front-end from ``HPCML_SERVE_CONFIG`` (JSON) set by :func:`main`."""
    cfg = ServeConfig(**json.loads(os.environ["HPCML_SERVE_CONFIG"]))
    return FRONTENDS[cfg.frontend](cfg)


def listen_socket(host: str, port: int) -> socket.socket:
    """A TCP listening socket with SO_REUSEPORT, so every worker binds the same port.

    Created with an explicit ``IPPROTO_TCP`` so asyncio enables TCP_NODELAY on accepted
    connections (a socket rebuilt from a bare fd has proto 0 and gets Nagle's algorithm,
    which costs ~40 ms per request against delayed ACKs).
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.setblocking(False)
    return sock


def _worker(host: str, port: int) -> None:
    """One worker process: its own SO_REUSEPORT socket, one uvicorn server, one batcher."""
    import uvicorn

    cfg = ServeConfig(**json.loads(os.environ["HPCML_SERVE_CONFIG"]))
    config = uvicorn.Config(create_app, factory=True, log_level="warning", access_log=False,
                            timeout_graceful_shutdown=cfg.graceful_timeout_s, limit_concurrency=cfg.limit_concurrency)
    uvicorn.Server(config).run(sockets=[listen_socket(host, port)])


def supervise(host: str, port: int, workers: int, grace_s: float, log=print) -> int:
    """Run ``workers`` worker processes; restart any that dies; SIGTERM/SIGINT stop them gracefully."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    stopping = {"flag": False}
    signal.signal(signal.SIGTERM, lambda *_: stopping.update(flag=True))
    signal.signal(signal.SIGINT, lambda *_: stopping.update(flag=True))
    procs = []
    for _ in range(workers):
        p = ctx.Process(target=_worker, args=(host, port), daemon=False)
        p.start()
        procs.append(p)
    restarts = 0
    while not stopping["flag"]:
        for i, p in enumerate(procs):
            if not p.is_alive() and not stopping["flag"]:
                log(f"worker {p.pid} exited with {p.exitcode}; restarting")
                restarts += 1
                procs[i] = ctx.Process(target=_worker, args=(host, port), daemon=False)
                procs[i].start()
        time.sleep(0.1)
    for p in procs:
        if p.is_alive():
            os.kill(p.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s + 5
    for p in procs:
        p.join(max(0.1, deadline - time.monotonic()))
        if p.is_alive():
            p.kill()
            p.join()
    log(f"stopped {workers} workers ({restarts} restarts)")
    return 0


def parser() -> argparse.ArgumentParser:
    """The server's command line (:meth:`ServeConfig.to_args` writes what it parses)."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True, help="model.pt artifact, model.onnx or model.ts")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8080)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--state-dir", required=True, help="folder for ready files, exported model, metrics")
    ap.add_argument("--config", default="{}", help="JSON of further ServeConfig fields")
    return ap


def main(argv: list[str] | None = None) -> int:
    """CLI: ``python -m hpcml.serve.server --model model.onnx --port 8080 --workers 2 --state-dir DIR``."""
    a = parser().parse_args(argv)
    from hpcml.serve.export import prepare_model

    extra = json.loads(a.config)
    state = Path(a.state_dir)
    mp_dir = state / "prometheus"
    mp_dir.mkdir(parents=True, exist_ok=True)
    for f in mp_dir.glob("*.db"):
        f.unlink()
    runtime, model_file = prepare_model(a.model, extra.pop("runtime", "auto"), state)
    cfg = ServeConfig(model_file=str(model_file), runtime=runtime, state_dir=str(state), **extra)
    os.environ["HPCML_SERVE_CONFIG"] = json.dumps(cfg.__dict__)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(mp_dir)
    return supervise(a.host, a.port, a.workers, cfg.graceful_timeout_s, log=lambda m: print(m, flush=True))


if __name__ == "__main__":
    raise SystemExit(main())
