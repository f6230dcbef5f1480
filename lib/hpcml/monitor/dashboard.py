"""The Grafana dashboard as code: training throughput, serving latency, GPU utilisation.

:func:`dashboard` returns the dashboard JSON model (schemaVersion 39) that
``manifests/monitoring`` ships twice: as a file to import by hand and inside a
ConfigMap labelled ``grafana_dashboard: "1"`` that the Grafana sidecar of
kube-prometheus-stack provisions. :data:`PANELS` holds the PromQL of every panel so the
notebook can run the same queries against its local Prometheus.
"""

from __future__ import annotations

from hpcml.serve.spec import METRIC_INFLIGHT, METRIC_QUEUE_DEPTH, METRIC_REQUEST_SECONDS, METRIC_REQUESTS
from hpcml.train.spec import METRIC_ALLREDUCE_SECONDS, METRIC_LOSS, METRIC_SAMPLES, METRIC_STEP_SECONDS

_RATE = "[$__rate_interval]"

#: (title, unit, [(legend, PromQL)]) per panel, in display order. ``$__rate_interval`` is
#: Grafana's; :func:`local_queries` substitutes a fixed window for the local Prometheus.
PANELS: list[tuple[str, str, list[tuple[str, str]]]] = [
    ("Training throughput (samples/s, all ranks)", "short",
     [("{{job}}", f"sum by (job) (rate({METRIC_SAMPLES}_total{_RATE}))")]),
    ("Training throughput per rank (samples/s)", "short",
     [("rank {{rank}}", f"sum by (rank) (rate({METRIC_SAMPLES}_total{_RATE}))")]),
    ("Step time p50 / p99 and allreduce share", "s",
     [("step p50", f"histogram_quantile(0.5, sum by (le) (rate({METRIC_STEP_SECONDS}_bucket{_RATE})))"),
      ("step p99", f"histogram_quantile(0.99, sum by (le) (rate({METRIC_STEP_SECONDS}_bucket{_RATE})))"),
      ("allreduce mean", f"sum(rate({METRIC_ALLREDUCE_SECONDS}_sum{_RATE})) / "
                         f"sum(rate({METRIC_ALLREDUCE_SECONDS}_count{_RATE}))")]),
    ("Training loss", "short", [("rank {{rank}}", METRIC_LOSS)]),
    ("Serving latency p50 / p99", "s",
     [("p50 {{model}}", f"histogram_quantile(0.5, sum by (model, le) "
                        f"(rate({METRIC_REQUEST_SECONDS}_bucket{_RATE})))"),
      ("p99 {{model}}", f"histogram_quantile(0.99, sum by (model, le) "
                        f"(rate({METRIC_REQUEST_SECONDS}_bucket{_RATE})))")]),
    ("Serving requests/s by code", "reqps",
     [("{{code}}", f"sum by (code) (rate({METRIC_REQUESTS}{_RATE}))")]),
    ("Serving queue depth and in-flight", "short",
     [("queue", f"sum({METRIC_QUEUE_DEPTH})"), ("in-flight", f"sum({METRIC_INFLIGHT})")]),
    ("GPU utilisation (DCGM, %)", "percent",
     [("{{Hostname}} gpu{{gpu}} {{pod}}", "DCGM_FI_DEV_GPU_UTIL")]),
    ("GPU memory used (DCGM)", "decmbytes",
     [("{{Hostname}} gpu{{gpu}}", "DCGM_FI_DEV_FB_USED")]),
]


def _panel(pid: int, title: str, unit: str, targets: list[tuple[str, str]]) -> dict:
    return {
        "id": pid, "type": "timeseries", "title": title,
        "datasource": {"type": "prometheus", "uid": "${datasource}"},
        "gridPos": {"h": 8, "w": 12, "x": 12 * ((pid - 1) % 2), "y": 8 * ((pid - 1) // 2)},
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom"}, "tooltip": {"mode": "multi"}},
        "targets": [{"refId": chr(ord("A") + i), "expr": expr, "legendFormat": legend,
                     "datasource": {"type": "prometheus", "uid": "${datasource}"}}
                    for i, (legend, expr) in enumerate(targets)],
    }


def dashboard(uid: str = "hpcml-overview", title: str = "hpcml: training, serving, GPUs") -> dict:
    """The Grafana dashboard JSON model (pure)."""
    return {
        "uid": uid, "title": title, "tags": ["hpcml"], "timezone": "utc", "schemaVersion": 39, "version": 1,
        "editable": True, "refresh": "30s", "time": {"from": "now-1h", "to": "now"},
        "templating": {"list": [{"name": "datasource", "type": "datasource", "query": "prometheus",
                                 "label": "Prometheus", "current": {}}]},
        "annotations": {"list": [{"name": "Alerts", "type": "dashboard", "builtIn": 1, "enable": True,
                                  "datasource": {"type": "grafana", "uid": "-- Grafana --"}}]},
        "panels": [_panel(i + 1, t, u, q) for i, (t, u, q) in enumerate(PANELS)],
    }


def local_queries(window: str = "15s") -> dict[str, list[tuple[str, str]]]:
    """Every panel's queries with ``$__rate_interval`` replaced by ``window``."""
    return {t: [(leg, e.replace("$__rate_interval", window)) for leg, e in q] for t, _, q in PANELS}
