"""One rank of the allreduce micro-benchmark: Horovod, ``torch.distributed`` or Open MPI (mpi4py).

Started once per rank by the driver (:mod:`hpcml.train.allreduce`) under ``horovodrun --gloo``,
``torchrun`` or ``mpirun``; every rank runs the same loop over the message sizes:

1. fill a float32 buffer of ``size`` bytes with ones;
2. ``warmup`` untimed allreduces (connections, Gloo's pairs, Horovod's first negotiation);
3. ``reps`` timed ones, each after a barrier and a refill, in place, with a sum:
   ``hvd.allreduce_`` (Gloo), ``torch.distributed.all_reduce`` (Gloo), ``comm.Allreduce(MPI.IN_PLACE, ...)``;
4. check the result (every element equals the rank count), so a broken collective fails here
   instead of reporting a fast time.

Each rank writes ``rank-<r>.json`` (its host and its per-rep times) into ``--out``, a folder
every node sees (the cluster's nodes share this machine's file system); the driver takes the
slowest rank per rep. Every rendezvous and collective gives up after ``--timeout`` seconds
(Horovod's ``HOROVOD_GLOO_TIMEOUT_SECONDS``, the process group's ``timeout``); MPI has no
per-collective timeout, so the driver's ``mpirun --timeout`` bounds the whole job.
One thread per rank: the nodes' cores are the ranks' cores.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import time
from pathlib import Path
from typing import Any, Callable

#: The tools the benchmark compares, in the order it runs them.
TOOLS = ("horovod", "torch", "mpi")


class _Tool:
    """rank/size, a barrier, and an in-place sum-allreduce of one buffer, for one tool."""

    rank: int
    size: int
    barrier: Callable[[], None]
    allreduce: Callable[[Any], None]
    make: Callable[[int], Any]
    finish: Callable[[], None]


def _horovod(timeout_s: float) -> _Tool:
    os.environ.setdefault("HOROVOD_GLOO_TIMEOUT_SECONDS", str(int(timeout_s)))
    import horovod.torch as hvd
    import torch

    torch.set_num_threads(1)
    hvd.init()
    t = _Tool()
    t.rank, t.size, t.barrier, t.finish = hvd.rank(), hvd.size(), hvd.barrier, hvd.shutdown
    t.make = lambda n: torch.ones(n, dtype=torch.float32)
    t.allreduce = lambda buf: hvd.allreduce_(buf, op=hvd.Sum, name=f"allreduce.{buf.numel()}")
    return t


def _torch(timeout_s: float) -> _Tool:
    import datetime

    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=timeout_s))
    t = _Tool()
    t.rank, t.size, t.barrier, t.finish = dist.get_rank(), dist.get_world_size(), dist.barrier, dist.destroy_process_group
    t.make = lambda n: torch.ones(n, dtype=torch.float32)
    t.allreduce = lambda buf: dist.all_reduce(buf, op=dist.ReduceOp.SUM)
    return t


def _mpi(timeout_s: float) -> _Tool:
    import numpy as np
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    t = _Tool()
    t.rank, t.size, t.barrier, t.finish = comm.Get_rank(), comm.Get_size(), comm.Barrier, lambda: None
    t.make = lambda n: np.ones(n, dtype=np.float32)
    t.allreduce = lambda buf: comm.Allreduce(MPI.IN_PLACE, buf, op=MPI.SUM)
    return t


_INIT = {"horovod": _horovod, "torch": _torch, "mpi": _mpi}


def measure(tool: _Tool, sizes: list[int], warmup: int, reps: int) -> dict[str, list[float]]:
    """Per size (bytes, as a string key), this rank's time of each timed allreduce."""
    out: dict[str, list[float]] = {}
    for size in sizes:
        buf = tool.make(size // 4)
        for _ in range(warmup):
            tool.allreduce(buf)
        times = []
        for _ in range(reps):
            buf[:] = 1
            tool.barrier()
            t0 = time.perf_counter()
            tool.allreduce(buf)
            times.append(time.perf_counter() - t0)
        first, last = float(buf[0]), float(buf[-1])
        if first != tool.size or last != tool.size:
            raise RuntimeError(f"allreduce of {size} bytes gave {first}, {last} on rank {tool.rank}; "
                               f"expected {tool.size} everywhere (the sum of ones over {tool.size} ranks)")
        out[str(size)] = times
        del buf
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m hpcml.train.allreduce_worker", description=__doc__.split("\n")[0])
    ap.add_argument("--tool", choices=TOOLS, required=True)
    ap.add_argument("--sizes", required=True, help="comma-separated message sizes in bytes")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--timeout", type=float, default=60.0)
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    t0 = time.perf_counter()
    tool = _INIT[a.tool](a.timeout)
    init_s = time.perf_counter() - t0
    times = measure(tool, [int(s) for s in a.sizes.split(",")], a.warmup, a.reps)
    rec = {"tool": a.tool, "rank": tool.rank, "ranks": tool.size, "host": socket.gethostname(),
           "init_s": init_s, "times": times}
    a.out.mkdir(parents=True, exist_ok=True)
    tmp = a.out / f".rank-{tool.rank}.json.tmp"
    tmp.write_text(json.dumps(rec))
    os.replace(tmp, a.out / f"rank-{tool.rank}.json")
    tool.barrier()
    tool.finish()
    return 0


if __name__ == "__main__":
    from hpcml.train.comm import exit_process

    exit_process(main())  # os._exit under torchrun: Gloo's teardown can abort a finished rank
