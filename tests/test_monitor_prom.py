"""A real Prometheus (Debian package) scraping real exporters: targets up, a killed exporter
shows as down and HpcmlTargetDown fires while the other targets stay up; a missing binary
gets one message naming the package."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from hpcml.monitor import prom, rules
from hpcml.monitor.node import NodeSampler
from hpcml.proc import free_port

EXPORTER = """
import sys, time
from prometheus_client import Counter, start_http_server
c = Counter("hpcml_test_ticks", "ticks")
start_http_server(int(sys.argv[1]), addr="127.0.0.1")
while True:
    c.inc(); time.sleep(0.1)
"""


@pytest.fixture
def exporter():
    port = free_port()
    p = subprocess.Popen([sys.executable, "-c", EXPORTER, str(port)])
    yield p, f"127.0.0.1:{port}"
    if p.poll() is None:
        p.kill()
    p.wait()


@pytest.mark.unit
@pytest.mark.parametrize("name", ["prometheus", "promtool"])
def test_missing_binary_names_the_debian_package(name, tmp_path):
    with pytest.raises(prom.PrometheusMissing, match=rf"{name} not found .*Debian package 'prometheus'"):
        prom.find_binary(name, tmp_path / "nope")


@pytest.mark.unit
def test_start_without_binary_fails_before_doing_anything(build_tmp, tmp_path):
    with pytest.raises(prom.PrometheusMissing, match="apt-get install prometheus"):
        prom.Prometheus.start({"node": []}, binary=tmp_path / "missing")
    assert not (build_tmp / "prometheus" / "local" / "prometheus.yml").exists()


@pytest.mark.unit
@pytest.mark.parametrize("call,err", [
    (lambda d: prom.build_config([], d, []), "at least one scrape job"),
    (lambda d: prom.build_config(["bad job"], d, []), "job name 'bad job'"),
    (lambda d: prom._write_sd(d / "x.json", ["localhost"]), "host:port"),
], ids=["no-jobs", "bad-job-name", "bad-target"])
def test_config_rejects_bad_input(call, err, tmp_path):
    with pytest.raises(ValueError, match=err):
        call(tmp_path)


@pytest.mark.integration
def test_prometheus_scrapes_and_a_dead_target_fires_target_down(build_tmp, exporter):
    proc, target = exporter
    rule_file = rules.write_rules(build_tmp / "rules.yml", rules.DRILL)
    node = NodeSampler.start()
    p = prom.Prometheus.start({"node": [node.target], "app": [target]}, rule_files=[rule_file])
    try:
        c = p.client
        c.wait_for("sum(up)", lambda v: v == 2, timeout_s=30)
        t = c.targets()
        assert set(t["job"]) == {"node", "app"} and (t["health"] == "up").all(), t
        assert c.wait_for("sum(rate(hpcml_test_ticks_total[5s]))", timeout_s=30) > 0
        r = c.rules()
        assert set(rules.ALERTS) <= set(r["name"]) and (r["health"] != "err").all(), r
        assert c.alert_state("HpcmlTargetDown") == "inactive"

        proc.kill()
        proc.wait()
        timeline = c.watch_alert("HpcmlTargetDown", "firing", timeout_s=60)
        assert timeline[-1][1] == "firing"
        firing = [a for a in c.alerts() if a["alertname"] == "HpcmlTargetDown" and a["state"] == "firing"]
        assert [a["labels"]["job"] for a in firing] == ["app"]
        t = c.targets().set_index("job")
        assert t.loc["app", "health"] == "down" and t.loc["app", "last_error"]
        assert t.loc["node", "health"] == "up"
        assert c.scalar('up{job="node"}') == 1.0
        assert c.query("hpcml_node_memory_total_bytes")[0]["value"] > 0
    finally:
        rc = p.stop()
        node.stop()
    assert rc == 0, p.log_tail()
    assert p.proc.poll() is not None and node.proc.poll() is not None


@pytest.mark.integration
def test_targets_can_be_added_while_running_and_bad_promql_is_reported(build_tmp, exporter):
    _, target = exporter
    p = prom.Prometheus.start({"app": []})
    try:
        c = p.client
        assert c.scalar("count(up)", default=0.0) == 0.0
        p.set_targets("app", [target], labels={"stage": "test"})
        c.wait_for('up{job="app",stage="test"}', lambda v: v == 1, timeout_s=30)
        with pytest.raises(prom.PromQueryError, match="bad_data"):
            c.query("sum(rate(up[5s])")
        with pytest.raises(ValueError, match="unknown scrape job 'nope'"):
            p.set_targets("nope", [target])
        start = time.time()
        time.sleep(2)
        df = c.query_range("up", start - 5, time.time(), step=1, label="job")
        assert list(df.columns) == ["app"] and df["app"].dropna().iloc[-1] == 1.0
    finally:
        p.stop()


@pytest.mark.unit
def test_client_reports_an_unreachable_server():
    c = prom.PromClient(f"http://127.0.0.1:{free_port()}", timeout_s=2)
    with pytest.raises(prom.PromQueryError, match="cannot reach Prometheus"):
        c.query("up")


TRAINER = """
import sys, time
from prometheus_client import Counter, Gauge, start_http_server
samples = Counter("hpcml_train_samples", "samples", ["rank"]).labels("0")
last = Gauge("hpcml_train_last_step_timestamp_seconds", "last step", ["rank"]).labels("0")
start_http_server(int(sys.argv[1]), addr="127.0.0.1")
time.sleep(float(sys.argv[2]))            # start-up: scraped, no step yet
t_end = time.time() + float(sys.argv[3])  # train: 64 samples every 0.1 s = 640 samples/s
while time.time() < t_end:
    time.sleep(0.1); samples.inc(64); last.set(time.time())
