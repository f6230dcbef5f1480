"""Training benchmark drivers, each run under a real launcher and recorded, never asserted on time.

:func:`run_bench` starts the benchmark ``modes`` of :mod:`hpcml.train.bench_worker` on either
backend (``horovod``: ``horovodrun``; ``ddp``: ``torchrun``) and reads back the JSON rank 0
writes: on this machine (the local target's :func:`~hpcml.train.targets.local.start_local`),
or, given a running multi-node ``cluster``, across its nodes
(:func:`hpcml.train.targets.nodes.start`: horovodrun over SSH, or a torchrun agent per node).
:func:`scaling` runs the synthetic benchmark at 1 and N workers; :func:`ceiling` times N
plain-PyTorch processes alone and together (the hardware's scaling ceiling), on this machine
or one per node. The statistics are in :mod:`hpcml.train.stats` and :mod:`hpcml.train.abtest`;
the Horovod-vs-DDP comparison and the link sweep in :mod:`hpcml.train.sweep`.

``python -m hpcml.train.bench [--np N]`` prints the scaling efficiency of a small run.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hpcml import paths
from hpcml.train import stats
from hpcml.train.bench_worker import DEFAULTS, MODES

if TYPE_CHECKING:
    from hpcml.cluster.local import LocalCluster

WORKER_MODULE = "hpcml.train.bench_worker"
#: The launchers :func:`run_bench` knows (``hpcml.train.comm.BACKENDS``).
BACKENDS = ("horovod", "ddp")


def _check_options(cfg: dict) -> None:
    unknown = sorted(set(cfg) - set(DEFAULTS))
    if unknown:
        raise ValueError(f"unknown benchmark option(s) {unknown}; known: {sorted(DEFAULTS)}")


def on_nodes(cluster: LocalCluster | None) -> bool:
    """Whether ``cluster`` is a running multi-node cluster (else the benchmarks run on this machine)."""
    return cluster is not None and cluster.mode == "multi"


def bench_hosts(cluster: LocalCluster, world_size: int, hosts: list[str] | None) -> tuple[list[str], int]:
    """(hosts, ranks per host) of a ``world_size`` run on the cluster's nodes.

    ``hosts`` None: one rank per node on the first ``world_size`` nodes (all nodes, several
    ranks each, when there are fewer nodes than ranks).

    Raises:
        ValueError: ``world_size`` is not a multiple of the host count.
    """
    names = [n.name for n in cluster.plan.nodes]
    if hosts is None:
        hosts = names[:world_size] if world_size <= len(names) else names
    if not hosts or world_size % len(hosts):
        raise ValueError(f"world_size {world_size} must be a positive multiple of the {len(hosts or [])} host(s) "
                         f"{hosts} (ranks per host are equal)")
    return list(hosts), world_size // len(hosts)


def run_bench(world_size: int, modes: list[str], timeout_s: float = 600, tag: str = "", backend: str = "horovod",
              cluster: LocalCluster | None = None, hosts: list[str] | None = None, **cfg: Any) -> dict[str, Any]:
    """Run benchmark ``modes`` on ``world_size`` ranks of ``backend``; returns rank 0's JSON.

    Args:
        world_size: ranks.
        modes: some of :data:`hpcml.train.bench_worker.MODES`.
        timeout_s: the job's wall-clock limit.
        tag: names the run's folder (``build/bench/bench-<tag>-<backend>-np<N>``).
        backend: ``horovod`` or ``ddp``.
        cluster: a running multi-node cluster: the ranks run on its nodes (``hosts``); None
            (or the single-node fallback): on this machine.
        hosts: the nodes, in rank order (default: one rank per node, the first ``world_size``).
        **cfg: benchmark options (:data:`~hpcml.train.bench_worker.DEFAULTS`), e.g.
            ``bucket_mb`` (Horovod's fusion threshold / DDP's ``bucket_cap_mb``; None: each
            tool's default) and ``cycle_time_ms`` (Horovod's cycle; None: its 1 ms default).

    Raises:
        ValueError: an unknown mode, option or backend, or hosts that don't fit.
        TimeoutError / RuntimeError: the job ran too long or failed (its log's tail).
    """
    bad = [m for m in modes if m not in MODES]
    if bad:
        raise ValueError(f"unknown benchmark mode(s) {bad}; expected some of {sorted(MODES)}")
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    _check_options(cfg)
    full = {**DEFAULTS, **cfg, "modes": list(modes), "backend": backend}
    if "overhead" in modes and (full["overhead_steps"] < 1 or full["overhead_rounds"] < 2):
        raise ValueError(f"overhead needs overhead_steps >= 1 and overhead_rounds >= 2 (ABBA block pairs: "
                         f"the interval needs two), got {full['overhead_steps']} and {full['overhead_rounds']}")
    where = "nodes" if on_nodes(cluster) else "local"
    suffix = "" if backend == "horovod" and where == "local" else f"-{backend}-{where}"
    name = f"bench-{tag or '-'.join(modes)}{suffix}-np{world_size}".replace("_", "-")
    out_dir = paths.ensure(paths.build_dir() / "bench" / name)
    full["out"] = str(out_dir / "result.json")
    if full["dataset_dir"]:
        full["dataset_dir"] = str(Path(full["dataset_dir"]).resolve())  # the workers run in their own folder
    (out_dir / "result.json").unlink(missing_ok=True)
    paths.atomic_write_text(out_dir / "bench.json", json.dumps(full, indent=2))
    env = {"HOROVOD_CYCLE_TIME": str(full["cycle_time_ms"])} if full["cycle_time_ms"] else None
    args = ["--config", str(out_dir / "bench.json")]
    if where == "nodes":
        log = _run_on_nodes(cluster, world_size, hosts, backend, args, env, out_dir, timeout_s, name)
    else:
        log = _run_local(world_size, full, backend, args, env, out_dir, timeout_s, name)
    res = out_dir / "result.json"
    if not res.exists():
        tail = log.read_text(encoding="utf-8", errors="replace")[-2500:] if log.exists() else ""
        raise RuntimeError(f"benchmark {name} wrote no result; log {log}:\n{tail}")
    out = json.loads(res.read_text())
    out["placement"] = {"where": where, "hosts": hosts_of(out)}
    return out


def hosts_of(result: dict[str, Any]) -> list[str]:
    """The host of every rank of a synthetic result, in rank order (empty without one)."""
    return [r.get("host", "") for r in result.get("synthetic", {}).get("per_rank", [])]


def _run_local(world_size: int, full: dict, backend: str, args: list[str], env: dict | None, out_dir: Path,
               timeout_s: float, name: str) -> Path:
    from hpcml.train.spec import TrainSpec
    from hpcml.train.targets.local import start_local

    extra = {} if backend == "horovod" else {"backend": backend}  # TrainSpec.backend: the DDP launcher
    spec = TrainSpec(name=name, world_size=world_size, threads_per_worker=int(full["threads"]),
                     pin_cpus=bool(full["pin"]), out_dir=str(out_dir), **extra)
    job = start_local(spec, on_progress=None, module=WORKER_MODULE, env=env, module_args=args, check_data=False)
    try:
        job.proc.wait(timeout=timeout_s)
    except Exception:
        job.kill()
        raise TimeoutError(f"benchmark {name} exceeded {timeout_s} s; log {job.log_path}") from None
    job.kill()
    if job.proc.returncode != 0:
        tail = job.log_path.read_text(encoding="utf-8", errors="replace")[-2500:]
        raise RuntimeError(f"benchmark {name} failed (exit {job.proc.returncode}); log {job.log_path}:\n{tail}")
    return job.log_path


def _run_on_nodes(cluster: LocalCluster, world_size: int, hosts: list[str] | None, backend: str, args: list[str],
                  env: dict | None, out_dir: Path, timeout_s: float, name: str) -> Path:
    from hpcml.train.targets import nodes

    hosts, slots = bench_hosts(cluster, world_size, hosts)
    job = nodes.start(cluster, backend, hosts, slots, WORKER_MODULE, args, env=env, log_dir=out_dir / "logs")
    try:
        job.wait(timeout_s)  # raises naming the node (and its log's tail) when a rank fails
    finally:
        job.kill()
    return job.logs[hosts[0]]


def scaling(world_size: int = 2, timeout_s: float = 600, **cfg: Any) -> dict[str, Any]:
    """Synthetic img/s at 1 worker and at ``world_size`` workers (same per-worker batch and
    threads), launched back to back; returns both runs and the scaling efficiency."""
    one = run_bench(1, ["synthetic"], timeout_s, tag="scale", **cfg)["synthetic"]
    many = run_bench(world_size, ["synthetic"], timeout_s, tag="scale", **cfg)["synthetic"]
    return {"one": one, "many": many, "world_size": world_size,
            "efficiency": stats.scaling_efficiency(many["total_img_per_s"], one["total_img_per_s"], world_size)}


def ceiling(n: int = 2, timeout_s: float = 600, cluster: LocalCluster | None = None,
            hosts: list[str] | None = None, **cfg: Any) -> dict[str, Any]:
    """The hardware's scaling ceiling: ``n`` plain-PyTorch copies of the synthetic step.

    No Horovod, no communication: what ``n`` processes get from these cores when they share
    nothing but the hardware (caches, memory bandwidth, the hypervisor). Each process is timed
    alone and all together (:func:`hpcml.train.bench_worker.independent_worker`); the ratio
    of the together throughput to the sum of the alone throughputs is the ceiling any
    data-parallel method can reach here. Given a multi-node ``cluster``, process ``k`` runs
    inside node ``hosts[k]`` (one per node, pinned to that node's cores; the file barrier
    works because the nodes share this machine's file system).
    """
    if n < 1:
        raise ValueError(f"ceiling: n must be >= 1, got {n}")
    _check_options(cfg)
    where = "nodes" if on_nodes(cluster) else "local"
    if where == "nodes":
        hosts, slots = bench_hosts(cluster, n, hosts)
        if slots != 1:
            raise ValueError(f"ceiling on nodes: one process per node, got {n} processes on {len(hosts)} node(s)")
    out_dir = paths.ensure(paths.build_dir() / "bench" / f"ceiling-{'nodes-' if where == 'nodes' else ''}n{n}")
    for f in out_dir.iterdir():
        f.unlink()
    full = {**DEFAULTS, **cfg, "barrier_dir": str(out_dir), "n": n}
    cfg_path = out_dir / "bench.json"
    paths.atomic_write_text(cfg_path, json.dumps(full, indent=2, default=str))
    procs = []
    for k in range(n):
        res = out_dir / f"slot-{k}.json"
        argv = [sys.executable, "-m", WORKER_MODULE, "--independent", "--config", str(cfg_path),
                "--slot", str(k), "--result", str(res)]
        if where == "nodes":
            argv = cluster.node_argv(hosts[k], argv + ["--pin-slot", "0"])
        procs.append((res, subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)))
    per = []
    try:
        for k, (res, p) in enumerate(procs):
            _, err = p.communicate(timeout=timeout_s)
            if p.returncode != 0 or not res.exists():
                at = f" on {hosts[k]}" if where == "nodes" else ""
                raise RuntimeError(f"independent benchmark process {k}{at} failed (exit {p.returncode}): {err[-2000:]}")
            per.append(json.loads(res.read_text()))
    finally:
        for _, p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    alone = sum(r["alone"]["img_per_s"] for r in per)
    together = sum(r["together"]["img_per_s"] for r in per)
    return {"per_process": per, "n": n, "alone_img_per_s": alone / n, "together_img_per_s": together,
            "efficiency": together / alone, "placement": {"where": where, "hosts": [r.get("host", "") for r in per]}}


def main(argv: list[str] | None = None) -> int:
    """``python -m hpcml.train.bench``: a scaling run; prints its efficiency and throughputs as JSON."""
    ap = argparse.ArgumentParser(description="hpcml training benchmarks")
    ap.add_argument("--np", type=int, default=2, help="workers for the scaling run")
    ap.add_argument("--image-size", type=int, default=DEFAULTS["image_size"])
    ap.add_argument("--batch-size", type=int, default=DEFAULTS["batch_size"])
    ap.add_argument("--iters", type=int, default=DEFAULTS["iters"])
    args = ap.parse_args(argv)
    res = scaling(args.np, image_size=args.image_size, batch_size=args.batch_size, iters=args.iters)
    print(json.dumps({"scaling_efficiency": res["efficiency"],
                      "img_per_s_1": res["one"]["total_img_per_s"],
                      f"img_per_s_{args.np}": res["many"]["total_img_per_s"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
