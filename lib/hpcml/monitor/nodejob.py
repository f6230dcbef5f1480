"""A short burn-in job run on every node, whose JSON logs the central log path ships to the head.

It does what a site's node burn-in does before a node takes work, at a small size: times a
float32 matrix multiply per step, checks its result against a float64 reference, and logs
each step (``stage`` ``burnin``, ``rank`` = the node's index). A step slower than
``straggler_factor`` × the median so far is logged as a WARNING (a straggler), a result off by
more than ``tol`` as an ERROR; the totals end the log. Nothing is made up: whatever the node
did is what is logged.

Run on a node (:func:`hpcml.monitor.collector.node_job_argv` sets ``HPCML_NODE`` and
``HPCML_LOG_DIR``)::

    python -m hpcml.monitor.nodejob --rank 0 --steps 40 --size 192
"""

from __future__ import annotations

import argparse
import sys
import time

from hpcml.monitor import logs

STAGE = "burnin"


def burn_in(rank: int, steps: int = 40, size: int = 192, straggler_factor: float = 1.5, tol: float = 1e-3,
            seed: int = 0) -> dict[str, float | int]:
    """Run the burn-in and log every step; returns the counts and the median step time.

    Raises:
        ValueError: ``steps`` < 1 or ``size`` < 8 (named, with what is expected).
    """
    import numpy as np

    if steps < 1 or size < 8:
        raise ValueError(f"burn_in: steps must be >= 1 and size >= 8, got steps={steps}, size={size}")
    log = logs.get_logger(STAGE, rank=rank)
    rng = np.random.default_rng(seed + rank)
    a = rng.standard_normal((size, size)).astype(np.float32)
    b = rng.standard_normal((size, size)).astype(np.float32)
    ref = a.astype(np.float64) @ b.astype(np.float64)
    log.info("burn-in started", extra={"steps": steps, "size": size})
    times: list[float] = []
    slow = bad = 0
    for step in range(steps):
        t0 = time.perf_counter()
        c = a @ b
        dt = time.perf_counter() - t0
        err = float(np.max(np.abs(c - ref)) / np.max(np.abs(ref)))
        median = float(np.median(times)) if times else dt
        times.append(dt)
        fields = {"step": step, "step_ms": round(dt * 1e3, 3), "rel_err": err}
        if err > tol:
            bad += 1
            log.error("matmul result off", extra=fields)
        elif len(times) > 3 and dt > straggler_factor * median:
            slow += 1
            log.warning("straggler step", extra={**fields, "median_ms": round(median * 1e3, 3)})
        else:
            log.info("step", extra=fields)
    out = {"steps": steps, "stragglers": slow, "errors": bad, "median_step_ms": float(np.median(times)) * 1e3}
    log.info("burn-in done", extra=out)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m hpcml.monitor.nodejob", description=__doc__.split("\n")[0])
    ap.add_argument("--rank", type=int, required=True)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--size", type=int, default=192)
    a = ap.parse_args(argv)
    out = burn_in(a.rank, a.steps, a.size)
    logs.close_all()
    return 1 if out["errors"] else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
