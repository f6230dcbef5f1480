"""The same TrainSpec under both training backends (Horovod, DDP): loss parity and step time.

:func:`compare_backends` runs one spec with ``backend="horovod"`` and ``backend="ddp"``
(same seed, shards, per-worker batch and threads; only the collective layer differs,
:mod:`hpcml.train.comm`), ``reps`` times each in ABBA order so a drift in the machine's load
falls on both, and returns the loss parity of the first runs (:func:`hpcml.train.loop.loss_parity`)
and each backend's per-step time. A run is a real ``horovodrun`` / ``torchrun`` job
(:func:`hpcml.train.targets.local.run_local`).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable

import numpy as np

from hpcml.report import Metric
from hpcml.train import loop
from hpcml.train.spec import BACKENDS, TrainSpec

#: What each run contributes to the comparison (from the worker's final metrics).
RUN_KEYS = ("step_time_s", "train_samples_per_s", "time_split", "test_accuracy", "steps", "hosts")


def abba(n_pairs: int) -> list[str]:
    """Backend order of ``n_pairs`` runs of each: horovod, ddp, ddp, horovod, horovod, ddp, ..."""
    if n_pairs < 1:
        raise ValueError(f"abba: n_pairs must be >= 1, got {n_pairs}")
    first, second = BACKENDS
    return [b for i in range(n_pairs) for b in ((first, second) if i % 2 == 0 else (second, first))]


def summarize(runs: dict[str, list[dict[str, Any]]], parity_steps: int) -> dict[str, Any]:
    """The comparison from each backend's run metrics (pure).

    Returns:
        ``{"parity": loss_parity(first horovod run, first ddp run), "<backend>": {"step_time_s"
        (mean), "step_time_s_runs", "train_samples_per_s" (mean), "time_split" (first run),
        "time_split_note", "test_accuracy", "hosts"}, "step_time_ratio_hvd_over_ddp",
        "throughput_ratio_hvd_over_ddp"}``.
    """
    out: dict[str, Any] = {"parity": loop.loss_parity(runs["horovod"][0]["step_losses"],
                                                      runs["ddp"][0]["step_losses"], parity_steps)}
    for b in BACKENDS:
        rs = runs[b]
        out[b] = {"step_time_s": float(np.mean([r["step_time_s"] for r in rs])),
                  "step_time_s_runs": [r["step_time_s"] for r in rs],
                  "train_samples_per_s": float(np.mean([r["train_samples_per_s"] for r in rs])),
                  "time_split": rs[0]["time_split"], "time_split_note": rs[0].get("time_split_note"),
                  "test_accuracy": rs[0]["test_accuracy"], "steps": rs[0]["steps"], "hosts": rs[0].get("hosts")}
    out["step_time_ratio_hvd_over_ddp"] = out["horovod"]["step_time_s"] / out["ddp"]["step_time_s"]
    out["throughput_ratio_hvd_over_ddp"] = out["horovod"]["train_samples_per_s"] / out["ddp"]["train_samples_per_s"]
    return out


def compare_backends(spec: TrainSpec, n_pairs: int = 1, parity_steps: int = 100, timeout_s: float = 900,
                     out_root: Path | None = None,
                     runner: Callable[..., dict[str, Any]] | None = None) -> dict[str, Any]:
    """Run ``spec`` under each backend ``n_pairs`` times (ABBA) and compare them (:func:`summarize`).

    Args:
        spec: the job (its ``backend`` is replaced; ``record_losses`` is raised to ``parity_steps``).
        n_pairs: runs of each backend.
        parity_steps: steps the loss parity compares (the runs must train at least this many).
        timeout_s: each run's limit.
        out_root: where the runs go (default: ``spec``'s out_dir's parent, ``<name>-<backend>-<i>``).
        runner: runs one spec and returns its metrics (default :func:`hpcml.train.targets.local.run_local`).

    Raises:
        ValueError: a run trained fewer than ``parity_steps`` steps.
    """
    if runner is None:
        from hpcml.train.targets.local import run_local

        runner = lambda s: run_local(s, timeout_s=timeout_s, on_progress=None)  # noqa: E731
    root = Path(out_root) if out_root else spec.resolved_out_dir().parent
    runs: dict[str, list[dict[str, Any]]] = {b: [] for b in BACKENDS}
    for i, b in enumerate(abba(n_pairs)):
        s = dataclasses.replace(spec, backend=b, name=f"{spec.name}-{b}", out_dir=str(root / f"{spec.name}-{b}-{i}"),
                                record_losses=max(spec.record_losses, parity_steps))
        m = runner(s)
        if m["steps"] < parity_steps:
            raise ValueError(f"compare_backends: the {b} run trained {m['steps']} steps, fewer than "
                             f"parity_steps={parity_steps}; raise epochs or lower parity_steps")
        runs[b].append({**{k: m.get(k) for k in RUN_KEYS}, "step_losses": m["step_losses"],
                        "time_split_note": m.get("time_split_note")})
    return summarize(runs, parity_steps)


def comparison_metrics(cmp: dict[str, Any], prefix: str = "cnn_backend") -> list[Metric]:
    """The metrics 02 records from :func:`compare_backends`'s result (``<prefix>_...``)."""
    par = cmp["parity"]
    out = [Metric(f"{prefix}_loss_parity_max_rel", par["max_rel_diff"], "",
                  f"largest relative difference of the rank-averaged loss, Horovod vs DDP, over the first "
                  f"{par['steps']} steps (same seed, shards, per-worker batch)"),
           Metric(f"{prefix}_loss_parity_mean_rel", par["mean_rel_diff"], "", "mean of the same"),
           Metric(f"{prefix}_loss_parity_steps", par["steps"], "steps", "steps the loss parity compares"),
           Metric(f"{prefix}_step_time_ratio_hvd_over_ddp", cmp["step_time_ratio_hvd_over_ddp"], "",
                  "Horovod's mean per-step time over DDP's (> 1: Horovod is slower)"),
           Metric(f"{prefix}_throughput_ratio_hvd_over_ddp", cmp["throughput_ratio_hvd_over_ddp"], "",
                  "Horovod's training samples/s over DDP's")]
    for b in BACKENDS:
        r = cmp[b]
        out += [Metric(f"{prefix}_{b}_step_time_s", r["step_time_s"], "s", f"{b}: mean per-step wall time"),
                Metric(f"{prefix}_{b}_samples_per_s", r["train_samples_per_s"], "samples/s", f"{b}: training samples/s"),
                Metric(f"{prefix}_{b}_time_split", r["time_split"], "s", f"{b}: {r['time_split_note']}")]
    return out



