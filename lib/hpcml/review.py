"""The architecture review as data: every stage's recorded metrics in one table, the
design trade-offs, and the reliability and security practices with the file that
implements each one.

Numbers are read back with :mod:`hpcml.report` (never retyped); a stage whose metrics
are missing raises :class:`hpcml.report.MissingMetricsError` naming the notebook to run.
"""

from __future__ import annotations

import json
import numbers
from pathlib import Path
from typing import Any

from hpcml import claims, paths, report

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

T_COH = "tests/test_manifest_coherence.py::"
#: Each practice: where it is implemented (``file``), the tests that verify it (pytest node ids,
#: ``path::function``) and, where one exists, the :mod:`hpcml.k8s.coherence` check that verifies
#: it on the rendered manifests when the review runs.
PRACTICES: list[dict] = [
    {"area": "reliability", "practice": "multi-AZ control and data planes",
     "how": "three AZs with a NAT gateway each; serving replicas spread hard over two or more zones with a PDB; "
            "EFA training pinned to one AZ (placement group)",
     "file": "manifests/eks/cluster.yaml", "check": "resilience",
     "tests": [T_COH + "test_resilience_across_zones", T_COH + "test_resilience_check_catches"]},
    {"area": "reliability", "practice": "checkpointing that survives a killed worker",
     "how": "atomic ckpt-<step>.pt + latest.json pointer with its hash; restart resumes from it",
     "file": "lib/hpcml/train/checkpoint.py", "check": None,
     "tests": ["tests/test_train_unit.py::test_checkpoint_roundtrip_pointer_and_pruning",
               "tests/test_train_unit.py::test_corrupt_checkpoint_is_a_clear_error",
               "tests/test_train_integration.py::test_restart_after_kill_resumes_and_matches_uninterrupted"]},
    {"area": "reliability", "practice": "SIGTERM -> checkpoint inside the grace period",
     "how": "terminationGracePeriodSeconds above the projected ResNet-50 checkpoint and under the Spot notice; "
            "a preStop hook forwards SIGTERM from sshd (PID 1) to the ranks",
     "file": "manifests/train/mpijob.yaml", "check": "grace",
     "tests": [T_COH + "test_grace_period_exceeds_the_projected_checkpoint", T_COH + "test_grace_check_catches",
               T_COH + "test_prestop_hook_forwards_sigterm_and_waits",
               "tests/test_train_integration.py::test_sigterm_checkpoints_every_rank_at_one_step_and_the_run_resumes"]},
    {"area": "reliability", "practice": "Spot-aware checkpoint interval",
     "how": "Young/Daly sqrt(2 C M) and Daly's expected wall time", "file": "lib/hpcml/cost/models.py", "check": None,
     "tests": ["tests/test_cost_models.py::test_young_daly_interval",
               "tests/test_cost_models.py::test_young_daly_interval_minimises_expected_time"]},
    {"area": "reliability", "practice": "every workload admitted by the namespace's quotas",
     "how": "each workload's total requests (all replicas, HPA maximum, MPIJob launcher + workers) fit every "
            "ResourceQuota whose scope counts its pods, and so does what runs at once (serving at its maximum in "
            "its own PriorityClass-scoped quota, the largest batch job in the other); LimitRange",
     "file": "manifests/cluster/quota.yaml", "check": "quota",
     "tests": [T_COH + "test_every_workload_fits_the_quota_and_limit_range", T_COH + "test_quota_check_catches",
               T_COH + "test_serving_at_its_maximum_beside_the_gpu_job_fits_every_quota"]},
    {"area": "reliability", "practice": "atomic writes everywhere", "how": "temp file + fsync + rename",
     "file": "lib/hpcml/paths.py", "check": None,
     "tests": ["tests/test_review.py::test_atomic_write_leaves_the_old_file_on_failure"]},
    {"area": "security", "practice": "IAM least privilege per workload (IRSA)",
     "how": "every S3 URI a workload names is granted to its role, and no grant goes unused; linted by parliament",
     "file": "manifests/iam/hpcml-s3-trainer.json", "check": "s3",
     "tests": ["tests/test_iam.py::test_least_privilege_per_role", T_COH + "test_every_s3_uri_is_granted_and_nothing_more",
               T_COH + "test_s3_check_catches", "tests/test_iam.py::test_parliament_has_no_findings"]},
    {"area": "security", "practice": "encryption at rest and in transit",
     "how": "SSE-KMS required on upload; the bucket denies requests without TLS; EKS secrets encrypted",
     "file": "manifests/iam/resource/hpcml-data-bucket-policy.json", "check": None,
     "tests": ["tests/test_iam.py::test_bucket_policy_enforces_tls_and_kms"]},
    {"area": "security", "practice": "network policies that match the flow table",
     "how": "default deny, then explicit allows; evaluated against every allowed and forbidden flow",
     "file": "manifests/cluster/network-policies.yaml", "check": "network",
     "tests": [T_COH + "test_flow_table_row", T_COH + "test_network_check_catches", T_COH + "test_evaluator_semantics"]},
    {"area": "security", "practice": "network policies enforced by the CNI",
     "how": "vpc-cni add-on with enableNetworkPolicy in the EKS definition", "file": "manifests/eks/cluster.yaml",
     "check": "cni", "tests": [T_COH + "test_network_policies_are_enforced_by_the_cni", T_COH + "test_cni_check_catches"]},
    {"area": "security", "practice": "Pod Security Admission restricted",
     "how": "non-root, no privilege escalation, capabilities dropped, RuntimeDefault seccomp (read-only root as well)",
     "file": "manifests/cluster/namespaces.yaml", "check": None,
     "tests": ["tests/test_train_launch.py::test_pods_are_restricted_and_mount_volumes",
               "tests/test_security_lint.py::test_manifests_pass_security_lint"]},
    {"area": "performance", "practice": "GPU pods on a CUDA image with their instance type's EFA",
     "how": "the GPU MPIJob runs the CUDA/NCCL image and requests vpc.amazonaws.com/efa where the type has it",
     "file": "docker/Dockerfile.train-cuda", "check": "gpu",
     "tests": [T_COH + "test_gpu_pods_run_cuda_and_request_efa", T_COH + "test_gpu_check_catches",
               "tests/test_dockerfiles.py::test_cuda_training_image"]},
]


