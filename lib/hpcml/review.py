"""The architecture review as data: every stage's recorded metrics in one table, the
design trade-offs, and the reliability and security practices with the file that
implements each one.

Numbers are read back with :mod:`hpcml.report` (never retyped); a stage whose metrics
are missing raises :class:`hpcml.report.MissingMetricsError` naming the notebook to run.
"""

from __future__ import annotations

import numbers
from pathlib import Path
from typing import Any

from hpcml import paths, report

#: The headline metrics each upstream stage promises (the cross-stage contract).
CONTRACT: dict[str, tuple[str, ...]] = {
    "00_cluster_setup": ("slurm_start_s", "slurm_jobs_per_minute", "manifest_count"),
    "01_spark_preprocessing": ("dataset_rows_clean", "rows_quarantined", "spark_vs_pandas_speedup", "spark_vs_fastest_ratio"),
    "02_horovod_training": ("test_accuracy", "train_samples_per_s", "scaling_efficiency",
                            "resnet50_img_per_s_per_worker", "horovod_overhead_pct", "mfu"),
    "03_tuning": ("best_val_accuracy", "pruning_compute_saving", "trials_per_hour_p2"),
    "04_serving": ("max_rps_at_p99_50ms", "batching_throughput_ratio", "batching_throughput_ratio_weight_bound",
                   "p99_ms_batched", "server_overhead_p50_ms"),
    "05_monitoring": ("targets_up", "alert_time_to_firing_s", "exporter_overhead_pct"),
    "06_cost_review": ("cheapest_train_usd", "fastest_train_hours", "serving_usd_per_million", "spot_saving_pct"),
}


def largest_size_metric(notebook: str, prefix: str) -> tuple[str, Any]:
    """(size label, value) of ``<prefix><size>`` at the largest benchmark size a notebook recorded
    (e.g. ``spark_rows_per_s_1m`` when 01 ran 100k and 1M rows)."""
    mult = {"": 1, "k": 10**3, "m": 10**6}
    found = []
    for name, m in report.load(notebook)["metrics"].items():
        tail = name[len(prefix):] if name.startswith(prefix) else ""
        num, unit = tail.rstrip("km"), tail[len(tail.rstrip("km")):]
        if num.isdigit() and unit in mult:
            found.append((int(num) * mult[unit], tail, m["value"]))
    if not found:
        raise report.MissingMetricsError(f"{notebook} recorded no {prefix}<size> metric: re-run notebooks/{notebook}.ipynb")
    _, label, value = max(found)
    return label, value


def contract_values(stages: tuple[str, ...] | None = None) -> dict[str, dict[str, Any]]:
    """``{notebook: {metric: value}}`` for the contracted metrics; clear error if any is missing."""
    out = {nb: {m: report.value(nb, m) for m in CONTRACT[nb]} for nb in (stages or tuple(CONTRACT))}
    if "01_spark_preprocessing" in out:
        size, rps = largest_size_metric("01_spark_preprocessing", "spark_rows_per_s_")
        out["01_spark_preprocessing"].update(spark_largest_size=size, spark_rows_per_s_largest=rps)
    return out


def results_table(stages: tuple[str, ...] | None = None, headline_only: bool = False) -> list[dict[str, Any]]:
    """One row per recorded scalar metric: notebook, metric, value, unit, headline, description.

    Every stage in ``stages`` (default: all of :data:`CONTRACT`) must have been run and must
    hold its contracted metrics.
    """
    stages = stages or tuple(CONTRACT)
    contract_values(stages)  # fails first, naming the notebook to run
    rows = []
    for nb in stages:
        for name, m in report.load(nb)["metrics"].items():
            val = m.get("value")
            if isinstance(val, bool) or not isinstance(val, (numbers.Number, str)):
                continue  # tables and lists stay in their own notebook
            if headline_only and not m.get("headline"):
                continue
            rows.append({"notebook": nb, "metric": name, "value": val, "unit": m.get("unit", ""),
                         "headline": bool(m.get("headline")), "description": m.get("description", "")})
    return rows