time.sleep(60)                            # linger: still scraped, the counter flat
"""


@pytest.mark.integration
def test_rate_inside_the_training_window_is_the_training_rate_and_after_it_is_zero(build_tmp):
    """The 05 bug and its fix against a real Prometheus: a rate() whose window starts after
    training reads 0; evaluated at the last step over the scraped training interval it reads
    the rate the job ran at."""
    from hpcml.monitor import signals

    port = free_port()
    p = prom.Prometheus.start({"train": []})
    p.set_targets("train", [f"127.0.0.1:{port}"], labels={"run": "fake"})
    t0 = time.time()
    job = subprocess.Popen([sys.executable, "-c", TRAINER, str(port), "3", "6"])
    try:
        c = p.client
        c.wait_for('up{job="train"}', lambda v: v == 1, timeout_s=30)
        time.sleep(max(0.0, t0 + 17 - time.time()))  # start-up, 6 s of training, then > 5 s of linger
        now = time.time()
        assert c.scalar('sum(rate(hpcml_train_samples_total{run="fake"}[5s]))') == 0.0  # after training: flat
        raw = c.samples('hpcml_train_last_step_timestamp_seconds{job="train", run="fake"}', at=now, range_s=now - t0 + 5)
        w = signals.training_window(raw)
        assert 3.0 < w.seconds <= 6.5 and w.scrapes["0"] >= 3, w
        rate = c.scalar_at(signals.rate_query("fake", w.range_ms), w.end)
        assert rate == pytest.approx(640.0, rel=0.15), (rate, w)
    finally:
        p.stop()
        job.kill()
        job.wait()


@pytest.mark.integration
def test_a_stack_left_running_is_stopped_when_the_interpreter_exits(build_tmp):
    """A notebook cell that fails after Stack.start never reaches the stop cell; Prometheus, the
    GPU sampler, Alertmanager and node_exporter run in their own session and would outlive the kernel."""
    import os

    code = ("from hpcml.monitor import drill\n"
            "s = drill.Stack.start()\n"
            "print(s.prom.proc.pid, s.node.proc.pid, s.am.proc.pid, *(e.pid for e in s.nodes.exporters), flush=True)\n"
            "raise SystemExit(3)\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "HPCML_BUILD": str(build_tmp)})
    assert res.returncode == 3, res.stderr
    pids = [int(p) for p in res.stdout.split()]
    assert len(pids) == 4, res.stdout  # Prometheus, the GPU sampler, Alertmanager, the loopback node_exporter
    for pid in pids:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and _alive(pid):
            time.sleep(0.1)
        assert not _alive(pid), f"pid {pid} outlived the interpreter that started it"


def _alive(pid: int) -> bool:
    import os

    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:  # a zombie is dead, waiting for its reaper
        return f.read().split(") ")[-1][0] != "Z"
