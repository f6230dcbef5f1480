"""The serving bake-off (issue 27): the project's server against Triton and KServe's ModelServer.

The same ONNX models (the MNIST CNN, ResNet-18, the weight-bound MLP) behind every server, with
the same worker count, intra-op threads and CPUs (``taskset``), the same batching settings where
a server has a batcher (max batch, max queue delay; KServe's in-process server has none and runs
without), and the project's own v2 load generator pinned to its own core. Each round visits
every load level and, at each level, every server in an order that rotates from round to round
(interleaved, so the noise of a shared machine spreads over all of them).

What it measures, per model and server: throughput and p50/p99 at each closed-loop load level
(batching on and off for the project's server and Triton), and the issue's target: at the
highest load where the best peer's p99 is at most 50 ms, the project's throughput over that
peer's, with a 95 % interval over the rounds (:func:`target`). The same v2 conformance requests
go to the three servers too (:mod:`hpcml.serve.conformance`).

``python -m hpcml.serve.bakeoff --models cnn,resnet18,mlp`` writes ``build/bakeoff/bakeoff.json``
and one PNG of curves per model; notebook 04 calls :func:`run` and records the numbers.
"""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from hpcml import paths
from hpcml.serve import bench, conformance, loadgen
from hpcml.serve.peers import launch
from hpcml.serve.process import ServerProcess

#: server label -> (what runs it, dynamic batching on).
SERVERS = {"hpcml": ("hpcml", True), "hpcml size 1": ("hpcml", False), "triton": ("triton", True),
           "triton no batcher": ("triton", False), "kserve": ("kserve", False)}
#: The servers the conformance requests go to (one per implementation).
CONFORMANCE_SERVERS = ("hpcml", "triton", "kserve")
#: The p99 objective the target is taken at (ms).
P99_OBJECTIVE_MS = 50.0


@dataclass(frozen=True)
class Settings:
    """What every server and the client share.

    Attributes:
        workers: worker processes (project, KServe) / model instances (Triton).
        threads: ONNX Runtime intra-op threads per worker.
        max_batch_size: rows per model call, and the largest batch one request may carry.
        max_wait_ms: the batcher's max queue delay (0: run what is queued as soon as the model is free).
        concurrencies: closed-loop clients of each load level.
        n_requests: upper bound on requests per phase.
        phase_s: upper bound on seconds per phase.
        rounds: interleaved rounds (at least 2: the target's interval comes from them).
        server_cpus: ``taskset -c`` list for every server.
        client_cpus: CPUs the load generator (this process) is pinned to.
    """

    workers: int = 2
    threads: int = 1
    max_batch_size: int = 32
    max_wait_ms: float = 0.0
    concurrencies: tuple = (1, 4, 16, 64)
    n_requests: int = 4000
    phase_s: float = 2.0
    rounds: int = 3
    server_cpus: str = ""
    client_cpus: str = ""

    def __post_init__(self) -> None:
        if self.rounds < 2:
            raise ValueError(f"rounds must be >= 2 (the target's 95 % interval needs two), got {self.rounds}")
        if not self.concurrencies or min(self.concurrencies) < 1:
            raise ValueError(f"concurrencies must be positive client counts, got {list(self.concurrencies)}")


