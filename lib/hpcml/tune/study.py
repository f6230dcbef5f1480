"""Optuna studies whose trials run the real training function on the real shards.

The study is described by :class:`hpcml.tune.spec.TuneSpec` (validated before any trial runs);
this module runs it:

* :func:`make_sampler` / :func:`make_pruner` — registries by name (no if/else chains).
* :func:`open_storage` — a storage safe for concurrent writers: ``journal:///abs/file.log``
  (Optuna's JournalStorage on a file, for worker processes on one machine or a shared file
  system) or ``postgresql://…`` (RDBStorage with heartbeats, for the cluster). Unreachable
  storage raises :class:`StorageError` at once.
* :func:`make_objective` — calls :func:`hpcml.train.loop.fit_local`, reports validation
  accuracy per epoch to ``trial.report`` and stops the trial when ``trial.should_prune()``.
* :func:`run_study` — create-or-load (resume), mark stale RUNNING trials of dead workers as
  FAILED, optimise with ``catch=(Exception,)`` so a crashing trial is recorded and the study
  goes on.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any, Callable

import numpy as np

from hpcml.tune.spec import TuneSpec, check_storage_url, journal_path

STATE_NAMES = ("COMPLETE", "PRUNED", "FAIL", "RUNNING", "WAITING")


class StorageError(RuntimeError):
    """The study storage cannot be opened or reached (names the URL and the cause)."""


def _samplers() -> dict[str, Callable[[int], Any]]:
    import optuna

    return {
        # constant_liar: a parallel worker treats running trials as bad so workers spread out.
        "tpe": lambda seed: optuna.samplers.TPESampler(seed=seed, n_startup_trials=5, constant_liar=True),
        "random": lambda seed: optuna.samplers.RandomSampler(seed=seed),
    }


def _pruners() -> dict[str, Callable[[int, int], Any]]:
    import optuna

    return {
        # Hyperband: several successive-halving brackets with different aggressiveness.
        "hyperband": lambda max_epochs, eta: optuna.pruners.HyperbandPruner(
            min_resource=1, max_resource=max_epochs, reduction_factor=eta),
        # Asynchronous successive halving (ASHA): rungs at 1, eta, eta^2 … epochs; a trial
        # continues past a rung only if it is in the top 1/eta of the trials seen there.
        "sha": lambda max_epochs, eta: optuna.pruners.SuccessiveHalvingPruner(
            min_resource=1, reduction_factor=eta, min_early_stopping_rate=0),
        "median": lambda max_epochs, eta: optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=1),
        "none": lambda max_epochs, eta: optuna.pruners.NopPruner(),
    }


def make_sampler(name: str, seed: int = 0) -> Any:
    """Sampler by registry name (``tpe``, ``random``); unknown names list the choices."""
    reg = _samplers()
    if name not in reg:
        raise ValueError(f"unknown sampler {name!r}; choose one of {sorted(reg)}")
    return reg[name](seed)


def make_pruner(name: str, max_epochs: int, reduction_factor: int = 3) -> Any:
    """Pruner by registry name (``hyperband``, ``sha``, ``median``, ``none``)."""
    reg = _pruners()
    if name not in reg:
        raise ValueError(f"unknown pruner {name!r}; choose one of {sorted(reg)}")
    return reg[name](max_epochs, reduction_factor)


# --- storage ----------------------------------------------------------------------------
def _probe_tcp(host: str, port: int, url: str, timeout_s: float) -> None:
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            pass
    except OSError as e:
        raise StorageError(f"study storage {redact(url)} is unreachable: cannot connect to {host}:{port} "
                           f"({e.strerror or e}); start the database or fix the URL") from None


def redact(url: str) -> str:
    """The URL with any password replaced by ``***`` (safe for logs and errors)."""
    if "://" in url and "@" in url:
        scheme, rest = url.split("://", 1)
        cred, host = rest.rsplit("@", 1)
        if ":" in cred:
            return f"{scheme}://{cred.split(':', 1)[0]}:***@{host}"
    return url


def open_storage(url: str, heartbeat_s: int = 10, grace_s: int = 30, connect_timeout_s: float = 5.0) -> Any:
    """Open a study storage that is safe for concurrent workers.

    Args:
        url: ``journal:///abs/path.log`` or ``postgresql://…`` (``sqlite:///`` also works, for one worker).
        heartbeat_s, grace_s: RDB heartbeat: a RUNNING trial whose worker stopped beating for
            ``grace_s`` is failed by :func:`optuna.storages.fail_stale_trials`.
        connect_timeout_s: TCP probe and driver connect timeout for database URLs.

    Raises:
        ValueError: malformed URL or unknown scheme.
        StorageError: the journal folder is not writable or the database cannot be reached.
    """
    import optuna
    from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock, JournalStorage

    scheme = check_storage_url(url)
    if scheme == "journal":
        path = journal_path(url)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "ab"):
                pass
        except OSError as e:
            raise StorageError(f"study storage {url}: cannot create/append {path} ({e.strerror or e})") from None
        # The open(O_CREAT|O_EXCL) lock works on NFS/EFS too; a lock left by a SIGKILLed
        # worker is broken after grace_s.
        return JournalStorage(JournalFileBackend(str(path), lock_obj=JournalFileOpenLock(str(path), grace_period=grace_s)))
    from sqlalchemy.engine import make_url

    try:
        u = make_url(url)
    except Exception as e:  # noqa: BLE001
        raise ValueError(f"storage URL {redact(url)} is malformed: {e}") from None
    kwargs: dict[str, Any] = {}
    if scheme in ("postgresql", "mysql"):
        _probe_tcp(u.host or "localhost", int(u.port or (5432 if scheme == "postgresql" else 3306)), url,
                   connect_timeout_s)
        kwargs = {"connect_args": {"connect_timeout": int(max(connect_timeout_s, 1))}, "pool_pre_ping": True}
    elif scheme == "sqlite" and u.database and u.database != ":memory:":
        if not Path(u.database).parent.is_dir():
            raise StorageError(f"study storage {url}: folder {Path(u.database).parent} does not exist")
    try:
        return optuna.storages.RDBStorage(url, engine_kwargs=kwargs or None, heartbeat_interval=heartbeat_s,
                                          grace_period=grace_s)
    except Exception as e:  # noqa: BLE001 - sqlalchemy/driver errors become one clear line
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise StorageError(f"study storage {redact(url)} cannot be opened: {type(e).__name__}: {msg}") from None


# --- data -------------------------------------------------------------------------------
def dataset_dir_of(spec: TuneSpec) -> Path:
    """The shards the spec's trials read (``paths.dataset_dir()`` unless the spec names a folder)."""
    from hpcml import paths

    return Path(spec.dataset_dir) if spec.dataset_dir else paths.dataset_dir()


