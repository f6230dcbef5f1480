"""Cluster side of monitoring: what the laptop's Prometheus does, as Kubernetes objects.

* ServiceMonitor (inference Service) and PodMonitor (MPIJob training workers, one
  endpoint per local slot: rank r of a pod serves on ``metrics_port + local_rank``) for
  the Prometheus Operator (kube-prometheus-stack, selected by its ``release`` label).
* PrometheusRule: the same alert and recording rules as the local drill
  (:func:`hpcml.monitor.rules.rule_groups`) with production thresholds.
* NVIDIA DCGM exporter DaemonSet on GPU nodes (toleration + node selector), its Service
  and ServiceMonitor; it labels GPU series with the pod that holds the GPU.
* Grafana dashboard JSON (:mod:`hpcml.monitor.dashboard`) as a file and in a ConfigMap
  labelled ``grafana_dashboard: "1"`` for the Grafana sidecar.
* Alertmanager's config (:func:`hpcml.monitor.alerting.config`, production timers) in a Secret
  that kube-prometheus-stack's Alertmanager loads (``alertmanagerSpec.configSecret``): routes by
  severity, grouping by alertname and node, HpcmlNodeDown inhibiting its node's latency and
  throughput alerts. The notebook's Alertmanager runs the same tree with seconds-long timers.
* Fluent Bit DaemonSet + ConfigMap (:mod:`hpcml.monitor.shipping`) shipping container
  logs to Elasticsearch/OpenSearch and CloudWatch Logs, with its RBAC and IRSA.

Node agents that need host paths (DCGM exporter: the kubelet's pod-resources socket;
Fluent Bit: ``/var/log``) run in their own namespace ``monitoring-agents`` whose Pod
Security level is ``privileged``; ``monitoring`` itself stays ``baseline``.
"""

from __future__ import annotations

import json

from hpcml.aws.account import role_arn
from hpcml.k8s.common import NAMESPACE, PART_OF, labels, meta, restricted_container
from hpcml.monitor import dashboard as dash
import yaml

from hpcml.monitor import alerting, rules, shipping
from hpcml.monitor.spec import MonitorSpec

MON_NS = "monitoring"
AGENTS_NS = "monitoring-agents"
MONITORING_API = "monitoring.coreos.com/v1"

CRD_REQUIRED = {
    (MONITORING_API, "ServiceMonitor"): ["spec.selector", "spec.endpoints", "spec.namespaceSelector"],
    (MONITORING_API, "PodMonitor"): ["spec.selector", "spec.podMetricsEndpoints", "spec.namespaceSelector"],
    (MONITORING_API, "PrometheusRule"): ["spec.groups"],
}


#: every target carries the node it runs on (what HpcmlNodeDown's inhibition matches, ``equal: [node]``)
_NODE_LABEL = {"sourceLabels": ["__meta_kubernetes_pod_node_name"], "targetLabel": "node", "action": "replace"}


def _labels(name: str) -> dict:
    return labels(name, "monitor")


def _meta(name: str, ns: str, spec: MonitorSpec | None = None, **extra) -> dict:
    lab = _labels(name)
    if spec is not None:
        lab["release"] = spec.release
    return meta(name, ns, lab, **extra)


def service_monitor_serve(spec: MonitorSpec) -> dict:
    return {"apiVersion": MONITORING_API, "kind": "ServiceMonitor", "metadata": _meta("hpcml-serve", MON_NS, spec),
            "spec": {"namespaceSelector": {"matchNames": [NAMESPACE]},
                     "selector": {"matchLabels": {"app.kubernetes.io/name": spec.serve_app}},
                     "endpoints": [{"port": spec.serve_port_name, "path": "/metrics", "interval": spec.scrape_interval,
                                    "scrapeTimeout": "10s", "honorLabels": False,
                                    "relabelings": [_NODE_LABEL]}]}}


