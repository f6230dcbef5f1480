"""Alert and recording rules as code, rendered to Prometheus rule-file YAML.

One builder, two sets of thresholds: :data:`PRODUCTION` (minutes-long ``rate()``
windows and ``for:`` durations, node_exporter metric names — what the PrometheusRule in
``manifests/monitoring`` carries) and :data:`DRILL` (seconds, node_exporter as job ``node``
— what the notebook's local Prometheus evaluates so an alert can go pending -> firing
while you watch). ``promtool check rules`` and ``promtool test rules`` (tests/promtool)
check both (:mod:`hpcml.monitor.promtool` runs it). Metric names come from the stages that
export them (:mod:`hpcml.serve.spec`, :mod:`hpcml.train.spec`, :mod:`hpcml.monitor.spec`).

Alerts:

==============================  ===========================================================
``HpcmlServingLatencyP99High``  p99 of ``hpcml_serve_request_duration_seconds`` above a threshold
``HpcmlServingErrorRatioHigh``  5xx share of ``hpcml_serve_requests_total`` above a ratio (with traffic)
``HpcmlTrainingStalled``        a rank's ``hpcml_train_last_step_timestamp_seconds`` too old (0 = not started)
``HpcmlGpuIdleDuringTraining``  ``DCGM_FI_DEV_GPU_UTIL`` low on a GPU held by a training worker pod
``HpcmlGpuUtilisationDrop``     a GPU's utilisation fell below half of its own recent level
``HpcmlNodeMemoryPressure``     available / total memory below a ratio
``HpcmlTargetDown``             a scrape target is down (``up == 0``)
``HpcmlNodeDown``               a node's node_exporter is not scraped (``up{job=<node job>} == 0``): the
                                node or its link is gone; it carries the target's ``node`` label
==============================  ===========================================================

The ``node`` label: every target is labelled with the node it runs on (file_sd labels locally,
``__meta_kubernetes_pod_node_name`` in the cluster's monitors). The latency and throughput
alerts (:data:`INHIBITED`) aggregate ``by (..., node)`` so they keep it, which is what lets
Alertmanager's inhibition (:mod:`hpcml.monitor.alerting`, ``equal: [node]``) mute them while
their node is down.

What the GPU rules read. ``DCGM_FI_DEV_GPU_UTIL`` (nvidia-smi's "GPU-Util", NVML's
``utilization.gpu``) is the percentage of the sample period during which *at least one kernel*
was running: not how many SMs worked, nor how full they were. One small kernel kept in flight
reads as fully "utilised", and so does an NCCL kernel spinning on a peer that never answers.
A *low* value is therefore a sound sign of an idle GPU (nothing ran), which is what
``HpcmlGpuIdleDuringTraining`` and ``HpcmlGpuUtilisationDrop`` use it for, and it is in
dcgm-exporter's default counter set that ``manifests/monitoring`` deploys. It cannot say a GPU
is *well* used, and it stays high through an NCCL hang (``HpcmlTrainingStalled`` catches that).
For efficiency, DCGM's profiling fields answer different questions: ``DCGM_FI_PROF_SM_ACTIVE``
(the fraction of cycles an SM has at least one warp resident, averaged over all SMs),
``DCGM_FI_PROF_SM_OCCUPANCY`` (resident warps over the maximum an SM holds: how full the busy
SMs are) and ``DCGM_FI_PROF_DRAM_ACTIVE`` (the fraction of cycles device memory is sending or
receiving data). They need the exporter's profiling counters enabled (not in its default CSV).
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import yaml

from hpcml import paths
from hpcml.k8s.common import NAMESPACE
from hpcml.monitor.spec import METRIC_NODE_MEMORY_AVAILABLE, METRIC_NODE_MEMORY_TOTAL
from hpcml.serve.spec import METRIC_REQUEST_SECONDS, METRIC_REQUESTS
from hpcml.train.spec import METRIC_LAST_STEP_TS, METRIC_SAMPLES

_DURATION = re.compile(r"^([0-9]+(ms|s|m|h|d))+$")
ALERT_NODE_DOWN = "HpcmlNodeDown"
ALERTS = ("HpcmlServingLatencyP99High", "HpcmlServingErrorRatioHigh", "HpcmlTrainingStalled",
          "HpcmlGpuIdleDuringTraining", "HpcmlGpuUtilisationDrop", "HpcmlNodeMemoryPressure", "HpcmlTargetDown",
          ALERT_NODE_DOWN)
#: The alerts a firing HpcmlNodeDown inhibits on the same node (latency and throughput); they carry ``node``.
INHIBITED = ("HpcmlServingLatencyP99High", "HpcmlTrainingStalled")
NODE_METRICS = {
    "node_exporter": ("node_memory_MemAvailable_bytes", "node_memory_MemTotal_bytes"),
    "hpcml": (METRIC_NODE_MEMORY_AVAILABLE, METRIC_NODE_MEMORY_TOTAL),
}


@dataclass(frozen=True)
class Thresholds:
    """Every number the rules depend on.

    Attributes:
        window: ``rate()`` / ``avg_over_time()`` range (>= 4 scrape intervals).
        latency_p99_s: p99 latency above which serving alerts (seconds).
        latency_for: how long the p99 must stay above before firing.
        error_ratio: 5xx share of requests above which serving alerts (0-1).
        error_min_rps: ignore the error ratio below this request rate (noise at low traffic).
        error_for: duration for the error-ratio alert.
        train_stall_s: seconds without a completed step before a rank counts as stalled.
        train_stall_for: duration for the stall alert.
        gpu_util_low_pct: ``DCGM_FI_DEV_GPU_UTIL`` (percent of time any kernel ran) below which
            a training GPU counts as idle.
        gpu_drop_ratio: fire when utilisation falls below this share of its level over ``gpu_baseline``.
        gpu_baseline: the look-back the drop is compared with.
        gpu_for: duration for the GPU alerts.
        mem_available_ratio: available / total memory below which a node is under pressure.
        mem_for: duration for the memory alert.
        target_down_for: duration for the target-down alert.
        node_job: the scrape job of node_exporter (kube-prometheus-stack's ``node-exporter``; ``node`` here).
        node_down_for: duration for the node-down alert.
        node_metrics: ``node_exporter`` (cluster) or ``hpcml`` (the local node sampler).
        train_pod_regex: pods whose GPUs count as training GPUs (MPIJob workers).
    """

    window: str = "5m"
    latency_p99_s: float = 0.1
    latency_for: str = "5m"
    error_ratio: float = 0.05
    error_min_rps: float = 1.0
    error_for: str = "5m"
    train_stall_s: float = 300.0
    train_stall_for: str = "2m"
    gpu_util_low_pct: float = 20.0
    gpu_drop_ratio: float = 0.5
    gpu_baseline: str = "1h"
    gpu_for: str = "15m"
    mem_available_ratio: float = 0.10
    mem_for: str = "5m"
    target_down_for: str = "2m"
    node_job: str = "node-exporter"
    node_down_for: str = "1m"
    node_metrics: str = "node_exporter"
    train_pod_regex: str = ".+-worker-[0-9]+"

    def __post_init__(self) -> None:
        for name in ("window", "latency_for", "error_for", "train_stall_for", "gpu_baseline", "gpu_for",
                     "mem_for", "target_down_for", "node_down_for"):
            v = getattr(self, name)
            if not isinstance(v, str) or not _DURATION.match(v):
                raise ValueError(f"Thresholds.{name}={v!r}: expected a Prometheus duration like '30s' or '5m'")
        for name in ("error_ratio", "mem_available_ratio", "gpu_drop_ratio"):
            if not 0 < getattr(self, name) < 1:
                raise ValueError(f"Thresholds.{name}={getattr(self, name)!r}: expected a ratio in (0, 1)")
        for name in ("latency_p99_s", "train_stall_s", "error_min_rps"):
            if not getattr(self, name) > 0:
                raise ValueError(f"Thresholds.{name}={getattr(self, name)!r}: expected a positive number")
        if not 0 < self.gpu_util_low_pct <= 100:
            raise ValueError(f"Thresholds.gpu_util_low_pct={self.gpu_util_low_pct!r}: expected a percent in (0, 100]")
        if self.node_metrics not in NODE_METRICS:
            raise ValueError(f"Thresholds.node_metrics={self.node_metrics!r}: expected one of {sorted(NODE_METRICS)}")

    def with_(self, **changes) -> "Thresholds":
        return replace(self, **changes)


#: Cluster values (the PrometheusRule in manifests/monitoring).
PRODUCTION = Thresholds()
#: Local drill values: 1 s scrapes, seconds-long windows, node_exporter on every node (job ``node``).
DRILL = Thresholds(window="10s", latency_p99_s=0.15, latency_for="5s", error_for="5s", train_stall_s=15.0,
                   train_stall_for="5s", gpu_baseline="2m", gpu_for="10s", mem_for="10s",
                   target_down_for="3s", node_job="node", node_down_for="3s")


def _alert(name: str, expr: str, for_: str, severity: str, summary: str, description: str, **labels) -> dict:
    return {"alert": name, "expr": expr, "for": for_,
            "labels": {"severity": severity, "team": "ml-platform", **labels},
            "annotations": {"summary": summary, "description": description}}


def _p99(window: str) -> str:
    """p99 request latency per job and model over ``window`` (from the server's histogram)."""
    return f"histogram_quantile(0.99, sum by (job, model, node, le) (rate({METRIC_REQUEST_SECONDS}_bucket[{window}])))"


def serving_rules(t: Thresholds) -> list[dict]:
    w = t.window
    p99 = _p99(w)
    total = f"sum by (job, model) (rate({METRIC_REQUESTS}[{w}]))"
    errors = f'sum by (job, model) (rate({METRIC_REQUESTS}{{code=~"5.."}}[{w}]))'
    return [
        _alert("HpcmlServingLatencyP99High", f"{p99} > {t.latency_p99_s:g}", t.latency_for, "page",
               "Inference p99 latency above {:g} ms".format(t.latency_p99_s * 1000),
               "p99 of {{ $labels.model }} on {{ $labels.job }} is {{ $value | humanizeDuration }} "
               f"(threshold {t.latency_p99_s:g}s over {w}).", stage="serve"),
        _alert("HpcmlServingErrorRatioHigh", f"({errors} / {total}) > {t.error_ratio:g} and {total} > {t.error_min_rps:g}",
               t.error_for, "page", f"More than {t.error_ratio:.0%} of inference requests fail",
               "{{ $value | humanizePercentage }} of {{ $labels.model }} requests answered 5xx "
               f"over {w}.", stage="serve"),
    ]


def training_rules(t: Thresholds) -> list[dict]:
    return [
        _alert("HpcmlTrainingStalled",
               f"time() - max by (job, rank, node) ({METRIC_LAST_STEP_TS} > 0) > {t.train_stall_s:g}",
               t.train_stall_for, "page", "A training rank has completed no step recently",
               "Rank {{ $labels.rank }} of {{ $labels.job }} last finished a step {{ $value | humanizeDuration }} "
               "ago (a hung allreduce, a dead peer or a stuck data loader).", stage="train"),
    ]


def gpu_rules(t: Thresholds) -> list[dict]:
    sel = f'DCGM_FI_DEV_GPU_UTIL{{namespace="{NAMESPACE}", pod=~"{t.train_pod_regex}"}}'
    return [
        _alert("HpcmlGpuIdleDuringTraining", f"avg_over_time({sel}[{t.window}]) < {t.gpu_util_low_pct:g}",
               t.gpu_for, "warning", "A GPU held by a training worker is nearly idle",
               "GPU {{ $labels.gpu }} on {{ $labels.Hostname }} (pod {{ $labels.pod }}) averages "
               "{{ $value }}% utilisation: input-bound, waiting on the network, or hung.", stage="train"),
        _alert("HpcmlGpuUtilisationDrop",
               f"avg_over_time({sel}[{t.window}]) < {t.gpu_drop_ratio:g} * "
               f"avg_over_time({sel}[{t.gpu_baseline}] offset {t.window})",
               t.gpu_for, "warning", "GPU utilisation fell well below its recent level",
               "GPU {{ $labels.gpu }} of pod {{ $labels.pod }} dropped to {{ $value }}% "
               f"(< {t.gpu_drop_ratio:.0%} of its {t.gpu_baseline} average).", stage="train"),
    ]


def node_rules(t: Thresholds) -> list[dict]:
    avail, total = NODE_METRICS[t.node_metrics]
    return [
        _alert("HpcmlNodeMemoryPressure", f"{avail} / {total} < {t.mem_available_ratio:g}", t.mem_for, "warning",
               "Node memory nearly exhausted",
               "{{ $labels.instance }} has {{ $value | humanizePercentage }} of its memory available.", stage="node"),
    ]


def scrape_rules(t: Thresholds) -> list[dict]:
    return [
        _alert("HpcmlTargetDown", "up == 0", t.target_down_for, "warning", "A scrape target is down",
               "{{ $labels.job }} / {{ $labels.instance }} has not answered scrapes for " + t.target_down_for + ".",
               stage="monitor"),
        _alert(ALERT_NODE_DOWN, f'up{{job="{t.node_job}"}} == 0', t.node_down_for, "page", "A node is unreachable",
               "node_exporter on {{ $labels.node }} ({{ $labels.instance }}) has not answered scrapes for "
               + t.node_down_for + ": the node or its link is down.", stage="node"),
    ]


def recording_rules(t: Thresholds) -> list[dict]:
    w = t.window
    return [
        {"record": "hpcml:train_samples_per_second:rate",
         "expr": f"sum by (job, rank) (rate({METRIC_SAMPLES}_total[{w}]))"},
        {"record": "hpcml:serve_request_duration_seconds:p99", "expr": _p99(w)},
    ]


def rule_groups(t: Thresholds = PRODUCTION, interval: str | None = None) -> list[dict]:
    """The rule groups (pure); ``interval`` sets each group's evaluation interval."""
    groups = [("hpcml-recording", recording_rules(t)), ("hpcml-serving", serving_rules(t)),
              ("hpcml-training", training_rules(t)), ("hpcml-gpu", gpu_rules(t)),
              ("hpcml-node", node_rules(t)), ("hpcml-scrape", scrape_rules(t))]
    return [{"name": n, **({"interval": interval} if interval else {}), "rules": r} for n, r in groups]


def rules_file(t: Thresholds = PRODUCTION, interval: str | None = None) -> dict:
    """A Prometheus rule file: ``{"groups": [...]}``."""
    return {"groups": rule_groups(t, interval)}


def write_rules(path: Path | None = None, t: Thresholds = DRILL) -> Path:
    """Write the rule file (default ``build/prometheus/hpcml-alerts.rules.yml``, drill values)."""
    path = Path(path) if path else paths.build_dir() / "prometheus" / "hpcml-alerts.rules.yml"
    return paths.atomic_write_text(path, yaml.safe_dump(rules_file(t), sort_keys=False, width=200))


def as_dict(t: Thresholds) -> dict:
    return asdict(t)
