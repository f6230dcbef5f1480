"""The monitoring stage's spec and shared names.

* :class:`MonitorSpec` — everything the cluster's monitoring manifests (:mod:`hpcml.k8s.monitor`)
  depend on.
* The node sampler's metric names (``METRIC_NODE_*``, exported by :mod:`hpcml.monitor.node`)
  that the drill rules and the plots query. The serving and training names live with the
  stages that produce them (:mod:`hpcml.serve.spec`, :mod:`hpcml.train.spec`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from hpcml.aws.account import ACCOUNT_ID, REGION
from hpcml.specbase import fail

#: Prefix of every metric the node sampler exports (node_exporter's names under ``hpcml_node_``).
NODE_PREFIX = "hpcml_node_"
METRIC_NODE_CPU_SECONDS = NODE_PREFIX + "cpu_seconds"  # counter (exposed as ..._total): CPU time per core, mode
METRIC_NODE_MEMORY_TOTAL = NODE_PREFIX + "memory_total_bytes"  # gauge: physical memory
METRIC_NODE_MEMORY_AVAILABLE = NODE_PREFIX + "memory_available_bytes"  # gauge: available without swapping


@dataclass(frozen=True)
class MonitorSpec:
    """Everything the monitoring manifests depend on.

    Args:
        release: the kube-prometheus-stack release label its Prometheus selects objects by.
        scrape_interval: scrape interval of the monitors.
        scrape_timeout: how long a scrape may take before it counts as failed (what a vanished
            node costs each scrape: it does not refuse, it times out).
        evaluation_interval: how often the cluster's Prometheus evaluates the rules. This
            project sets none, so it is the Prometheus Operator's default (``30s``, see
            ``evaluationInterval`` in the operator's ``PrometheusSpec``).
        serve_app / serve_port_name: the inference Service (hpcml.k8s.serve) and its port name.
        train_slots_per_worker: ranks per MPIJob worker pod (one metrics port each).
        train_metrics_port: base port of the training exporter.
        dcgm_image / fluent_bit_image: pinned agent images.
        account_id / region: AWS account (IRSA role ARN) and region.
        es_host / es_port: Elasticsearch (Amazon OpenSearch) endpoint.
        log_group / log_retention_days: CloudWatch Logs destination.
        alert_webhook: base URL of the alert receiver Alertmanager posts to (``<base>/<receiver>``).
        alertmanager_secret: the Secret holding ``alertmanager.yaml``, named in the chart's
            ``alertmanager.alertmanagerSpec.configSecret``.
    """

    release: str = "kube-prometheus-stack"
    scrape_interval: str = "15s"
    scrape_timeout: str = "10s"
    evaluation_interval: str = "30s"
    serve_app: str = "hpcml-serve"
    serve_port_name: str = "http"
    train_slots_per_worker: int = 4
    train_metrics_port: int = 9100
    dcgm_image: str = "nvcr.io/nvidia/k8s/dcgm-exporter:3.3.9-3.6.1-ubuntu22.04"
    fluent_bit_image: str = "cr.fluentbit.io/fluent/fluent-bit:3.2.4"
    account_id: str = ACCOUNT_ID
    region: str = REGION
    es_host: str = f"search-hpcml-logs.{REGION}.es.amazonaws.com"
    es_port: int = 443
    log_group: str = "/hpcml/containers"
    log_retention_days: int = 30
    alert_webhook: str = "http://hpcml-alert-receiver.monitoring.svc:9095"
    alertmanager_secret: str = "hpcml-alertmanager"

    def __post_init__(self) -> None:
        if not (self.account_id.isdigit() and len(self.account_id) == 12):
            raise fail(self, "account_id", "12 digits", self.account_id)
        if not 1 <= self.train_slots_per_worker <= 64:
            raise fail(self, "train_slots_per_worker", "1..64", self.train_slots_per_worker)
        if not 1024 <= self.train_metrics_port <= 65535 - self.train_slots_per_worker:
            raise fail(self, "train_metrics_port", f"a port in 1024..{65535 - self.train_slots_per_worker}",
                       self.train_metrics_port)
        for f in ("dcgm_image", "fluent_bit_image"):
            img = getattr(self, f)
            if ":latest" in img or ":" not in img.rsplit("/", 1)[-1]:
                raise fail(self, f, "an image pinned to a tag other than latest", img)
        for f in ("scrape_interval", "scrape_timeout", "evaluation_interval"):
            if not re.fullmatch(r"([0-9]+(ms|s|m|h))+", getattr(self, f)):
                raise fail(self, f, "a Prometheus duration like '15s' or '1m'", getattr(self, f))
        m = re.fullmatch(r"[^.]+\.([a-z0-9-]+)\.es\.amazonaws\.com", self.es_host)
        if m and m.group(1) != self.region:
            raise fail(self, "es_host", f"an OpenSearch endpoint in region {self.region}", self.es_host)
        if not self.log_group.startswith("/"):
            raise fail(self, "log_group", "a path-like name starting with '/'", self.log_group)
