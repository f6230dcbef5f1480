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
import threading
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from hpcml import paths, proc
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

    proc.pin_threads(cores)  # every thread, not only the caller (sched_setaffinity(0, ...))
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
    """Start ``n_workers`` worker processes (outputs under ``log_dir``); returns the Popen handles.

    Each handle carries ``spawned_at``: the wall-clock time (``time.time()``) just before its
    process was started, so a run's timing can start from it rather than from a poll."""
    if not isinstance(n_workers, int) or n_workers < 1:
        raise ValueError(f"n_workers must be an int >= 1, got {n_workers!r}")
    open_storage(spec.storage)  # fail fast, before any process starts
    path = spec_file(spec)
    log_dir = paths.ensure(Path(log_dir or paths.build_dir() / "tune" / "logs"))
    procs = []
    for i in range(n_workers):
        out = open(log_dir / f"{spec.study_name}-w{i}.log", "wb")
        spawned_at = time.time()
        proc = subprocess.Popen(_worker_cmd(path, i, n_workers), stdout=out, stderr=subprocess.STDOUT,
                                env=_env(), start_new_session=True)
        proc.spawned_at = spawned_at  # type: ignore[attr-defined]
        procs.append(proc)
        out.close()
    return procs


def _watch_exits(procs: Sequence[subprocess.Popen]) -> tuple[dict[int, float], threading.Event]:
    """Wait on every process in its own thread and note when it exits.

    Returns:
        ``({pid: exit time (time.time())}, an Event set once all have exited)``; the times are
        those of the blocking ``waitpid`` returning, not of a poll.
    """
    exits: dict[int, float] = {}
    lock, all_done = threading.Lock(), threading.Event()

    def wait(p: subprocess.Popen) -> None:
        p.wait()
        with lock:
            exits[p.pid] = time.time()
            if len(exits) == len(procs):
                all_done.set()

    for p in procs:
        threading.Thread(target=wait, args=(p,), name=f"wait-{p.pid}", daemon=True).start()
    return exits, all_done


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

    The wall time runs from the first worker's start to the last worker's exit, each taken
    when it happens (a thread per process blocks in ``waitpid``); ``poll_s`` only paces the
    progress lines, so it does not quantise the measurement.

    Args:
        progress: called with a progress line every ``poll_s`` while it runs (None = silent).

    Returns:
        ``summarize(study)`` plus ``wall_s``, ``trials_per_hour``, ``n_workers``, each worker's
        ``returncodes``, and ``processes``: ``{"pid", "spawned_at", "exited_at"}`` per worker
        (wall-clock seconds, comparable with the study's trial datetimes).

    Raises:
        RuntimeError: a worker exited non-zero or the run timed out (workers stopped, log named).
    """
    import optuna

    procs = start_workers(spec, n_workers, log_dir)
    exits, all_done = _watch_exits(procs)
    t0 = min(p.spawned_at for p in procs)  # type: ignore[attr-defined]
    storage = open_storage(spec.storage)
    last = None
    try:
        while not all_done.is_set():
            if time.time() - t0 > timeout_s:
                raise RuntimeError(f"study {spec.study_name}: workers still running after {timeout_s:g}s")
            if all_done.wait(min(poll_s, max(timeout_s - (time.time() - t0), 0.01))) or progress is None:
                continue
            try:
                s = summarize(optuna.load_study(study_name=spec.study_name, storage=storage))
            except KeyError:  # study not created yet
                continue
            line = (s["n_trials"], s["complete"], s["pruned"], s["fail"], s["running"])
            if line != last:
                progress(f"[{time.time() - t0:6.1f}s] trials {s['n_trials']}: {s['complete']} complete, "
                         f"{s['pruned']} pruned, {s['fail']} failed, {s['running']} running; "
                         f"best {s['best_value']}")
                last = line
    finally:
        stop_workers(procs)
    all_done.wait(10)
    wall = max(exits.values()) - t0
    codes = [p.returncode for p in procs]
    if any(codes):
        logs = Path(log_dir or paths.build_dir() / "tune" / "logs")
        raise RuntimeError(f"study {spec.study_name}: worker exit codes {codes}; see {logs}/{spec.study_name}-w*.log")
    s = summarize(optuna.load_study(study_name=spec.study_name, storage=storage))
    processes = [{"pid": p.pid, "spawned_at": p.spawned_at, "exited_at": exits[p.pid]} for p in procs]  # type: ignore[attr-defined]
    return {**s, "wall_s": wall, "n_workers": n_workers, "returncodes": codes, "processes": processes,
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


#: The notebook whose CNN is the baseline the tuned model must beat to be served.
BASELINE_NOTEBOOK = "02_horovod_training"


def best_model_path() -> Path:
    """Where the serving stage finds the tuned model, once it is promoted: ``models_dir()/"best"/"model.pt"``
    (04 serves it when it exists, else 02's CNN)."""
    return paths.models_dir() / "best" / "model.pt"


def tuned_model_path() -> Path:
    """Where :func:`retrain_best` saves the retrained configuration: ``models_dir()/"tuned"/"model.pt"``."""
    return paths.models_dir() / "tuned" / "model.pt"


def baseline_model_path() -> Path:
    """02's CNN, the baseline: ``models_dir()/"cnn"/"model.pt"``."""
    return paths.models_dir() / "cnn" / "model.pt"


def retrain_best(spec: TuneSpec, study: Any, epochs: int | None = None, train_rows: int | None = None,
                 threads: int | None = None, path: Path | None = None) -> dict:
    """Train the best trial's configuration on the train split, evaluate on val and test, save it.

    The model is saved to ``path`` (default :func:`tuned_model_path`); :func:`promote` decides
    whether it is the one served.

    Args:
        epochs: training epochs (default ``spec.epochs``).
        train_rows: rows of the train split (default all of it).

    Returns:
        ``{"params", "config", "test_accuracy", "val_accuracy" (the whole val split),
        "tuned_val_accuracy" (the trial's, on its subset), "trial", "epochs", "train_rows",
        "test_rows", "path"}``.
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
    out = save_model(res["model"], res["model_config"], path or tuned_model_path(), metrics, norm)
    return {"params": dict(best.params), "config": config, **metrics, "train_rows": len(train[1]),
            "test_rows": len(test[1]), "path": str(out)}


def baseline_metrics(path: Path | None = None) -> dict:
    """The baseline the tuned model is compared with: 02's CNN.

    ``test_accuracy`` is the value 02 recorded; ``val_accuracy`` (the whole val split) and the
    model's configuration come from the artifact 02 saved, and 02's ``epochs`` from its
    recorded parameters. Both artifacts must be from the same run (their test accuracies agree).

    Raises:
        hpcml.report.MissingMetricsError, FileNotFoundError: 02 has not run (both name it).
        RuntimeError: 02's recorded metrics and its saved model are from different runs.
    """
    from hpcml import report
    from hpcml.train.checkpoint import load_model

    test = float(report.value(BASELINE_NOTEBOOK, "test_accuracy"))
    path = Path(path or baseline_model_path())
    if not path.exists():
        raise FileNotFoundError(f"no baseline model at {path}: run notebooks/{BASELINE_NOTEBOOK}.ipynb first")
    _, art = load_model(path)
    saved = art.get("metrics", {})
    if saved.get("test_accuracy") is None or abs(float(saved["test_accuracy"]) - test) > 1e-9:
        raise RuntimeError(f"{path} (test accuracy {saved.get('test_accuracy')}) is not the model "
                           f"{BASELINE_NOTEBOOK} recorded (test accuracy {test}): re-run "
                           f"notebooks/{BASELINE_NOTEBOOK}.ipynb")
    return {"test_accuracy": test, "val_accuracy": float(saved["val_accuracy"]),
            "epochs": report.load(BASELINE_NOTEBOOK).get("params", {}).get("epochs"),
            "config": {"arch": art["arch"], **art["model_config"]}, "path": str(path)}


def should_promote(tuned_val_accuracy: float, baseline_val_accuracy: float) -> bool:
    """The promotion rule: the challenger is served only when it beats the incumbent on the
    validation split (a tie keeps the incumbent). The test split is not used to choose: it
    stays an unbiased estimate of the chosen model."""
    return float(tuned_val_accuracy) > float(baseline_val_accuracy)


def promote(tuned: dict, baseline: dict, best_path: Path | None = None) -> dict:
    """Apply :func:`should_promote`: copy the tuned model to ``best_path`` (what 04 serves) when
    it wins, else remove any ``best_path`` left by an earlier run so 04 serves the baseline.

    Args:
        tuned: :func:`retrain_best`'s result; baseline: :func:`baseline_metrics`'s.

    Returns:
        ``{"promoted", "served_model" ("tuned" or "baseline"), "served_path"}``.
    """
    best = Path(best_path or best_model_path())
    promoted = should_promote(tuned["val_accuracy"], baseline["val_accuracy"])
    if promoted:
        paths.atomic_write_bytes(best, Path(tuned["path"]).read_bytes())
    else:
        best.unlink(missing_ok=True)
    return {"promoted": promoted, "served_model": "tuned" if promoted else "baseline",
            "served_path": str(best if promoted else baseline["path"])}


def choice_metrics(tuned: dict, baseline: dict, choice: dict) -> list[Any]:
    """The metrics that say how the tuned model compares with 02's and which one is served.

    Args:
        tuned: :func:`retrain_best`'s result; baseline: :func:`baseline_metrics`'s;
        choice: :func:`promote`'s.

    Returns:
        :class:`hpcml.report.Metric` objects for ``report.record_all``.
    """
    from hpcml.report import Metric

    return [
        Metric("best_test_accuracy", tuned["test_accuracy"], "fraction",
               "test accuracy of the best configuration retrained on the train split", True),
        Metric("retrained_val_accuracy", tuned["val_accuracy"], "fraction",
               "val accuracy (whole val split) of the best configuration retrained on the train split"),
        Metric("baseline_test_accuracy", baseline["test_accuracy"], "fraction",
               f"02's CNN test accuracy, as {BASELINE_NOTEBOOK} recorded it"),
        Metric("baseline_val_accuracy", baseline["val_accuracy"], "fraction", "02's CNN val accuracy (whole val split)"),
        Metric("tuned_minus_baseline_accuracy", tuned["test_accuracy"] - baseline["test_accuracy"], "fraction",
               "test accuracy of the tuned model minus 02's CNN (> 0: the tuned model is better on test)"),
        Metric("tuned_minus_baseline_val_accuracy", tuned["val_accuracy"] - baseline["val_accuracy"], "fraction",
               "val accuracy of the tuned model minus 02's CNN: the promotion rule (> 0: the tuned model is served)"),
        Metric("tuned_model_promoted", int(choice["promoted"]), "",
               "1 when the tuned model is served by 04 (models/best), 0 when 02's CNN is"),
        Metric("served_model", choice["served_model"], "", f"the model 04 serves: tuned or baseline; file {choice['served_path']}"),
        Metric("tuned_retrain_epochs", tuned["epochs"], "epochs", "epochs the tuned configuration was retrained for"),
        Metric("baseline_epochs", baseline["epochs"], "epochs", f"epochs {BASELINE_NOTEBOOK} trained its CNN for"),
        Metric("tuned_width", tuned["config"].get("width"), "channels", "CNN width of the tuned configuration"),
        Metric("baseline_width", baseline["config"].get("width"), "channels", "CNN width of 02's model"),
        Metric("test_rows", int(tuned["test_rows"]), "rows", "rows of the test split both models were scored on"),
    ]


if __name__ == "__main__":
    sys.exit(katib_trial_main(sys.argv[2:]) if sys.argv[1:2] == ["trial"] else worker_main())
