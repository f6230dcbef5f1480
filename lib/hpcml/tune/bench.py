"""Tuning benchmarks: pruning vs none and TPE vs random on the same trial budget, the noise
floor of one configuration across seeds, and trials/hour with P worker processes.

Compute is counted in epochs (every trial records ``epochs_run``, pruned and failed ones
too), so the saving does not depend on how busy this shared machine is; wall times are
recorded beside it. Studies live in fresh journal files under ``build/tune/bench``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from hpcml import paths
from hpcml.report import Metric
from hpcml.tune.spec import TuneSpec
from hpcml.tune.study import load_data, run_study, summarize, trial_config

DEFAULT_VARIANTS = (("tpe", "hyperband"), ("tpe", "none"), ("random", "hyperband"), ("random", "none"))


def fresh_journal(name: str, folder: Path | None = None) -> str:
    """A journal URL for a new, empty study file (an old file of that name is removed)."""
    folder = paths.ensure(Path(folder or paths.build_dir() / "tune" / "bench"))
    path = folder / f"{name}.log"
    for p in (path, Path(str(path) + ".lock")):
        p.unlink(missing_ok=True)
    return f"journal://{path}"


def variant_spec(spec: TuneSpec, sampler: str, pruner: str, folder: Path | None = None,
                 fresh: bool = False) -> TuneSpec:
    """The spec of one benchmark variant (its own study name and journal file)."""
    name = f"{spec.study_name}-{sampler}-{pruner}"
    folder = paths.ensure(Path(folder or paths.build_dir() / "tune" / "bench"))
    url = fresh_journal(name, folder) if fresh else f"journal://{folder / f'{name}.log'}"
    return spec.replace(study_name=name, sampler=sampler, pruner=pruner, storage=url)


def best_so_far(study: Any) -> list[tuple[int, float]]:
    """``(cumulative epochs, best completed val accuracy so far)`` after each finished trial."""
    out, spent, best = [], 0, float("nan")
    for t in sorted(study.get_trials(deepcopy=False), key=lambda t: t.number):
        spent += int(t.user_attrs.get("epochs_run", 0))
        if t.state.name == "COMPLETE":
            best = t.value if np.isnan(best) else max(best, t.value)
        out.append((spent, best))
    return out


def study_train_flops(study: Any, spec: TuneSpec, train_rows: int) -> float:
    """Training FLOPs a study spent: per trial, ``epochs_run`` × ``train_rows`` × the FLOPs of one
    training step per sample of its model (forward + backward, counted by torch's
    ``FlopCounterMode``; validation passes not counted). Pruned and failed trials count too.

    Epochs alone weigh a width-4 and a width-16 model the same; this weighs each by its size.
    """
    import json

    from hpcml.train.models import build_from_config, model_config_from, train_flops_per_sample

    per_sample: dict[str, float] = {}
    total = 0.0
    for t in study.get_trials(deepcopy=False):
        epochs = int(t.user_attrs.get("epochs_run", 0))
        if not epochs:
            continue
        mcfg = model_config_from(trial_config(spec, t.params))
        key = json.dumps(mcfg, sort_keys=True)
        if key not in per_sample:
            per_sample[key] = float(train_flops_per_sample(build_from_config(mcfg), (1, 28, 28)))
        total += epochs * int(train_rows) * per_sample[key]
    return total


def compare(spec: TuneSpec, variants: Sequence[tuple[str, str]] = DEFAULT_VARIANTS, threads: int | None = None,
            data: tuple | None = None, folder: Path | None = None) -> tuple[list[dict], dict[str, Any]]:
    """Run one study per (sampler, pruner) with the same trial budget, seed and data.

    Returns:
        ``(rows, studies)``: one row per variant (``sampler, pruner, epochs, train_gflop,
        best_val_accuracy, complete, pruned, fail, wall_s``) and the studies by ``"sampler+pruner"``.
    """
    data = data if data is not None else load_data(spec)
    rows, studies = [], {}
    for sampler, pruner in variants:
        key = f"{sampler}+{pruner}"
        s = variant_spec(spec, sampler, pruner, folder, fresh=True)
        t0 = time.perf_counter()
        study = run_study(s, threads=threads, data=data)
        summ = summarize(study)
        rows.append({"variant": key, "sampler": sampler, "pruner": pruner, "epochs": summ["epochs"],
                     "train_gflop": study_train_flops(study, s, len(data[0][1])) / 1e9,
                     "best_val_accuracy": summ["best_value"], "complete": summ["complete"],
                     "pruned": summ["pruned"], "fail": summ["fail"], "wall_s": time.perf_counter() - t0})
        studies[key] = study
    return rows, studies


def saving(rows: Sequence[dict], sampler: str, pruner: str) -> dict:
    """Compute saving of ``pruner`` vs ``none`` for one sampler: the epochs ratio
    (``compute_saving``), the training-FLOPs ratio when the rows carry ``train_gflop``
    (``flops_saving``), and the accuracy gap (none minus pruned)."""
    by = {(r["sampler"], r["pruner"]): r for r in rows}
    if (sampler, pruner) not in by or (sampler, "none") not in by:
        raise ValueError(f"rows lack {sampler}+{pruner} or {sampler}+none: have {sorted(by)}")
    p, n = by[(sampler, pruner)], by[(sampler, "none")]
    return {"compute_saving": n["epochs"] / max(p["epochs"], 1),
            "accuracy_gap": (n["best_val_accuracy"] or 0.0) - (p["best_val_accuracy"] or 0.0),
            "epochs_pruning": p["epochs"], "epochs_no_pruning": n["epochs"],
            **({"flops_saving": n["train_gflop"] / p["train_gflop"]}
               if p.get("train_gflop") and n.get("train_gflop") is not None else {})}


def seed_noise(spec: TuneSpec, params: dict, seeds: Sequence[int] = (0, 1, 2), threads: int | None = None,
               data: tuple | None = None) -> dict:
    """Validation accuracy of one configuration trained with several seeds: mean and std (ddof=1)."""
    from hpcml.train.loop import fit_local

    if len(seeds) < 2:
        raise ValueError(f"seed_noise needs >= 2 seeds to estimate a spread, got {list(seeds)}")
    train, val = data if data is not None else load_data(spec)
    accs = [float(fit_local({**trial_config(spec, params), "seed": int(s)}, train, val, spec.epochs,
                            threads=threads)["val_accuracy"]) for s in seeds]
    return {"seeds": list(seeds), "val_accuracy": accs, "mean": float(np.mean(accs)),
            "std": float(np.std(accs, ddof=1))}


def trial_times(study: Any) -> list[tuple[int, float, float]]:
    """``(worker pid, start, end)`` of every finished trial, in wall-clock seconds.

    The times are the study's own ``datetime_start`` / ``datetime_complete`` (set by the worker
    that ran the trial); the pid comes from the ``worker`` user attribute (``host:pid:ticks``).
    """
    out = []
    for t in study.get_trials(deepcopy=False):
        wid = t.user_attrs.get("worker")
        if t.datetime_start is None or t.datetime_complete is None or not wid:
            continue
        out.append((int(wid.rsplit(":", 2)[1]), t.datetime_start.timestamp(), t.datetime_complete.timestamp()))
    return out


def phase_times(processes: Sequence[dict], trials: Sequence[tuple[int, float, float]]) -> dict:
    """Where a parallel run's wall time went, from the processes' and the trials' own timestamps.

    Args:
        processes: ``{"pid", "spawned_at", "exited_at"}`` per worker process (wall-clock seconds).
        trials: ``(pid, start, end)`` per finished trial (:func:`trial_times`).

    Returns:
        ``wall_s``: first spawn to last exit. ``startup_s``: per worker, its spawn to the start of
        its first trial (interpreter, imports, pinning, storage, data), averaged.
        ``trials_s``: first trial start to last trial end (the trial phase). ``teardown_s``: per
        worker, its last trial's end to its exit, averaged. ``trial_mean_s``: mean trial duration.
        ``busy_share``: trial seconds / (workers × wall): the share of worker time spent in trials.

    Raises:
        ValueError: no process, or a worker that ran no trial (its start-up cannot be measured).
    """
    if not processes:
        raise ValueError("phase_times: no worker processes")
    by_pid: dict[int, list[tuple[float, float]]] = {}
    for pid, start, end in trials:
        if end < start:
            raise ValueError(f"phase_times: trial of pid {pid} ends ({end}) before it starts ({start})")
        by_pid.setdefault(pid, []).append((start, end))
    idle = [p["pid"] for p in processes if p["pid"] not in by_pid]
    if idle:
        raise ValueError(f"phase_times: worker(s) {idle} ran no trial; give every worker at least one "
                         "(n_trials >= workers)")
    t0 = min(p["spawned_at"] for p in processes)
    wall = max(p["exited_at"] for p in processes) - t0
    mine = [by_pid[p["pid"]] for p in processes]
    spans = [e - s for ts in mine for s, e in ts]
    return {
        "wall_s": wall,
        "startup_s": float(np.mean([min(s for s, _ in ts) - p["spawned_at"] for p, ts in zip(processes, mine)])),
        "trials_s": max(e for ts in mine for _, e in ts) - min(s for ts in mine for s, _ in ts),
        "teardown_s": float(np.mean([p["exited_at"] - max(e for _, e in ts) for p, ts in zip(processes, mine)])),
        "trial_mean_s": float(np.mean(spans)),
        "busy_share": float(sum(spans) / (len(processes) * wall)) if wall > 0 else float("nan"),
    }


def fixed_configs(spec: TuneSpec, n: int) -> list[dict]:
    """``n`` configurations drawn once from the spec's space by a seeded random sampler.

    The throughput benchmark enqueues the same list at every P, so each run trains exactly the
    same configurations (per-worker sampler seeds would otherwise give P=1 and P=2 different
    widths and batch sizes, and different work).
    """
    import optuna

    scratch = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=spec.seed))
    return [spec.space.suggest(scratch.ask()) for _ in range(n)]


def throughput(spec: TuneSpec, worker_counts: Sequence[int] = (1, 2), folder: Path | None = None,
               progress: Any = None) -> list[dict]:
    """Trials/hour with P local worker processes on the same work (no pruning).

    Every P trains the same ``spec.n_trials`` configurations (:func:`fixed_configs`, enqueued in
    a fresh journal before the workers start), so the work is identical. The wall time is
    measured from the workers' start and exit (not a poll) and split by :func:`phase_times` into
    start-up, the trial phase and teardown, so a speed-up can be explained from the numbers.
    """
    import optuna

    from hpcml.tune.study import create_study, open_storage
    from hpcml.tune.workers import run_local

    configs = fixed_configs(spec, spec.n_trials)
    out = []
    for p in worker_counts:
        s = spec.replace(study_name=f"{spec.study_name}-p{p}", sampler="random", pruner="none",
                         storage=fresh_journal(f"{spec.study_name}-p{p}", folder))
        queued = create_study(s)
        for params in configs:
            queued.enqueue_trial(params)
        r = run_local(s, n_workers=p, progress=progress)
        study = optuna.load_study(study_name=s.study_name, storage=open_storage(s.storage))
        ran = sorted(tuple(sorted(t.params.items())) for t in study.trials)
        if ran != sorted(tuple(sorted(c.items())) for c in configs):
            raise RuntimeError(f"throughput P={p}: the workers did not run the enqueued configurations")
        ph = phase_times(r["processes"], trial_times(study))
        out.append({"workers": p, "trials": r["n_trials"], "wall_s": r["wall_s"],
                    "trials_per_hour": r["trials_per_hour"], "epochs": r["epochs"],
                    **{k: v for k, v in ph.items() if k != "wall_s"},
                    "trial_phase_trials_per_hour": r["n_trials"] / ph["trials_s"] * 3600})
    return out


def speedup_summary(rows: Sequence[dict]) -> dict:
    """The P=2 vs P=1 comparison of :func:`throughput`'s rows, as the numbers the text needs.

    Returns:
        ``parallel_speedup`` (trials/hour, wall), ``trial_phase_speedup`` (trials/hour over the
        trial phase only), ``trial_time_ratio`` (mean trial duration at P=2 / at P=1),
        ``startup_share_p2`` (P=2's mean start-up / its wall time), ``fixed_share_p2`` (P=2's
        mean start-up plus teardown, the costs every worker pays once, / its wall time), and the
        wall and phase times.

    Raises:
        ValueError: the rows lack P=1 or P=2.
    """
    by = {r["workers"]: r for r in rows}
    if 1 not in by or 2 not in by:
        raise ValueError(f"speedup_summary needs rows for 1 and 2 workers, got {sorted(by)}")
    one, two = by[1], by[2]
    return {"parallel_speedup": two["trials_per_hour"] / one["trials_per_hour"],
            "trial_phase_speedup": two["trial_phase_trials_per_hour"] / one["trial_phase_trials_per_hour"],
            "trial_time_ratio": two["trial_mean_s"] / one["trial_mean_s"],
            "startup_share_p2": two["startup_s"] / two["wall_s"],
            "fixed_share_p2": (two["startup_s"] + two["teardown_s"]) / two["wall_s"],
            "teardown_s_p1": one["teardown_s"], "teardown_s_p2": two["teardown_s"],
            "wall_s_p1": one["wall_s"], "wall_s_p2": two["wall_s"], "startup_s_p1": one["startup_s"],
            "startup_s_p2": two["startup_s"], "trials_s_p1": one["trials_s"], "trials_s_p2": two["trials_s"],
            "trial_mean_s_p1": one["trial_mean_s"], "trial_mean_s_p2": two["trial_mean_s"]}


def throughput_metrics(rows: Sequence[dict], cpu_cores: int) -> list[Metric]:
    """The metrics the notebook records from :func:`throughput`'s rows (P=1 and P=2)."""
    s = speedup_summary(rows)
    by = {r["workers"]: r for r in rows}
    return [
        Metric("trials_per_hour_p1", by[1]["trials_per_hour"], "trials/h",
               "1 worker process: trials / wall time (first spawn to last exit)"),
        Metric("trials_per_hour_p2", by[2]["trials_per_hour"], "trials/h",
               "2 worker processes on one journal storage: trials / wall time (first spawn to last exit)", True),
        Metric("tune_parallel_speedup", s["parallel_speedup"], "x", "trials/hour with 2 workers / with 1 (wall)"),
        Metric("tune_trial_phase_speedup", s["trial_phase_speedup"], "x",
               "trials/hour over the trial phase only (first trial start to last trial end), P=2 / P=1"),
        Metric("tune_trial_time_ratio", s["trial_time_ratio"], "x",
               "mean trial duration at P=2 (one core each) / at P=1 (all cores), same configurations"),
        Metric("tune_startup_share_p2", s["startup_share_p2"], "fraction",
               "P=2: mean worker start-up (spawn to its first trial) / wall time"),
        Metric("tune_fixed_share_p2", s["fixed_share_p2"], "fraction",
               "P=2: mean worker start-up plus teardown (paid once per worker) / wall time"),
        *[Metric(f"tune_{k}", s[k], "s", d) for k, d in (
            ("wall_s_p1", "P=1 wall time, spawn to exit"), ("wall_s_p2", "P=2 wall time, first spawn to last exit"),
            ("startup_s_p1", "P=1 start-up: spawn to the first trial"),
            ("startup_s_p2", "P=2 start-up per worker (mean): spawn to its first trial"),
            ("trials_s_p1", "P=1 trial phase"), ("trials_s_p2", "P=2 trial phase, first trial start to last end"),
            ("trial_mean_s_p1", "P=1 mean trial duration"), ("trial_mean_s_p2", "P=2 mean trial duration"),
            ("teardown_s_p1", "P=1 teardown: last trial end to exit (interpreter finalisation)"),
            ("teardown_s_p2", "P=2 teardown per worker (mean): its last trial end to its exit"))],
        Metric("tune_cpu_cores", int(cpu_cores), "cores", "CPUs the workers could use (the notebook's affinity)"),
    ]