TRADEOFFS: dict[str, dict[str, Any]] = {
    "On-prem HPC vs cloud HPC": {
        "columns": ["aspect", "on-prem cluster", "cloud (ParallelCluster / EKS)"],
        "rows": [
            ["cost shape", "capex amortised over 4-5 years; cheap per core-hour at high utilisation",
             "pay per second; cheap for bursts, dear at 24/7 utilisation without Savings Plans"],
            ["time to capacity", "months (procurement, racking)", "minutes, if quota and capacity exist (GPUs: not always)"],
            ["interconnect", "InfiniBand, tuned once", "EFA on selected types, one AZ + placement group"],
            ["data gravity", "data already there", "egress fees; stage data in S3/FSx first"],
            ["operations", "own staff for hardware, scheduler, storage", "managed control planes; you still own images, IAM, cost"],
        ]},
    "EMR vs Spark on EKS": {
        "columns": ["aspect", "EMR (on EC2 / Serverless)", "Spark on EKS (spark-operator / EMR on EKS)"],
        "rows": [
            ["setup", "managed cluster, tuned Spark runtime", "one more workload on the shared cluster"],
            ["utilisation", "cluster per job or long-running cluster", "bin-packed with training/serving pods"],
            ["isolation", "separate cluster = strong", "namespaces, quotas, IRSA, network policies"],
            ["cost", "EMR fee on top of EC2", "EC2 only (EMR on EKS adds a per-vCPU fee)"],
            ["skills", "EMR console, steps", "Kubernetes manifests, operators"],
        ]},
    "SageMaker training vs MPIJob on EKS": {
        "columns": ["aspect", "SageMaker training job", "MPIJob (kubeflow) on EKS"],
        "rows": [
            ["provisioning", "per job, managed; Spot with managed checkpoints", "nodes from Karpenter/node groups; you handle Spot"],
            ["price", "SageMaker instance premium over EC2", "EC2 price; cluster overhead shared"],
            ["control", "container + script contract", "full pod spec: affinity, tolerations, sidecars"],
            ["multi-tenancy", "account-level quotas", "priority classes, quotas, preemption"],
        ]},
    "KServe vs a custom server": {
        "columns": ["aspect", "KServe", "custom server (this project's)"],
        "rows": [
            ["features", "scale-to-zero (Knative), canaries, transformers, v2 protocol", "exactly what is needed: v2 protocol, dynamic batching, /metrics"],
            ["operational weight", "Knative + Istio/Kourier + cert-manager", "a Deployment, Service, HPA, Ingress"],
            ["cold start", "scale-to-zero means cold starts", "min replicas >= 1, no cold start"],
            ["debuggability", "more moving parts", "one process you can read"],
        ]},
    "Karpenter vs Cluster Autoscaler": {
        "columns": ["aspect", "Karpenter", "Cluster Autoscaler"],
        "rows": [
            ["unit of scaling", "picks instance types per pending pod batch", "grows pre-defined node groups (ASGs)"],
            ["speed", "launches EC2 directly (tens of seconds)", "ASG round-trip (minutes)"],
            ["Spot", "price-capacity-optimised across many types, consolidation", "one ASG per instance-type mix"],
            ["GPU", "NodePool with taints and GPU families", "a node group per GPU type"],
            ["maturity / portability", "AWS-first (now multi-cloud beta)", "every cloud, long history"],
        ]},
}