def pod_monitor_train(spec: MonitorSpec) -> dict:
    """One endpoint per local slot; slot i is reached at <pod IP>:(base + i)."""
    eps = []
    for i in range(spec.train_slots_per_worker):
        ep = {"port": "metrics", "path": "/metrics", "interval": spec.scrape_interval, "scrapeTimeout": "10s"}
        if i:
            ep["relabelings"] = [{"sourceLabels": ["__meta_kubernetes_pod_ip"], "targetLabel": "__address__",
                                  "regex": "(.+)", "replacement": f"$1:{spec.train_metrics_port + i}",
                                  "action": "replace"}]
        ep.setdefault("relabelings", []).append({"targetLabel": "slot", "replacement": str(i), "action": "replace"})
        ep["relabelings"].append(_NODE_LABEL)
        eps.append(ep)
    return {"apiVersion": MONITORING_API, "kind": "PodMonitor", "metadata": _meta("hpcml-train", MON_NS, spec),
            "spec": {"namespaceSelector": {"matchNames": [NAMESPACE]},
                     "selector": {"matchLabels": {"hpcml.io/stage": "train", "app.kubernetes.io/component": "worker"}},
                     "podMetricsEndpoints": eps}}


def prometheus_rule(spec: MonitorSpec) -> dict:
    return {"apiVersion": MONITORING_API, "kind": "PrometheusRule", "metadata": _meta("hpcml-alerts", MON_NS, spec),
            "spec": {"groups": rules.rule_groups(rules.PRODUCTION)}}


def alertmanager_config(spec: MonitorSpec) -> dict:
    """The production ``alertmanager.yml`` (pure)."""
    return alerting.config(spec.alert_webhook, alerting.PRODUCTION_TIMERS)


def alertmanager_secret(spec: MonitorSpec) -> dict:
    return {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": _meta(spec.alertmanager_secret, MON_NS),
            "stringData": {"alertmanager.yaml": yaml.safe_dump(alertmanager_config(spec), sort_keys=False)}}


def agents_namespace() -> dict:
    return {"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": AGENTS_NS, "labels": {
                **PART_OF, "pod-security.kubernetes.io/enforce": "privileged",
                "pod-security.kubernetes.io/audit": "baseline", "pod-security.kubernetes.io/warn": "baseline",
                "pod-security.kubernetes.io/enforce-version": "latest"}}}


def _root_agent_sc() -> dict:
    """A node agent's securityContext: root (it reads host paths, in the privileged agents
    namespace), otherwise as restricted as a workload: no escalation, read-only root, no capabilities."""
    return {**restricted_container(uid=None), "runAsNonRoot": False, "runAsUser": 0}


def _probe(path: str, port: int | str) -> dict:
    return {"httpGet": {"path": path, "port": port}, "periodSeconds": 15, "timeoutSeconds": 3, "failureThreshold": 3}


