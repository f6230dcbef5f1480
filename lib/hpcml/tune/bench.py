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


def compare(spec: TuneSpec, variants: Sequence[tuple[str, str]] = DEFAULT_VARIANTS, threads: int | None = None,
            data: tuple | None = None, folder: Path | None = None) -> tuple[list[dict], dict[str, Any]]:
    """Run one study per (sampler, pruner) with the same trial budget, seed and data.

    Returns:
        ``(rows, studies)``: one row per variant (``sampler, pruner, epochs, best_val_accuracy,
        complete, pruned, fail, wall_s``) and the studies by ``"sampler+pruner"``.
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
                     "best_val_accuracy": summ["best_value"], "complete": summ["complete"],
                     "pruned": summ["pruned"], "fail": summ["fail"], "wall_s": time.perf_counter() - t0})
        studies[key] = study
    return rows, studies


def saving(rows: Sequence[dict], sampler: str, pruner: str) -> dict:
    """Compute saving of ``pruner`` vs ``none`` for one sampler: epochs ratio and accuracy gap."""
    by = {(r["sampler"], r["pruner"]): r for r in rows}
    if (sampler, pruner) not in by or (sampler, "none") not in by:
        raise ValueError(f"rows lack {sampler}+{pruner} or {sampler}+none: have {sorted(by)}")
    p, n = by[(sampler, pruner)], by[(sampler, "none")]
    return {"compute_saving": n["epochs"] / max(p["epochs"], 1),
            "accuracy_gap": (n["best_val_accuracy"] or 0.0) - (p["best_val_accuracy"] or 0.0),
            "epochs_pruning": p["epochs"], "epochs_no_pruning": n["epochs"]}


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


def throughput(spec: TuneSpec, worker_counts: Sequence[int] = (1, 2), folder: Path | None = None,
               progress: Any = None) -> list[dict]:
    """Trials/hour with P local worker processes on the same budget (no pruning, random sampler).

    Every P runs the same number of trials of the same sampler seed, so the work per trial
    is comparable; each run gets a fresh journal.
    """
    from hpcml.tune.workers import run_local

    out = []
    for p in worker_counts:
        s = spec.replace(study_name=f"{spec.study_name}-p{p}", sampler="random", pruner="none",
                         storage=fresh_journal(f"{spec.study_name}-p{p}", folder))
        r = run_local(s, n_workers=p, progress=progress)
        out.append({"workers": p, "trials": r["n_trials"], "wall_s": r["wall_s"],
                    "trials_per_hour": r["trials_per_hour"], "epochs": r["epochs"]})
    return out


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