def _complete(d: Path) -> bool:
    from hpcml.data.dataset import load_manifest

    try:
        load_manifest(d)
    except FileNotFoundError:
        return False
    return True


def ensure_data(n_shards: int = 2) -> Path:
    """The dataset the trials read: the one already built (any shard count), else build it."""
    from hpcml import paths
    from hpcml.data.dataset import ensure_dataset

    d = paths.dataset_dir()
    return d if _complete(d) else ensure_dataset(n_shards, d)


def _subset(xy: tuple[np.ndarray, np.ndarray], rows: int | None, seed: int) -> tuple[np.ndarray, np.ndarray]:
    x, y = xy
    if rows is None or rows >= len(x):
        return x, y
    idx = np.sort(np.random.default_rng(seed).permutation(len(x))[:rows])
    return x[idx], y[idx]


def load_data(spec: TuneSpec, split: str = "val") -> tuple[tuple, tuple]:
    """``(train, other)`` arrays for the trials: the (subset of the) train split and ``split``.

    Raises:
        FileNotFoundError: no dataset yet (names the notebook / call that builds it).
    """
    from hpcml.data.dataset import read_split

    d = dataset_dir_of(spec)
    if not _complete(d):
        raise FileNotFoundError(f"no dataset at {d}: run notebooks/01_spark_preprocessing.ipynb or "
                                "hpcml.data.dataset.ensure_dataset(n_shards=2) first")
    train = _subset(read_split(d, "train"), spec.train_rows, spec.seed)
    other = _subset(read_split(d, split), spec.val_rows if split == "val" else None, spec.seed + 1)
    return train, other


