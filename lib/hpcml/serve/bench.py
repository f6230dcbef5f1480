"""The serving benchmarks the notebook runs: which model, which runtime, which front-end,
latency/throughput curves, batching vs batch size 1, and the server's own overhead.

Every comparison runs side by side in one call (same model, same client, same machine
state), because this machine is shared and noisy.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from hpcml import paths
from hpcml.serve import export, loadgen, protocol
from hpcml.serve.process import ServerProcess
from hpcml.serve.spec import METRIC_BATCH_SIZE, METRIC_MODEL_SECONDS
from hpcml.train.stats import ci95_half_width

INFER = "/v2/models/mnist/infer"


def find_model() -> Path | None:
    """The tuned model if 03 saved one, else 02's CNN, else ``None``."""
    for sub in ("best", "cnn"):
        p = paths.models_dir() / sub / "model.pt"
        if p.exists():
            return p
    return None


#: Where each model 04 may serve or compare against comes from, by its folder under ``paths.models_dir()``.
MODEL_SOURCES = {"best": "03's tuned model (promoted: it beat 02's CNN on validation)", "cnn": "02's CNN",
                 "tuned": "03's tuned model"}
#: The metric each comparison model's accuracy, measured in 04 on the served model's test rows, is recorded as.
SAME_ROWS_METRIC = {"cnn": "cnn02_test_accuracy_same_rows", "tuned": "tuned03_test_accuracy_same_rows"}


def model_source(model_path: Path, artifact: dict) -> str:
    """Which stage produced ``model_path``: 03's tuned model, 02's CNN, or 04's quick fallback."""
    if (artifact.get("metrics") or {}).get("trained_by") == "04_serving quick_model":
        return "04's quick CNN (no trained model was found)"
    return MODEL_SOURCES.get(Path(model_path).parent.name, str(model_path))


def accuracy(model, x: np.ndarray, y: np.ndarray) -> float:
    """Share of ``x`` the eager PyTorch ``model`` classifies as ``y``."""
    import torch

    with torch.no_grad():
        pred = model(torch.from_numpy(export.as_images(x))).argmax(1).numpy()
    return float((pred == np.asarray(y)).mean())


def served_vs_others(model_path: Path, model, x: np.ndarray, y: np.ndarray) -> dict:
    """The served model's test accuracy beside 02's CNN's and 03's tuned model's, all measured here
    on the same rows (a model that is missing, or is the file served, is left out).

    Returns:
        ``{"source", "test_rows", "served_test_accuracy", "others": {"cnn"|"tuned": accuracy}}``.
    """
    served = Path(model_path).resolve()
    others = {}
    for sub in SAME_ROWS_METRIC:
        p = paths.models_dir() / sub / "model.pt"
        if p.exists() and p.resolve() != served and p.read_bytes() != served.read_bytes():
            others[sub] = accuracy(export.load_artifact(p)[0], x, y)
    _, artifact = export.load_artifact(model_path)
    return {"source": model_source(model_path, artifact), "test_rows": int(len(x)),
            "served_test_accuracy": accuracy(model, x, y), "others": others}


def say_served(served: dict):
    """Record which model 04 serves and its accuracy against the others, decide the comparison
    (``report.conclude``) and render the sentence (``report.say``)."""
    from hpcml import report

    report.record("served_model_source", served["source"], description="the model notebook 04 serves")
    report.record("served_test_accuracy", served["served_test_accuracy"], unit="fraction",
                  description=f"test accuracy of the served model, measured in 04 on {served['test_rows']} test rows")
    parts, values = [], {"source": served["source"], "n": served["test_rows"]}
    for sub, acc in served["others"].items():
        name = SAME_ROWS_METRIC[sub]
        report.record(name, acc, unit="fraction", description=f"{MODEL_SOURCES[sub]}, scored in 04 on the same rows")
        word = report.conclude(f"served_vs_{sub}", f"served_test_accuracy >= {name}", "at least as accurate as",
                               "less accurate than")
        parts.append(f"{word} {MODEL_SOURCES[sub]} ({{{name}:.4f}})")
    text = "04 serves **{source}**: test accuracy {served_test_accuracy:.4f} on {n:,} test rows, scored here"
    text += (", " + "; ".join(f"so it is {p}" for p in parts) + " on the same rows.") if parts else \
        " (no other trained model is there to compare against)."
    return report.say(text, **values)


