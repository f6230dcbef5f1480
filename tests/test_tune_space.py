"""Unit tests of the tuning stage's pure parts: search-space validation, registries, storage
URL checks, the spec, and how trials and cores are shared between workers."""

from __future__ import annotations

import pytest

from hpcml.proc import free_port
from hpcml.tune import study
from hpcml.tune.spec import TuneSpec, check_storage_url
from hpcml.tune.space import CategoricalParam, FloatParam, IntParam, SearchSpace, default_space
from hpcml.tune.workers import core_share

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("make, match", [
    (lambda: SearchSpace(()), "empty"),
    (lambda: FloatParam("lr", 0.1, 0.01), "low=0.1 > high=0.01"),
    (lambda: FloatParam("lr", 0.0, 0.1, log=True), "log scale needs low > 0"),
    (lambda: FloatParam("lr", -1.0, 0.1, log=True), "log scale needs low > 0"),
    (lambda: FloatParam("lr", float("nan"), 0.1), "finite number"),
    (lambda: FloatParam("lr", "a", 0.1), "finite number"),
    (lambda: IntParam("width", 8, 4), "low=8 > high=4"),
    (lambda: IntParam("width", 4, 16, step=0), "step must be >= 1"),
    (lambda: IntParam("width", 4, 17, step=4), "not a multiple of step"),
    (lambda: IntParam("width", 0, 8, log=True), "log scale needs low > 0"),
    (lambda: IntParam("width", 4.5, 8), "must be an int"),
    (lambda: CategoricalParam("optimizer", ()), "choices is empty"),
    (lambda: CategoricalParam("optimizer", "sgd"), "list/tuple"),
    (lambda: CategoricalParam("optimizer", ("sgd", "sgd")), "duplicate"),
    (lambda: CategoricalParam("bad name", ("a",)), "identifier"),
    (lambda: SearchSpace((FloatParam("lr", 0.1, 1.0), FloatParam("lr", 0.2, 1.0))), "more than once"),
    (lambda: SearchSpace(("lr",)), "not a FloatParam"),
    (lambda: SearchSpace.from_dict({"params": [{"kind": "normal", "name": "x"}]}), "kind must be one of"),
    (lambda: SearchSpace.from_dict({"params": [{"kind": "float", "name": "x", "low": 1}]}), r"params\[0\]"),
    (lambda: SearchSpace.from_dict([]), "'params' list"),
], ids=["empty", "float-low-gt-high", "log-zero", "log-negative", "nan", "not-number", "int-low-gt-high",
        "step-zero", "step-misfit", "int-log-zero", "int-float", "no-choices", "choices-str", "dup-choice",
        "bad-name", "dup-param", "not-param", "unknown-kind", "missing-field", "not-dict"])
def test_bad_space_rejected(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_space_round_trips_and_suggests():
    import optuna

    sp = default_space()
    assert SearchSpace.from_dict(sp.to_dict()) == sp
    assert sp.names == ["lr", "batch_size", "width", "depth", "weight_decay", "optimizer"]
    trial = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1)).ask()
    cfg = sp.suggest(trial)
    assert 1e-4 <= cfg["lr"] <= 0.3 and cfg["batch_size"] in (32, 64, 128) and cfg["optimizer"] in ("sgd", "adamw")
    assert 8 <= cfg["width"] <= 48 and cfg["width"] % 8 == 0 and 1 <= cfg["depth"] <= 3


def test_katib_parameters():
    kat = {p["name"]: p for p in default_space().to_katib()}
    assert kat["lr"]["parameterType"] == "double" and kat["lr"]["feasibleSpace"]["distribution"] == "logUniform"
    assert kat["batch_size"]["parameterType"] == "discrete" and kat["batch_size"]["feasibleSpace"]["list"] == ["32", "64", "128"]
    assert kat["width"]["feasibleSpace"] == {"min": "8", "max": "48", "step": "8"}
    assert kat["optimizer"]["parameterType"] == "categorical"


@pytest.mark.parametrize("kind, name", [("sampler", "grid"), ("sampler", "TPE"), ("pruner", "asha"), ("pruner", "")],
                         ids=["grid", "case", "asha", "empty"])
def test_unknown_registry_name_lists_choices(kind, name):
    make = study.make_sampler if kind == "sampler" else (lambda n: study.make_pruner(n, 9))
    with pytest.raises(ValueError, match=f"unknown {kind} .*choose one of"):
        make(name)
    with pytest.raises(ValueError, match=f"TuneSpec.{kind}: expected one of"):
        TuneSpec("s", "journal:///tmp/x.log", **{kind: name})


@pytest.mark.parametrize("name", ["tpe", "random"])
def test_known_samplers(name):
    assert study.make_sampler(name, 0) is not None


