"""Alert rules as code: promtool check rules passes on what is rendered (drill, production and
the PrometheusRule manifest), promtool unit tests prove each alert fires and stays quiet, and
the unit tests themselves fail when a rule is wrong."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from hpcml.k8s import monitor as kmon
from hpcml.monitor import promtool, rules
from hpcml.monitor import dashboard, plots
from hpcml.monitor import spec as monitor_spec
from hpcml.monitor.spec import METRIC_NODE_MEMORY_AVAILABLE, MonitorSpec
from hpcml.serve import spec as serve_spec
from hpcml.train import spec as train_spec

HERE = Path(__file__).parent / "promtool"
PROD_TEST = HERE / "alerts_production_test.yml"
DRILL_TEST = HERE / "alerts_drill_test.yml"


@pytest.fixture(scope="module", autouse=True)
def promtool_present():
    try:
        from hpcml.monitor.prom import find_binary

        find_binary("promtool")
    except Exception as exc:  # noqa: BLE001 - the message names the package
        pytest.skip(str(exc))


@pytest.mark.integration
@pytest.mark.parametrize("t", [rules.PRODUCTION, rules.DRILL], ids=["production", "drill"])
def test_promtool_check_rules_passes(t, tmp_path):
    rc, out = promtool.check_rules(rules.write_rules(tmp_path / "r.yml", t))
    assert rc == 0 and "SUCCESS: 10 rules found" in out, out


@pytest.mark.integration
def test_prometheusrule_manifest_groups_pass_promtool(tmp_path):
    doc = kmon.prometheus_rule(MonitorSpec())
    f = tmp_path / "from-manifest.yml"
    f.write_text(yaml.safe_dump({"groups": doc["spec"]["groups"]}))
    rc, out = promtool.check_rules(f)
    assert rc == 0, out
    assert doc["spec"]["groups"] == rules.rule_groups(rules.PRODUCTION)


@pytest.mark.integration
@pytest.mark.parametrize("test_file,rule_file,t", [
    (PROD_TEST, "hpcml-alerts.rules.yml", rules.PRODUCTION),
    (DRILL_TEST, "hpcml-alerts-drill.rules.yml", rules.DRILL),
], ids=["production", "drill"])
def test_promtool_unit_tests_pass(test_file, rule_file, t, tmp_path):
    rc, out = promtool.run_rule_tests([test_file], {rule_file: t}, workdir=tmp_path)
    assert rc == 0 and "SUCCESS" in out, out


@pytest.mark.unit
def test_every_alert_has_a_firing_and_a_quiet_case():
    prod = yaml.safe_load(PROD_TEST.read_text())
    cases = [c for tcase in prod["tests"] for c in tcase.get("alert_rule_test", [])]
    for name in rules.ALERTS:
        mine = [c for c in cases if c["alertname"] == name]
        assert any(c["exp_alerts"] for c in mine), f"{name}: no case where it fires"
        assert any(not c["exp_alerts"] for c in mine), f"{name}: no case where it stays quiet"


@pytest.mark.integration
@pytest.mark.parametrize("change,alert", [
    (dict(latency_p99_s=1.0), "HpcmlServingLatencyP99High"),
    (dict(error_ratio=0.2), "HpcmlServingErrorRatioHigh"),
    (dict(train_stall_s=3600.0), "HpcmlTrainingStalled"),
    (dict(gpu_util_low_pct=2.0), "HpcmlGpuIdleDuringTraining"),
    (dict(mem_available_ratio=0.01), "HpcmlNodeMemoryPressure"),
    (dict(target_down_for="30m"), "HpcmlTargetDown"),
    (dict(node_job="node"), "HpcmlNodeDown"),
], ids=["latency", "errors", "stall", "gpu-idle", "memory", "target-down", "node-down-job"])
def test_unit_tests_catch_a_wrong_threshold(change, alert, tmp_path):
    """The promtool tests are live: a rule with a different threshold fails its case."""
    rc, out = promtool.run_rule_tests([PROD_TEST], {"hpcml-alerts.rules.yml": rules.PRODUCTION.with_(**change)},
                                      workdir=tmp_path)
    assert rc != 0 and f"alertname: {alert}" in out, out


@pytest.mark.unit
@pytest.mark.parametrize("change,err", [
    (dict(window="5 minutes"), "Thresholds.window"),
    (dict(latency_for=""), "Thresholds.latency_for"),
    (dict(error_ratio=1.5), "Thresholds.error_ratio"),
    (dict(mem_available_ratio=0), "Thresholds.mem_available_ratio"),
    (dict(latency_p99_s=-1), "Thresholds.latency_p99_s"),
    (dict(gpu_util_low_pct=150), "Thresholds.gpu_util_low_pct"),
    (dict(node_metrics="collectd"), "Thresholds.node_metrics"),
], ids=["window", "for-empty", "ratio>1", "ratio=0", "negative-latency", "percent>100", "node-metrics"])
def test_thresholds_reject_bad_values(change, err):
    with pytest.raises(ValueError, match=err):
        rules.PRODUCTION.with_(**change)


@pytest.mark.unit
@pytest.mark.parametrize("t,node_job,window", [
    (rules.PRODUCTION, "node-exporter", "[5m]"),
    (rules.DRILL, "node", "[10s]"),
], ids=["production", "drill"])
def test_variants_differ_in_windows_and_both_use_node_exporter_names(t, node_job, window):
    text = yaml.safe_dump(rules.rules_file(t))
    assert "node_memory_MemAvailable_bytes" in text and window in text
    assert METRIC_NODE_MEMORY_AVAILABLE not in text  # the retired sampler's names are gone from the rules
    assert f'up{{job="{node_job}"}} == 0' in text
    alerts = [r["alert"] for g in rules.rule_groups(t) for r in g["rules"] if "alert" in r]
    assert sorted(alerts) == sorted(rules.ALERTS)


def _exported_metric_names() -> set[str]:
    """Every series name the producing stages export: their METRIC_* constants and the
    ``_bucket``/``_sum``/``_count``/``_total`` series Prometheus derives from them."""
    base = {v for m in (serve_spec, train_spec, monitor_spec) for k, v in vars(m).items() if k.startswith("METRIC_")}
    return base | {b + s for b in base for s in ("_bucket", "_sum", "_count", "_total")}


@pytest.mark.unit
def test_every_hpcml_metric_the_rules_dashboard_and_plots_query_is_an_exported_constant():
    exprs = [r["expr"] for t in (rules.PRODUCTION, rules.DRILL) for g in rules.rule_groups(t) for r in g["rules"]]
    exprs += [e for _, _, q in dashboard.PANELS for _, e in q] + [plots.query(n) for n in plots.QUERIES]
    used = {m for e in exprs for m in re.findall(r"\bhpcml_[a-z0-9_]+", e)}
    assert used and used <= _exported_metric_names(), sorted(used - _exported_metric_names())


@pytest.mark.unit
@pytest.mark.parametrize("t", [rules.PRODUCTION, rules.DRILL], ids=["production", "drill"])
def test_the_alerts_nodedown_inhibits_keep_the_node_label(t):
    """Alertmanager's inhibition matches ``equal: [node]``: each inhibited alert aggregates by node."""
    exprs = {r["alert"]: r["expr"] for g in rules.rule_groups(t) for r in g["rules"] if "alert" in r}
    assert set(rules.INHIBITED) <= set(exprs) and rules.ALERT_NODE_DOWN in exprs
    for name in rules.INHIBITED:
        by = re.findall(r"by \(([^)]*)\)", exprs[name])
        assert by and all("node" in [x.strip() for x in b.split(",")] for b in by), (name, exprs[name])