def dataset_dir() -> Path | None:
    """The published dataset (``paths.dataset_dir()``) when it is complete, else ``None``."""
    from hpcml.data.dataset import load_manifest

    d = paths.dataset_dir()
    try:
        load_manifest(d)
    except FileNotFoundError:
        return None
    return d


def quick_model(epochs: int = 1, n_shards: int = 2, seed: int = 0) -> Path:
    """Train a small CNN with ``fit_local`` on the hpcml.data shards and save it as 02 would.

    Raises:
        RuntimeError: naming the notebook to run first when data/training modules are missing.
    """
    try:
        from hpcml.data import dataset as data
        from hpcml.train.checkpoint import save_model
        from hpcml.train.loop import fit_local
        from hpcml.train.shards import load_normalization
    except ImportError as exc:
        raise RuntimeError(f"no model to serve and cannot train one here ({exc}): "
                           "run notebooks/02_horovod_training.ipynb first") from None
    ds = dataset_dir() or data.ensure_dataset(n_shards)
    cfg = {"lr": 1e-3, "batch_size": 128, "weight_decay": 0.0, "optimizer": "adamw", "arch": "cnn",
           "width": 32, "depth": 2, "dropout": 0.1, "seed": seed}
    res = fit_local(cfg, data.read_split(ds, "train"), data.read_split(ds, "val"), epochs=epochs)
    out = paths.models_dir() / "cnn" / "model.pt"
    save_model(res["model"], res["model_config"], out, {"val_accuracy": res["val_accuracy"],
               "trained_by": "04_serving quick_model", "epochs": res["epochs_run"]}, load_normalization(ds))
    return out