def collected(node_id: str, root: Path | None = None) -> bool:
    """True when ``path::function`` names a test function defined in that file (collected by
    reading the file's syntax tree, as pytest would find it; parametrized ids not needed)."""
    import ast

    path, _, func = node_id.partition("::")
    f = (root or paths.repo_root()) / path
    if not f.exists():
        return False
    tree = ast.parse(f.read_text(encoding="utf-8"))
    return any(isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.name == func.split("[")[0]
               for n in tree.body)


def practices(checkpoint_s: float, root: Path | None = None) -> list[dict[str, Any]]:
    """:data:`PRACTICES` with what verifies each one, as it stands now.

    For each practice: ``tests_collected`` (every named test exists), ``problems`` (what its
    :mod:`hpcml.k8s.coherence` check finds on the current rendering; ``None`` when it has no
    check) and ``verified`` (tests collected and no problem).

    Args:
        checkpoint_s: the checkpoint time the grace check compares the grace period with.
    """
    from hpcml.k8s import coherence

    root = root or paths.repo_root()
    out_docs = coherence.rendered()
    rows = []
    for p in PRACTICES:
        kwargs = {"checkpoint_s": checkpoint_s} if p["check"] == "grace" else {}
        probs = coherence.run(p["check"], out_docs, **kwargs) if p["check"] else None
        found = [t for t in p["tests"] if collected(t, root)]
        ok = len(found) == len(p["tests"]) and (root / p["file"]).exists() and not probs
        rows.append({**p, "tests": "\n".join(p["tests"]), "tests_collected": f"{len(found)}/{len(p['tests'])}",
                     "check": p["check"] or "-", "problems": "; ".join(probs) if probs else ("none" if p["check"] else "-"),
                     "verified": ok})
    return rows