def main(argv: list[str] | None = None) -> int:
    """``python -m hpcml.train.backend_compare``: the CNN under both backends, JSON on stdout."""
    import argparse
    import json
    import tempfile

    from hpcml.data.dataset import ensure_dataset

    ap = argparse.ArgumentParser(description="Horovod vs DDP: loss parity and per-step time of one TrainSpec")
    ap.add_argument("--bucket-mb", default="default", help="MiB for both tools, or 'default' (each tool's own)")
    ap.add_argument("--pairs", type=int, default=1, help="runs of each backend (ABBA order)")
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--width", type=int, default=32)
    ap.add_argument("--parity-steps", type=int, default=100)
    ap.add_argument("--out", default=None, help="where the runs go (default: a temporary folder, removed)")
    a = ap.parse_args(argv)
    bucket = None if a.bucket_mb == "default" else float(a.bucket_mb)
    ds = ensure_dataset(n_shards=2)
    with tempfile.TemporaryDirectory(prefix="hpcml-backends-") as tmp:
        root = Path(a.out or tmp)
        spec = TrainSpec(name="backends", world_size=2, threads_per_worker=1, epochs=a.epochs, batch_size=a.batch_size,
                         lr=0.02, width=a.width, seed=0, dataset_dir=str(ds), bucket_mb=bucket, out_dir=str(root / "x"))
        res = compare_backends(spec, n_pairs=a.pairs, parity_steps=a.parity_steps, out_root=root)
    print(json.dumps({"bucket_mb": bucket, **res}, indent=1, default=float))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
