"""The training benchmarks' in-worker code: what runs inside each rank (``horovodrun`` or
``torchrun``), or in each plain-PyTorch process of the scaling ceiling.

* ``synthetic`` — Horovod's synthetic benchmark method (``pytorch_synthetic_benchmark.py``):
  random ImageNet-shaped batches, warm-up batches, then ``iters`` timed iterations of
  ``batches_per_iter`` steps; img/s per worker as mean ± 1.96σ over iterations, **each rank
  measured** and the total the sum over ranks. One step for both backends, the training
  worker's own (:func:`hpcml.train.worker.dist_step`): it talks to its peers only through
  :mod:`hpcml.train.comm` (``backend`` ``horovod`` or ``ddp``, gradient
  buckets of ``bucket_mb`` MiB: Horovod's fusion threshold, DDP's ``bucket_cap_mb``).
* ``overhead`` — the backend's step (:func:`hpcml.train.worker.dist_step`) at world size 1 vs a
  plain PyTorch step on the same batches, in alternating ABBA blocks in one process.
* ``profile`` — ``torch.profiler`` over a few steps of the backend: top ops table and the split
  data / compute / allreduce wait / optimizer.
* ``paired`` — DDP only: its step with the gradient allreduces and under ``no_sync()`` (none),
  interleaved in ABBA pairs in the same job: the scaling efficiency over the no-communication
  ceiling with the host's drift paired out (:func:`hpcml.train.sweep_summary.paired_vs_ceiling`).
* ``versus`` — Horovod's step and DDP's, interleaved in ABBA pairs in the same ``horovodrun``
  job: the Horovod/DDP ratio with the host's drift paired out
  (:func:`hpcml.train.sweep_summary.paired_bakeoff`).
* :func:`independent_worker` — one plain-PyTorch copy of the synthetic step, timed alone and
  together with the others (the hardware's scaling ceiling).

Run as ``python -m hpcml.train.bench_worker --config bench.json`` (one rank of either backend;
rank 0 writes the JSON result) or ``… --independent --config bench.json --slot K --result out.json``.
The drivers that start these are in :mod:`hpcml.train.bench`.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hpcml import paths
from hpcml.train import comm, heap, loop
from hpcml.train.stats import ci95

#: Every benchmark option and its default (the drivers reject any other key).
DEFAULTS: dict[str, Any] = {
    "arch": "resnet50", "image_size": 64, "batch_size": 4, "num_classes": 1000, "channels_last": True,
    "warmup_batches": 2, "iters": 4, "batches_per_iter": 2, "threads": 1, "pin": True, "fp16_allreduce": False,
    "overhead_steps": 10, "overhead_rounds": 12, "profile_steps": 6, "dataset_dir": None, "cnn_batch": 64,
    "cycle_time_ms": None, "backend": "horovod", "bucket_mb": None, "keep_heap": True,
    "hvd_poll_ms": None,
}


def _setup(cfg: dict) -> tuple[Any, list[int], bool]:
    """Join the group of ``cfg["backend"]`` (Horovod's fusion threshold set from ``bucket_mb``),
    keep freed memory when ``keep_heap`` (:func:`hpcml.train.heap.keep`) and pin this rank to
    its own core(s) of the node it runs on: (group, cores, whether the heap is kept)."""
    from hpcml.train.worker import pin_cpus

    kept = heap.keep() if cfg["keep_heap"] else False
    c = comm.init(cfg["backend"], bucket_mb=cfg["bucket_mb"], poll_ms=cfg["hvd_poll_ms"])
    torch.set_num_threads(int(cfg["threads"]))
    cores = pin_cpus(c.local_rank(), int(cfg["threads"])) if cfg["pin"] else sorted(os.sched_getaffinity(0))
    return c, cores, kept


def _wrap(c: Any, model: torch.nn.Module, lr: float, cfg: dict) -> tuple[torch.nn.Module, Any]:
    """SGD with momentum, wrapped by the backend (in sync with rank 0): (model to run, optimizer)."""
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    return c.wrap(model, opt, bucket_mb=cfg["bucket_mb"], fp16=bool(cfg["fp16_allreduce"]))


def synthetic_model(cfg: dict) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    """:func:`hpcml.train.loop.synthetic_batch` for a benchmark config."""
    return loop.synthetic_batch(cfg["arch"], cfg["batch_size"], cfg["image_size"], cfg["num_classes"],
                                cfg["channels_last"])


def _timed_block(step: Any, cfg: dict) -> float:
    """img/s of ``batches_per_iter`` calls of ``step`` (one timed iteration)."""
    t0 = time.perf_counter()
    for _ in range(cfg["batches_per_iter"]):
        step()
    return cfg["batch_size"] * cfg["batches_per_iter"] / (time.perf_counter() - t0)


def _timed_iters(step: Any, cfg: dict, on_timed_start: Any = None) -> dict[str, Any]:
    """Warm-up batches, then ``iters`` timed iterations of ``batches_per_iter`` steps."""
    for _ in range(cfg["warmup_batches"]):
        step()
    if on_timed_start:
        on_timed_start()
    img_secs = [_timed_block(step, cfg) for _ in range(cfg["iters"])]
    mean, conf = ci95(img_secs)
    return {"img_per_s": mean, "conf95": conf, "iters": img_secs}


def _thread_cpu_by_owner(proc: Any) -> dict[str, float]:
    """CPU seconds so far of this process's threads (``proc``: psutil), in one pass: ``main``,
    ``torch`` (the threads torch.distributed names, ``pt_*`` and ``gloo_*``) and ``unnamed``
    (the other threads: Horovod 0.28.1 names none of its own)."""
    out = {"main": 0.0, "torch": 0.0, "unnamed": 0.0}
    for t in proc.threads():
        if t.id == os.getpid():
            out["main"] += t.user_time + t.system_time
            continue
        try:
            name = Path(f"/proc/{os.getpid()}/task/{t.id}/comm").read_text().strip()
        except OSError:  # the thread ended
            continue
        out["torch" if name.startswith(("pt_", "gloo_")) else "unnamed"] += t.user_time + t.system_time
    return out


def _thread_cpu(proc: Any) -> tuple[float, float]:
    """CPU seconds so far of (this process's main thread, all its other threads) (``proc``: psutil)."""
    own = _thread_cpu_by_owner(proc)
    return own["main"], own["torch"] + own["unnamed"]


def _interleaved_pairs(phases: dict[str, tuple[Any, Any]], cfg: dict, probe: Any = None) -> list[dict[str, Any]]:
    """``warmup_batches`` steps of every phase, then ``iters`` pairs of timed blocks (img/s).

    ``phases``: name -> (the group whose barrier starts the phase, its step), two of them; the
    order of the first pair is theirs, reversed every other pair (ABBA). ``probe`` (optional) is
    called before each block and returns a function called after it, whose dict goes to the
    pair's ``"cpu"`` under the phase's name.
    """
    for _ in range(cfg["warmup_batches"]):
        for _group, step in phases.values():
            step()
    names, pairs = list(phases), []
    for k in range(cfg["iters"]):
        row: dict[str, Any] = {"cpu": {}} if probe else {}
        for name in (names if k % 2 == 0 else names[::-1]):
            group, step = phases[name]
            group.barrier()
            done = probe() if probe else None
            row[name] = _timed_block(step, cfg)
            if done:
                row["cpu"][name] = done()
        pairs.append(row)
    return pairs


def synthetic(c: Any, cfg: dict) -> dict[str, Any]:
    """Synthetic ResNet benchmark on this rank, either backend; every rank's img/s gathered to all."""
    from hpcml.train.worker import TIME_SPLIT_NOTES, Timers, dist_step

    model, x, y = synthetic_model(cfg)
    net, opt = _wrap(c, model, 0.01, cfg)
    import psutil

    proc, timers, start = psutil.Process(), Timers(), {}

    def timed_start() -> None:
        timers.update(Timers())
        start.update(t=time.perf_counter(), cpu=proc.cpu_times(), ctx=proc.num_ctx_switches(), threads=_thread_cpu(proc),
                     faults=heap.usage()["minflt"])

    mine = {"rank": c.rank(), "host": socket.gethostname(),
            **_timed_iters(lambda: dist_step(c, net, opt, x, y, timers), cfg, on_timed_start=timed_start)}
    wall, cpu, ctx, th = time.perf_counter() - start["t"], proc.cpu_times(), proc.num_ctx_switches(), _thread_cpu(proc)
    mine["time_split"] = dict(timers)
    # what the process spent besides the step's own maths: kernel time, page faults, thread
    # wake-ups, and the CPU its other threads (Horovod's background cycle, Gloo's loops) took
    # from the one core the rank is pinned to
    mine["process"] = {"user_s": cpu.user - start["cpu"].user, "system_s": cpu.system - start["cpu"].system,
                       "wall_s": wall, "ctx_switches_per_s": (ctx.voluntary + ctx.involuntary
                                                          - start["ctx"].voluntary - start["ctx"].involuntary) / wall,
                       "main_thread_s": th[0] - start["threads"][0], "other_threads_s": th[1] - start["threads"][1],
                       "minflt": heap.usage()["minflt"] - start["faults"]}
    ranks = c.allgather_object(mine)
    return {"per_rank": ranks, "total_img_per_s": sum(r["img_per_s"] for r in ranks),
            "per_worker_img_per_s": float(np.mean([r["img_per_s"] for r in ranks])), "backend": c.name,
            "bucket_mb": cfg["bucket_mb"], "time_split_note": TIME_SPLIT_NOTES[c.name]}


def _wait_files(d: Path, names: list[str], timeout_s: float = 600) -> None:
    deadline = time.monotonic() + timeout_s
    while not all((d / n).exists() for n in names):
        if time.monotonic() > deadline:
            raise TimeoutError(f"independent benchmark: waited {timeout_s} s for {names} in {d}")
        time.sleep(0.01)


def independent_worker(cfg: dict, slot: int, pin_slot: int | None = None) -> dict[str, Any]:
    """The synthetic step in plain PyTorch (no Horovod, no communication), pinned like rank ``slot``.

    With ``n`` slots sharing ``barrier_dir`` the phases are: warm-up; the first half of the
    slots each timed **alone** in turn (the others sleep on a file barrier); all slots timed
    **together**; then the second half alone. Alone and together are measured by the same
    processes, minutes apart at most, so slow drift on a shared machine hits both.
    """
    from hpcml.train.worker import pin_cpus

    if cfg["keep_heap"]:
        heap.keep()  # as the ranks do: the ceiling must measure the same step
    torch.set_num_threads(int(cfg["threads"]))
    pin = slot if pin_slot is None else pin_slot
    cores = pin_cpus(pin, int(cfg["threads"])) if cfg["pin"] else sorted(os.sched_getaffinity(0))
    step = loop.plain_step(*synthetic_model(cfg))
    d, n = Path(cfg["barrier_dir"]), int(cfg["n"])
    first = (n + 1) // 2  # slots 0..first-1 are timed alone before the together phase
    timed = {**cfg, "warmup_batches": 0}

    def alone() -> dict[str, Any]:  # in slot order; the first of the second half follows "together"
        _wait_files(d, [f"alone-{slot - 1}"] if 0 < slot != first else [])
        r = _timed_iters(step, timed)
        (d / f"alone-{slot}").touch()
        return r

    for _ in range(cfg["warmup_batches"]):
        step()
    (d / f"warm-{slot}").touch()
    _wait_files(d, [f"warm-{k}" for k in range(n)])
    out: dict[str, Any] = {"slot": slot, "cores": cores, "host": socket.gethostname()}
    if slot < first:
        out["alone"] = alone()
    _wait_files(d, [f"alone-{k}" for k in range(first)])
    out["together"] = _timed_iters(step, timed)
    (d / f"together-{slot}").touch()
    if slot >= first:
        _wait_files(d, [f"together-{k}" for k in range(n)])
        out["alone"] = alone()
    return out


def _cnn_data(cfg: dict, rank: int) -> tuple[np.ndarray, np.ndarray]:
    if cfg.get("dataset_dir"):
        from hpcml.train.shards import read_split

        n = len(list((Path(cfg["dataset_dir"]) / "train").glob("shard-*.parquet")))
        return read_split(Path(cfg["dataset_dir"]), "train", shard=rank % max(n, 1))
    rng = np.random.default_rng(rank)
    return rng.normal(size=(2048, 784)).astype(np.float32), rng.integers(0, 10, 2048).astype(np.int64)


def overhead(c: Any, cfg: dict) -> dict[str, Any]:
    """Plain PyTorch step vs the backend's step on the same CNN batches, in one process.

    Two models with the same initial weights, one with a plain SGD optimizer and one wrapped
    by the backend (``hvd.DistributedOptimizer``, or DDP), take turns in blocks of ``overhead_steps`` steps in ABBA
    order (:mod:`hpcml.train.abtest`), ``overhead_rounds`` block pairs in all: the ratio of
    mean step times, with a 95% interval over the pairs.
    """
    from hpcml.train import abtest, loop
    from hpcml.train.models import make_model
    from hpcml.train.worker import Timers, dist_step

    x, y = _cnn_data(cfg, c.rank())
    b = cfg["cnn_batch"]
    batches = [(torch.from_numpy(x[i:i + b]), torch.from_numpy(y[i:i + b]))
               for i in range(0, min(len(x), b * cfg["overhead_steps"]) - b + 1, b)]
    torch.manual_seed(0)
    plain_m = make_model("cnn")
    plain_o = loop.make_optimizer(plain_m, "sgd", 0.01)
    torch.manual_seed(0)
    hvd_m = make_model("cnn")
    hvd_net, hvd_o = _wrap(c, hvd_m, 0.01, cfg)
    timers = Timers()
    steps = {False: lambda xb, yb: loop.train_step(plain_m, plain_o, xb, yb),
             True: lambda xb, yb: dist_step(c, hvd_net, hvd_o, xb, yb, timers)}
    for xb, yb in batches[:2]:  # warm-up both
        steps[False](xb, yb)
        steps[True](xb, yb)
    blocks = []
    for k in range(2 * cfg["overhead_rounds"]):
        on = abtest.abba_on(k)
        t0 = time.perf_counter()
        for xb, yb in batches:
            steps[on](xb, yb)
        blocks.append({"block": k + 1, "on": on, "steps": len(batches), "sum_s": time.perf_counter() - t0})
    ab = abtest.summarize(blocks, len(batches), {"horovod": "Horovod", "ddp": "DDP"}.get(c.name, c.name))
    return {"plain_step_s": ab["mean_step_off_s"], "horovod_step_s": ab["mean_step_on_s"],
            "overhead_pct": ab["overhead_pct"], "ci95_half_width_pct": ab["ci95_half_width_pct"],
            "pair_overheads_pct": ab["pair_overheads_pct"], "blocks": blocks, "steps_per_block": len(batches)}


def profile(c: Any, cfg: dict) -> dict[str, Any]:
    """torch.profiler over ``profile_steps`` CNN steps of the backend on this rank."""
    from torch.profiler import ProfilerActivity, record_function
    from torch.profiler import profile as tprofile

    from hpcml.train.models import make_model

    x, y = _cnn_data(cfg, c.rank())
    b = cfg["cnn_batch"]
    torch.manual_seed(0)
    net, opt = _wrap(c, make_model("cnn"), 0.01, cfg)
    split = {"data": 0.0, "compute": 0.0, "allreduce": 0.0, "optimizer": 0.0}
    with tprofile(activities=[ProfilerActivity.CPU]) as prof:
        for s in range(cfg["profile_steps"]):
            t0 = time.perf_counter()
            with record_function("data"):
                idx = np.arange(s * b, (s + 1) * b) % len(x)
                xb, yb = torch.from_numpy(x[idx]), torch.from_numpy(y[idx])
            t1 = time.perf_counter()
            with record_function("forward_backward"):
                opt.zero_grad()
                torch.nn.functional.cross_entropy(net(xb), yb).backward()
            t2 = time.perf_counter()
            with record_function("allreduce_wait"):
                c.synchronize(opt)
            t3 = time.perf_counter()
            with record_function("optimizer"):
                c.step(opt)
            t4 = time.perf_counter()
            for k, dt in zip(split, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
                split[k] += dt
    rows = []
    for e in sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)[:12]:
        rows.append({"op": e.key, "calls": e.count, "self_cpu_ms": e.self_cpu_time_total / 1e3,
                     "cpu_total_ms": e.cpu_time_total / 1e3})
    total = sum(split.values()) or 1.0
    return {"top_ops": rows, "split_s": split, "split_frac": {k: v / total for k, v in split.items()},
            "steps": cfg["profile_steps"]}


def paired(c: Any, cfg: dict) -> dict[str, Any]:
    """DDP's synthetic step with and without its gradient allreduces, interleaved in one job.

    The no-communication phase runs the same step under ``DistributedDataParallel.no_sync()``
    (gradients stay local, no loss allreduce): the ranks still run together, on the same cores,
    with the same model, memory and threads, so it is the no-communication ceiling measured in
    the same processes. Each of ``iters`` pairs times ``batches_per_iter`` steps of each phase,
    the order reversed every other pair (ABBA), a barrier before each phase. The weights drift
    apart between ranks in the local phase; the step's cost does not depend on their values.

    Raises:
        ValueError: a backend other than DDP (Horovod has no switch for its hooks' allreduces).
    """
    from hpcml.train.worker import Timers, dist_step

    if c.name != "ddp":
        raise ValueError(f"the paired benchmark needs backend 'ddp' (no_sync), got {c.name!r}")
    model, x, y = synthetic_model(cfg)
    net, opt = _wrap(c, model, 0.01, cfg)
    timers = Timers()

    def local() -> None:
        with net.no_sync():
            loop.train_step(net, opt, x, y)

    pairs = _interleaved_pairs({"synced": (c, lambda: dist_step(c, net, opt, x, y, timers)), "local": (c, local)},
                               cfg)
    ranks = c.allgather_object({"rank": c.rank(), "host": socket.gethostname(), "pairs": pairs})
    return {"per_rank": ranks, "backend": c.name, "bucket_mb": cfg["bucket_mb"]}


def versus(c: Any, cfg: dict) -> dict[str, Any]:
    """Horovod's synthetic step vs DDP's, interleaved in ABBA pairs in one ``horovodrun`` job.

    Separate Horovod and DDP runs minutes apart carry the host's drift between them, which on
    a shared machine is as large as the gap being measured. Here the same processes hold both:
    a Horovod-wrapped model (``hvd.DistributedOptimizer``, fusion threshold ``bucket_mb``) and
    a DDP-wrapped copy with the same initial weights (``bucket_cap_mb`` ``bucket_mb``) in a Gloo
    group of the same ranks (:func:`hpcml.train.comm.ddp_beside`). Each of ``iters`` pairs times
    ``batches_per_iter`` steps of each (the same :func:`hpcml.train.worker.dist_step`), the order
    reversed every other pair, a barrier before each phase. Each phase also records its wall
    time and the CPU seconds of the main thread and of the other threads, split into the
    threads torch.distributed names (``torch_threads_s``) and the unnamed ones, Horovod's
    (``unnamed_threads_s``).

    What each phase carries that a separate run would not: the other tool's idle threads.
    DDP's Gloo threads sleep while Horovod steps; Horovod's background thread keeps its
    negotiation cycle (every ``cycle_time_ms``) while DDP steps, which the DDP phase's
    ``unnamed_threads_s`` measures (:func:`hpcml.train.sweep_summary.paired_bakeoff` bounds the
    ratio with and without charging it).

    Raises:
        ValueError: a backend other than Horovod (the job must be started by ``horovodrun``).
    """
    import psutil

    from hpcml.train.worker import Timers, dist_step

    if c.name != "horovod":
        raise ValueError(f"the versus benchmark runs under horovodrun (backend 'horovod'), got {c.name!r}")
    d = comm.ddp_beside(c)
    model_h, x, y = synthetic_model(cfg)
    model_d = synthetic_model(cfg)[0]  # seed 0 again: the same initial weights
    net_h, opt_h = _wrap(c, model_h, 0.01, cfg)
    net_d, opt_d = _wrap(d, model_d, 0.01, cfg)
    timers, proc = Timers(), psutil.Process()

    def probe() -> Any:  # the phase's wall time and its CPU by thread owner
        own0, t0 = _thread_cpu_by_owner(proc), time.perf_counter()

        def done() -> dict[str, float]:
            own1, t1 = _thread_cpu_by_owner(proc), time.perf_counter()
            used = {k: own1[k] - own0[k] for k in own0}
            return {"main_s": used["main"], "other_s": used["torch"] + used["unnamed"], "wall_s": t1 - t0,
                    "torch_threads_s": used["torch"], "unnamed_threads_s": used["unnamed"]}
        return done

    pairs = _interleaved_pairs({"horovod": (c, lambda: dist_step(c, net_h, opt_h, x, y, timers)),
                                "ddp": (d, lambda: dist_step(d, net_d, opt_d, x, y, timers))}, cfg, probe)
    ranks = c.allgather_object({"rank": c.rank(), "host": socket.gethostname(), "pairs": pairs})
    d.shutdown()
    return {"per_rank": ranks, "bucket_mb": cfg["bucket_mb"], "steps_per_phase": cfg["batches_per_iter"],
            "horovod_cycle_time_ms": os.environ.get("HOROVOD_CYCLE_TIME")}


MODES = {"synthetic": synthetic, "overhead": overhead, "profile": profile, "paired": paired, "versus": versus}


def worker_main(cfg_path: str) -> int:
    """One rank (``horovodrun`` or ``torchrun``): run the config's ``modes``; rank 0 writes the result
    to ``cfg["out"]`` (on the cluster's nodes too: they share this machine's file system)."""
    cfg = {**DEFAULTS, **json.loads(Path(cfg_path).read_text())}
    c, cores, kept = _setup(cfg)
    out: dict[str, Any] = {"world_size": c.size(), "config": cfg, "backend": c.name,
                           "horovod_cycle_time_ms": os.environ.get("HOROVOD_CYCLE_TIME"),
                           "heap_kept": c.allgather_object(kept)}  # per rank: whether glibc took the setting
    for mode in cfg["modes"]:
        out[mode] = MODES[mode](c, cfg)
    cores_all = c.allgather_object(cores)
    if c.rank() == 0:
        out["cores"] = cores_all
        paths.atomic_write_text(Path(cfg["out"]), json.dumps(out, indent=2, default=float))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of one benchmark process (started by the drivers in :mod:`hpcml.train.bench`)."""
    ap = argparse.ArgumentParser(description="hpcml training benchmark worker")
    ap.add_argument("--config", required=True, help="benchmark config JSON written by the driver")
    ap.add_argument("--independent", action="store_true", help="run one plain-PyTorch process (no Horovod)")
    ap.add_argument("--slot", type=int, default=0, help="independent: this process's slot (barrier order)")
    ap.add_argument("--pin-slot", type=int, default=None,
                    help="independent: core slot to pin to among the allowed cores (default: --slot; 0 on a node)")
    ap.add_argument("--result", help="independent: where to write the JSON result")
    args = ap.parse_args(argv)
    if not args.independent:
        return worker_main(args.config)
    if not args.result:
        ap.error("--independent needs --result")
    cfg = {**DEFAULTS, **json.loads(Path(args.config).read_text())}
    paths.atomic_write_text(Path(args.result), json.dumps(independent_worker(cfg, args.slot, args.pin_slot),
                                                             default=float))
    return 0


if __name__ == "__main__":
    comm.exit_process(main())  # os._exit under torchrun: see its docstring