@pytest.mark.parametrize("name, cls", [("hyperband", "HyperbandPruner"), ("sha", "SuccessiveHalvingPruner"),
                                       ("median", "MedianPruner"), ("none", "NopPruner")])
def test_known_pruners(name, cls):
    assert type(study.make_pruner(name, 9)).__name__ == cls


@pytest.mark.parametrize("url, match", [
    ("build/study.log", "must be a URL"),
    ("redis://localhost/0", "unsupported storage scheme"),
    ("journal://relative/x.log", "absolute path"),
    (3, "must be a URL"),
], ids=["no-scheme", "redis", "relative-journal", "not-str"])
def test_bad_storage_url(url, match):
    with pytest.raises(ValueError, match=match):
        check_storage_url(url)
    with pytest.raises(ValueError, match=match):
        TuneSpec("s", url)


def test_unreachable_postgres_fails_fast_and_redacts():
    url = f"postgresql://optuna:s3cret@127.0.0.1:{free_port()}/optuna"
    with pytest.raises(study.StorageError, match=r"unreachable: cannot connect to 127\.0\.0\.1") as e:
        study.open_storage(url, connect_timeout_s=2)
    assert "s3cret" not in str(e.value) and "***" in str(e.value)


def test_unwritable_journal_is_a_storage_error():
    with pytest.raises(study.StorageError, match="cannot create/append"):
        study.open_storage("journal:///proc/hpcml-no/such.log")


def test_run_study_checks_storage_before_data(tmp_path):
    spec = TuneSpec("s", f"postgresql://u@127.0.0.1:{free_port()}/db", dataset_dir=str(tmp_path / "none"))
    with pytest.raises(study.StorageError):
        study.run_study(spec)


@pytest.mark.parametrize("kw, match", [
    ({"n_trials": 0}, "n_trials"), ({"epochs": 0}, "epochs"), ({"study_name": " "}, "study_name"),
    ({"reduction_factor": 1}, "reduction_factor"), ({"train_rows": 0}, "train_rows"),
    ({"fixed": {"lr": 0.1}}, "also searched"),
], ids=["trials", "epochs", "name", "eta", "rows", "fixed-clash"])
def test_bad_spec(kw, match):
    args = {"study_name": "s", "storage": "journal:///tmp/x.log", **kw}
    with pytest.raises(ValueError, match=match):
        TuneSpec(**args)


def test_spec_json_round_trip():
    spec = TuneSpec("s", "journal:///tmp/x.log", space=SearchSpace((CategoricalParam("optimizer", ("sgd",)),)))
    assert TuneSpec.from_json(spec.to_json()) == spec
    with pytest.raises(ValueError, match="unknown field"):
        TuneSpec.from_json('{"study_name": "s", "storage": "journal:///x", "space": {"params": []}, "x": 1}')


@pytest.mark.parametrize("n, workers, expect", [(12, 2, [6, 6]), (7, 2, [4, 3]), (2, 3, [1, 1, 0]), (5, 1, [5])],
                         ids=["even", "odd", "fewer-than-workers", "one"])
def test_trial_shares_sum_to_budget(n, workers, expect):
    assert [study.share(n, i, workers) for i in range(workers)] == expect


@pytest.mark.parametrize("worker, n, cpus, expect", [
    (0, 2, [0, 1], [0]), (1, 2, [0, 1], [1]), (0, 1, [0, 1], [0, 1]),
    (0, 3, range(8), [0, 1, 2]), (2, 3, range(8), [6, 7]), (3, 4, [0, 1], [1]), (1, 2, [4, 2, 6, 8], [6, 8]),
], ids=["w0of2", "w1of2", "one-worker", "uneven-first", "uneven-last", "oversubscribed", "sparse-cpus"])
def test_core_share(worker, n, cpus, expect):
    assert core_share(worker, n, cpus) == expect


def test_core_share_errors():
    with pytest.raises(ValueError, match="out of range"):
        core_share(2, 2, [0, 1])
    with pytest.raises(ValueError, match="no CPUs"):
        core_share(0, 1, [])


def test_redact():
    assert study.redact("postgresql://u:pw@h:5432/d") == "postgresql://u:***@h:5432/d"
    assert study.redact("journal:///tmp/x.log") == "journal:///tmp/x.log"


# --- where a parallel run's wall time went (bench.phase_times / speedup_summary) --------
def _procs(*rows):
    return [{"pid": pid, "spawned_at": s, "exited_at": e} for pid, s, e in rows]