def dcgm_exporter(spec: MonitorSpec) -> list[dict]:
    """ServiceAccount, DaemonSet (GPU nodes only), Service and ServiceMonitor."""
    name, sel = "dcgm-exporter", {"app.kubernetes.io/name": "dcgm-exporter"}
    container = {
        "name": "exporter", "image": spec.dcgm_image, "imagePullPolicy": "Always",
        "env": [{"name": "DCGM_EXPORTER_LISTEN", "value": ":9400"},
                {"name": "DCGM_EXPORTER_KUBERNETES", "value": "true"},
                {"name": "DCGM_EXPORTER_COLLECTORS", "value": "/etc/dcgm-exporter/default-counters.csv"},
                {"name": "NVIDIA_VISIBLE_DEVICES", "value": "all"}],
        "ports": [{"name": "metrics", "containerPort": 9400, "protocol": "TCP"}],
        "resources": {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"cpu": "500m", "memory": "512Mi"}},
        "readinessProbe": _probe("/health", 9400), "livenessProbe": _probe("/health", 9400),
        "securityContext": _root_agent_sc(),
        "volumeMounts": [{"name": "pod-resources", "mountPath": "/var/lib/kubelet/pod-resources", "readOnly": True},
                         {"name": "tmp", "mountPath": "/tmp"}],
    }
    ds = {"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": _meta(name, AGENTS_NS),
          "spec": {"selector": {"matchLabels": sel},
                   "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1}},
                   "template": {"metadata": {"labels": _labels(name)}, "spec": {
                       "serviceAccountName": name, "automountServiceAccountToken": False,
                       "nodeSelector": {"hpcml.io/accelerator": "nvidia"},
                       "tolerations": [{"key": "nvidia.com/gpu", "operator": "Equal", "value": "present",
                                        "effect": "NoSchedule"}],
                       "securityContext": {"seccompProfile": {"type": "RuntimeDefault"}},
                       "containers": [container],
                       "volumes": [{"name": "pod-resources", "hostPath": {"path": "/var/lib/kubelet/pod-resources",
                                                                          "type": "Directory"}},
                                   {"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}}]}}}}
    svc = {"apiVersion": "v1", "kind": "Service", "metadata": _meta(name, AGENTS_NS),
           "spec": {"selector": sel, "clusterIP": "None",
                    "ports": [{"name": "metrics", "port": 9400, "targetPort": "metrics", "protocol": "TCP"}]}}
    sm = {"apiVersion": MONITORING_API, "kind": "ServiceMonitor", "metadata": _meta(name, MON_NS, spec),
          "spec": {"namespaceSelector": {"matchNames": [AGENTS_NS]}, "selector": {"matchLabels": sel},
                   "endpoints": [{"port": "metrics", "path": "/metrics", "interval": spec.scrape_interval,
                                  "honorLabels": True}]}}
    sa = {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": _meta(name, AGENTS_NS),
          "automountServiceAccountToken": False}
    return [sa, ds, svc, sm]


def grafana_dashboard_configmap() -> dict:
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "hpcml-grafana-dashboard", "namespace": MON_NS,
                         "labels": {**_labels("hpcml-grafana-dashboard"), "grafana_dashboard": "1"},
                         "annotations": {"grafana_folder": "hpcml"}},
            "data": {"hpcml-overview.json": json.dumps(dash.dashboard(), indent=1)}}


def fluent_bit(spec: MonitorSpec) -> list[dict]:
    """ServiceAccount (IRSA), ClusterRole(Binding), ConfigMap, DaemonSet, and a PodMonitor for its metrics."""
    name, sel = "fluent-bit", {"app.kubernetes.io/name": "fluent-bit"}
    sa = {"apiVersion": "v1", "kind": "ServiceAccount",
          "metadata": _meta(name, AGENTS_NS, annotations={
              "eks.amazonaws.com/role-arn": role_arn("hpcml-fluent-bit", spec.account_id)})}
    cr = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
          "metadata": {"name": "hpcml-fluent-bit", "labels": _labels(name)},
          "rules": [{"apiGroups": [""], "resources": ["namespaces", "pods"], "verbs": ["get", "list", "watch"]}]}
    crb = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
           "metadata": {"name": "hpcml-fluent-bit", "labels": _labels(name)},
           "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "hpcml-fluent-bit"},
           "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": AGENTS_NS}]}
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": _meta("fluent-bit-config", AGENTS_NS),
          "data": {"fluent-bit.conf": shipping.fluent_bit_conf(spec.region, spec.es_host, spec.es_port,
                                                               spec.log_group, NAMESPACE, spec.log_retention_days),
                   "parsers.conf": shipping.parsers_conf()}}
    container = {
        "name": "fluent-bit", "image": spec.fluent_bit_image, "imagePullPolicy": "Always",
        "env": [{"name": "AWS_REGION", "value": spec.region}],
        "ports": [{"name": "http-metrics", "containerPort": 2020, "protocol": "TCP"}],
        "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"cpu": "500m", "memory": "256Mi"}},
        "readinessProbe": _probe("/api/v1/health", "http-metrics"),
        "livenessProbe": _probe("/api/v1/health", "http-metrics"),
        "securityContext": _root_agent_sc(),
        "volumeMounts": [{"name": "config", "mountPath": "/fluent-bit/etc/", "readOnly": True},
                         {"name": "varlog", "mountPath": "/var/log", "readOnly": True},
                         {"name": "state", "mountPath": "/var/fluent-bit/state"}],
    }
    ds = {"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": _meta(name, AGENTS_NS),
          "spec": {"selector": {"matchLabels": sel},
                   "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "10%"}},
                   "template": {"metadata": {"labels": _labels(name)}, "spec": {
                       "serviceAccountName": name, "automountServiceAccountToken": True,
                       "priorityClassName": "system-node-critical",
                       "tolerations": [{"operator": "Exists", "effect": "NoSchedule"}],
                       "securityContext": {"seccompProfile": {"type": "RuntimeDefault"}},
                       "terminationGracePeriodSeconds": 30,
                       "containers": [container],
                       "volumes": [{"name": "config", "configMap": {"name": "fluent-bit-config"}},
                                   {"name": "varlog", "hostPath": {"path": "/var/log", "type": "Directory"}},
                                   {"name": "state", "hostPath": {"path": "/var/fluent-bit/state",
                                                                  "type": "DirectoryOrCreate"}}]}}}}
    pm = {"apiVersion": MONITORING_API, "kind": "PodMonitor", "metadata": _meta(name, MON_NS, spec),
          "spec": {"namespaceSelector": {"matchNames": [AGENTS_NS]}, "selector": {"matchLabels": sel},
                   "podMetricsEndpoints": [{"port": "http-metrics", "path": "/api/v2/metrics/prometheus",
                                            "interval": spec.scrape_interval}]}}
    return [sa, cr, crb, cm, ds, pm]


