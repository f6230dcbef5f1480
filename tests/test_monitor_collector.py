"""Central logs: rsyslog configs (pure), the DuckDB store (idempotent on (node, seq), non-JSON kept and
counted), and the real path: rsyslog shippers in both nodes of the test cluster, RELP to a collector
on the head that is restarted mid-run; every line sent is stored exactly once."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from hpcml import proc
from hpcml.monitor import logstore, syslog_conf

duckdb = pytest.importorskip("duckdb")


@pytest.mark.unit
def test_configs_name_every_part_and_refuse_bad_input():
    c = syslog_conf.collector_conf("10.250.0.1", 2514, "/s/store", "/s/work")
    assert 'address="10.250.0.1" port="2514"' in c and 'queue.saveOnShutdown="on"' in c and "/s/store/%hostname" in c
    s = syslog_conf.shipper_conf("n1", "/s/nodes/n1", "10.250.0.1", 2514, "/s/sh")
    assert 'file="/s/nodes/n1/*.jsonl"' in s and 'target="10.250.0.1"' in s and 'queue.filename="ship"' in s
    with pytest.raises(ValueError, match="address must be an IPv4"):
        syslog_conf.collector_conf("head", 2514, "/s", "/w")
    with pytest.raises(ValueError, match="port must be an integer from 1024"):
        syslog_conf.collector_conf("127.0.0.1", 514, "/s", "/w")
    with pytest.raises(ValueError, match="folders must be absolute"):
        syslog_conf.collector_conf("127.0.0.1", 2514, "store", "/w")
    with pytest.raises(ValueError, match="node must be"):
        syslog_conf.shipper_conf("../n1", "/l", "127.0.0.1", 2514, "/w")


def _store(tmp_path, lines: dict[str, list[str]]):
    for name, rows in lines.items():
        f = tmp_path / "store" / name
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text("".join(f" {off} {row}\n" for off, row in rows))
    return tmp_path / "store"


@pytest.mark.unit
def test_load_is_idempotent_on_node_seq_and_keeps_what_is_not_json(tmp_path):
    rec = '{{"ts": "2026-01-01T00:00:0{s}.000Z", "level": "{lvl}", "run_id": "r", "stage": "train", "rank": 0, ' \
          '"node": "{n}", "seq": {s}, "message": "m{s}"}}'
    store = _store(tmp_path, {
        "n1/train.log": [(0, rec.format(n="n1", s=1, lvl="INFO")), (90, rec.format(n="n1", s=2, lvl="ERROR")),
                         (90, rec.format(n="n1", s=2, lvl="ERROR")),  # a RELP re-send
                         (180, "Traceback (most recent call last):"), (215, "[1, 2]")],
        "n2/train.log": [(0, rec.format(n="n2", s=1, lvl="WARNING")), (90, '{"no": "key"}')]})
    con = duckdb.connect()
    first = logstore.load(store, con)
    assert first == {"raw_lines": 7, "raw_duplicates": 1, "json_rows": 3, "other_rows": 3, "inserted": 6}
    assert logstore.load(store, con)["inserted"] == 0  # loading again adds nothing
    table = logstore.errors_by_node_stage(con).set_index("node")
    assert table.loc["n1", "errors"] == 1 and table.loc["n1", "not_records"] == 2 and table.loc["n2", "warnings"] == 1
    assert list(logstore.job_lines(con, "r")[["node", "seq"]].itertuples(index=False, name=None)) == [
        ("n1", 1), ("n2", 1), ("n1", 2)]
    reasons = sorted(r for (r,) in con.execute("SELECT reason FROM other").fetchall())
    assert reasons == ["JSON without node/seq", "not JSON", "not JSON"]


@pytest.mark.unit
def test_a_stored_line_without_an_offset_is_refused(tmp_path):
    store = _store(tmp_path, {"n1/train.log": [("x", "{}")]})
    with pytest.raises(ValueError, match="expected ' <offset> <line>'"):
        logstore.load(store, duckdb.connect())


WRITER = """
import sys, time
from hpcml.monitor import logs
n, pause = int(sys.argv[1]), float(sys.argv[2])
log = logs.get_logger("train", rank=int(sys.argv[3]))
for i in range(n):
    (log.error if i % 50 == 49 else log.info)("step", extra={"i": i})
    if i % 100 == 0:
        with open(logs.logs_dir() / "train.jsonl", "a") as fh:
            fh.write("plain text, not JSON: step %d\\n" % i)
    time.sleep(pause)