PRACTICES: list[dict[str, str]] = [
    # area, practice, how, file (relative to the repo), evidence (a string the file contains)
    {"area": "reliability", "practice": "multi-AZ control and data planes",
     "how": "three AZs, a NAT gateway per AZ, private API endpoint", "file": "manifests/eks/cluster.yaml",
     "evidence": "HighlyAvailable"},
    {"area": "reliability", "practice": "checkpointing that survives a killed worker",
     "how": "atomic ckpt-<step>.pt + latest.json pointer; restart resumes from it", "file": "lib/hpcml/train/checkpoint.py",
     "evidence": "atomic_write_bytes"},
    {"area": "reliability", "practice": "Spot-aware checkpoint interval",
     "how": "Young/Daly sqrt(2 C M) and Daly's expected wall time", "file": "lib/hpcml/cost/models.py",
     "evidence": "young_daly_interval"},
    {"area": "reliability", "practice": "PodDisruptionBudgets for training",
     "how": "voluntary evictions (drains, consolidation) cannot take a running job's pods", "file": "manifests/cluster/pdb-training.yaml",
     "evidence": "PodDisruptionBudget"},
    {"area": "reliability", "practice": "Spot capacity with fallbacks",
     "how": "Karpenter NodePools across instance families, consolidation", "file": "manifests/karpenter/nodepools.yaml",
     "evidence": "spot"},
    {"area": "reliability", "practice": "atomic writes everywhere", "how": "temp file + fsync + rename",
     "file": "lib/hpcml/paths.py", "evidence": "os.replace"},
    {"area": "security", "practice": "IAM least privilege per workload (IRSA)",
     "how": "each role reads/writes only its stage's S3 prefixes; linted by parliament", "file": "manifests/iam/hpcml-s3-trainer.json",
     "evidence": "checkpoints/*"},
    {"area": "security", "practice": "encryption at rest", "how": "SSE-KMS required on upload; KMS key used only via S3; EKS secrets encrypted",
     "file": "manifests/iam/resource/hpcml-data-bucket-policy.json", "evidence": "aws:kms"},
    {"area": "security", "practice": "encryption in transit", "how": "bucket denies any request without TLS",
     "file": "manifests/iam/resource/hpcml-data-bucket-policy.json", "evidence": "aws:SecureTransport"},
    {"area": "security", "practice": "network policies", "how": "default deny in the namespace, then explicit allows (DNS, HTTPS egress, scrapes)",
     "file": "manifests/cluster/network-policies.yaml", "evidence": "default-deny-all"},
    {"area": "security", "practice": "Pod Security Admission restricted", "how": "non-root, read-only root fs, no privilege escalation",
     "file": "manifests/cluster/namespaces.yaml", "evidence": "restricted"},
    {"area": "security", "practice": "Kubernetes RBAC for people", "how": "data-scientist Role bound to an IAM role mapping",
     "file": "manifests/cluster/rbac.yaml", "evidence": "data-scientist"},
]


def practices(root: Path | None = None) -> list[dict[str, Any]]:
    """:data:`PRACTICES` with ``exists`` and ``evidence_found`` checked against the repo."""
    root = root or paths.repo_root()
    out = []
    for p in PRACTICES:
        f = root / p["file"]
        text = f.read_text(encoding="utf-8") if f.exists() else ""
        out.append({**p, "exists": f.exists(), "evidence_found": p["evidence"] in text})
    return out


def iam_policies(root: Path | None = None) -> dict[str, str]:
    """``{file name: JSON text}`` of the identity policies the project ships."""
    d = (root or paths.repo_root()) / "manifests" / "iam"
    if not d.exists():
        raise FileNotFoundError(f"{d} does not exist: run python -m hpcml.k8s.render")
    return {p.name: p.read_text(encoding="utf-8") for p in sorted(d.glob("*.json"))}


#: The performance and quality targets each stage is held to: (notebook, metric, target, "min" or "max").
TARGETS: list[tuple[str, str, float, str]] = [
    ("02_horovod_training", "test_accuracy", 0.97, "min"),
    ("02_horovod_training", "scaling_efficiency", 0.90, "min"),
    ("02_horovod_training", "horovod_overhead_pct", 5.0, "max"),
    ("01_spark_preprocessing", "spark_vs_pandas_speedup", 1.0, "min"),
    ("01_spark_preprocessing", "spark_vs_fastest_ratio", 0.5, "min"),
    ("03_tuning", "pruning_compute_saving", 3.0, "min"),
    ("04_serving", "batching_throughput_ratio", 3.0, "min"),
    ("04_serving", "batching_throughput_ratio_weight_bound", 3.0, "min"),
    ("05_monitoring", "exporter_overhead_pct", 2.0, "max"),
]


