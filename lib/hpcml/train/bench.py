"""Training benchmark drivers, each run under real ``horovodrun`` and recorded, never asserted on time.

:func:`run_bench` starts the benchmark ``modes`` of :mod:`hpcml.train.bench_worker` under
``horovodrun -np N`` (the local target's :func:`~hpcml.train.targets.local.start_local`) and
reads back the JSON rank 0 writes; :func:`scaling` runs the synthetic benchmark at 1 and N
workers; :func:`ceiling` times N plain-PyTorch processes alone and together (the hardware's
scaling ceiling). The statistics are in :mod:`hpcml.train.stats` and :mod:`hpcml.train.abtest`.

``python -m hpcml.train.bench [--np N]`` prints the scaling efficiency of a small run.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from hpcml import paths
from hpcml.train import stats
from hpcml.train.bench_worker import DEFAULTS, MODES

WORKER_MODULE = "hpcml.train.bench_worker"


def _check_options(cfg: dict) -> None:
    unknown = sorted(set(cfg) - set(DEFAULTS))
    if unknown:
        raise ValueError(f"unknown benchmark option(s) {unknown}; known: {sorted(DEFAULTS)}")


def run_bench(world_size: int, modes: list[str], timeout_s: float = 600, tag: str = "", **cfg: Any) -> dict[str, Any]:
    """Run benchmark ``modes`` under ``horovodrun -np world_size``; returns rank 0's JSON."""
    from hpcml.train.spec import TrainSpec
    from hpcml.train.targets.local import start_local

    bad = [m for m in modes if m not in MODES]
    if bad:
        raise ValueError(f"unknown benchmark mode(s) {bad}; expected some of {sorted(MODES)}")
    _check_options(cfg)
    full = {**DEFAULTS, **cfg, "modes": list(modes)}
    if "overhead" in modes and (full["overhead_steps"] < 1 or full["overhead_rounds"] < 2):
        raise ValueError(f"overhead needs overhead_steps >= 1 and overhead_rounds >= 2 (ABBA block pairs: "
                         f"the interval needs two), got {full['overhead_steps']} and {full['overhead_rounds']}")
    name = f"bench-{tag or '-'.join(modes)}-np{world_size}".replace("_", "-")
    out_dir = paths.ensure(paths.build_dir() / "bench" / name)
    full["out"] = str(out_dir / "result.json")
    if full["dataset_dir"]:
        full["dataset_dir"] = str(Path(full["dataset_dir"]).resolve())  # the workers run in their own folder
    (out_dir / "result.json").unlink(missing_ok=True)
    paths.atomic_write_text(out_dir / "bench.json", json.dumps(full, indent=2))
    spec = TrainSpec(name=name, world_size=world_size, threads_per_worker=int(full["threads"]),
                     pin_cpus=bool(full["pin"]), out_dir=str(out_dir))
    env = {"HOROVOD_CYCLE_TIME": str(full["cycle_time_ms"])} if full["cycle_time_ms"] else None
    job = start_local(spec, on_progress=None, module=WORKER_MODULE, env=env,
                      module_args=["--config", str(out_dir / "bench.json")], check_data=False)
    try:
        job.proc.wait(timeout=timeout_s)
    except Exception:
        job.kill()
        raise TimeoutError(f"benchmark {name} exceeded {timeout_s} s; log {job.log_path}") from None
    job.kill()
    res = out_dir / "result.json"
    if job.proc.returncode != 0 or not res.exists():
        tail = job.log_path.read_text(encoding="utf-8", errors="replace")[-2500:]
        raise RuntimeError(f"benchmark {name} failed (exit {job.proc.returncode}); log {job.log_path}:\n{tail}")
    return json.loads(res.read_text())


def scaling(world_size: int = 2, timeout_s: float = 600, **cfg: Any) -> dict[str, Any]:
    """Synthetic img/s at 1 worker and at ``world_size`` workers (same per-worker batch and
    threads), launched back to back; returns both runs and the scaling efficiency."""
    one = run_bench(1, ["synthetic"], timeout_s, tag="scale", **cfg)["synthetic"]
    many = run_bench(world_size, ["synthetic"], timeout_s, tag="scale", **cfg)["synthetic"]
    return {"one": one, "many": many, "world_size": world_size,
            "efficiency": stats.scaling_efficiency(many["total_img_per_s"], one["total_img_per_s"], world_size)}


def ceiling(n: int = 2, timeout_s: float = 600, **cfg: Any) -> dict[str, Any]:
    """The hardware's scaling ceiling: ``n`` plain-PyTorch copies of the synthetic step.

    No Horovod, no communication: what ``n`` processes get from these cores when they share
    nothing but the hardware (caches, memory bandwidth, the hypervisor). Each process is timed
    alone and all together (:func:`hpcml.train.bench_worker.independent_worker`); the ratio
    of the together throughput to the sum of the alone throughputs is the ceiling any
    data-parallel method can reach here.
    """
    if n < 1:
        raise ValueError(f"ceiling: n must be >= 1, got {n}")
    _check_options(cfg)
    out_dir = paths.ensure(paths.build_dir() / "bench" / f"ceiling-n{n}")
    for f in out_dir.iterdir():
        f.unlink()
    full = {**DEFAULTS, **cfg, "barrier_dir": str(out_dir), "n": n}
    cfg_path = out_dir / "bench.json"
    paths.atomic_write_text(cfg_path, json.dumps(full, indent=2, default=str))
    procs = []
    for k in range(n):
        res = out_dir / f"slot-{k}.json"
        procs.append((res, subprocess.Popen(
            [sys.executable, "-m", WORKER_MODULE, "--independent", "--config", str(cfg_path),
             "--slot", str(k), "--result", str(res)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)))
    per = []
    try:
        for res, p in procs:
            _, err = p.communicate(timeout=timeout_s)
            if p.returncode != 0 or not res.exists():
                raise RuntimeError(f"independent benchmark process failed (exit {p.returncode}): {err[-2000:]}")
            per.append(json.loads(res.read_text()))
    finally:
        for _, p in procs:
            if p.poll() is None:
                p.kill()
    alone = sum(r["alone"]["img_per_s"] for r in per)
    together = sum(r["together"]["img_per_s"] for r in per)
    return {"per_process": per, "n": n, "alone_img_per_s": alone / n, "together_img_per_s": together,
            "efficiency": together / alone}


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