def default_cpus() -> tuple[str, str]:
    """``(server_cpus, client_cpus)``: the load generator on the last CPU this process may use, the servers
    on the others (on one CPU both share it)."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return str(cpus[0]), str(cpus[0])
    return ",".join(map(str, cpus[:-1])), str(cpus[-1])


def start(label: str, model_file: Path, s: Settings):
    """Start the server ``label`` of :data:`SERVERS` (raises :class:`launch.PeerUnavailable` for a peer)."""
    kind, batching = SERVERS[label]
    if kind == "hpcml":
        return ServerProcess.start(model_file, workers=s.workers, threads=s.threads, cpus=s.server_cpus or None,
                                   max_batch_size=s.max_batch_size if batching else 1, max_wait_ms=s.max_wait_ms,
                                   max_request_rows=s.max_batch_size)
    return launch.PeerProcess.start(kind, model_file, workers=s.workers, threads=s.threads,
                                    max_batch_size=s.max_batch_size, max_wait_ms=s.max_wait_ms, batching=batching,
                                    cpus=s.server_cpus or None)


def measure(urls: dict[str, str], bodies: list, s: Settings, log=print) -> dict[str, dict[str, dict[str, list]]]:
    """Interleaved closed-loop load on every server: ``{server: {clients: {"rps", "p50_ms", "p99_ms",
    "errors": one value per round, "error_kinds": {kind: count} over the rounds}}}`` (clients as a
    string: JSON keys)."""
    names = list(urls)
    pts = {n: {str(c): {"rps": [], "p50_ms": [], "p99_ms": [], "errors": [], "error_kinds": {}} for c in s.concurrencies}
           for n in names}
    for n in names:  # warm-up: connections, first model calls
        loadgen.closed_loop(urls[n] + bench.INFER, bodies, max(s.concurrencies), n_requests=200, duration_s=1)
    for r in range(s.rounds):
        for c in s.concurrencies:
            for n in names[r % len(names):] + names[:r % len(names)]:
                res = loadgen.closed_loop(urls[n] + bench.INFER, bodies, c, s.n_requests, s.phase_s)
                p = pts[n][str(c)]
                p["rps"].append(res.throughput)
                p["p50_ms"].append(res.pct(50))
                p["p99_ms"].append(res.pct(99))
                p["errors"].append(res.error_count)
                for kind, k in res.errors.items():
                    p["error_kinds"][kind] = p["error_kinds"].get(kind, 0) + k
            log(f"bakeoff: round {r + 1}/{s.rounds}, {c} clients: " +
                ", ".join(f"{n} {pts[n][str(c)]['rps'][-1]:.0f} req/s" for n in names))
    return pts


def stats(points: dict[str, dict[str, dict[str, list]]]) -> dict[str, dict[str, dict[str, float]]]:
    """Per server and load level: mean throughput over rounds, median p50 and p99, total errors."""
    return {n: {c: {"rps": float(np.mean(p["rps"])), "p50_ms": float(np.nanmedian(p["p50_ms"])),
                    "p99_ms": float(np.nanmedian(p["p99_ms"])), "errors": int(sum(p["errors"]))}
                for c, p in per.items()} for n, per in points.items()}


def target(points: dict[str, dict[str, dict[str, list]]], peers: tuple = ("triton", "kserve"),
           project: str = "hpcml", p99_ms: float = P99_OBJECTIVE_MS) -> dict:
    """The issue's target for one model: the project's throughput over the best peer's at the highest
    load where that peer's p99 (median over rounds) is at most ``p99_ms`` with no errors.

    The best peer is the one with the most throughput at its own such load. The ratio's 95 %
    interval comes from the per-round ratios (Student t, :func:`bench.ci95_half_width`).

    Returns:
        ``{"peer", "clients", "peer_rps", "project_rps", "project_p99_ms", "peer_p99_ms", "ratio",
        "ratio_rounds", "ratio_ci95", "ratio_low95", "met"}``; ``peer`` is ``None`` when no peer met
        the objective at any load (nothing to compare at).
    """
    st = stats(points)
    best = None
    for peer in peers:
        if peer not in st:
            continue
        good = [c for c, v in st[peer].items() if v["p99_ms"] <= p99_ms and v["errors"] == 0]
        if good:
            c = max(good, key=int)
            if best is None or st[peer][c]["rps"] > st[best[0]][best[1]]["rps"]:
                best = (peer, c)
    if best is None:
        return {"peer": None, "clients": None, "met": False}
    peer, c = best
    rounds = [a / b if b else float("nan") for a, b in zip(points[project][c]["rps"], points[peer][c]["rps"])]
    hw = bench.ci95_half_width(rounds)
    ratio = float(np.mean(rounds))
    return {"peer": peer, "clients": int(c), "peer_rps": st[peer][c]["rps"], "project_rps": st[project][c]["rps"],
            "project_p99_ms": st[project][c]["p99_ms"], "peer_p99_ms": st[peer][c]["p99_ms"], "ratio": ratio,
            "ratio_rounds": rounds, "ratio_ci95": hw, "ratio_low95": ratio - hw,
            "met": bool(np.isfinite(hw) and ratio - hw >= 1.0)}


def model_files(models: list[str], out_dir: Path) -> dict[str, Path]:
    """ONNX files for ``models``: ``cnn`` is the trained model 04 serves when one exists (else an untrained
    CNN of the same shape); the others are untrained (only their compute matters)."""
    from hpcml.serve import export

    out = {}
    for m in models:
        trained = bench.find_model() if m == "cnn" else None
        out[m] = (export.prepare_model(trained, "onnx", out_dir / "cnn-trained")[1] if trained
                  else bench.compute_bound_model(m, out_dir))
    return out


def run(models: list[str], s: Settings, out_dir: Path | None = None, x: np.ndarray | None = None, log=print) -> dict:
    """The whole bake-off; writes ``bakeoff.json`` and one ``curves-<model>.png`` per model under ``out_dir``.

    A peer that cannot be installed or does not start gets one line (``unavailable``, with its log
    tail in the JSON) and the others go on. The load generator (this process) is pinned to
    ``s.client_cpus`` for the run and unpinned after.
    """
    out_dir = Path(out_dir or paths.build_dir() / "bakeoff")
    out_dir.mkdir(parents=True, exist_ok=True)
    if x is None:
        x = np.random.default_rng(0).normal(size=(64, 784)).astype(np.float32)
    bodies = bench.bodies_for(x, 64, "json")
    before = os.sched_getaffinity(0)
    if s.client_cpus:
        os.sched_setaffinity(0, {int(c) for c in s.client_cpus.split(",")})
    result: dict = {"settings": asdict(s), "unavailable": {}, "models": {}, "conformance": None}
    try:
        for i, (name, f) in enumerate(model_files(models, out_dir / "models").items()):
            servers = {}
            try:
                for label in SERVERS:
                    if SERVERS[label][0] in result["unavailable"]:
                        continue
                    try:
                        servers[label] = start(label, f, s)
                    except launch.PeerUnavailable as exc:
                        line, _, tail = str(exc).partition("\n")
                        log(f"bakeoff: {line}")
                        result["unavailable"][SERVERS[label][0]] = {"line": line, "log_tail": tail}
                urls = {k: v.url for k, v in servers.items()}
                if i == 0:
                    cs = conformance.cases("mnist", s.max_batch_size, x)
                    rows = {k: conformance.run(urls[k], cs) for k in CONFORMANCE_SERVERS if k in urls}
                    result["conformance"] = {"rows": rows, "differences": conformance.differences(rows)}
                points = measure(urls, bodies, s, log)
                died = {k: srv.log_tail(15) for k, srv in servers.items() if srv.proc.poll() is not None}
            finally:
                for srv in servers.values():
                    srv.stop()
            for k in died:
                log(f"bakeoff: {k} exited during the {name} load (its log tail is in the JSON)")
            result["models"][name] = {"file": str(f), "points": points, "stats": stats(points),
                                      "target": target(points), "exited": died}
            _plot(result["models"][name]["stats"], name, out_dir / f"curves-{name}.png")
    finally:
        os.sched_setaffinity(0, before)
    (out_dir / "bakeoff.json").write_text(json.dumps(result, indent=1, default=float))
    return result


def _plot(st: dict, name: str, path: Path) -> None:
    from hpcml.serve import plots

    fig = plots.bakeoff_curves(st, f"{name}: the same load on every server", P99_OBJECTIVE_MS)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    """CLI: ``python -m hpcml.serve.bakeoff --models cnn,resnet18,mlp [--rounds 3 --phase-s 2 ...]``."""
    d = Settings()
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default="cnn,resnet18,mlp", help="comma-separated: cnn, resnet18, mlp")
    ap.add_argument("--concurrencies", default=",".join(map(str, d.concurrencies)))
    ap.add_argument("--rounds", type=int, default=d.rounds)
    ap.add_argument("--phase-s", type=float, default=d.phase_s)
    ap.add_argument("--n-requests", type=int, default=d.n_requests)
    ap.add_argument("--workers", type=int, default=d.workers)
    ap.add_argument("--threads", type=int, default=d.threads)
    ap.add_argument("--max-batch-size", type=int, default=d.max_batch_size)
    ap.add_argument("--max-wait-ms", type=float, default=d.max_wait_ms)
    ap.add_argument("--out", default=str(paths.build_dir() / "bakeoff"))
    a = ap.parse_args(argv)
    server_cpus, client_cpus = default_cpus()
    s = Settings(a.workers, a.threads, a.max_batch_size, a.max_wait_ms,
                 tuple(int(c) for c in a.concurrencies.split(",")), a.n_requests, a.phase_s, a.rounds,
                 server_cpus, client_cpus)
    res = run([m.strip() for m in a.models.split(",") if m.strip()], s, Path(a.out))
    for name, m in res["models"].items():
        t = m["target"]
        if t["peer"] is None:
            print(f"{name}: no peer met p99 <= {P99_OBJECTIVE_MS:g} ms at any load")
        else:
            print(f"{name}: at {t['clients']} clients hpcml {t['project_rps']:.0f} req/s vs {t['peer']} "
                  f"{t['peer_rps']:.0f} req/s: ratio {t['ratio']:.2f} (95 % low {t['ratio_low95']:.2f}), "
                  f"{'met' if t['met'] else 'not met'}")
    diffs = (res["conformance"] or {}).get("differences", [])
    print(f"conformance: {len(diffs)} differences; written to {a.out}/bakeoff.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