def measure_write_rate(folder: Path | None = None, mib: int = 32) -> float:
    """Bytes/s of writing and fsyncing a ``mib`` MiB file in ``folder`` (default: the build's tmp)."""
    import os
    import time

    folder = paths.ensure(folder or paths.build_dir() / "tmp")
    data = os.urandom(mib * 2**20)
    f = folder / "write-rate.bin"
    t0 = time.perf_counter()
    with open(f, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    dt = time.perf_counter() - t0
    f.unlink()
    return len(data) / dt


def checkpoint_projection(mib: int = 32) -> dict[str, Any]:
    """The ResNet-50 checkpoint time the grace check uses: projected at a write rate measured
    here (:func:`measure_write_rate`) and, when 02 recorded one, at the rate of 02's own
    checkpoint writes; the larger (slower) of the two is used.

    Returns:
        ``rate_mb_per_s`` (here), ``projected_s`` (here), ``projected_02_s`` (or None),
        ``checkpoint_mb``, ``used_s`` and ``source`` (which projection ``used_s`` is).
    """
    from hpcml.train.checkpoint import projected_checkpoint_s, resnet50_checkpoint_bytes

    rate = measure_write_rate(mib=mib)
    here = projected_checkpoint_s(rate)
    try:
        of_02 = report.value("02_horovod_training", "checkpoint_projection_resnet50_s")
    except report.MissingMetricsError:
        of_02 = None
    of_02 = of_02 if isinstance(of_02, numbers.Number) and not isinstance(of_02, bool) and of_02 > 0 else None
    used, source = (of_02, "02's checkpoint writes") if of_02 is not None and of_02 > here else (here, "this machine's disk")
    return {"rate_mb_per_s": rate / 1e6, "projected_s": here, "projected_02_s": of_02,
            "checkpoint_mb": resnet50_checkpoint_bytes() / 1e6, "used_s": used, "source": source}


def coherence_table(checkpoint_s: float) -> list[dict[str, Any]]:
    """One row per :mod:`hpcml.k8s.coherence` check on the current rendering: what it checks,
    how many problems it finds and the first of them."""
    from hpcml.k8s import coherence

    out_docs = coherence.rendered()
    rows = []
    for name, (what, _) in coherence.CHECKS.items():
        probs = coherence.run(name, out_docs, **({"checkpoint_s": checkpoint_s} if name == "grace" else {}))
        rows.append({"check": name, "invariant": what, "problems": len(probs), "first": probs[0] if probs else "-"})
    return rows


def flow_table() -> list[dict[str, Any]]:
    """Every row of :data:`hpcml.k8s.flows.FLOWS` with the NetworkPolicies' verdict and its reason."""
    from hpcml.k8s import coherence, flows

    out_docs = coherence.rendered()
    pols = [d for _, d in coherence.k8s_docs(out_docs) if d["kind"] == "NetworkPolicy"]
    nss = [d for _, d in coherence.k8s_docs(out_docs) if d["kind"] == "Namespace"]
    eps = flows.endpoints(out_docs)
    rows = []
    for f in flows.FLOWS:
        ok, why = coherence.flow_allowed(eps[f.src], eps[f.dst], f.port, f.protocol, pols, nss)
        rows.append({"from": f.src, "to": f.dst, "port": f"{f.port}/{f.protocol}",
                     "design": "allow" if f.allowed else "forbid", "policies": "allow" if ok else "block",
                     "agrees": ok == f.allowed, "why": f.why})
    return rows


def _plural(kind: str) -> str:
    k = kind.lower()
    return k + "es" if k.endswith("s") else k[:-1] + "ies" if k.endswith("y") else k + "s"


def _object_count(out_docs: dict[str, Any], namespace: str, key: str) -> int:
    """How many rendered objects of ``namespace`` a ``count/<resource>[.<group>]`` quota key counts."""
    from hpcml.k8s import coherence

    resource, _, group = key[len("count/"):].partition(".")
    return sum(1 for _, d in coherence.k8s_docs(out_docs)
               if d.get("metadata", {}).get("namespace") == namespace and _plural(d["kind"]) == resource
               and (d.get("apiVersion", "").rpartition("/")[0] if "/" in d.get("apiVersion", "") else "") == group)


def quota_scope(quota: dict) -> str:
    """What a ResourceQuota counts, in words: its ``scopeSelector`` expressions and ``scopes``, or
    every pod and object of the namespace when it has neither."""
    spec = quota.get("spec", {})
    exprs = list(spec.get("scopeSelector", {}).get("matchExpressions", []))
    exprs += [{"scopeName": s, "operator": "Exists"} for s in spec.get("scopes", [])]
    if not exprs:
        return "every pod and object"
    words = []
    for e in exprs:
        name, op, vals = e["scopeName"], e.get("operator", "In"), ", ".join(e.get("values", []))
        if name == "PriorityClass":
            words.append({"In": f"pods of PriorityClass {vals}",
                          "NotIn": f"pods whose PriorityClass is not {vals} (pods without one included)",
                          "Exists": "pods with a PriorityClass", "DoesNotExist": "pods without a PriorityClass"}[op])
        else:
            words.append(f"{name} {op} {vals}".strip())
    return " and ".join(words)


def quota_table(out_docs: dict[str, Any] | None = None, namespace: str | None = None) -> list[dict[str, Any]]:
    """One row per ResourceQuota of the workload namespace (``namespace``, default
    :data:`hpcml.k8s.common.NAMESPACE`) in the rendered manifests (``out_docs``, default
    :func:`hpcml.k8s.coherence.rendered`).

    Each row: the quota, what it counts (:func:`quota_scope`), its hard requests (``*_hard``: CPU,
    memory in GiB, GPUs, pods; ``None`` where it sets none) and what the namespace's workloads use of
    it at once (:func:`hpcml.k8s.coherence.concurrent_usage`: every resident workload at its
    maximum plus the largest batch job, each counted only where the scope selects its pods), who
    makes up the CPU figure (``cpu_by``), its object counts (``objects``: rendered objects against
    each ``count/…`` key), the CPU the same pods would need under the same quota without its scope
    (``cpu_unscoped``), the workloads it counts, every hard key exceeded (``over``) and ``fits``.

    Raises:
        ValueError: the namespace has no ResourceQuota.
    """
    from hpcml.k8s import coherence
    from hpcml.k8s.common import NAMESPACE

    ns = namespace or NAMESPACE
    out_docs = coherence.rendered() if out_docs is None else out_docs
    docs = [d for _, d in coherence.k8s_docs(out_docs) if d.get("metadata", {}).get("namespace") == ns]
    quotas = [d for d in docs if d["kind"] == "ResourceQuota"]
    if not quotas:
        raise ValueError(f"quota_table: namespace {ns!r} has no ResourceQuota in the rendered manifests")
    lr = next((d for d in docs if d["kind"] == "LimitRange"), None)
    ws = [w for w in coherence.workloads(out_docs) if w.namespace == ns]
    cols = {"cpu": ("requests.cpu", 1), "memory_gib": ("requests.memory", 2**30),
            "gpus": ("requests.nvidia.com/gpu", 1), "pods": ("pods", 1)}
    rows = []
    for q in quotas:
        hard = q["spec"]["hard"]
        use = coherence.concurrent_usage(ws, q, lr)
        unscoped = {**q, "spec": {"hard": hard}}
        row: dict[str, Any] = {"quota": q["metadata"]["name"], "counts": quota_scope(q)}
        for col, (key, div) in cols.items():
            row[f"{col}_hard"] = round(coherence.quantity(hard[key]) / div, 1) if key in hard else None
            row[col] = round(use[key][0] / div, 1) if key in use else None
        row["cpu_by"] = use["requests.cpu"][1] if "requests.cpu" in use else ""
        row["cpu_unscoped"], row["cpu_unscoped_by"] = (
            coherence.concurrent_usage(ws, unscoped, lr)["requests.cpu"] if "requests.cpu" in hard else (None, ""))
        counts = {k: _object_count(out_docs, ns, k) for k in hard if k.startswith("count/")}
        row["objects"] = ", ".join(f"{k} {n} of {hard[k]}" for k, n in counts.items())
        compute = [k for k in hard if not k.startswith("count/")]
        row["workloads"] = [w.ref for w in ws
                            if any(coherence.quota_usage(w, q, lr).get(k, 0.0) for k in compute)]
        over = [f"{k} {used / 2**30 if 'memory' in k else used:g}{'Gi' if 'memory' in k else ''} > {hard[k]}"
                for k, (used, _) in use.items() if used > coherence.quantity(hard[k])]
        over += [f"{k} {n} > {hard[k]}" for k, n in counts.items() if n > int(hard[k])]
        row["over"] = over
        row["fits"] = not over
        rows.append(row)
    return rows


#: The columns of :func:`quota_table` a quota sentence states, with their units.
QUOTA_UNITS = {"cpu": "CPUs", "memory_gib": "GiB", "gpus": "GPUs", "pods": "pods"}


def quota_claims(rows: list[dict[str, Any]], serve: str, train: str) -> Any:
    """Record the quota review of :func:`quota_table` ``rows`` and say it, sentence by sentence.

    Metrics: ``quota_table`` (the rows), ``quotas``, ``quotas_fitting_at_once``, per quota
    ``<quota>_keys_over`` (hard keys what runs at once exceeds), ``quotas_counting_serve_and_training``
    (quotas that count both workload refs ``serve`` and ``train``), ``training_quota_requests_cpu``
    (the requests.cpu of the quota counting ``train``) and ``unscoped_at_once_cpu`` (what the same
    pods would request at once under that quota without its scope). Conclusions:
    ``<quota>_admits_at_once``, ``serving_apart_from_training``, ``serving_scales_beside_training``
    (expected to hold) and ``one_quota_would_fit``.

    Returns:
        The sentences, as one :class:`hpcml.claims.Markdown` to display.

    Raises:
        ValueError: no quota counts ``train`` or ``serve``, or the one counting ``train`` sets no requests.cpu.
    """
    for ref in (serve, train):
        if not any(ref in r["workloads"] for r in rows):
            raise ValueError(f"quota_claims: no ResourceQuota counts {ref!r} (quotas: "
                             f"{', '.join(r['quota'] for r in rows)}); expected a workload ref such as 'MPIJob/name'")
    train_q = next(r for r in rows if train in r["workloads"] and r["cpu_hard"] is not None)
    report.record("quota_table", rows, description="one row per ResourceQuota of the workload namespace: its scope, "
                  "hard requests and what runs under it at once (resident workloads at their maximum + the largest "
                  "batch job)")
    report.record("quotas", len(rows), unit="ResourceQuotas")
    report.record("quotas_fitting_at_once", sum(bool(r["fits"]) for r in rows), unit=f"of {len(rows)}",
                  description="ResourceQuotas that admit every resident workload at its maximum plus the largest batch job")
    said = []
    for r in rows:
        m = r["quota"].replace("-", "_").replace(".", "_")
        report.record(f"{m}_keys_over", len(r["over"]), unit="keys",
                      description=f"hard keys of {r['quota']} that what runs under it at once exceeds")
        ok = report.conclude(f"{m}_admits_at_once", f"{m}_keys_over == 0", "admits them",
                             "does not admit them (" + "; ".join(r["over"]) + ")")
        parts = [f"{{{c}:g}} of {{{c}_hard:g}} {u}" + (" ({cpu_by})" if c == "cpu" and r["cpu_by"] else "")
                 for c, u in QUOTA_UNITS.items() if r[f"{c}_hard"] is not None]
        use = ("What runs under it at once requests " + ", ".join(parts) + " (resident workloads at their maximum; "
               "per figure, the batch job that uses the most of it)") if parts else "It caps object counts only ({objects})"
        said.append(report.say("`{quota}` counts {counts}. " + use + ": it " + ok + ".", **r).text)
    report.record("quotas_counting_serve_and_training",
                  sum(serve in r["workloads"] and train in r["workloads"] for r in rows), unit="ResourceQuotas",
                  description=f"quotas that count both {serve} and {train}")
    report.record("training_quota_requests_cpu", train_q["cpu_hard"], unit="cores",
                  description=f"requests.cpu of {train_q['quota']}, the quota that counts {train}")
    report.record("unscoped_at_once_cpu", train_q["cpu_unscoped"], unit="cores",
                  description=f"CPU requests at once if {train_q['quota']} had no scope: {train_q['cpu_unscoped_by']}")
    apart = report.conclude("serving_apart_from_training", "quotas_counting_serve_and_training == 0",
                            "by separate quotas", "by one quota")
    fits = report.conclude("serving_scales_beside_training", "quotas_fitting_at_once == quotas", "is admitted",
                           "is not admitted", expect=True)
    one = report.conclude("one_quota_would_fit", "unscoped_at_once_cpu <= training_quota_requests_cpu",
                          "would fit as well",
                          "would not fit, and a serving scale-out during training would be rejected at admission")
    said.append(report.say(
        "Serving (`{serve}`) and the GPU job (`{train}`) are counted " + apart + "; serving at its HPA maximum beside "
        "the GPU job " + fits + " ({quotas_fitting_at_once} of {quotas} quotas admit what runs under them at once). "
        "Counted by one unscoped quota of {training_quota_requests_cpu:g} CPUs instead, the same pods would request "
        "{unscoped_at_once_cpu:g} CPUs at once ({by}): they " + one + ".",
        serve=serve, train=train, by=train_q["cpu_unscoped_by"]).text)
    return claims.Markdown("\n\n".join(said))


def s3_table() -> list[dict[str, Any]]:
    """Every S3 use (rendered or declared) with the role that makes it."""
    from hpcml.k8s import coherence

    return [{"role": u.role.rsplit("/", 1)[-1], "action": u.action, "uri": u.uri, "where": u.where}
            for u in coherence.s3_uses(coherence.rendered())]


def resilience_definitions() -> dict[str, Any]:
    """The rendered pieces a multi-AZ design rests on: the EKS zones and NAT, the EFA node
    group's single AZ, the serving Deployment's zone spread and its PDB, the training PDB."""
    from hpcml.k8s import coherence

    out_docs = coherence.rendered()
    cfg = out_docs["eks/cluster.yaml"]
    dep = out_docs["serve/deployment.yaml"][0]["spec"]["template"]["spec"]
    return json.loads(json.dumps({"eks": {"availabilityZones": cfg["availabilityZones"], "vpc.nat": cfg["vpc"]["nat"],
                    "efa node groups": {g["name"]: g.get("availabilityZones") for g in cfg["managedNodeGroups"]
                                        if g.get("efaEnabled")}},
            "serving Deployment topologySpreadConstraints": dep["topologySpreadConstraints"],
            "serving PDB": out_docs["serve/pdb.yaml"][0]["spec"],
            "training PDB": out_docs["cluster/pdb-training.yaml"][0]["spec"]}))


def iam_policies(root: Path | None = None) -> dict[str, str]:
    """``{file name: JSON text}`` of the identity policies the project ships."""
    d = (root or paths.repo_root()) / "manifests" / "iam"
    if not d.exists():
        raise FileNotFoundError(f"{d} does not exist: run python -m hpcml.k8s.render")
    return {p.name: p.read_text(encoding="utf-8") for p in sorted(d.glob("*.json"))}


#: The performance and quality targets each stage is held to:
#: (notebook, metric, target, "min" or "max", how its 95 % interval is known). The interval is
#: ``("metric", name)`` (a recorded half-width), ``("binomial", count metric)`` (an accuracy over
#: that many test samples), ``("exact", why)`` (a deterministic count: no sampling error), or
#: ``None`` (no interval recorded: the verdict stays undecided whatever the point estimate).
TARGETS: list[tuple[str, str, float, str, tuple[str, str] | None]] = [
    ("02_horovod_training", "test_accuracy", 0.97, "min", ("binomial", "test_count")),
    ("02_horovod_training", "scaling_efficiency", 0.90, "min", ("metric", "scaling_efficiency_ci95")),
    ("02_horovod_training", "horovod_overhead_pct", 5.0, "max", ("metric", "horovod_overhead_ci95_pct")),
    # No interval: the engine benchmark (hpcml.data.bench.run_sizes) times each engine once per
    # size, so both ratios are one wall time over another with no repeated sample to take a
    # spread from (the sizes measure different work, the Spark stages split one run). Until the
    # benchmark repeats its runs these two stay undecided whatever their point estimates.
    ("01_spark_preprocessing", "spark_vs_pandas_speedup", 1.0, "min", None),
    ("01_spark_preprocessing", "spark_vs_fastest_ratio", 0.5, "min", None),
    ("03_tuning", "pruning_compute_saving", 3.0, "min", ("exact", "epochs counted in a seeded study")),
    ("04_serving", "batching_throughput_ratio", 3.0, "min", ("metric", "batching_throughput_ratio_ci95")),
    ("04_serving", "batching_throughput_ratio_weight_bound", 3.0, "min",
     ("metric", "batching_throughput_ratio_weight_bound_ci95")),
    ("05_monitoring", "exporter_overhead_pct", 2.0, "max", ("metric", "exporter_overhead_ci95_pct")),
]


def _test_rows() -> int | None:
    """Rows of the test split in the pipeline's dataset manifest (what 02 evaluates on), if built."""
    from hpcml.data.spec import MANIFEST

    f = paths.dataset_dir() / MANIFEST
    try:
        return int(json.loads(f.read_text())["splits"]["test"]["rows"])
    except (OSError, KeyError, ValueError, TypeError):
        return None


def _half_width(nb: str, value: float, interval: tuple[str, str] | None) -> tuple[float | None, str]:
    """(95 % half-width or None, how it was obtained) for one target's recorded value."""
    import math

    metrics = report.load(nb)["metrics"]
    if interval is None:
        return None, "no interval recorded"
    kind, arg = interval
    if kind == "exact":
        return 0.0, f"exact ({arg})"
    m = metrics.get(arg, {}).get("value")
    source = "test samples"
    if kind == "binomial" and not isinstance(m, numbers.Number):
        m, source = _test_rows(), "test rows in the dataset manifest"
    if not isinstance(m, numbers.Number) or isinstance(m, bool) or not math.isfinite(m) or m <= 0:
        return None, f"no interval recorded ({arg} missing)"
    if kind == "binomial":
        return 1.96 * math.sqrt(max(value * (1 - value), 0.0) / m), f"binomial over {int(m):,} {source}"
    return float(m), f"recorded ({arg})"


def targets() -> list[dict[str, Any]]:
    """Each target with its recorded value, 95 % half-width and verdict.

    The verdict is :func:`hpcml.claims.target_verdict`'s: ``met`` only when the whole interval
    clears the target, ``missed`` when the whole of it is on the wrong side, otherwise (or with
    no interval) ``undecided``. ``ratio_to_target`` is value / target for every target (a
    "max" target is met below 1), so a value at or below zero stays finite.
    """
    from hpcml import claims

    out = []
    for nb, metric, target, kind, interval in TARGETS:
        val = report.value(nb, metric)
        hw, how = _half_width(nb, val, interval)
        verdict = claims.UNDECIDED if hw is None else claims.target_verdict(val, hw, target, kind == "min")
        out.append({"notebook": nb, "metric": metric, "value": val, "ci95": hw, "interval": how,
                    "target": f"{'>=' if kind == 'min' else '<='} {target:g}", "verdict": verdict,
                    "higher_is_better": kind == "min", "ratio_to_target": val / target,
                    "ratio_ci95": None if hw is None else hw / target})
    return out


def targets_figure(rows: list[dict[str, Any]], clip: tuple[float, float] = (-3.0, 5.0)):
    """Recorded value / target with its 95 % interval; colour = verdict; 1 = the target.

    A hollow marker has no interval. Values and interval ends beyond ``clip`` are drawn at the
    edge (the table beside the figure has them exact).
    """
    import matplotlib.pyplot as plt
    import numpy as np

    colours = {"met": "#2e7d32", "missed": "#c62828", "undecided": "#9e9e9e"}
    fig, ax = plt.subplots(figsize=(9, 0.5 * len(rows) + 1.4))
    lo_c, hi_c = clip
    for i, r in enumerate(rows):
        x, hw = r["ratio_to_target"], r["ratio_ci95"]
        c = colours[r["verdict"]]
        xc = float(np.clip(x, lo_c, hi_c))
        if hw is None:
            ax.plot([xc], [i], "o", mfc="white", mec=c)
        else:
            lo, hi = np.clip([x - hw, x + hw], lo_c, hi_c)
            ax.errorbar([xc], [i], xerr=[[xc - lo], [hi - xc]], fmt="o", capsize=4, color=c)
    ax.set_yticks(range(len(rows)),
                  [f"{r['metric']} ({r['notebook'][:2]}, {'higher' if r['higher_is_better'] else 'lower'} is better)"
                   for r in rows])
    ax.axvline(1.0, color="black", lw=1)
    ax.set_xlim(lo_c - 0.2, hi_c + 0.2)
    ax.set_xlabel("recorded / target, 95 % interval\ngreen met, red missed, grey undecided; hollow: no interval")
    ax.set_title("targets: met only when the interval clears them")
    fig.tight_layout()
    return fig


def _pm(notebook: str, metric: str) -> str:
    """`` ± <half-width>`` when ``notebook`` recorded the interval ``metric``, else nothing."""
    hw = report.load(notebook)["metrics"].get(metric, {}).get("value")
    return f" ± {hw:.1f}" if isinstance(hw, numbers.Number) and not isinstance(hw, bool) else ""


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
         f"{t['horovod_overhead_pct']:+.1f}%{_pm('02_horovod_training', 'horovod_overhead_ci95_pct')} at world size 1, "
         f"MFU {t['mfu']:.2f}. On shared CPU cores the "
         f"negotiation cycle of Horovod's background thread, the allreduce and the memory bandwidth the workers "
         f"share are what limit it (02 measures each against two processes that do not communicate)."),
        ("What accuracy did you reach and how much did tuning cost?",
         f"Test accuracy {t['test_accuracy']:.4f}; the tuner's best validation accuracy {tu['best_val_accuracy']:.4f}, "
         f"with pruning spending {tu['pruning_compute_saving']:.1f}x less compute; {tu['trials_per_hour_p2']:.0f} trials/hour with 2 workers."),
        ("How do you size the serving fleet?",
         f"One replica sustains at least {s['max_rps_at_p99_50ms']:,.0f} req/s at p99 <= 50 ms (the highest "
         f"concurrency tested still met it, so this is a lower bound; batching gives "
         f"{s['batching_throughput_ratio']:.1f}x the throughput for the small CNN, whose requests are mostly "
         f"HTTP, and {s['batching_throughput_ratio_weight_bound']:.1f}x for a weight-bound MLP); the HPA targets "
         f"a fraction of that, which costs "
         f"${c['serving_usd_per_million']:.4f} per million requests."),
        ("How do you know it is healthy?",
         f"{mo['targets_up']:.0f} scrape targets up; the latency alert fired {mo['alert_time_to_firing_s']:.0f} s after "
         f"the injected fault; exporters cost {mo['exporter_overhead_pct']:+.1f}%"
         f"{_pm('05_monitoring', 'exporter_overhead_ci95_pct')} of training step time."),
        ("What would the full training run cost on AWS?",
         f"${c['cheapest_train_usd']:,.0f} on the cheapest configuration, or {c['fastest_train_hours']:.2f} h on the "
         f"fastest; Spot saves {c['spot_saving_pct']:.0f}% with Young/Daly checkpointing."),
    ]
