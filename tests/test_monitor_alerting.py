"""Alertmanager, node_exporter and the webhook receiver, for real.

* The local Alertmanager config is the production one (manifests/monitoring/alertmanager-config.yaml)
  but for the timers and the receiver's address: a diff shows it.
* ``amtool check-config`` passes both; a malformed config is refused with amtool's message (nothing
  starts), and a running Alertmanager (and Prometheus, for a malformed rule file) keeps running.
* Grouping, the NodeDown inhibition and a silence, with alerts posted to Alertmanager's own API
  and delivered to the project's webhook receiver.
* node_exporter inside each node's namespace listens on the node's address only.
* The drills run once, in notebook 05 (its checks cell asserts them);
  :func:`test_the_alert_drills_of_notebook_05` reads what it recorded.
"""

from __future__ import annotations

import datetime as dt
import json
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from hpcml.k8s import monitor as kmon
from hpcml.monitor import alerting, promtool, rules
from hpcml.monitor.spec import MonitorSpec

ROOT = Path(__file__).resolve().parents[1]
PROD = ROOT / "manifests" / "monitoring" / "alertmanager-config.yaml"


def _need(binary: str) -> None:
    from hpcml.monitor import alertmanager, nodes

    try:
        nodes.find_binary() if binary == "node_exporter" else alertmanager.find_binary(binary)
    except FileNotFoundError as exc:
        from conftest import _cannot_run

        _cannot_run(str(exc))


@pytest.mark.unit
def test_local_config_is_production_but_for_timers_and_the_receiver_address():
    prod = yaml.safe_load(yaml.safe_load(PROD.read_text())["stringData"]["alertmanager.yaml"])
    assert prod == kmon.alertmanager_config(MonitorSpec())
    local = alerting.config("http://127.0.0.1:5001", alerting.LOCAL_TIMERS)
    diff = alerting.diff(prod, local)
    assert sorted(p for p in diff if not p.endswith(".url")) == [f"route.{k}" for k in sorted(alerting.TIMER_KEYS)]
    assert [p for p in diff if p.endswith(".url")] == [f"receivers[{i}].webhook_configs[0].url"
                                                       for i in range(len(alerting.RECEIVERS))]
    # the route tree, grouping and inhibition themselves are identical
    assert prod["inhibit_rules"] == local["inhibit_rules"] and prod["route"]["routes"] == local["route"]["routes"]
    assert prod["inhibit_rules"][0]["equal"] == ["node"]


@pytest.mark.unit
@pytest.mark.parametrize("call,err", [
    (lambda: alerting.config("127.0.0.1:5001"), "webhook_base"),
    (lambda: alerting.config("http://127.0.0.1:5001/alerts"), "webhook_base"),
    (lambda: alerting.Timers("1 s", "2s", "1h"), "Timers.group_wait"),
], ids=["no-scheme", "path", "timer"])
def test_bad_alerting_input_is_refused(call, err):
    with pytest.raises(ValueError, match=err):
        call()


@pytest.mark.integration
@pytest.mark.parametrize("timers", [alerting.PRODUCTION_TIMERS, alerting.LOCAL_TIMERS], ids=["production", "local"])
def test_amtool_accepts_the_rendered_configs(timers, tmp_path):
    from hpcml.monitor import alertmanager

    _need("amtool")
    f = tmp_path / "am.yml"
    f.write_text(yaml.safe_dump(alerting.config("http://127.0.0.1:5001", timers)))
    rc, out = alertmanager.check_config(f)
    assert rc == 0 and "SUCCESS" in out and "1 inhibit rules" in out and "3 receivers" in out, out


def _post_alerts(am, alerts: list[dict]) -> None:
    now = dt.datetime.now(dt.timezone.utc).isoformat().replace("+00:00", "Z")
    body = json.dumps([{"labels": a, "startsAt": now} for a in alerts]).encode()
    req = urllib.request.Request(am.url + "/api/v2/alerts", data=body, method="POST",
                                 headers={"Content-Type": "application/json"})
    urllib.request.urlopen(req, timeout=10).close()


