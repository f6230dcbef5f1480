"""What glibc's allocator does to a CPU training step, and the setting every rank here uses.

glibc's ``malloc`` serves a block larger than its mmap threshold with a fresh ``mmap`` and
gives it back with ``munmap`` when it is freed; it also trims the top of its heap back to the
kernel once more than the trim threshold is free there. The threshold adapts upwards as
such blocks are freed, but never past 32 MiB (``DEFAULT_MMAP_THRESHOLD_MAX``). A ResNet-50
step at 128 px and batch 32 allocates activations and gradients above that (the first
convolution's output alone is 32x64x64x64 floats = 33.5 MB), so every step maps fresh pages and
the kernel zeroes each one on first touch: a minor page fault per 4 KiB, in the middle of the
compute. With one core per rank that time comes straight out of the step.

:func:`keep` raises both thresholds (``mallopt(M_MMAP_THRESHOLD)``, ``mallopt(M_TRIM_THRESHOLD)``)
so freed blocks stay in the process and are reused next step: the same effect as
``GLIBC_TUNABLES=glibc.malloc.mmap_threshold=...:glibc.malloc.trim_threshold=...``, or as
preloading jemalloc/tcmalloc (what PyTorch's CPU launcher ``torch.backends.xeon.run_cpu``
does), set from inside the rank so it holds on every target without touching the launch.
The price: the process keeps its peak heap (RSS does not shrink between steps).

Every training and benchmark rank calls it (``TrainSpec.keep_heap``, the benchmark's
``keep_heap``; both default on, for both backends alike). :func:`compare` measures what it
does: ``python -m hpcml.train.heap`` runs the same plain-PyTorch step in two processes at
once, one core each, one with glibc's defaults and one with :func:`keep`, swapping cores
between rounds.
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import json
import os
import resource
import subprocess
import sys
import time
from typing import Any

import numpy as np

from hpcml import proc

#: ``mallopt`` parameters (glibc's malloc.h).
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
#: Both thresholds :func:`keep` sets: 1 GiB, above any single tensor of these models.
KEEP_BYTES = 1 << 30


def keep(threshold_bytes: int = KEEP_BYTES) -> bool:
    """Keep freed memory in this process (glibc: raise the mmap and trim thresholds).

    Returns:
        True when glibc accepted both settings; False where there is no glibc ``mallopt``
        (e.g. musl) or it refused them, leaving the allocator as it was.
    """
    if isinstance(threshold_bytes, bool) or not isinstance(threshold_bytes, int) or not 0 < threshold_bytes < 2**31:
        raise ValueError(f"threshold_bytes must be in (0, 2**31) (mallopt takes an int), got {threshold_bytes!r}")
    name = ctypes.util.find_library("c")
    try:
        mallopt = ctypes.CDLL(name or "libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, threshold_bytes)) and bool(mallopt(M_TRIM_THRESHOLD, threshold_bytes))


def usage() -> dict[str, float]:
    """This process's minor page faults, user and system CPU seconds and peak RSS (MiB) so far."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return {"minflt": float(r.ru_minflt), "user_s": r.ru_utime, "system_s": r.ru_stime, "maxrss_mib": r.ru_maxrss / 1024}


def _worker(arch: str, image_size: int, batch_size: int, steps: int, kept: bool, core: int) -> dict[str, Any]:
    """One process's measurement: ``steps`` timed plain-PyTorch steps after one warm-up step."""
    import torch

    from hpcml.train import loop

    applied = keep() if kept else False
    proc.pin_threads([core])
    torch.set_num_threads(1)
    step = loop.plain_step(*loop.synthetic_batch(arch, batch_size, image_size))

    step()
    u0, times = usage(), []
    for _ in range(steps):
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    u1 = usage()
    return {"kept": kept, "applied": applied, "core": core, "step_s": times,
            "minflt_per_step": (u1["minflt"] - u0["minflt"]) / steps,
            "system_s_per_step": (u1["system_s"] - u0["system_s"]) / steps, "maxrss_mib": u1["maxrss_mib"]}