"""


def _central_logs_survive_a_collector_restart(cl, tmp_path, monkeypatch):
    from hpcml.monitor.collector import CentralLogs, node_job_argv

    if not proc.which("rsyslogd"):
        pytest.skip("rsyslogd is not installed (Debian's rsyslog, rsyslog-relp)")
    monkeypatch.setenv("HPCML_RUN_ID", "collector-test")
    path = CentralLogs.start(cl, tmp_path / "central")
    try:
        writers = []
        for rank, node in enumerate(path.shippers):
            argv, env = node_job_argv(cl, node, [sys.executable, "-c", WRITER, "300", "0.008", str(rank)], path)
            writers.append(subprocess.Popen(argv, env=env))
        time.sleep(0.8)
        t_down = time.time()
        down_s = path.restart_collector(down_s=1.0)  # mid-run: the writers keep writing meanwhile
        t_up = time.time()
        assert [w.wait(timeout=60) for w in writers] == [0] * len(writers)
        sent = {n: (path.node_dir(n) / "train.jsonl").read_text().splitlines() for n in path.shippers}
        total = sum(map(len, sent.values()))
        raw = path.wait_stored(total, timeout_s=30)
    finally:
        codes = path.stop()
    assert all(c == 0 for c in codes.values()), codes
    con = duckdb.connect()
    counts = logstore.load(path.store, con)
    print(f"{path.mode}: sent {total}, stored raw {raw}, collector down {down_s:.1f} s, {counts}")
    stored = logstore.seqs_by_node(con, "collector-test")
    during = con.execute("SELECT count(*) FROM logs WHERE epoch(ts) BETWEEN ? AND ?", [t_down, t_up]).fetchall()[0][0]
    assert during > 0, "no line was written while the collector was down: the restart was not mid-run"
    for node, lines in sent.items():
        seqs = sorted(logstore.classify(ln)[0]["seq"] for ln in lines if logstore.classify(ln)[0])
        assert stored[node] == seqs, f"{node}: lost {sorted(set(seqs) - set(stored[node]))}"
    assert counts["json_rows"] == len(writers) * 300  # none lost, none stored twice
    assert counts["other_rows"] == len(writers) * 3  # the non-JSON lines are kept
    assert counts["raw_lines"] == counts["json_rows"] + counts["other_rows"] + counts["raw_duplicates"]
    assert logstore.errors_by_node_stage(con)["errors"].tolist() == [6] * len(writers)


@pytest.mark.integration
def test_central_logs_from_both_nodes_survive_a_collector_restart(mcluster, tmp_path, monkeypatch):
    _central_logs_survive_a_collector_restart(mcluster, tmp_path, monkeypatch)


@pytest.mark.integration
def test_single_node_central_logs_survive_a_collector_restart(tmp_path, monkeypatch):
    _central_logs_survive_a_collector_restart(None, tmp_path, monkeypatch)


@pytest.mark.unit
def test_the_node_burn_in_logs_every_step_and_refuses_bad_sizes(build_tmp, monkeypatch):
    from hpcml.monitor import logs, nodejob

    monkeypatch.setenv("HPCML_NODE", "n1")
    out = nodejob.burn_in(rank=0, steps=6, size=16)
    logs.close_all()
    df = logs.gather()
    assert len(df) == 6 + 2 and set(df["stage"]) == {"burnin"} and list(df["seq"]) == list(range(1, 9))
    assert out["errors"] == 0 and out["steps"] == 6 and out["median_step_ms"] > 0
    with pytest.raises(ValueError, match="steps must be >= 1 and size >= 8"):
        nodejob.burn_in(rank=0, steps=0)
