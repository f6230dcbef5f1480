"""The batching case of notebook 04: one model served with dynamic batching and with batch size 1.

A case is one model: its ONNX file, its model time per call by batch size, and the
side-by-side comparison at saturation (two servers up at once, load interleaved:
:func:`hpcml.serve.bench.batching_at_saturation`). Notebook 04 runs it for the MNIST model,
a compute-bound ResNet and a weight-bound MLP (:func:`run_case` exports, times and compares
one model), records each (:func:`case_metrics`), and sets the three side by side against the
model-only (Amdahl) estimate of what batching can buy (:func:`pays_rows`, :func:`pays_lines`,
with :func:`hpcml.serve.capacity.batching_gain_bound`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hpcml.report import Metric
from hpcml.serve import bench, export
from hpcml.serve.capacity import batching_gain_bound

#: The issue's target gain of dynamic batching (throughput batched / batch size 1).
TARGET_GAIN_X = 3


@dataclass(frozen=True)
class SaturationLoad:
    """The load of every side-by-side comparison: same client, bodies, workers and batcher.

    Attributes:
        bodies: request bodies the clients cycle through.
        n_requests: upper bound on requests per load phase.
        duration_s: upper bound on seconds per load phase.
        workers: server worker processes.
        max_batch_size: rows per model call of the batching server.
        max_wait_ms: its batching window (0: adaptive).
        frontend: the server's HTTP front-end.
        rounds: interleaved A/B rounds.
    """

    bodies: list
    n_requests: int
    duration_s: float
    workers: int
    max_batch_size: int
    max_wait_ms: float
    frontend: str
    rounds: int

    def compare(self, model_file: Path, concurrency: int) -> dict[str, dict]:
        """Batching vs batch size 1 for ``model_file`` at ``concurrency`` closed-loop clients."""
        return bench.batching_at_saturation(model_file, self.bodies, concurrency, self.n_requests, self.duration_s,
                                            self.workers, self.max_batch_size, self.max_wait_ms, self.frontend,
                                            rounds=self.rounds)


@dataclass(frozen=True)
class BatchingCase:
    """One model's batching comparison.

    Attributes:
        name: what the tables call the model, e.g. ``"resnet18"``.
        model_file: the file both servers served.
        timings: its model time per call at batch 1 and at the batching server's batch size.
        saturation: :meth:`SaturationLoad.compare`'s result (``batched``, ``size1``, ``ratio``).
        concurrency: closed-loop clients of the comparison.
    """

    name: str
    model_file: Path
    timings: list[export.RuntimeTiming]
    saturation: dict[str, Any]
    concurrency: int

    def model_ms(self) -> dict[int, float]:
        """Model time per call (ms) by batch size."""
        return {t.batch: t.ms_per_batch for t in self.timings}

    def sides(self) -> dict[str, dict]:
        """The two servers' numbers, ``{"batched": {...}, "size1": {...}}`` (a table's columns)."""
        return {k: self.saturation[k] for k in ("batched", "size1")}


def run_case(arch: str, out_dir: Path, x: np.ndarray, load: SaturationLoad, concurrency: int, seed: int = 0,
             repeats: int = 10) -> BatchingCase:
    """Export an untrained ``arch`` to ONNX, time it, and compare batching on and off.

    Args:
        arch: a :func:`hpcml.train.models.make_model` architecture (only its compute matters).
        out_dir: where the ONNX file goes.
        x: test images to time the model on.
        load: the comparison's load.
        concurrency: closed-loop clients.
        seed: weight initialisation seed.
        repeats: timed calls per batch size.
    """
    model_file = bench.compute_bound_model(arch, out_dir, seed=seed)
    timings = export.benchmark_runtimes({arch: export.load_runtime("onnx", model_file)}, x, (1, load.max_batch_size),
                                        repeats=repeats)
    return BatchingCase(arch, model_file, timings, load.compare(model_file, concurrency), concurrency)


def case_metrics(case: BatchingCase, kind: str, model_time_metric: str) -> list[Metric]:
    """The metrics of one case: its batching gain, both p99s, and its model time by batch size.

    Args:
        case: the case.
        kind: the metric names' suffix, e.g. ``"compute_bound"``.
        model_time_metric: the model-time metric's name, e.g. ``"heavy_model_time_ms"``.
    """
    sat = case.saturation
    return [
        Metric(f"batching_throughput_ratio_{kind}", sat["ratio"], unit="x", headline=True,
               description=f"{case.name}: batching vs batch size 1 at {case.concurrency} clients, interleaved"),
        Metric(f"p99_ms_batched_{kind}", sat["batched"]["p99_ms"], unit="ms"),
        Metric(f"p99_ms_unbatched_{kind}", sat["size1"]["p99_ms"], unit="ms"),
        Metric(model_time_metric, {t.batch: round(t.ms_per_batch, 3) for t in case.timings}, unit="ms per call",
               description=f"{case.name} ONNX Runtime, 1 thread, by batch size"),
    ]


def pays_row(case: BatchingCase, overhead_ms: float, batch: int) -> dict[str, Any]:
    """One model's model-only (Amdahl) estimate of the batching gain beside the measured gain.

    Args:
        case: the model's case (its timings must include batch 1 and ``batch``).
        overhead_ms: per-request cost batching does not amortise.
        batch: the batching server's batch size.
    """
    t, r = case.model_ms(), case.saturation
    return {"model": case.name, "overhead_ms": overhead_ms, "model_ms_b1": t[1], "model_ms_per_row_b": t[batch] / batch,
            "model_speedup_x": t[1] * batch / t[batch],
            "model_only_estimate_x": batching_gain_bound(overhead_ms, t[1], t[batch] / batch),
            "measured_x": r["ratio"], "mean_batch": r["batched"]["mean_batch"], "p99_batched_ms": r["batched"]["p99_ms"],
            "p99_size1_ms": r["size1"]["p99_ms"],
            "reached_3x": r["ratio"] >= TARGET_GAIN_X and r["batched"]["p99_ms"] <= r["size1"]["p99_ms"]}


def pays_rows(cases: Sequence[BatchingCase], overhead_ms: float, batch: int) -> list[dict[str, Any]]:
    """:func:`pays_row` of each case, in order."""
    return [pays_row(c, overhead_ms, batch) for c in cases]


def pays_lines(rows: Sequence[dict[str, Any]]) -> list[str]:
    """One sentence per :func:`pays_row` row: model time vs overhead, estimate vs measured gain."""
    return [f"{row['model']}: model {row['model_ms_b1']:.3f} ms/image alone vs per-request overhead "
            f"{row['overhead_ms']:.3f} ms -> model batch speed-up {row['model_speedup_x']:.2f}x, model-only estimate "
            f"{row['model_only_estimate_x']:.2f}x, measured {row['measured_x']:.2f}x at mean batch {row['mean_batch']:.1f} "
            f"(p99 {row['p99_batched_ms']:.0f} vs {row['p99_size1_ms']:.0f} ms); issue's 3x target "
            f"{'reached' if row['reached_3x'] else 'not reached'}"
            for row in rows]