def agent_network_policies() -> list[dict]:
    """Default-deny in ``monitoring-agents``; Prometheus may scrape the agents; Fluent Bit may
    reach DNS and HTTPS (the API server, OpenSearch, CloudWatch Logs)."""
    prom = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": MON_NS}},
            "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}}}

    def np(name: str, pod: dict, types: list[str], **rules) -> dict:
        return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": _meta(name, AGENTS_NS),
                "spec": {"podSelector": pod, "policyTypes": types, **rules}}

    dns = {"to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
                   "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}],
           "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]}
    return [
        np("default-deny", {}, ["Ingress", "Egress"]),
        np("dcgm-exporter", {"matchLabels": {"app.kubernetes.io/name": "dcgm-exporter"}}, ["Ingress"],
           ingress=[{"from": [prom], "ports": [{"protocol": "TCP", "port": 9400}]}]),
        np("fluent-bit", {"matchLabels": {"app.kubernetes.io/name": "fluent-bit"}}, ["Ingress", "Egress"],
           ingress=[{"from": [prom], "ports": [{"protocol": "TCP", "port": 2020}]}],
           egress=[dns, {"ports": [{"protocol": "TCP", "port": 443}]}]),
    ]


def render(spec: MonitorSpec | None = None) -> dict:
    """``{path under manifests/: documents}`` for the monitoring stack."""
    spec = spec or MonitorSpec()
    return {
        "monitoring/namespace-agents.yaml": [agents_namespace(), *agent_network_policies()],
        "monitoring/servicemonitor-serve.yaml": service_monitor_serve(spec),
        "monitoring/podmonitor-train.yaml": pod_monitor_train(spec),
        "monitoring/prometheusrule.yaml": prometheus_rule(spec),
        "monitoring/alertmanager-config.yaml": alertmanager_secret(spec),
        "monitoring/dcgm-exporter.yaml": dcgm_exporter(spec),
        "monitoring/grafana-dashboard-configmap.yaml": grafana_dashboard_configmap(),
        "monitoring/grafana/hpcml-overview.json": dash.dashboard(),
        "monitoring/fluent-bit.yaml": fluent_bit(spec),
    }
