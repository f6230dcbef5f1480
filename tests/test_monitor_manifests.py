"""Monitoring manifests: the objects the cluster needs, wired to the serving/training labels."""

from __future__ import annotations

import json

import pytest

from hpcml.k8s import monitor as kmon
from hpcml.monitor import dashboard, rules, shipping
from hpcml.monitor.spec import MonitorSpec
from hpcml.serve.spec import METRIC_REQUEST_SECONDS
from hpcml.train.spec import METRIC_SAMPLES

pytestmark = pytest.mark.unit
OUT = kmon.render()


def _docs():
    for rel, content in OUT.items():
        for d in content if isinstance(content, list) else [content]:
            if isinstance(d, dict) and "kind" in d:
                yield rel, d


def _kind(kind, name=None):
    found = [d for _, d in _docs() if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert found, f"no {kind} {name or ''}"
    return found[0]


def test_monitors_select_the_serving_and_training_pods():
    from hpcml.k8s import serve

    sm = _kind("ServiceMonitor", "hpcml-serve")
    assert sm["spec"]["selector"]["matchLabels"] == {"app.kubernetes.io/name": serve.APP}
    assert sm["spec"]["namespaceSelector"]["matchNames"] == ["hpcml"]
    pm = _kind("PodMonitor", "hpcml-train")
    eps = pm["spec"]["podMetricsEndpoints"]
    assert len(eps) == MonitorSpec().train_slots_per_worker
    assert eps[1]["relabelings"][0]["replacement"] == "$1:9101"
    assert all(d["metadata"]["labels"]["release"] == "kube-prometheus-stack"
               for _, d in _docs() if d["apiVersion"] == kmon.MONITORING_API)


def test_prometheusrule_carries_the_production_rules():
    pr = _kind("PrometheusRule")
    assert pr["spec"]["groups"] == rules.rule_groups(rules.PRODUCTION)


def test_dcgm_exporter_runs_only_on_gpu_nodes():
    ds = _kind("DaemonSet", "dcgm-exporter")["spec"]["template"]["spec"]
    assert ds["nodeSelector"] == {"hpcml.io/accelerator": "nvidia"}
    assert {"key": "nvidia.com/gpu", "operator": "Equal", "value": "present", "effect": "NoSchedule"} in ds["tolerations"]
    assert ds["containers"][0]["image"].startswith("nvcr.io/nvidia/k8s/dcgm-exporter:")


def test_dashboard_is_provisioned_and_queries_the_contract_metrics():
    cm = _kind("ConfigMap", "hpcml-grafana-dashboard")
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    board = json.loads(cm["data"]["hpcml-overview.json"])
    assert board == OUT["monitoring/grafana/hpcml-overview.json"] == dashboard.dashboard()
    exprs = " ".join(t["expr"] for p in board["panels"] for t in p["targets"])
    for metric in (f"{METRIC_SAMPLES}_total", f"{METRIC_REQUEST_SECONDS}_bucket", "DCGM_FI_DEV_GPU_UTIL"):
        assert metric in exprs
    assert len({p["id"] for p in board["panels"]}) == len(board["panels"])


def test_fluent_bit_ships_to_both_backends_with_rbac():
    conf = _kind("ConfigMap", "fluent-bit-config")["data"]["fluent-bit.conf"]
    assert "Name                es" in conf and "Name                cloudwatch_logs" in conf
    assert "Merge_Parser        hpcml_json" in conf and "/var/log/containers/*_hpcml_*.log" in conf
    cr = _kind("ClusterRole", "hpcml-fluent-bit")
    assert cr["rules"][0]["verbs"] == ["get", "list", "watch"]
    crb = _kind("ClusterRoleBinding", "hpcml-fluent-bit")
    sa = _kind("ServiceAccount", "fluent-bit")
    assert crb["subjects"][0] == {"kind": "ServiceAccount", "name": "fluent-bit", "namespace": sa["metadata"]["namespace"]}
    assert sa["metadata"]["annotations"]["eks.amazonaws.com/role-arn"].endswith(":role/hpcml-fluent-bit")


def test_agents_namespace_allows_host_paths_and_monitoring_stays_baseline():
    ns = _kind("Namespace", kmon.AGENTS_NS)
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "privileged"
    for name in ("fluent-bit", "dcgm-exporter"):
        assert _kind("DaemonSet", name)["metadata"]["namespace"] == kmon.AGENTS_NS


@pytest.mark.parametrize("change,err", [
    (dict(account_id="123"), "account_id"), (dict(train_slots_per_worker=0), "train_slots_per_worker"),
    (dict(fluent_bit_image="cr.fluentbit.io/fluent/fluent-bit:latest"), "fluent_bit_image"),
    (dict(dcgm_image="nvcr.io/nvidia/k8s/dcgm-exporter"), "dcgm_image"), (dict(log_group="hpcml"), "log_group"),
], ids=["account", "slots", "latest", "untagged", "log-group"])
def test_spec_rejects_bad_values(change, err):
    with pytest.raises(ValueError, match=f"MonitorSpec.{err}"):
        MonitorSpec(**change)


def test_cloudwatch_retention_must_be_an_allowed_value():
    with pytest.raises(ValueError, match="retention_days=10"):
        shipping.fluent_bit_conf("us-east-1", "es.example.com", 443, "/hpcml/x", retention_days=10)