def test_set(limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Up to ``limit`` rows (all when ``None``) of the data set's test split (normalised pixels, labels)."""
    ds = dataset_dir()
    if ds is None:
        raise RuntimeError("no data set: run notebooks/01_spark_preprocessing.ipynb first")
    try:
        from hpcml.data.dataset import read_split

        x, y = read_split(ds, "test")
    except ImportError:  # same contract layout, read directly
        import pyarrow.parquet as pq

        t = [pq.read_table(p) for p in sorted((ds / "test").glob("shard-*.parquet"))]
        x = np.concatenate([np.asarray(tb.column("pixels").to_pylist(), dtype=np.float32) for tb in t])
        y = np.concatenate([np.asarray(tb.column("label").to_pylist(), dtype=np.int64) for tb in t])
    return x[:limit], y[:limit]


ENCODINGS = ("json", "binary")


def bodies_for(x: np.ndarray, n: int = 64, encoding: str = "json") -> list:
    """Pre-encoded single-image requests (the client spends no CPU encoding).

    Args:
        encoding: ``json`` (784 numbers in ``data``) or ``binary`` (the v2 binary tensor
            data extension: items are ``(body, headers)``).
    """
    if encoding not in ENCODINGS:
        raise ValueError(f"encoding must be one of {ENCODINGS}, got {encoding!r}")
    if encoding == "binary":
        return [protocol.make_binary_infer_request(x[i:i + 1]) for i in range(min(n, len(x)))]
    return [protocol.make_infer_body(x[i:i + 1]) for i in range(min(n, len(x)))]


def pick_runtime(timings: list[export.RuntimeTiming], batch: int) -> str:
    """The runtime with the lowest per-sample time at ``batch`` (the server's batch size)."""
    at = [t for t in timings if t.batch == batch]
    if not at:
        raise ValueError(f"no timing at batch {batch}")
    return min(at, key=lambda t: t.us_per_sample).runtime


def compare_frontends(model_file: Path, bodies: list[bytes], concurrency: int, n_requests: int,
                      duration_s: float, workers: int, max_batch_size: int) -> dict[str, dict]:
    """Same runtime, same batching, FastAPI vs raw ASGI: throughput and latency at one concurrency."""
    out = {}
    for fe in ("fastapi", "asgi"):
        with ServerProcess.start(model_file, workers=workers, max_batch_size=max_batch_size, frontend=fe) as srv:
            loadgen.closed_loop(srv.url + INFER, bodies, concurrency, n_requests=concurrency * 10, duration_s=2)
            out[fe] = loadgen.closed_loop(srv.url + INFER, bodies, concurrency, n_requests, duration_s).summary()
    return out


def curve(srv: ServerProcess, bodies: list[bytes], concurrencies: list[int], n_requests: int,
          duration_s: float) -> list[loadgen.LoadResult]:
    """Closed-loop sweep (after a short warm-up) on a running server."""
    loadgen.closed_loop(srv.url + INFER, bodies, max(concurrencies), n_requests=200, duration_s=2)
    return loadgen.sweep(srv.url + INFER, bodies, concurrencies, n_requests, duration_s)


def capacity_search(srv: ServerProcess, bodies: list, concurrencies: list[int], n_requests: int, duration_s: float,
                    p99_ms: float, max_concurrency: int) -> list[loadgen.LoadResult]:
    """The closed-loop curve at ``concurrencies``, extended until p99 crosses ``p99_ms`` (bounded).

    While the highest concurrency run so far still meets the objective
    (:func:`~hpcml.serve.loadgen.meets`), the concurrency doubles, up to ``max_concurrency``.
    :func:`~hpcml.serve.loadgen.capacity_at_slo` then says whether the objective was crossed
    (the best rate is bracketed) or the search hit its bound (the best rate is a lower bound).

    Returns:
        One result per concurrency, in increasing order of clients.
    """
    if max_concurrency < max(concurrencies):
        raise ValueError(f"max_concurrency ({max_concurrency}) must be >= the largest concurrency ({max(concurrencies)})")
    results = sorted(curve(srv, bodies, sorted(concurrencies), n_requests, duration_s), key=lambda r: r.concurrency)
    c = results[-1].concurrency
    while loadgen.meets(results[-1], p99_ms) and c * 2 <= max_concurrency:
        c *= 2
        results.append(loadgen.closed_loop(srv.url + INFER, bodies, c, n_requests=n_requests, duration_s=duration_s))
    return results


def say_capacity(cap: loadgen.SloCapacity, workers: int, max_concurrency: int, p99_ms: float):
    """The sentence that states one replica's capacity at the p99 objective, and whether it is
    bracketed or a lower bound (``report.say``)."""
    from hpcml import report

    if cap.concurrency is None:
        return report.say("No load level met p99 ≤ {slo:g} ms without errors (the lowest, {c} clients, had p99 "
                          "{p99:.1f} ms): this replica has no capacity at the objective.",
                          slo=p99_ms, c=cap.first_miss_concurrency, p99=cap.first_miss_p99_ms)
    head = ("One replica ({workers} worker processes) sustained **{rps:,.0f} req/s** with p99 ≤ {slo:g} ms and no "
            "errors, at {c} clients; ")
    vals = dict(workers=workers, rps=cap.max_rps, slo=p99_ms, c=cap.concurrency)
    if cap.is_lower_bound:
        return report.say(head + "p99 still met the objective at every concurrency up to the search's bound of "
                          "{bound} clients, so this is a **lower bound** on the capacity at the objective.",
                          bound=max_concurrency, **vals)
    return report.say(head + "at {c2} clients p99 crossed the objective ({p99b:.1f} ms at {rps2:,.0f} req/s), so the "
                      "capacity at the objective is bracketed by the grid: more clients only queue.",
                      c2=cap.first_miss_concurrency, p99b=cap.first_miss_p99_ms, rps2=cap.first_miss_rps, **vals)


def request_bytes(x: np.ndarray) -> dict[str, int]:
    """Size of a one-image inference request body in each encoding (bytes)."""
    body_b, _ = protocol.make_binary_infer_request(x[:1])
    return {"json": len(protocol.make_infer_body(x[:1])), "binary": len(body_b)}


def batch_histogram(srv: ServerProcess) -> dict[str, float]:
    """Cumulative :data:`~hpcml.serve.spec.METRIC_BATCH_SIZE` buckets from the server's /metrics."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    text = urllib.request.urlopen(srv.url + "/metrics", timeout=10).read().decode()
    return {s.labels["le"]: s.value for f in text_string_to_metric_families(text) for s in f.samples
            if s.name == f"{METRIC_BATCH_SIZE}_bucket"}


def overhead(srv: ServerProcess, fn, x: np.ndarray, n: int = 300, encoding: str = "json") -> dict[str, float]:
    """p50 of an empty request path (GET /v2/health/ready), of a 1-image inference, and of the model alone."""
    empty = loadgen.closed_loop(srv.url + "/v2/health/ready", [b""], 1, n_requests=n, method="GET")
    one = loadgen.closed_loop(srv.url + INFER, bodies_for(x, 16, encoding), 1, n_requests=n)
    t = export.benchmark_runtimes({"model": fn}, x[:1], (1,), repeats=n)[0]
    return {"server_overhead_p50_ms": empty.pct(50), "infer_p50_ms": one.pct(50), "model_time_p50_ms": t.ms_per_batch}


def compare_encodings(srv: ServerProcess, x: np.ndarray, concurrency: int, n_requests: int,
                      duration_s: float, rounds: int = 2) -> dict[str, dict]:
    """JSON vs binary tensor bodies on one running server, interleaved ``rounds`` times.

    Returns:
        ``{encoding: {"rps", "p50_ms", "p99_ms", "errors"}}`` (rps: mean over rounds; p99: worst).
    """
    bodies = {e: bodies_for(x, encoding=e) for e in ENCODINGS}
    loadgen.closed_loop(srv.url + INFER, bodies["json"], concurrency, n_requests=concurrency * 10, duration_s=1)
    runs: dict[str, list] = {e: [] for e in ENCODINGS}
    for _ in range(rounds):
        for e in ENCODINGS:
            runs[e].append(loadgen.closed_loop(srv.url + INFER, bodies[e], concurrency, n_requests, duration_s))
    return {e: _combine(rs) for e, rs in runs.items()}


def _combine(rs: list[loadgen.LoadResult]) -> dict:
    lat = np.concatenate([r.latencies_ms for r in rs]) if rs else np.array([])
    return {"rps": float(np.mean([r.throughput for r in rs])),
            "p50_ms": float(np.percentile(lat, 50)) if len(lat) else float("nan"),
            "p99_ms": float(np.percentile(lat, 99)) if len(lat) else float("nan"),
            "errors": int(sum(r.error_count for r in rs)), "ok": int(sum(r.ok for r in rs))}


def batching_at_saturation(model_file: Path, bodies: list, concurrency: int, n_requests: int, duration_s: float,
                           workers: int, max_batch_size: int, max_wait_ms: float = 0.0, frontend: str = "asgi",
                           rounds: int = 2) -> dict[str, dict]:
    """Dynamic batching vs batch size 1, side by side: two servers up at once, phases interleaved.

    Same model file, same client, same bodies, same workers; only ``max_batch_size``
    differs. Interleaving ``rounds`` times (A B A B) spreads the noise of a shared machine
    over both sides.

    Returns:
        ``{"batched": {...}, "size1": {...}, "ratio": rps_batched / rps_size1, "ratio_rounds": the
        ratio of each interleaved round, "ratio_ci95": the 95 % half-width over rounds}``; each side has
        ``rps`` (mean over rounds), ``p50_ms``/``p99_ms`` (over all its requests), ``errors``,
        ``mean_batch`` (rows per model call, from the server's own histogram), and where the
        CPU went per answered request: ``server_cpu_ms_per_req`` (supervisor and workers, all
        threads), ``client_cpu_ms_per_req`` (this process, which runs the load generator) and
        ``model_wall_ms_per_row`` (the server's own model-time histogram over its rows; wall
        time, so it includes waiting for a core).
    """
    with ServerProcess.start(model_file, workers=workers, max_batch_size=max_batch_size, max_wait_ms=max_wait_ms,
                             frontend=frontend) as sb, \
            ServerProcess.start(model_file, workers=workers, max_batch_size=1, frontend=frontend) as s1:
        servers = {"batched": sb, "size1": s1}
        for srv in servers.values():  # warm-up: connections, first model calls
            loadgen.closed_loop(srv.url + INFER, bodies, concurrency, n_requests=concurrency * 5, duration_s=1)
        before = {k: _batch_totals(srv) for k, srv in servers.items()}
        runs: dict[str, list] = {k: [] for k in servers}
        cpu = {k: {"server_s": 0.0, "client_s": 0.0} for k in servers}
        for _ in range(rounds):
            for k, srv in servers.items():
                s0, c0 = server_cpu_s(srv), time.process_time()
                runs[k].append(loadgen.closed_loop(srv.url + INFER, bodies, concurrency, n_requests, duration_s))
                cpu[k]["server_s"] += server_cpu_s(srv) - s0
                cpu[k]["client_s"] += time.process_time() - c0
        out = {}
        for k, srv in servers.items():
            totals = _batch_totals(srv)
            rows, calls, model_s = (a - b for a, b in zip(totals, before[k]))
            done = sum(r.ok for r in runs[k])
            out[k] = dict(_combine(runs[k]), mean_batch=rows / calls if calls else float("nan"),
                          server_cpu_ms_per_req=1e3 * cpu[k]["server_s"] / done if done else float("nan"),
                          client_cpu_ms_per_req=1e3 * cpu[k]["client_s"] / done if done else float("nan"),
                          model_wall_ms_per_row=1e3 * model_s / rows if rows else float("nan"))
    out["ratio"] = out["batched"]["rps"] / out["size1"]["rps"] if out["size1"]["rps"] else float("nan")
    out["ratio_rounds"] = [b.throughput / a.throughput if a.throughput else float("nan")
                           for b, a in zip(runs["batched"], runs["size1"])]
    out["ratio_ci95"] = ci95_half_width(out["ratio_rounds"])
    return out


def _batch_totals(srv: ServerProcess) -> tuple[float, float, float]:
    """(rows, model calls, model seconds) so far, from the :data:`~hpcml.serve.spec.METRIC_BATCH_SIZE`
    sum and count and the :data:`~hpcml.serve.spec.METRIC_MODEL_SECONDS` sum."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    text = urllib.request.urlopen(srv.url + "/metrics", timeout=10).read().decode()
    rows, calls, secs = f"{METRIC_BATCH_SIZE}_sum", f"{METRIC_BATCH_SIZE}_count", f"{METRIC_MODEL_SECONDS}_sum"
    vals = {s.name: s.value for f in text_string_to_metric_families(text) for s in f.samples
            if s.name in (rows, calls, secs)}
    return vals.get(rows, 0.0), vals.get(calls, 0.0), vals.get(secs, 0.0)


def server_cpu_s(srv: ServerProcess) -> float:
    """CPU seconds (user + system, all threads) the server's supervisor and workers have used so far."""
    import psutil

    total = 0.0
    for pid in [srv.proc.pid, *srv.worker_pids()]:
        try:
            t = psutil.Process(pid).cpu_times()
        except psutil.Error:  # a worker that just exited
            continue
        total += t.user + t.system
    return total


def compute_bound_model(arch: str, out_dir: Path, seed: int = 0, **kw) -> Path:
    """An untrained ``make_model(arch)`` for MNIST-shaped input, exported to ONNX.

    Only its compute matters here (the serving path, batching and the timings do not
    depend on the weights' values), so it is not trained. ResNets get one input channel
    and ten classes, like the ones 02 trains on the shards.
    """
    import torch

    from hpcml.train.models import make_model

    if arch.startswith("resnet"):
        kw = {"in_channels": 1, "num_classes": 10, **kw}
    torch.manual_seed(seed)
    return export.to_onnx(make_model(arch, **kw).eval(), Path(out_dir) / f"{arch}.onnx")


def save_results(name: str, obj) -> Path:
    """Keep a run's raw numbers under build/serve/ (JSON)."""
    return paths.atomic_write_text(paths.build_dir() / "serve" / f"{name}.json", json.dumps(obj, indent=2, default=str))


def decode_cost_us(x: np.ndarray, repeats: int = 300) -> dict[str, float]:
    """Median server-side parse time of one single-image request, JSON vs binary body (µs)."""
    body_j = protocol.make_infer_body(x[:1])
    body_b, hdr = protocol.make_binary_infer_request(x[:1])
    hl = hdr["Inference-Header-Content-Length"]
    out = {}
    for name, fn in (("json", lambda: protocol.parse_infer(body_j, 64)),
                     ("binary", lambda: protocol.parse_infer(body_b, 64, hl))):
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        out[name] = float(np.median(times)) * 1e6
    return out
