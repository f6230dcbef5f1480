"""Structured JSON logs: one object per line with run id, stage, rank and extras; the gatherer
reads every stage back, counts malformed lines and summarises errors/warnings by stage."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from hpcml.monitor import logs

pytestmark = pytest.mark.unit


@pytest.fixture(autouse=True)
def _close():
    yield
    logs.close_all()


def test_records_are_json_lines_with_the_fixed_fields(build_tmp):
    log = logs.get_logger("train", run_id="r1", rank=1)
    log.warning("straggler", extra={"step": 40, "lag_s": 1.5, "message": "clash"})
    line = (build_tmp / "logs" / "train.jsonl").read_text().splitlines()[-1]
    obj = json.loads(line)
    assert {k: obj[k] for k in ("level", "run_id", "stage", "rank", "message")} == {
        "level": "WARNING", "run_id": "r1", "stage": "train", "rank": 1, "message": "straggler"}
    assert obj["step"] == 40 and obj["lag_s"] == 1.5 and obj["extra_message"] == "clash"
    assert obj["ts"].endswith("Z") and len(obj["ts"]) == 24


def test_exceptions_are_kept(build_tmp):
    log = logs.get_logger("data")
    try:
        raise ValueError("row 7: pixels has 783 values, expected 784")
    except ValueError:
        log.exception("quarantined a row")
    obj = json.loads((build_tmp / "logs" / "data.jsonl").read_text())
    assert obj["level"] == "ERROR" and "783 values" in obj["exc_info"]


def test_gather_reads_every_stage_and_counts_malformed_lines(build_tmp):
    logs.get_logger("serve", run_id="r1").info("started", extra={"port": 8080})
    logs.get_logger("serve", run_id="r1").error("worker died", extra={"pid": 123})
    logs.get_logger("train", run_id="r1", rank=0).warning("slow step")
    logs.get_logger("train", run_id="r2", rank=1).info("other run")
    with open(build_tmp / "logs" / "train.jsonl", "a") as fh:
        fh.write("not json\n[1, 2]\n")
    df = logs.gather()
    assert len(df) == 4 and df.attrs["malformed"] == {"train.jsonl": 2}
    assert str(df["ts"].dtype).startswith("datetime64") and df["ts"].is_monotonic_increasing
    assert df.loc[df["message"] == "worker died", "pid"].item() == 123
    only = logs.gather(run_id="r1")
    assert set(only["run_id"]) == {"r1"} and len(only) == 3
    table = logs.summary(only)
    assert table.loc["serve", "ERROR"] == 1 and table.loc["train", "WARNING"] == 1
    assert table.loc["train", "ERROR"] == 0


def test_gather_of_nothing_is_an_empty_frame(build_tmp):
    df = logs.gather()
    assert df.empty and "stage" in df.columns
    assert list(logs.summary(df).columns) == ["ERROR", "WARNING"]


def test_child_processes_share_the_run_id_and_file(build_tmp, monkeypatch):
    monkeypatch.setenv("HPCML_RUN_ID", "shared-run")
    code = ("from hpcml.monitor import logs; import sys; "
            "logs.get_logger('train', rank=int(sys.argv[1])).info('hello')")
    for rank in (0, 1):
        subprocess.run([sys.executable, "-c", code, str(rank)], check=True)
    df = logs.gather()
    assert list(df["rank"]) in ([0, 1], [1, 0]) and set(df["run_id"]) == {"shared-run"}


@pytest.mark.parametrize("stage,rank,err", [
    ("", None, "stage must be"), ("../x", None, "stage must be"), ("train", -1, "rank must be"),
    ("train", "0", "rank must be"),
], ids=["empty", "path", "negative-rank", "str-rank"])
def test_bad_arguments(stage, rank, err, build_tmp):
    with pytest.raises(ValueError, match=err):
        logs.get_logger(stage, rank=rank)


def test_every_record_carries_its_node_and_a_per_node_sequence_that_survives_restarts(build_tmp, monkeypatch):
    monkeypatch.setenv("HPCML_NODE", "n7")
    monkeypatch.setenv("HPCML_RUN_ID", "seq-run")
    code = ("from hpcml.monitor import logs; import sys; log = logs.get_logger(sys.argv[1]); "
            "[log.info('x', extra={'i': i}) for i in range(20)]")
    procs = [subprocess.Popen([sys.executable, "-c", code, stage]) for stage in ("train", "train", "serve")]
    assert [p.wait() for p in procs] == [0, 0, 0]
    subprocess.run([sys.executable, "-c", code, "train"], check=True)  # a process started later on the same node
    df = logs.gather()
    assert set(df["node"]) == {"n7"} and len(df) == 80
    assert sorted(df["seq"]) == list(range(1, 81))  # one counter for all processes and stages of the node
    assert (build_tmp / "logs" / ".seq-n7").read_text() == "80"


def test_the_log_folder_can_be_set_for_a_node(tmp_path, monkeypatch):
    monkeypatch.setenv("HPCML_LOG_DIR", str(tmp_path / "n1"))
    monkeypatch.setenv("HPCML_NODE", "n1")
    logs.get_logger("train").info("hi")
    obj = json.loads((tmp_path / "n1" / "train.jsonl").read_text())
    assert obj["node"] == "n1" and obj["seq"] == 1