# --- stale trials -----------------------------------------------------------------------
def _proc_start(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def worker_id(pid: int | None = None) -> str:
    """``host:pid:start-ticks`` of a worker process (unique even when pids are reused)."""
    pid = pid or os.getpid()
    return f"{socket.gethostname()}:{pid}:{_proc_start(pid)}"


def worker_alive(wid: str) -> bool | None:
    """Is the worker alive? None when it ran on another host (cannot tell from here)."""
    try:
        host, pid, start = wid.rsplit(":", 2)
    except ValueError:
        return None
    if host != socket.gethostname():
        return None
    return _proc_start(int(pid)) == start


def fail_stale_trials(study: Any) -> list[int]:
    """Mark RUNNING trials whose worker died as FAILED (with the reason in user attr ``error``).

    RDB storages also use Optuna's heartbeat (``optuna.storages.fail_stale_trials``); for the
    journal, a trial belongs to the ``worker`` user attr written at its start, and a dead
    process on this host (pid gone or reused) makes it stale.

    Returns:
        The trial numbers marked FAILED here.
    """
    import optuna
    from optuna.trial import TrialState

    storage = study._storage
    if isinstance(storage, optuna.storages.RDBStorage):
        optuna.storages.fail_stale_trials(study)
    failed = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        wid = t.user_attrs.get("worker")
        if wid is None or worker_alive(wid) is not False:
            continue
        try:
            storage.set_trial_user_attr(t._trial_id, "error", f"worker {wid} died while the trial ran (stale RUNNING)")
            if storage.set_trial_state_values(t._trial_id, TrialState.FAIL):
                failed.append(t.number)
        except RuntimeError:  # finished meanwhile (another worker marked it)
            continue
    return failed


# --- objective and study ----------------------------------------------------------------
def trial_config(spec: TuneSpec, params: dict) -> dict:
    """The ``fit_local`` config of one trial: fixed keys, sampled params, the seed."""
    return {**spec.fixed, **params, "seed": spec.seed}


def make_objective(spec: TuneSpec, train: tuple, val: tuple, threads: int | None = None) -> Callable:
    """An Optuna objective: sample, train with :func:`fit_local`, report per epoch, prune.

    User attrs per trial: ``worker``, ``epochs_run`` (compute spent, also for pruned or failed
    trials), ``error`` (for a crash).
    """
    import optuna

    from hpcml.train.loop import fit_local

    def objective(trial: optuna.Trial) -> float:
        params = spec.space.suggest(trial)
        trial.set_user_attr("worker", worker_id())
        state = {"pruned": False}

        def on_epoch(epoch: int, m: dict) -> bool:
            trial.report(float(m["val_accuracy"]), epoch + 1)
            trial.set_user_attr("epochs_run", epoch + 1)
            state["pruned"] = trial.should_prune()
            return state["pruned"]

        try:
            res = fit_local(trial_config(spec, params), train, val, spec.epochs, on_epoch=on_epoch, threads=threads)
        except Exception as e:
            trial.set_user_attr("error", f"{type(e).__name__}: {e}"[:2000])
            raise
        if state["pruned"]:
            raise optuna.TrialPruned(f"pruned after {res['epochs_run']} epoch(s)")
        return float(res["val_accuracy"])

    return objective


def create_study(spec: TuneSpec, worker: int = 0, storage: Any = None) -> Any:
    """Create or load (``load_if_exists``) the study with the spec's sampler and pruner."""
    import optuna

    sampler = make_sampler(spec.sampler, spec.seed + worker)
    pruner = make_pruner(spec.pruner, spec.epochs, spec.reduction_factor)
    storage = storage if storage is not None else open_storage(spec.storage)
    return optuna.create_study(study_name=spec.study_name, storage=storage, sampler=sampler, pruner=pruner,
                               direction="maximize", load_if_exists=True)


def share(n: int, worker: int, n_workers: int) -> int:
    """Trials worker ``worker`` of ``n_workers`` runs so that the shares sum to ``n``."""
    if not 0 <= worker < n_workers:
        raise ValueError(f"worker index {worker} out of range for {n_workers} worker(s)")
    return n // n_workers + (1 if worker < n % n_workers else 0)


def run_study(spec: TuneSpec, worker: int = 0, n_workers: int = 1, threads: int | None = None,
              data: tuple | None = None, n_trials: int | None = None) -> Any:
    """Run this worker's share of ``spec.n_trials`` (storage checked, stale trials failed first).

    Returns:
        The :class:`optuna.Study`.
    """
    import optuna

    n = share(spec.n_trials if n_trials is None else n_trials, worker, n_workers)
    storage = open_storage(spec.storage)  # unreachable storage fails here, before any data or trial
    study = create_study(spec, worker, storage)
    fail_stale_trials(study)
    train, val = data if data is not None else load_data(spec)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if n:
        study.optimize(make_objective(spec, train, val, threads), n_trials=n, catch=(Exception,),
                       gc_after_trial=False)
    return study


def summarize(study: Any) -> dict:
    """Counts per state, total epochs spent, best value/params, and a duplicate-number check."""
    trials = study.get_trials(deepcopy=False)
    counts = {s: 0 for s in STATE_NAMES}
    for t in trials:
        counts[t.state.name] = counts.get(t.state.name, 0) + 1
    numbers = [t.number for t in trials]
    done = [t for t in trials if t.state.name == "COMPLETE"]
    best = max(done, key=lambda t: t.value) if done else None
    return {
        "study": study.study_name, "n_trials": len(trials), **{k.lower(): v for k, v in counts.items()},
        "epochs": int(sum(int(t.user_attrs.get("epochs_run", 0)) for t in trials)),
        "best_value": best.value if best else None, "best_params": dict(best.params) if best else None,
        "best_number": best.number if best else None,
        "numbers_unique": len(set(numbers)) == len(numbers) and sorted(numbers) == list(range(len(numbers))),
    }