def plot_compare(rows: Sequence[dict], studies: dict[str, Any]) -> Any:
    """Two panels: best val accuracy vs cumulative epochs per variant; epochs spent per variant."""
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    for key, study in studies.items():
        xs, ys = zip(*best_so_far(study)) if study.trials else ((), ())
        a.step(xs, ys, where="post", label=key, ls="-" if "none" not in key else "--")
    a.set(xlabel="cumulative epochs (compute)", ylabel="best val accuracy so far",
          title="Best accuracy vs compute spent")
    a.legend(fontsize=8)
    names = [r["variant"] for r in rows]
    bars = b.bar(names, [r["epochs"] for r in rows], color=["C0" if r["pruner"] != "none" else "C7" for r in rows])
    for bar, r in zip(bars, rows):
        b.annotate(f"{(r['best_val_accuracy'] or 0):.3f}", (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                   ha="center", va="bottom", fontsize=8)
    b.set(ylabel="total epochs", title="Compute per study (label: best val acc)")
    b.tick_params(axis="x", labelrotation=20, labelsize=8)
    fig.tight_layout()
    return fig


def plot_throughput(rows: Sequence[dict]) -> Any:
    """Bar chart of trials/hour per worker count."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.5, 3.2))
    ax.bar([f"P={r['workers']}" for r in rows], [r["trials_per_hour"] for r in rows], color="C2")
    ax.set(ylabel="trials / hour", title="Parallel workers, one shared journal")
    fig.tight_layout()
    return fig
