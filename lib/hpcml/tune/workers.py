"""Parallel Optuna workers: P processes on this machine, a Slurm job array, one CLI.

Every worker is the same program, ``python -m hpcml.tune.workers --spec spec.json --worker i
--of P``: it pins itself to its share of the cores (``os.sched_setaffinity`` + torch
threads), opens the shared storage, and runs its share of the trials. Locally
:func:`run_local` starts P of them and prints progress from the storage; on Slurm
:func:`run_slurm` submits them as a job array (task id = worker index); on Kubernetes the
indexed Job in :mod:`hpcml.k8s.tune` does the same with ``JOB_COMPLETION_INDEX``.
:func:`retrain_best` trains the best configuration on the train split, evaluates it on the
test split and saves it for the serving stage.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from hpcml import paths
from hpcml.tune.spec import TuneSpec
from hpcml.tune.study import load_data, open_storage, run_study, summarize, trial_config


def core_share(worker: int, n_workers: int, cpus: Sequence[int]) -> list[int]:
    """The cores worker ``worker`` of ``n_workers`` is pinned to: contiguous, balanced blocks.

    With more workers than cores, workers share cores round-robin (one core each).
    """
    cpus = sorted(cpus)
    if not cpus:
        raise ValueError("core_share: no CPUs to share")
    if not 0 <= worker < n_workers:
        raise ValueError(f"worker index {worker} out of range for {n_workers} worker(s)")
    if n_workers >= len(cpus):
        return [cpus[worker % len(cpus)]]
    base, extra = divmod(len(cpus), n_workers)
    start = worker * base + min(worker, extra)
    return cpus[start:start + base + (1 if worker < extra else 0)]


def pin(cores: Sequence[int]) -> int:
    """Pin this process to ``cores`` and use that many torch threads; returns the thread count."""
    import torch

    os.sched_setaffinity(0, set(cores))
    torch.set_num_threads(len(cores))
    return len(cores)


def spec_file(spec: TuneSpec, folder: Path | None = None) -> Path:
    """Write the spec as JSON (atomically) for worker processes; returns the path."""
    folder = folder or paths.build_dir() / "tune" / "specs"
    return paths.atomic_write_text(Path(folder) / f"{spec.study_name}.json", spec.to_json())


def worker_main(argv: Sequence[str] | None = None) -> int:
    """CLI of one worker (see module docstring). Index/count default to the Slurm array or
    Kubernetes indexed-Job variables."""
    ap = argparse.ArgumentParser(prog="python -m hpcml.tune.workers")
    ap.add_argument("--spec", required=True, type=Path)
    env_idx = os.environ.get("SLURM_ARRAY_TASK_ID") or os.environ.get("JOB_COMPLETION_INDEX") or "0"
    ap.add_argument("--worker", type=int, default=int(env_idx))
    ap.add_argument("--of", type=int, default=int(os.environ.get("HPCML_TUNE_WORKERS", "1")))
    ap.add_argument("--no-pin", action="store_true", help="keep the inherited CPU affinity")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch threads when not pinning (a container's CPU limit, not the node's cores)")
    ap.add_argument("--storage", default=os.environ.get("HPCML_TUNE_STORAGE"),
                    help="override the spec's storage URL")
    ap.add_argument("--storage-file", type=Path, default=os.environ.get("HPCML_TUNE_STORAGE_FILE"),
                    help="read the storage URL from this file (the Kubernetes Job mounts it from a Secret)")
    a = ap.parse_args(argv)
    spec = TuneSpec.from_json(a.spec.read_text(encoding="utf-8"))
    if a.storage_file:
        spec = spec.replace(storage=Path(a.storage_file).read_text(encoding="utf-8").strip())
    elif a.storage:
        spec = spec.replace(storage=a.storage)
    threads = a.threads
    if not a.no_pin:
        threads = pin(core_share(a.worker, a.of, sorted(os.sched_getaffinity(0))))
    t0 = time.perf_counter()
    study = run_study(spec, worker=a.worker, n_workers=a.of, threads=threads)
    s = summarize(study)
    print(f"worker {a.worker}/{a.of} pid {os.getpid()} cores {sorted(os.sched_getaffinity(0))}: "
          f"done in {time.perf_counter() - t0:.1f}s; study has {s['n_trials']} trials "
          f"({s['complete']} complete, {s['pruned']} pruned, {s['fail']} failed)", flush=True)
    return 0


def katib_trial_main(argv: Sequence[str]) -> int:
    """One Katib trial: ``trial --spec spec.json --set lr=0.01 --set width=16 …``.

    Trains the configuration with :func:`fit_local` and prints ``epoch=N val_accuracy=…``
    per epoch on stdout, the format Katib's StdOut metrics collector parses (its median
    early stopping reads the same lines).
    """
    from hpcml.train.loop import fit_local

    ap = argparse.ArgumentParser(prog="python -m hpcml.tune.workers trial")
    ap.add_argument("--spec", required=True, type=Path)
    ap.add_argument("--set", action="append", default=[], metavar="NAME=VALUE")
    ap.add_argument("--threads", type=int, default=None)
    a = ap.parse_args(argv)
    spec = TuneSpec.from_json(a.spec.read_text(encoding="utf-8"))
    kinds = {p.name: p for p in spec.space.params}
    params: dict[str, Any] = {}
    for item in a.set:
        name, sep, raw = item.partition("=")
        if not sep or name not in kinds:
            raise SystemExit(f"--set {item!r}: expected NAME=VALUE with NAME in {sorted(kinds)}")
        p = kinds[name]
        choices = getattr(p, "choices", None)
        params[name] = (next((c for c in choices if str(c) == raw), raw) if choices is not None
                        else int(raw) if type(p).__name__ == "IntParam" else float(raw))
    missing = sorted(set(kinds) - set(params))
    if missing:
        raise SystemExit(f"missing --set for {missing}")
    train, val = load_data(spec)

    def on_epoch(epoch: int, m: dict) -> None:
        print(f"epoch={epoch + 1} val_accuracy={m['val_accuracy']:.6f} loss={m['loss']:.6f}", flush=True)

    fit_local(trial_config(spec, params), train, val, spec.epochs, on_epoch=on_epoch, threads=a.threads)
    return 0


def _worker_cmd(spec_path: Path, worker: int, n_workers: int) -> list[str]:
    return [sys.executable, "-m", "hpcml.tune.workers", "--spec", str(spec_path),
            "--worker", str(worker), "--of", str(n_workers)]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    lib = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = lib + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


def start_workers(spec: TuneSpec, n_workers: int, log_dir: Path | None = None) -> list[subprocess.Popen]:
    """Start ``n_workers`` worker processes (outputs under ``log_dir``); returns the Popen handles."""
    if not isinstance(n_workers, int) or n_workers < 1:
        raise ValueError(f"n_workers must be an int >= 1, got {n_workers!r}")
    open_storage(spec.storage)  # fail fast, before any process starts
    path = spec_file(spec)
    log_dir = paths.ensure(Path(log_dir or paths.build_dir() / "tune" / "logs"))
    procs = []
    for i in range(n_workers):
        out = open(log_dir / f"{spec.study_name}-w{i}.log", "wb")
        procs.append(subprocess.Popen(_worker_cmd(path, i, n_workers), stdout=out, stderr=subprocess.STDOUT,
                                      env=_env(), start_new_session=True))
        out.close()
    return procs


def stop_workers(procs: Sequence[subprocess.Popen], grace_s: float = 10) -> None:
    """Terminate the given worker processes (by pid), then kill any that remain."""
    for p in procs:
        if p.poll() is None:
            p.terminate()
    end = time.monotonic() + grace_s
    for p in procs:
        try:
            p.wait(timeout=max(end - time.monotonic(), 0.1))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def run_local(spec: TuneSpec, n_workers: int = 2, timeout_s: float = 1800, poll_s: float = 2.0,
              progress: Callable[[dict], None] | None = print, log_dir: Path | None = None) -> dict:
    """Run the study with ``n_workers`` local processes sharing its storage; wait for them.

    Args:
        progress: called with the study summary while it runs (None = silent).

    Returns:
        ``summarize(study)`` plus ``wall_s``, ``trials_per_hour``, ``n_workers`` and each worker's
        ``returncodes``.

    Raises:
        RuntimeError: a worker exited non-zero or the run timed out (workers stopped, log named).
    """
    import optuna

    t0 = time.perf_counter()
    procs = start_workers(spec, n_workers, log_dir)
    storage = open_storage(spec.storage)
    last = None
    try:
        while any(p.poll() is None for p in procs):
            if time.perf_counter() - t0 > timeout_s:
                raise RuntimeError(f"study {spec.study_name}: workers still running after {timeout_s:g}s")
            time.sleep(poll_s)
            if progress is not None:
                try:
                    s = summarize(optuna.load_study(study_name=spec.study_name, storage=storage))
                except KeyError:  # study not created yet
                    continue
                line = (s["n_trials"], s["complete"], s["pruned"], s["fail"], s["running"])
                if line != last:
                    progress(f"[{time.perf_counter() - t0:6.1f}s] trials {s['n_trials']}: {s['complete']} complete, "
                             f"{s['pruned']} pruned, {s['fail']} failed, {s['running']} running; "
                             f"best {s['best_value']}")
                    last = line
    finally:
        stop_workers(procs)
    wall = time.perf_counter() - t0
    codes = [p.returncode for p in procs]
    if any(codes):
        logs = Path(log_dir or paths.build_dir() / "tune" / "logs")
        raise RuntimeError(f"study {spec.study_name}: worker exit codes {codes}; see {logs}/{spec.study_name}-w*.log")
    s = summarize(optuna.load_study(study_name=spec.study_name, storage=storage))
    return {**s, "wall_s": wall, "n_workers": n_workers, "returncodes": codes,
            "trials_per_hour": spec.n_trials / wall * 3600}


def run_slurm(spec: TuneSpec, cluster: Any, n_workers: int = 2, cpus_per_worker: int = 1,
              timeout_s: float = 900) -> dict:
    """The same workers as a Slurm job array (``--array=0-(P-1)``; task id = worker index).

    Each task pins itself to its share of the CPUs Slurm lets it see (its own set when the
    cluster binds tasks; otherwise the array splits the node's cores like local workers).

    Returns:
        The study summary plus the job result fields (``job_id``, ``state``, ``elapsed_s``).
    """
    import optuna

    open_storage(spec.storage)
    path = spec_file(spec)
    body = (f'cd "{paths.repo_root()}"\n'
            f'"{sys.executable}" -m hpcml.tune.workers --spec "{path}" '
            f'--worker "$SLURM_ARRAY_TASK_ID" --of {n_workers}')
    res = cluster.run_batch(body, name=f"tune-{spec.study_name}"[:40], cpus_per_task=cpus_per_worker,
                            time_limit_min=max(int(timeout_s // 60) + 1, 2), timeout_s=timeout_s,
                            env={**_env(), "HPCML_BUILD": str(paths.build_dir())}, array=f"0-{n_workers - 1}")
    if res.state != "COMPLETED":
        raise RuntimeError(f"Slurm array job {res.job_id} ended {res.state} (exit {res.exit_code}): "
                           f"{res.output_tail[-1500:]}")
    s = summarize(optuna.load_study(study_name=spec.study_name, storage=open_storage(spec.storage)))
    return {**s, "job_id": res.job_id, "state": res.state, "elapsed_s": res.elapsed_s,
            "output_tail": res.output_tail}


def best_model_path() -> Path:
    """Where the serving stage finds the tuned model: ``models_dir()/"best"/"model.pt"``."""
    return paths.models_dir() / "best" / "model.pt"


def retrain_best(spec: TuneSpec, study: Any, epochs: int | None = None, train_rows: int | None = None,
                 threads: int | None = None, path: Path | None = None) -> dict:
    """Train the best trial's configuration on the train split, evaluate on test, save it.

    Args:
        epochs: training epochs (default ``spec.epochs``).
        train_rows: rows of the train split (default all of it).

    Returns:
        ``{"params", "test_accuracy", "val_accuracy", "epochs", "path"}``.
    """
    import numpy as np

    from hpcml.data.dataset import load_manifest
    from hpcml.train.checkpoint import save_model
    from hpcml.train.loop import fit_local, predict
    from hpcml.tune.study import dataset_dir_of

    done = [t for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE"]
    if not done:
        raise RuntimeError(f"study {study.study_name} has no completed trial to retrain")
    best = study.best_trial
    full = spec.replace(train_rows=train_rows, val_rows=None)
    train, test = load_data(full, split="test")
    _, val = load_data(full, split="val")
    config = trial_config(spec, best.params)
    res = fit_local(config, train, val, epochs or spec.epochs, threads=threads)
    test_acc = float(np.mean(predict(res["model"], test[0]) == test[1]))
    metrics = {"test_accuracy": test_acc, "val_accuracy": float(res["val_accuracy"]),
               "tuned_val_accuracy": float(best.value), "trial": best.number, "epochs": res["epochs_run"]}
    norm = load_manifest(dataset_dir_of(spec)).get("normalization", {})
    out = save_model(res["model"], res["model_config"], path or best_model_path(), metrics, norm)
    return {"params": dict(best.params), "config": config, **metrics, "path": str(out)}


if __name__ == "__main__":
    sys.exit(katib_trial_main(sys.argv[2:]) if sys.argv[1:2] == ["trial"] else worker_main())