def test_phase_times_splits_wall_into_startup_trials_teardown():
    from hpcml.tune.bench import phase_times

    # two workers spawned at 100.0 and 100.1; first trials start 1.5 s later; exits 0.2 s after the last trial
    procs = _procs((11, 100.0, 104.2), (12, 100.1, 104.0))
    trials = [(11, 101.5, 102.5), (11, 102.5, 104.0), (12, 101.6, 102.8), (12, 102.8, 103.8)]
    ph = phase_times(procs, trials)
    assert ph["wall_s"] == pytest.approx(4.2)
    assert ph["startup_s"] == pytest.approx(1.5)  # (1.5 + 1.5) / 2
    assert ph["trials_s"] == pytest.approx(104.0 - 101.5)
    assert ph["teardown_s"] == pytest.approx((0.2 + 0.2) / 2)
    assert ph["trial_mean_s"] == pytest.approx((1.0 + 1.5 + 1.2 + 1.0) / 4)
    assert ph["busy_share"] == pytest.approx(4.7 / (2 * 4.2))


def test_phase_times_errors():
    from hpcml.tune.bench import phase_times

    with pytest.raises(ValueError, match="no worker"):
        phase_times([], [])
    with pytest.raises(ValueError, match=r"\[12\] ran no trial"):
        phase_times(_procs((11, 0.0, 3.0), (12, 0.0, 3.0)), [(11, 1.0, 2.0)])
    with pytest.raises(ValueError, match="before it starts"):
        phase_times(_procs((11, 0.0, 3.0)), [(11, 2.0, 1.0)])


def test_speedup_summary():
    from hpcml.tune.bench import speedup_summary

    one = {"workers": 1, "trials_per_hour": 1000.0, "trial_phase_trials_per_hour": 2000.0, "trial_mean_s": 1.0,
           "wall_s": 4.0, "startup_s": 2.0, "trials_s": 2.0, "teardown_s": 0.0}
    two = {"workers": 2, "trials_per_hour": 1250.0, "trial_phase_trials_per_hour": 3000.0, "trial_mean_s": 1.5,
           "wall_s": 3.2, "startup_s": 2.0, "trials_s": 0.8, "teardown_s": 0.4}
    s = speedup_summary([two, one])
    assert s["parallel_speedup"] == pytest.approx(1.25) and s["trial_phase_speedup"] == pytest.approx(1.5)
    assert s["trial_time_ratio"] == pytest.approx(1.5) and s["startup_share_p2"] == pytest.approx(0.625)
    assert s["fixed_share_p2"] == pytest.approx(0.75) and s["teardown_s_p2"] == 0.4
    with pytest.raises(ValueError, match="1 and 2 workers"):
        speedup_summary([one])


# --- promotion: the tuned model is served only when it beats the baseline on validation --
@pytest.mark.parametrize("tuned, baseline, expect", [(0.99, 0.98, True), (0.97, 0.98, False), (0.98, 0.98, False)],
                         ids=["better", "worse", "tie-keeps-incumbent"])
def test_should_promote(tuned, baseline, expect):
    from hpcml.tune.workers import should_promote

    assert should_promote(tuned, baseline) is expect


def test_promote_copies_or_removes_the_served_model(tmp_path):
    from hpcml.tune.workers import promote

    tuned_file, best = tmp_path / "tuned" / "model.pt", tmp_path / "best" / "model.pt"
    tuned_file.parent.mkdir()
    tuned_file.write_bytes(b"tuned-weights")
    base = {"val_accuracy": 0.98, "path": str(tmp_path / "cnn" / "model.pt")}
    won = promote({"val_accuracy": 0.99, "path": str(tuned_file)}, base, best_path=best)
    assert won == {"promoted": True, "served_model": "tuned", "served_path": str(best)}
    assert best.read_bytes() == b"tuned-weights"
    lost = promote({"val_accuracy": 0.97, "path": str(tuned_file)}, base, best_path=best)
    assert lost == {"promoted": False, "served_model": "baseline", "served_path": base["path"]}
    assert not best.exists()  # a model promoted by an earlier run is not served after a loss


def test_saving_in_epochs_and_flops():
    from hpcml.tune.bench import saving

    rows = [{"sampler": "tpe", "pruner": "sha", "epochs": 20, "train_gflop": 4.0, "best_val_accuracy": 0.90},
            {"sampler": "tpe", "pruner": "none", "epochs": 60, "train_gflop": 6.0, "best_val_accuracy": 0.91}]
    s = saving(rows, "tpe", "sha")
    assert s["compute_saving"] == 3.0 and s["flops_saving"] == 1.5  # pruning stopped the cheap trials
    assert s["accuracy_gap"] == pytest.approx(0.01)
    assert "flops_saving" not in saving([{k: v for k, v in r.items() if k != "train_gflop"} for r in rows], "tpe", "sha")
    with pytest.raises(ValueError, match="lack"):
        saving(rows, "random", "sha")
