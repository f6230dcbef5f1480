"""Benchmark of the local Slurm cluster: submit-to-start latency and job throughput of a burst."""

from __future__ import annotations

import statistics

from hpcml.cluster.slurm.daemons import SlurmCluster


def measure_jobs(cl: SlurmCluster, n_jobs: int, body: str = "true", timeout_s: float = 300) -> dict:
    """Submit ``n_jobs`` one-CPU jobs at once and time them.

    Returns:
        ``{"latencies_s": [...], "median_s", "jobs_per_minute", "makespan_s", "states"}``: per job the
        submit-to-start latency (client submit time to the job's own start stamp), and the
        throughput as jobs finished per minute from the first submit to the last end.
    """
    if n_jobs < 1:
        raise ValueError(f"n_jobs must be >= 1, got {n_jobs}")
    ids = [cl.submit(body, name=f"bench-{i}") for i in range(n_jobs)]
    results = [cl.wait(j, timeout_s=timeout_s) for j in ids]
    lat = [r.submit_to_start_s for r in results if r.submit_to_start_s is not None]
    first = min(r.submitted_at for r in results if r.submitted_at)
    last = max((r.ended_at or r.started_at or first) for r in results)
    makespan = max(last - first, 1e-9)
    return {"job_ids": ids, "latencies_s": lat, "median_s": statistics.median(lat) if lat else None,
            "jobs_per_minute": 60 * sum(r.ok for r in results) / makespan, "makespan_s": makespan,
            "states": [r.state for r in results]}


def wave_medians(latencies_s: list[float], per_wave: int) -> list[float]:
    """Median latency of each consecutive group of ``per_wave`` jobs, in submit order.

    With one-core jobs on a node of ``per_wave`` cores, group *k* is the *k*-th wave that can
    run at once; comparing the first group with the last shows whether latency grows with
    queue position.

    Raises:
        ValueError: no latencies, or ``per_wave`` below 1.
    """
    if per_wave < 1 or not latencies_s:
        raise ValueError(f"need latencies and per_wave >= 1, got {len(latencies_s)} latencies, per_wave={per_wave}")
    return [statistics.median(latencies_s[i:i + per_wave]) for i in range(0, len(latencies_s), per_wave)]