def targets() -> list[dict[str, Any]]:
    """Each target with the recorded value and whether it was met."""
    out = []
    for nb, metric, target, kind in TARGETS:
        val = report.value(nb, metric)
        met = None if val is None else (val >= target if kind == "min" else val <= target)
        out.append({"notebook": nb, "metric": metric, "value": val, "target": f"{'>=' if kind == 'min' else '<='} {target:g}",
                    "met": met, "ratio_to_target": None if val is None else (val / target if kind == "min" else target / max(val, 1e-9))})
    return out


def targets_figure(rows: list[dict[str, Any]]):
    """Horizontal bars: recorded value / target (>= 1 means the target was met)."""
    import matplotlib.pyplot as plt

    rows = [r for r in rows if r["ratio_to_target"] is not None]
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(rows) + 1.2))
    labels = [f"{r['metric']} ({r['notebook'][:2]})" for r in rows]
    vals = [min(r["ratio_to_target"], 5.0) for r in rows]
    ax.barh(labels, vals, color=["#2e7d32" if r["met"] else "#c62828" for r in rows])
    ax.axvline(1.0, color="black", lw=1)
    ax.set_xlabel("recorded / target (>= 1: met; capped at 5)")
    ax.set_title("every stage against the target its issue set")
    fig.tight_layout()
    return fig


def interview(v: dict[str, dict[str, Any]]) -> list[tuple[str, str]]:
    """Questions with answers built from the recorded numbers ``v`` (see :func:`contract_values`)."""
    d, t, tu, s, mo, c = (v[k] for k in ("01_spark_preprocessing", "02_horovod_training", "03_tuning",
                                         "04_serving", "05_monitoring", "06_cost_review"))
    return [
        ("How did you validate and shard the data, and what did Spark buy you?",
         f"{d['dataset_rows_clean']:,} clean rows, {d['rows_quarantined']:,} quarantined with a reason; "
         f"at the largest size benchmarked ({d['spark_largest_size']} rows) Spark ran {d['spark_rows_per_s_largest']:,.0f} rows/s, "
         f"{d['spark_vs_pandas_speedup']:.2f}x pandas and {d['spark_vs_fastest_ratio']:.2f}x the fastest single-machine engine."),
        ("How well does your distributed training scale, and what limits it?",
         f"Scaling efficiency {t['scaling_efficiency']:.2f} from 1 to 2 workers, Horovod overhead "
         f"{t['horovod_overhead_pct']:.1f}% at world size 1, MFU {t['mfu']:.2f}. On shared CPU cores the "
         f"negotiation cycle of Horovod's background thread, the allreduce and the memory bandwidth the workers "
         f"share are what limit it (02 measures each against two processes that do not communicate)."),
        ("What accuracy did you reach and how much did tuning cost?",
         f"Test accuracy {t['test_accuracy']:.4f}; the tuner's best validation accuracy {tu['best_val_accuracy']:.4f}, "
         f"with pruning spending {tu['pruning_compute_saving']:.1f}x less compute; {tu['trials_per_hour_p2']:.0f} trials/hour with 2 workers."),
        ("How do you size the serving fleet?",
         f"One replica sustains {s['max_rps_at_p99_50ms']:,.0f} req/s at p99 <= 50 ms (batching gives "
         f"{s['batching_throughput_ratio']:.1f}x the throughput for the small CNN, whose requests are mostly "
         f"HTTP, and {s['batching_throughput_ratio_weight_bound']:.1f}x for a weight-bound MLP); the HPA targets "
         f"a fraction of that, which costs "
         f"${c['serving_usd_per_million']:.4f} per million requests."),
        ("How do you know it is healthy?",
         f"{mo['targets_up']:.0f} scrape targets up; the latency alert fired {mo['alert_time_to_firing_s']:.0f} s after "
         f"the injected fault; exporters cost {mo['exporter_overhead_pct']:.1f}% of training throughput."),
        ("What would the full training run cost on AWS?",
         f"${c['cheapest_train_usd']:,.0f} on the cheapest configuration, or {c['fastest_train_hours']:.2f} h on the "
         f"fastest; Spot saves {c['spot_saving_pct']:.0f}% with Young/Daly checkpointing."),
    ]