@pytest.mark.integration
def test_grouping_inhibition_silence_and_a_refused_config(build_tmp):
    from hpcml.monitor.alertmanager import Alertmanager, ConfigRefused
    from hpcml.monitor.webhook import Receiver

    _need("prometheus-alertmanager")
    with pytest.raises(ConfigRefused, match="amtool check-config refused"):
        Alertmanager.start("route:\n  receiver: nobody\n", name="bad")  # no such receiver: never started
    with Receiver() as hook, Alertmanager.start(alerting.config(hook.url, alerting.LOCAL_TIMERS)) as am:
        lat = "HpcmlServingLatencyP99High"
        sid = am.silence({"alertname": "HpcmlTrainingStalled"}, time.time() - 1, time.time() + 600, "test")
        t0 = time.time()
        _post_alerts(am, [
            {"alertname": rules.ALERT_NODE_DOWN, "node": "n2", "severity": "page"},
            # three series on n1: one grouped notification; one on n2: inhibited by its NodeDown
            *({"alertname": lat, "node": "n1", "model": m, "severity": "page"} for m in ("a", "b", "c")),
            {"alertname": lat, "node": "n2", "model": "a", "severity": "page"},
            {"alertname": "HpcmlTrainingStalled", "node": "n1", "rank": "0", "severity": "page"},  # silenced
            {"alertname": "HpcmlTargetDown", "node": "n1", "severity": "warning"},
        ])
        hook.wait_for(lambda n: n.alertname == "HpcmlTargetDown", 15)
        hook.wait_for(lambda n: n.alertname == lat, 15)
        time.sleep(3)  # one more group_interval: anything else would have arrived by now
        got = hook.notifications(since=t0)
        by = {(n.alertname, tuple(n.labels("node"))): n for n in got}
        assert by[(lat, ("n1",))].receiver == "page" and len(by[(lat, ("n1",))].alerts) == 3
        assert len([n for n in got if n.alertname == lat]) == 1, got  # not one per series, and not n2's
        assert (lat, ("n2",)) not in by and ("HpcmlTrainingStalled", ("n1",)) not in by
        assert by[("HpcmlTargetDown", ("n1",))].receiver == "ticket"
        held = {(a["labels"]["alertname"], a["labels"]["node"]): a for a in am.alerts()}
        assert held[(lat, "n2")]["inhibitedBy"] and held[(lat, "n1")]["state"] == "active"
        assert held[("HpcmlTrainingStalled", "n1")]["silencedBy"] == [sid]
        # a malformed config: refused with amtool's message, the running one unchanged and serving
        before = am.config_path.read_text()
        with pytest.raises(ConfigRefused, match="yaml"):
            am.apply("route: [unclosed\n")
        assert am.config_path.read_text() == before and am.proc.poll() is None
        # and past amtool, Alertmanager's own reload refuses it too, and stays up
        am.config_path.write_text("route:\n  receiver: nobody\n")
        ok, msg = am.reload()
        assert not ok and "nobody" in msg and am._ready(), msg


@pytest.mark.integration
def test_a_malformed_rule_file_is_refused_and_the_loaded_rules_keep_running(build_tmp):
    from hpcml.monitor.prom import Prometheus, find_binary

    try:
        find_binary("prometheus")
    except Exception as exc:  # noqa: BLE001
        pytest.skip(str(exc))
    f = rules.write_rules(build_tmp / "r.yml", rules.DRILL)
    with Prometheus.start({"prometheus": []}, rule_files=[f], name="reload") as prom:
        n = len(prom.client.rules())
        f.write_text("groups:\n- name: x\n  rules:\n  - alert: Bad\n    expr: up ==\n")
        rc, out = promtool.check_rules(f)  # the tool's own message, before anything loads it
        assert rc != 0 and "parse error" in out, out
        ok, msg = prom.reload()  # and Prometheus itself refuses it, with the reason in its log
        assert not ok and "failed to reload config" in msg and "parse error" in prom.log_tail(), (msg, prom.log_tail())
        assert prom.proc.poll() is None and len(prom.client.rules()) == n == 10


@pytest.mark.integration
def test_node_exporter_on_loopback_when_there_is_no_cluster(build_tmp):
    from hpcml.monitor import nodes

    _need("node_exporter")
    ne = nodes.start_all(None)
    try:
        (ex,) = ne.exporters
        assert ne.mode == "single" and ex.node == nodes.LOCAL_NODE and ex.address == "127.0.0.1"
        with urllib.request.urlopen(f"http://{ex.target}/metrics", timeout=5) as r:
            assert b"node_cpu_seconds_total" in r.read()
    finally:
        codes = ne.stop()
    assert list(codes) == [nodes.LOCAL_NODE] and not nodes._answers(f"http://{ex.target}/metrics")
    with pytest.raises(ValueError, match="one address"):
        nodes.argv("0.0.0.0")


@pytest.mark.integration
def test_node_exporter_in_each_node_listens_on_the_node_address_only(mcluster, build_tmp):
    from hpcml.monitor import nodes

    _need("node_exporter")
    ne = nodes.start_all(mcluster)
    try:
        assert [e.node for e in ne.exporters] == [n.name for n in mcluster.plan.nodes]
        for e, n in zip(ne.exporters, mcluster.plan.nodes):
            listening = mcluster.run_on(n.name, ["ss", "-Hltn"])
            assert f"{n.address}:{nodes.PORT}" in listening and f"*:{nodes.PORT}" not in listening, listening
            assert e.cpus == tuple(n.cpus)
            with urllib.request.urlopen(f"http://{e.target}/metrics", timeout=5) as r:  # from the head
                assert b"node_memory_MemAvailable_bytes" in r.read()
    finally:
        ne.stop()
    assert all(e.proc.poll() is not None for e in ne.exporters)


@pytest.mark.notebooks
@pytest.mark.slow
def test_the_alert_drills_of_notebook_05(pipeline_run):
    """What 05 measured once: the link cut reached the webhook within its target and resolved; the
    latency drill sent one grouped notification; the silence held; the config differs only in timers."""
    runs, build = pipeline_run
    rec = json.loads((build / "metrics" / "05_monitoring.json").read_text())
    m = {k: v["value"] for k, v in rec["metrics"].items()}
    assert m["node_exporters"] >= 1 and m["amtool_check_ok"]
    assert 0 < m["node_down_pending_s"] <= m["node_down_firing_s"] <= m["node_down_delivered_s"]
    assert m["node_down_delivered_s"] <= m["node_down_delivery_target_s"] and m["node_down_resolved_s"] > 0
    assert m["latency_notifications"] == 1 and m["silenced_node_down_delivered"] == 0 and m["silence_suppressed"]
    assert {p.rsplit(".", 1)[-1] for p in m["alertmanager_config_diff"].split(", ")} == {*alerting.TIMER_KEYS, "url"}