def arm_cores(cores: list[int], round_no: int) -> tuple[int, int]:
    """(default arm's core, kept arm's core) in round ``round_no``: the first two cores, swapped every round."""
    return (cores[0], cores[1]) if round_no % 2 == 0 else (cores[1], cores[0])


def compare(arch: str = "resnet50", image_size: int = 128, batch_size: int = 32, steps: int = 3, rounds: int = 2,
            timeout_s: float = 600) -> dict[str, Any]:
    """glibc's defaults vs :func:`keep`, the same step in two processes at once (one core each).

    The two share the machine's memory bandwidth at the same moments; their cores swap every
    round so a faster core favours neither.

    Returns:
        ``{"config", "rounds": [{"default": run, "kept": run}, ...], "summary": summary(rounds)}``.
    """
    for k, v in (("image_size", image_size), ("batch_size", batch_size), ("steps", steps), ("rounds", rounds)):
        if not isinstance(v, int) or v < 1:
            raise ValueError(f"{k} must be an integer >= 1, got {v!r}")
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        raise ValueError(f"compare runs its two processes on a core each; this process may use only {cores}")
    out: list[dict[str, Any]] = []
    for r in range(rounds):
        procs = {}
        for kept, core in zip((False, True), arm_cores(cores, r)):
            cmd = [sys.executable, "-m", "hpcml.train.heap", "--worker", "--arch", arch, "--image-size", str(image_size),
                   "--batch-size", str(batch_size), "--steps", str(steps), "--core", str(core)] + (["--kept"] if kept else [])
            procs["kept" if kept else "default"] = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                                                    text=True)
        got = {}
        try:
            for k, p in procs.items():
                so, se = p.communicate(timeout=timeout_s)
                if p.returncode != 0:
                    raise RuntimeError(f"heap.compare: the {k} process failed (exit {p.returncode}): {se[-1500:]}")
                got[k] = json.loads(so.strip().splitlines()[-1])
        finally:
            for p in procs.values():
                if p.poll() is None:
                    p.kill()
                    p.wait()
        out.append(got)
    return {"config": {"arch": arch, "image_size": image_size, "batch_size": batch_size, "steps": steps,
                       "rounds": rounds}, "rounds": out, "summary": summary(out)}


def summary(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """Per arm: mean step time, faults and system time per step, peak RSS; and the ratios (pure)."""
    s: dict[str, Any] = {}
    for arm in ("default", "kept"):
        runs = [r[arm] for r in rounds]
        s[arm] = {"step_s": float(np.mean([t for r in runs for t in r["step_s"]])),
                  "minflt_per_step": float(np.mean([r["minflt_per_step"] for r in runs])),
                  "system_s_per_step": float(np.mean([r["system_s_per_step"] for r in runs])),
                  "maxrss_mib": float(max(r["maxrss_mib"] for r in runs))}
    s["applied"] = all(r["kept"]["applied"] for r in rounds)
    s["speedup"] = s["default"]["step_s"] / s["kept"]["step_s"]
    s["speedup_per_round"] = [float(np.mean(r["default"]["step_s"]) / np.mean(r["kept"]["step_s"])) for r in rounds]
    s["fault_ratio"] = s["default"]["minflt_per_step"] / max(s["kept"]["minflt_per_step"], 1.0)
    s["rss_growth_mib"] = s["kept"]["maxrss_mib"] - s["default"]["maxrss_mib"]
    return s


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="glibc malloc defaults vs keeping freed memory, one training step")
    ap.add_argument("--arch", default="resnet50")
    ap.add_argument("--image-size", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--kept", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--core", type=int, default=0, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.worker:
        print(json.dumps(_worker(a.arch, a.image_size, a.batch_size, a.steps, a.kept, a.core)), flush=True)
        return 0
    res = compare(a.arch, a.image_size, a.batch_size, a.steps, a.rounds)
    print(json.dumps(res["summary"], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
