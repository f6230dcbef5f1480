"""Inventory and a measured compute peak of the local node (the 'cluster' of one).

The matmul peak measured here is the denominator of model-FLOPs utilisation in the
training stage, so it is measured on the same cores, with the same torch build.
"""

from __future__ import annotations

import os
import platform
import time
from dataclasses import asdict, dataclass

import psutil


@dataclass(frozen=True)
class NodeInfo:
    hostname: str
    cpus: int
    cpus_usable: int
    memory_gib: float
    cpu_model: str
    kernel: str
    python: str

    def as_dict(self) -> dict:
        return asdict(self)


def node_info() -> NodeInfo:
    """Describe this machine as a scheduler would see it."""
    model = ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            model = next((ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name")), "")
    except OSError:
        pass
    return NodeInfo(
        hostname=platform.node(),
        cpus=os.cpu_count() or 1,
        cpus_usable=len(os.sched_getaffinity(0)),
        memory_gib=round(psutil.virtual_memory().total / 2**30, 2),
        cpu_model=model or platform.processor(),
        kernel=platform.release(),
        python=platform.python_version(),
    )


def matmul_gflops(threads: int, n: int = 1024, repeats: int = 5, dtype: str = "float32") -> float:
    """Best-of-``repeats`` dense matmul throughput (GFLOP/s) of torch on ``threads`` threads.

    Args:
        threads: intra-op threads for the measurement (restored afterwards).
        n: matrix size (n x n @ n x n = 2 n^3 FLOPs).
        repeats: timed repetitions after one warm-up; the best is returned.
        dtype: torch dtype name.
    """
    import torch

    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    prev = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        a = torch.randn(n, n, dtype=getattr(torch, dtype))
        b = torch.randn(n, n, dtype=getattr(torch, dtype))
        a @ b  # warm-up
        best = float("inf")
        for _ in range(repeats):
            t0 = time.perf_counter()
            a @ b
            best = min(best, time.perf_counter() - t0)
    finally:
        torch.set_num_threads(prev)
    return 2 * n**3 / best / 1e9
