"""The batching case of notebook 04: one model served with dynamic batching and with batch size 1.

A case is one model: its ONNX file, its model time per call by batch size, and the
side-by-side comparison at saturation (two servers up at once, load interleaved:
:func:`hpcml.serve.bench.batching_at_saturation`). Notebook 04 runs it for the MNIST model,
a compute-bound ResNet and a weight-bound MLP (:func:`run_case` exports, times and compares
one model), records each (:func:`case_metrics`), and sets the three side by side against the
model-only (Amdahl) estimate of what batching can buy, with where the CPU of one request went
on each server (:func:`pays_rows`, :func:`pays_metrics`, :func:`pays_claim`, with
:func:`hpcml.serve.capacity.batching_gain_bound`). The model's own batch speed-up is not a
ceiling on the end-to-end gain: batching also amortises server work paid once per model call.
"""

from __future__ import annotations

import time
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

    def __post_init__(self) -> None:
        if self.rounds < 2:
            raise ValueError(f"rounds must be >= 2 (a 95 % interval of the gain needs two interleaved rounds), got {self.rounds}")

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
    """Export an untrained ``arch`` to ONNX, compare batching on and off, then time the model at
    batch 1, at the batch the server formed and at ``load.max_batch_size`` (:func:`time_case`).

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
    sat = load.compare(model_file, concurrency)
    return time_case(arch, model_file, export.load_runtime("onnx", model_file), x, sat, concurrency,
                     load.max_batch_size, repeats=repeats)


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
        Metric(f"batching_throughput_ratio_{kind}_ci95", sat["ratio_ci95"], unit="x",
               description="95 % half-width of the gain over the interleaved rounds (Student t)"),
        Metric(f"p99_ms_batched_{kind}", sat["batched"]["p99_ms"], unit="ms"),
        Metric(f"p99_ms_unbatched_{kind}", sat["size1"]["p99_ms"], unit="ms"),
        Metric(model_time_metric, {t.batch: round(t.ms_per_batch, 3) for t in case.timings}, unit="ms per call",
               description=f"{case.name} ONNX Runtime, 1 thread, CPU time per call by batch size"),
    ]


def effective_batch(case: BatchingCase) -> int:
    """The batch the batching server really ran: its mean rows per model call, rounded (1 ≤ b ≤ the
    largest batch timed); the largest timed batch when the server reported no calls."""
    timed = max(case.model_ms())
    mean = case.saturation["batched"].get("mean_batch", float("nan"))
    return timed if not np.isfinite(mean) else int(min(max(round(mean), 1), timed))


def time_case(name: str, model_file: Path, fn, x: np.ndarray, saturation: dict[str, Any], concurrency: int,
              batch: int, repeats: int = 30) -> BatchingCase:
    """A :class:`BatchingCase` whose model is timed at batch 1, at the batch the server formed
    (:func:`effective_batch`) and at ``batch`` (the server's ``max_batch_size``), in CPU time of
    the calling thread (``time.thread_time``): the model's cost, comparable with the servers'
    CPU per request, and unaffected by whatever else runs on the machine.

    Args:
        fn: the model's runtime function (``export.load_runtime``), one thread.
        saturation: :meth:`SaturationLoad.compare`'s result for ``model_file``.
    """
    first = BatchingCase(name, model_file, [export.RuntimeTiming(name, batch, 1.0, 1.0)], saturation, concurrency)
    sizes = tuple(sorted({1, effective_batch(first), batch}))
    timings = export.benchmark_runtimes({name: fn}, x, sizes, repeats=repeats, clock=time.thread_time)
    return BatchingCase(name, model_file, timings, saturation, concurrency)


def pays_row(case: BatchingCase, overhead_ms: float, batch: int) -> dict[str, Any]:
    """One model's model-only (Amdahl) estimate of the batching gain beside the measured gain, and
    where the CPU of one answered request went on each server.

    The model-only estimate (:func:`~hpcml.serve.capacity.batching_gain_bound`) uses the model's
    per-row time at the batch the server really formed (:func:`effective_batch`), not at
    ``batch``. It assumes every other cost is paid once per *request*; the CPU columns
    measure that assumption: the server's CPU outside the model per request (its CPU time
    minus the model's per-row time) on each server, and the client's. When batching shrinks the
    non-model term too (work paid once per model call: the hand-off to the model thread, the
    wake-up of the waiting requests, the metrics update), the measured gain exceeds the
    model-only estimate; ``cpu_estimate_x`` (total CPU per request, batch size 1 / batching)
    is what a CPU-bound machine should then show.

    Args:
        case: the model's case (its timings must include batch 1, ``batch`` and its effective batch).
        overhead_ms: per-request cost the model-only estimate assumes batching does not amortise.
        batch: the batching server's batch size.
    """
    t, r = case.model_ms(), case.saturation
    b = effective_batch(case)
    m_eff = t[b] / b
    nan = float("nan")
    s1, sb = r["size1"].get("server_cpu_ms_per_req", nan), r["batched"].get("server_cpu_ms_per_req", nan)
    c1, cb = r["size1"].get("client_cpu_ms_per_req", nan), r["batched"].get("client_cpu_ms_per_req", nan)
    return {"model": case.name, "overhead_ms": overhead_ms, "model_ms_b1": t[1], "model_ms_per_row_b": t[batch] / batch,
            "model_speedup_x": t[1] * batch / t[batch], "effective_batch": b, "model_ms_per_row_eff": m_eff,
            "model_speedup_at_mean_batch_x": t[1] / m_eff,
            "model_only_estimate_x": batching_gain_bound(overhead_ms, t[1], m_eff),
            "measured_x": r["ratio"], "mean_batch": r["batched"]["mean_batch"], "p99_batched_ms": r["batched"]["p99_ms"],
            "p99_size1_ms": r["size1"]["p99_ms"],
            "server_cpu_ms_size1": s1, "server_cpu_ms_batched": sb, "client_cpu_ms_size1": c1, "client_cpu_ms_batched": cb,
            "non_model_cpu_ms_size1": s1 - t[1], "non_model_cpu_ms_batched": sb - m_eff,
            "cpu_estimate_x": (s1 + c1) / (sb + cb),
            "reached_3x": r["ratio"] >= TARGET_GAIN_X and r["batched"]["p99_ms"] <= r["size1"]["p99_ms"]}


def pays_rows(cases: Sequence[BatchingCase], overhead_ms: float, batch: int) -> list[dict[str, Any]]:
    """:func:`pays_row` of each case, in order."""
    return [pays_row(c, overhead_ms, batch) for c in cases]


#: The metric-name suffix of each case in notebook 04, in the order of its table.
KINDS = ("", "_compute_bound", "_weight_bound")
#: :func:`pays_row` columns recorded as metrics (name = column + the case's suffix).
PAYS_METRICS = {"model_speedup_x": "x", "model_speedup_at_mean_batch_x": "x", "model_only_estimate_x": "x",
                "cpu_estimate_x": "x", "non_model_cpu_ms_size1": "ms", "non_model_cpu_ms_batched": "ms",
                "client_cpu_ms_size1": "ms", "client_cpu_ms_batched": "ms"}


def pays_metrics(rows: Sequence[dict[str, Any]], kinds: Sequence[str] = KINDS) -> list[Metric]:
    """The :data:`PAYS_METRICS` columns of each row, named ``<column><kind>`` (``kinds`` in row order)."""
    if len(rows) != len(kinds):
        raise ValueError(f"{len(rows)} rows but {len(kinds)} kinds")
    return [Metric(f"{col}{kind}", float(row[col]), unit=unit, description=f"{row['model']}: {col} (batching pays table)")
            for row, kind in zip(rows, kinds) for col, unit in PAYS_METRICS.items()]


def say_pays(rows: Sequence[dict[str, Any]], rounds: int, kinds: Sequence[str] = KINDS):
    """Decide, per case, whether the measured gain beat the model-only estimate, whether batching
    cut the CPU outside the model, and whether the project's target is met (the whole 95 %
    interval at or above it), missed (the whole interval below) or undecided
    (``report.conclude``, re-checked by the checks cell), and render the table as sentences.

    The rows' :data:`PAYS_METRICS` must be recorded (:func:`pays_metrics`), and each case's
    ``batching_throughput_ratio<kind>`` and p99s.
    """
    from hpcml import report

    text, values = pays_claim(rows)
    lines = text.split("\n")
    for i, kind in enumerate(kinds):
        above = report.conclude(f"gain_vs_model_only{kind}", f"batching_throughput_ratio{kind} > model_only_estimate_x{kind}",
                                "above", "not above")
        fell = report.conclude(f"non_model_cpu_amortised{kind}",
                               f"non_model_cpu_ms_batched{kind} < non_model_cpu_ms_size1{kind}", "fell", "did not fall")
        r, hw = f"batching_throughput_ratio{kind}", f"batching_throughput_ratio{kind}_ci95"
        met = report.conclude(f"batching_3x_met{kind}", f"{r} - {hw} >= {TARGET_GAIN_X} and "
                              f"p99_ms_batched{kind} <= p99_ms_unbatched{kind}", "met", "not met")
        missed = report.conclude(f"batching_3x_missed{kind}", f"{r} + {hw} < {TARGET_GAIN_X}", "missed", "not missed")
        verdict = "met" if met == "met" else "missed" if missed == "missed" else "undecided"
        values[f"ci_{i}"] = report.get(hw)
        lines[i] += (f" The measured gain is {above} the model-only estimate; the server's CPU outside the model "
                     f"{fell} with batching. The target (a gain of at least {TARGET_GAIN_X}× with no worse p99) is "
                     f"**{verdict}**: the gain's 95 % interval is ± {{ci_{i}:.2f}} over {rounds} interleaved rounds.")
    return report.say("\n".join(lines), **values)


def pays_claim(rows: Sequence[dict[str, Any]]) -> tuple[str, dict[str, Any]]:
    """A Markdown list, one item per row, as a :func:`hpcml.report.say` template and its values
    (``<column>_<row index>``): model time, the model-only estimate against the measured gain, and
    where the CPU of one request went."""
    items, values = [], {}
    for i, row in enumerate(rows):
        values.update({f"{k}_{i}": v for k, v in row.items() if k != "model"})
        items.append(
            f"- **{row['model']}**: the model alone costs {{model_ms_b1_{i}:.3f}} ms of CPU for one image and "
            f"{{model_ms_per_row_eff_{i}:.3f}} ms per image at the batch the server formed (mean "
            f"{{mean_batch_{i}:.1f}} rows), a model speed-up of {{model_speedup_at_mean_batch_x_{i}:.2f}}× there "
            f"({{model_speedup_x_{i}:.2f}}× at `max_batch_size`). Model-only estimate "
            f"{{model_only_estimate_x_{i}:.2f}}×, measured {{measured_x_{i}:.2f}}×. Per answered request the "
            f"server's CPU outside the model went from {{non_model_cpu_ms_size1_{i}:.3f}} ms (batch size 1) to "
            f"{{non_model_cpu_ms_batched_{i}:.3f}} ms (batching), the client's from {{client_cpu_ms_size1_{i}:.3f}} "
            f"to {{client_cpu_ms_batched_{i}:.3f}} ms; all CPU per request fell {{cpu_estimate_x_{i}:.2f}}×.")
    return "\n".join(items), values
