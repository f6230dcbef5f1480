"""Invariants between the rendered manifests that a real API server, admission controller, CNI
or IAM would enforce, checked offline on what :mod:`hpcml.k8s.render` produces.

Each check takes the rendered output (``{path: documents}``, :func:`rendered`) and returns the
problems it finds, one sentence each; an empty list means the invariant holds:

* :func:`quota_problems` — every workload's total requests (all replicas and containers: an
  MPIJob's launcher and workers, a Job's parallelism, a Deployment at its HPA maximum, Spark's
  driver and executors with their memory overhead) fit each ResourceQuota whose scope (e.g. a
  PriorityClass ``scopeSelector``) counts its pods, so do the workloads that run at once (every
  resident one plus the largest batch job: serving at its HPA maximum beside the GPU training
  job), and every container passes its LimitRange (max, request <= limit after defaults);
* :func:`network_problems` — every row of the flow table (:mod:`hpcml.k8s.flows`) gets the
  verdict the design states from an evaluator of the NetworkPolicies (:func:`flow_allowed`:
  podSelector, namespaceSelector, ipBlock with except, ports with endPort, policyTypes,
  isolation = "selected by a policy of that direction");
* :func:`s3_problems` — every S3 URI a workload reads or writes is granted to the role it runs
  as, and every grant of a workload role is used by one (nothing more);
* :func:`cni_problems` — NetworkPolicies are enforced: the EKS definition's vpc-cni add-on sets
  ``enableNetworkPolicy``;
* :func:`gpu_problems` — pods that request GPUs run a CUDA image and request the EFA interfaces
  of their instance type (none where the type has none); CPU pods stay off GPU nodes;
* :func:`grace_problems` — training pods' termination grace period exceeds the checkpoint time
  with a margin, stays inside a Spot interruption notice, and a worker pod whose PID 1 is sshd
  forwards SIGTERM to its ranks in a preStop hook;
* :func:`resilience_problems` — two or more AZs with a NAT gateway each, EFA node groups in one
  AZ, serving replicas spread hard over zones with a PodDisruptionBudget, training pods under one.

:data:`CHECKS` names them; :func:`run` runs one on the current rendering. Pure: reads the
rendered objects (and, for the image check, the Dockerfiles' text it is given).
"""

from __future__ import annotations

import ipaddress
import json
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator

import yaml

from hpcml.k8s import flows
from hpcml.k8s.flows import Endpoint

#: Seconds between a Spot interruption notice and the reclaim (source:
#: https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/spot-instance-termination-notices.html).
SPOT_NOTICE_S = 120
#: Grace margin over the projected checkpoint time: the projection uses a local-disk write rate
#: and a shared volume (EFS/FSx) is slower per client, so the write is allowed this factor...
GRACE_FACTOR = 5.0
#: ...plus this many seconds for the step in flight, the barrier before the save and the preStop scan.
GRACE_FIXED_S = 30.0
#: The default a pod gets when it sets no terminationGracePeriodSeconds.
DEFAULT_GRACE_S = 30


# ---- the rendered output -----------------------------------------------------------------
def rendered() -> dict[str, Any]:
    """``{path under manifests/: documents or text}`` from every builder (as ``render`` writes them)."""
    from hpcml.k8s import render

    out: dict[str, Any] = {}
    for mod in render.builder_modules():
        out.update(mod.render())
    return out


def k8s_docs(out: dict[str, Any]) -> Iterator[tuple[str, dict]]:
    """(path, document) for every rendered object with a ``kind``."""
    for rel, content in out.items():
        if isinstance(content, str):
            continue
        for doc in content if isinstance(content, list) else [content]:
            if isinstance(doc, dict) and "kind" in doc:
                yield rel, doc


def _of_kind(out: dict[str, Any], *kinds: str) -> list[dict]:
    return [d for _, d in k8s_docs(out) if d["kind"] in kinds]


# ---- quantities ----------------------------------------------------------------------------
_SUFFIX = {"": 1, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30,
           "Ti": 2**40}


def quantity(q: Any) -> float:
    """A Kubernetes quantity as a number (CPU in cores, memory in bytes): ``"500m"`` -> 0.5, ``"2Gi"`` -> 2**31."""
    m = re.fullmatch(r"([0-9.]+)([a-zA-Z]*)", str(q).strip())
    if not m or m.group(2) not in _SUFFIX:
        raise ValueError(f"not a Kubernetes quantity: {q!r}")
    return float(m.group(1)) * _SUFFIX[m.group(2)]


def _spark_memory(mem: str) -> float:
    """Spark's ``512m`` / ``4g`` as bytes."""
    return quantity(mem[:-1] + {"m": "Mi", "g": "Gi", "k": "Ki", "t": "Ti"}[mem[-1].lower()])


# ---- workloads: pods x replicas ---------------------------------------------------------------
@dataclass
class Workload:
    """One workload: its kind/name/namespace and its pods as (count, pod spec) pairs."""

    kind: str
    name: str
    namespace: str
    pods: list[tuple[int, dict]] = field(default_factory=list)

    @property
    def ref(self) -> str:
        return f"{self.kind}/{self.name}"


#: Spark on Kubernetes: memory overhead = max(factor x memory, 384 MiB); 0.4 for non-JVM (Python)
#: applications (source: https://spark.apache.org/docs/latest/running-on-kubernetes.html#spark-properties).
SPARK_OVERHEAD_MIN = 384 * 2**20
SPARK_OVERHEAD_FACTOR = {"Python": 0.4, "R": 0.4}


def _spark_pod(app: dict, role: str) -> dict:
    s = app["spec"][role]
    mem = _spark_memory(s["memory"])
    mem += max(SPARK_OVERHEAD_FACTOR.get(app["spec"].get("type", ""), 0.1) * mem, SPARK_OVERHEAD_MIN)
    cpu = str(s.get("cores", 1))
    res = {"requests": {"cpu": cpu, "memory": str(int(mem))},
           "limits": {"cpu": str(s.get("coreLimit", cpu)), "memory": str(int(mem))}}
    return {"containers": [{"name": f"spark-{role}", "image": app["spec"]["image"], "resources": res}]}


def workloads(out: dict[str, Any]) -> list[Workload]:
    """Every workload rendered, with its pods at their maximum count (HPA max, parallelism, replicas)."""
    hpa_max = {(h["metadata"].get("namespace"), h["spec"]["scaleTargetRef"]["name"]): h["spec"]["maxReplicas"]
               for h in _of_kind(out, "HorizontalPodAutoscaler")}
    wls = []
    for _, d in k8s_docs(out):
        kind, meta, spec = d["kind"], d.get("metadata", {}), d.get("spec", {})
        w = Workload(kind, meta.get("name", "?"), meta.get("namespace", "default"))
        if kind in ("Deployment", "StatefulSet", "ReplicaSet"):
            n = max(spec.get("replicas", 1), hpa_max.get((w.namespace, w.name), 0))
            w.pods.append((n, spec["template"]["spec"]))
        elif kind == "Job":
            w.pods.append((spec.get("parallelism", 1), spec["template"]["spec"]))
        elif kind == "MPIJob":
            for rs in spec["mpiReplicaSpecs"].values():
                w.pods.append((rs.get("replicas", 1), rs["template"]["spec"]))
        elif kind == "SparkApplication":
            w.pods += [(1, _spark_pod(d, "driver")), (spec["executor"].get("instances", 1), _spark_pod(d, "executor"))]
        elif kind == "Experiment":  # Katib: parallelTrialCount trial Jobs at once
            job = spec["trialTemplate"]["trialSpec"]["spec"]
            w.pods.append((spec.get("parallelTrialCount", 1) * job.get("parallelism", 1), job["template"]["spec"]))
        elif kind == "InferenceService":
            pred = spec["predictor"]
            w.pods.append((pred.get("maxReplicas", pred.get("minReplicas", 1)), pred))
        else:
            continue
        wls.append(w)
    return wls


# ---- quota and limits ---------------------------------------------------------------------------
def _container_resources(c: dict, limit_range: dict | None) -> dict[str, dict[str, float]]:
    """Requests and limits after the LimitRange defaults (LimitRanger admission runs before the quota)."""
    res = c.get("resources", {})
    req = {k: quantity(v) for k, v in res.get("requests", {}).items()}
    lim = {k: quantity(v) for k, v in res.get("limits", {}).items()}
    for k, v in lim.items():  # API defaulting: a container that sets only a limit gets request = limit
        req.setdefault(k, v)
    for item in (limit_range or {}).get("spec", {}).get("limits", []):
        if item.get("type") == "Container":
            for k, v in item.get("default", {}).items():
                lim.setdefault(k, quantity(v))
            for k, v in item.get("defaultRequest", {}).items():
                req.setdefault(k, quantity(v))
    return {"requests": req, "limits": lim}


def pod_totals(pod: dict, limit_range: dict | None = None) -> dict[str, float]:
    """A pod's quota usage: ``requests.cpu``, ``limits.memory``, ``requests.nvidia.com/gpu``, … (the
    larger of the containers' sum and any init container, as the scheduler and the quota count)."""
    def add(acc: dict, res: dict) -> None:
        for kind in ("requests", "limits"):
            for k, v in res[kind].items():
                key = f"{kind}.{k}"
                acc[key] = acc.get(key, 0.0) + v

    total: dict[str, float] = {}
    for c in pod.get("containers", []):
        add(total, _container_resources(c, limit_range))
    for c in pod.get("initContainers", []):
        one: dict[str, float] = {}
        add(one, _container_resources(c, limit_range))
        for k, v in one.items():
            total[k] = max(total.get(k, 0.0), v)
    return total


def workload_totals(w: Workload, limit_range: dict | None = None) -> dict[str, float]:
    """Quota usage of all of a workload's pods at once (plus ``pods``)."""
    out: dict[str, float] = {"pods": 0.0}
    for n, pod in w.pods:
        out["pods"] += n
        for k, v in pod_totals(pod, limit_range).items():
            out[k] = out.get(k, 0.0) + n * v
    return out


def _fmt(key: str, v: float) -> str:
    if "memory" in key:
        return f"{v / 2**30:.1f}Gi"
    return f"{v:g}"


#: Workloads that run all the time (they are all up at once, at their maximum); the others are
#: batch work, of which the pipeline runs one stage at a time (preprocess, train, tune) beside them.
RESIDENT_KINDS = ("Deployment", "StatefulSet", "ReplicaSet", "InferenceService")


def scope_matches(quota: dict, pod: dict) -> bool:
    """Whether a ResourceQuota counts ``pod``: every ``scopeSelector`` expression must match.
    ``PriorityClass`` is evaluated as the quota admission does (``NotIn`` and ``DoesNotExist`` match
    a pod without a PriorityClass); ``BestEffort``/``NotBestEffort`` from the pod's resources; any other
    scope raises (this checker cannot decide it)."""
    pc = pod.get("priorityClassName", "")
    spec = quota.get("spec", {})
    exprs = list(spec.get("scopeSelector", {}).get("matchExpressions", []))
    exprs += [{"scopeName": s, "operator": "Exists"} for s in spec.get("scopes", [])]
    for e in exprs:
        name, op, vals = e["scopeName"], e.get("operator", "In"), e.get("values", [])
        if name == "PriorityClass":
            ok = {"In": pc in vals, "NotIn": pc not in vals, "Exists": bool(pc), "DoesNotExist": not pc}[op]
        elif name in ("BestEffort", "NotBestEffort"):
            best = not any(c.get("resources", {}).get(k) for c in pod.get("containers", []) for k in ("requests", "limits"))
            ok = best if name == "BestEffort" else not best
        else:
            raise ValueError(f"ResourceQuota {quota['metadata']['name']}: scope {name} is not modelled by this check")
        if not ok:
            return False
    return True


def quota_usage(w: Workload, quota: dict, limit_range: dict | None = None) -> dict[str, float]:
    """What ``w`` uses of ``quota``: :func:`workload_totals` over only the pods the quota's scope counts."""
    return workload_totals(Workload(w.kind, w.name, w.namespace, [(n, p) for n, p in w.pods if scope_matches(quota, p)]),
                           limit_range)


def concurrent_usage(ws: list[Workload], quota: dict, limit_range: dict | None = None) -> dict[str, tuple[float, str]]:
    """Per quota key, the most the namespace's workloads use of ``quota`` at one time, and who:
    every resident workload (:data:`RESIDENT_KINDS`, at its HPA maximum) plus the batch workload
    that uses the most of that key."""
    resident = [w for w in ws if w.kind in RESIDENT_KINDS]
    batch = [w for w in ws if w.kind not in RESIDENT_KINDS]
    out: dict[str, tuple[float, str]] = {}
    res_use = [(w, quota_usage(w, quota, limit_range)) for w in resident]
    batch_use = [(w, quota_usage(w, quota, limit_range)) for w in batch]
    for key in quota["spec"]["hard"]:
        if key.startswith("count/"):
            continue
        used = [(w.ref, u.get(key, 0.0)) for w, u in res_use if u.get(key, 0.0)]
        top = max(((w.ref, u.get(key, 0.0)) for w, u in batch_use), key=lambda t: t[1], default=None)
        if top and top[1]:
            used.append(top)
        out[key] = (sum(v for _, v in used), " + ".join(f"{ref} {_fmt(key, v)}" for ref, v in used))
    return out


def quota_problems(out: dict[str, Any]) -> list[str]:
    """Quotas that the workloads running at once exceed (:func:`concurrent_usage`: the resident
    ones at their maximum plus the largest batch workload, each counted by the quotas whose scope
    selects its pods), workloads that alone exceed a quota, and containers the LimitRange would
    reject (over ``max``, or a request above its limit after defaults)."""
    quotas: dict[str, list[dict]] = {}
    for q in _of_kind(out, "ResourceQuota"):
        quotas.setdefault(q["metadata"]["namespace"], []).append(q)
    limits = {lr["metadata"]["namespace"]: lr for lr in _of_kind(out, "LimitRange")}
    probs = []
    wls = workloads(out)
    for w in wls:
        lr = limits.get(w.namespace)
        for n, pod in w.pods:
            for c in pod.get("containers", []) + pod.get("initContainers", []):
                res = _container_resources(c, lr)
                for k, v in res["requests"].items():
                    if k in res["limits"] and v > res["limits"][k]:
                        probs.append(f"{w.ref} container {c.get('name')}: request {k} {v:g} > limit {res['limits'][k]:g}")
                for item in (lr or {}).get("spec", {}).get("limits", []):
                    for k, v in item.get("max", {}).items():
                        if res["limits"].get(k, 0.0) > quantity(v) or res["requests"].get(k, 0.0) > quantity(v):
                            probs.append(f"{w.ref} container {c.get('name')}: {k} above the LimitRange max {v}")
        for q in quotas.get(w.namespace, []):
            counted = [p for _, p in w.pods if scope_matches(q, p)]
            tot = quota_usage(w, q, lr)
            for key, hard in q["spec"]["hard"].items():
                if key.startswith("count/"):
                    continue
                if key in ("limits.cpu", "limits.memory") and any(
                        key.split(".", 1)[1] not in _container_resources(c, lr)["limits"]
                        for pod in counted for c in pod.get("containers", [])):
                    probs.append(f"{w.ref}: a container sets no {key} and no LimitRange default gives one "
                                 f"(the quota {q['metadata']['name']} on {key} rejects the pod)")
                used = tot.get(key, 0.0)
                if used > quantity(hard):
                    probs.append(f"{w.ref} needs {key} = {_fmt(key, used)} but the {w.namespace} quota "
                                 f"{q['metadata']['name']} allows {hard}")
    for ns, qs in quotas.items():
        mine = [w for w in wls if w.namespace == ns]
        for q in qs:
            for key, (used, who) in concurrent_usage(mine, q, limits.get(ns)).items():
                hard = q["spec"]["hard"][key]
                if used > quantity(hard):
                    probs.append(f"at once, {key} = {_fmt(key, used)} ({who}) but the {ns} quota "
                                 f"{q['metadata']['name']} allows {hard}")
    return probs


# ---- network policies ---------------------------------------------------------------------------
def selector_matches(sel: dict | None, labels: dict[str, str]) -> bool:
    """A LabelSelector (matchLabels and matchExpressions) against labels; ``{}`` matches everything."""
    sel = sel or {}
    if any(labels.get(k) != v for k, v in sel.get("matchLabels", {}).items()):
        return False
    for e in sel.get("matchExpressions", []):
        k, op, vals = e["key"], e["operator"], e.get("values", [])
        if op == "In" and labels.get(k) not in vals or op == "NotIn" and labels.get(k) in vals:
            return False
        if op == "Exists" and k not in labels or op == "DoesNotExist" and k in labels:
            return False
    return True


def _in_block(ip: str, block: dict) -> bool:
    addr = ipaddress.ip_address(ip)
    if addr not in ipaddress.ip_network(block["cidr"]):
        return False
    return not any(addr in ipaddress.ip_network(x) for x in block.get("except", []))


def _peer_matches(peer: dict, other: Endpoint, policy_ns: str, ns_labels: dict[str, dict[str, str]]) -> bool:
    """One ``from``/``to`` entry against the other end. ipBlock matches by address, for pods too
    (vpc-cni pods have VPC addresses and the AWS network policy agent filters by address)."""
    if "ipBlock" in peer:
        return _in_block(other.ip, peer["ipBlock"])
    if other.namespace is None:  # selectors only ever select pods
        return False
    if "namespaceSelector" in peer:
        labels = {**ns_labels.get(other.namespace, {}), "kubernetes.io/metadata.name": other.namespace}
        if not selector_matches(peer["namespaceSelector"], labels):
            return False
    elif other.namespace != policy_ns:  # a bare podSelector means the policy's own namespace
        return False
    return selector_matches(peer.get("podSelector"), other.label_map) if "podSelector" in peer else True


def _port_matches(rule_ports: list[dict] | None, port: int, protocol: str) -> bool:
    if not rule_ports:
        return True
    for p in rule_ports:
        if p.get("protocol", "TCP") != protocol:
            continue
        if "port" not in p:
            return True
        lo = p["port"]
        if isinstance(lo, str):  # a named port: this evaluator's flows use numbers
            continue
        if lo <= port <= p.get("endPort", lo):
            return True
    return False


def _types(policy: dict) -> list[str]:
    spec = policy["spec"]
    return spec.get("policyTypes") or (["Ingress"] + (["Egress"] if "egress" in spec else []))


def _direction_allows(pod: Endpoint, direction: str, other: Endpoint, port: int, protocol: str,
                      policies: list[dict], ns_labels: dict[str, dict[str, str]]) -> tuple[bool, str]:
    key, peers_key = ("ingress", "from") if direction == "Ingress" else ("egress", "to")
    selecting = [p for p in policies if p["metadata"].get("namespace", "default") == pod.namespace
                 and direction in _types(p) and selector_matches(p["spec"].get("podSelector"), pod.label_map)]
    if not selecting:
        return True, f"{pod.name}: no {direction} policy selects it (not isolated)"
    for p in selecting:
        for rule in p["spec"].get(key, []) or []:
            peers = rule.get(peers_key)
            if (not peers or any(_peer_matches(x, other, pod.namespace, ns_labels) for x in peers)) \
                    and _port_matches(rule.get("ports"), port, protocol):
                return True, f"{direction} allowed by {p['metadata']['name']}"
    names = ", ".join(p["metadata"]["name"] for p in selecting)
    return False, f"{pod.name}: {direction} isolated by [{names}] and no rule admits {other.name}:{port}/{protocol}"


def flow_allowed(src: Endpoint, dst: Endpoint, port: int, protocol: str, policies: list[dict],
                 namespaces: list[dict] | None = None) -> tuple[bool, str]:
    """Whether NetworkPolicies let ``src`` open ``port/protocol`` on ``dst``: the source's egress
    and the destination's ingress must both allow it (an outside address has no policies)."""
    ns_labels = {n["metadata"]["name"]: n["metadata"].get("labels", {}) for n in namespaces or []}
    ok_out, why_out = (True, "outside the cluster") if src.namespace is None else \
        _direction_allows(src, "Egress", dst, port, protocol, policies, ns_labels)
    ok_in, why_in = (True, "outside the cluster") if dst.namespace is None else \
        _direction_allows(dst, "Ingress", src, port, protocol, policies, ns_labels)
    return ok_out and ok_in, f"egress: {why_out}; ingress: {why_in}"


def network_problems(out: dict[str, Any], table: Iterable[Any] | None = None) -> list[str]:
    """Rows of the flow table whose verdict differs from what the NetworkPolicies decide."""
    policies = _of_kind(out, "NetworkPolicy")
    namespaces = _of_kind(out, "Namespace")
    eps = flows.endpoints(out)
    probs = []
    for row in table if table is not None else flows.FLOWS:
        ok, why = flow_allowed(eps[row.src], eps[row.dst], row.port, row.protocol, policies, namespaces)
        if ok != row.allowed:
            probs.append(f"{row.src} -> {row.dst} {row.port}/{row.protocol} should be "
                         f"{'allowed' if row.allowed else 'blocked'} ({row.why}) but is "
                         f"{'allowed' if ok else 'blocked'}: {why}")
    return probs


# ---- CNI ------------------------------------------------------------------------------------
def cni_problems(out: dict[str, Any]) -> list[str]:
    """NetworkPolicies are rendered, so the EKS definition must turn on vpc-cni's policy agent."""
    if not _of_kind(out, "NetworkPolicy"):
        return []
    probs = []
    for cfg in _of_kind(out, "ClusterConfig"):
        addons = {a["name"]: a for a in cfg.get("addons", [])}
        cni = addons.get("vpc-cni")
        if cni is None:
            probs.append(f"ClusterConfig/{cfg['metadata']['name']}: no vpc-cni add-on, nothing enforces NetworkPolicies")
            continue
        raw = cni.get("configurationValues") or "{}"
        values = yaml.safe_load(raw) if isinstance(raw, str) else raw
        if str((values or {}).get("enableNetworkPolicy", "")).lower() != "true":
            probs.append(f"ClusterConfig/{cfg['metadata']['name']}: vpc-cni configurationValues lack "
                         f'enableNetworkPolicy: "true", so the NetworkPolicies are accepted but not enforced')
    if not _of_kind(out, "ClusterConfig"):
        probs.append("NetworkPolicies are rendered but no EKS ClusterConfig says which CNI enforces them")
    return probs


# ---- S3 and IAM -------------------------------------------------------------------------------
ACTIONS = {"read": "s3:GetObject", "write": "s3:PutObject", "delete": "s3:DeleteObject"}


@dataclass(frozen=True)
class S3Use:
    """A workload's access to an S3 location: who (role ARN), what (read/write/delete), where, from which definition."""

    role: str
    action: str
    uri: str
    where: str


def _args_uses(args: list[str], role: str, where: str) -> list[S3Use]:
    uses = []
    for flag, actions in (("--input", ("read",)), ("--output", ("write", "read"))):  # a re-run reads its manifest
        if flag in args:
            uri = args[args.index(flag) + 1]
            if uri.startswith("s3://"):
                uses += [S3Use(role, a, uri, where) for a in actions]
    return uses


def _sa_roles(out: dict[str, Any]) -> dict[tuple[str, str], str]:
    return {(s["metadata"].get("namespace", "default"), s["metadata"]["name"]):
            s["metadata"].get("annotations", {}).get("eks.amazonaws.com/role-arn", "")
            for s in _of_kind(out, "ServiceAccount")}


#: Uses that no rendered definition spells out, each with what performs it. The trainer role's
#: S3 access is the job's sync of its shared volume: shards staged from processed/, checkpoints
#: kept under checkpoints/<job>/ (rotation deletes the old ones), the model exported to models/.
#: The tuner exports its study to tuning/. Inference reads models/ when it pulls a model.
#: Ingestion lands the raw lake under raw/ (notebook 01's ``staging.upload_dir``).
DECLARED_USES: tuple[tuple[str, str, str, str], ...] = (
    ("trainer", "read", "processed/mnist/", "staging the shards onto the job's shared volume"),
    ("trainer", "read", "checkpoints/resnet50-train/", "resuming from the last synced checkpoint"),
    ("trainer", "write", "checkpoints/resnet50-train/", "syncing checkpoints off the shared volume"),
    ("trainer", "delete", "checkpoints/resnet50-train/", "checkpoint rotation (keep the newest two)"),
    ("trainer", "write", "models/resnet50-train/", "exporting the trained model"),
    ("tuner", "read", "processed/mnist/", "staging the shards for the Optuna workers"),
    ("tuner", "write", "tuning/mnist-cnn/", "exporting the study"),
    ("inference", "read", "models/best/", "pulling the served model"),
    ("sagemaker", "read", "processed/mnist/", "the SageMaker training job's train channel"),
    ("sagemaker", "read", "checkpoints/resnet50-train/", "SageMaker restoring checkpoints on a Spot restart"),
    ("sagemaker", "write", "checkpoints/resnet50-train/", "SageMaker syncing /opt/ml/checkpoints"),
    ("sagemaker", "delete", "checkpoints/resnet50-train/", "SageMaker mirroring deleted (rotated) checkpoints"),
    ("sagemaker", "write", "models/resnet50-train/", "the training job's model output"),
    ("ingestion", "write", "raw/mnist/", "notebook 01 staging the raw lake (staging.upload_dir)"),
)


def s3_uses(out: dict[str, Any]) -> list[S3Use]:
    """Every S3 location the rendered workloads name, with the role that touches it, plus :data:`DECLARED_USES`."""
    from hpcml.aws.account import data_bucket, role_arn

    roles = _sa_roles(out)
    uses: list[S3Use] = []
    for app in _of_kind(out, "SparkApplication"):
        sa = app["spec"]["driver"].get("serviceAccount", "default")
        role = roles.get((app["metadata"].get("namespace", "default"), sa), "")
        uses += _args_uses(app["spec"].get("arguments", []), role, f"SparkApplication/{app['metadata']['name']}")
    for rel, content in out.items():
        if not isinstance(content, dict) or "kind" in content:
            continue
        if "executionRoleArn" in content and "jobDriver" in content:  # EMR on EKS StartJobRun
            role, args = content["executionRoleArn"], content["jobDriver"]["sparkSubmitJobDriver"].get(
                "entryPointArguments", [])
            uses += _args_uses(args, role, rel)
            log = content.get("configurationOverrides", {}).get("monitoringConfiguration", {}).get(
                "s3MonitoringConfiguration", {}).get("logUri")
            if log:
                uses.append(S3Use(role, "write", log, rel))
        if "PrimaryContainer" in content and "ExecutionRoleArn" in content:  # SageMaker CreateModel
            url = content["PrimaryContainer"].get("ModelDataUrl", "")
            if url.startswith("s3://"):
                uses.append(S3Use(content["ExecutionRoleArn"], "read", url, rel))
    bucket = data_bucket()
    uses += [S3Use(role_arn(f"hpcml-{who}"), action, f"s3://{bucket}/{key}", f"declared: {why}")
             for who, action, key, why in DECLARED_USES]
    return uses


def _statements(policy: dict) -> list[dict]:
    st = policy.get("Statement", [])
    return st if isinstance(st, list) else [st]


def _as_list(x: Any) -> list:
    return x if isinstance(x, list) else [x]


def _grants(policy: dict, action: str) -> list[str]:
    """The object-key patterns (``bucket/prefix/*``) an identity policy allows ``action`` on."""
    out = []
    for s in _statements(policy):
        if s.get("Effect") != "Allow" or not any(a in (action, "s3:*", "*") for a in _as_list(s.get("Action", []))):
            continue
        out += [r.removeprefix("arn:aws:s3:::") for r in _as_list(s.get("Resource", [])) if r.startswith("arn:aws:s3:::")]
    return out


def _list_prefixes(policy: dict, bucket: str) -> list[str]:
    out = []
    for s in _statements(policy):
        if s.get("Effect") == "Allow" and "s3:ListBucket" in _as_list(s.get("Action", [])) \
                and f"arn:aws:s3:::{bucket}" in _as_list(s.get("Resource", [])):
            out += _as_list(s.get("Condition", {}).get("StringLike", {}).get("s3:prefix", ["*"]))
    return out


def _covers(pattern: str, key: str) -> bool:
    """``bucket/processed/*`` covers ``bucket/processed/mnist/`` (a folder) and keys under it."""
    return key.startswith(pattern[:-1]) if pattern.endswith("*") else key == pattern


def s3_problems(out: dict[str, Any]) -> list[str]:
    """URIs a role's policy does not grant (IAM would deny them), grants no use needs, and URIs
    outside the layout (:data:`hpcml.aws.account.S3_PREFIXES`)."""
    from hpcml.aws.account import S3_PREFIXES
    from hpcml.k8s.iam import role_policies

    names = role_policies()
    policies = {f"iam/{n}.json": out.get(f"iam/{n}.json") for n in set(names.values())}
    uses = s3_uses(out)
    probs = []
    for u in uses:
        bucket, _, key = u.uri.removeprefix("s3://").partition("/")
        if key.split("/", 1)[0] not in S3_PREFIXES:
            probs.append(f"{u.where}: {u.uri} is outside the S3 layout ({', '.join(p + '/' for p in S3_PREFIXES)})")
        pol = policies.get(f"iam/{names.get(u.role, '?')}.json")
        if pol is None:
            probs.append(f"{u.where}: role {u.role} has no rendered policy, so {u.action} {u.uri} is denied")
            continue
        if not any(_covers(g, f"{bucket}/{key}") for g in _grants(pol, ACTIONS[u.action])):
            probs.append(f"{u.where}: role {u.role.rsplit('/', 1)[-1]} may not {u.action} {u.uri} "
                         f"({ACTIONS[u.action]} is not granted there)")
        if u.action == "read" and key.endswith("/") and not any(_covers(p, key) for p in _list_prefixes(pol, bucket)):
            probs.append(f"{u.where}: role {u.role.rsplit('/', 1)[-1]} may not list {u.uri} (s3:ListBucket prefix)")
    # nothing more: every grant of a workload role is used by one of its workloads
    for role, name in names.items():
        if name.endswith("data-scientist"):  # a person's role: reads everything, writes the sandbox
            continue
        pol = policies.get(f"iam/{name}.json") or {}
        mine = [u for u in uses if u.role == role]
        for action, s3_action in ACTIONS.items():
            for g in _grants(pol, s3_action):
                if not any(u.action == action and _covers(g, u.uri.removeprefix("s3://")) for u in mine):
                    probs.append(f"iam/{name}.json grants {s3_action} on {g} but no workload of "
                                 f"{role.rsplit('/', 1)[-1]} {action}s there")
    return probs


# ---- GPU images and EFA -------------------------------------------------------------------------
def pod_templates(out: dict[str, Any]) -> list[tuple[str, dict]]:
    """(workload ref, pod spec) for every pod a workload runs."""
    return [(f"{w.ref}[{i}]", pod) for w in workloads(out) for i, (_, pod) in enumerate(w.pods)] + \
        [(f"DaemonSet/{d['metadata']['name']}", d["spec"]["template"]["spec"]) for d in _of_kind(out, "DaemonSet")]


def is_cuda_image(image: str, dockerfiles: dict[str, str]) -> bool:
    """A CUDA image: NVIDIA's own (``nvidia/cuda``, ``nvcr.io/nvidia/…``), or one of the project's
    images whose Dockerfile (``-t <image>`` on its Build line) starts its last stage from nvidia/cuda."""
    repo = image.split("@")[0].rsplit(":", 1)[0]
    if repo.startswith(("nvidia/cuda", "nvcr.io/nvidia/", "docker.io/nvidia/cuda")):
        return True
    for text in dockerfiles.values():
        if re.search(rf"-t {re.escape(repo)}:", text):
            args = dict(re.findall(r"^ARG (\w+)=(\S+)", text, re.M))
            froms = re.findall(r"^FROM (\S+)", text, re.M)
            last = re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), m.group(0)), froms[-1]) if froms else ""
            return last.startswith("nvidia/cuda")
    return False


def gpu_problems(out: dict[str, Any], dockerfiles: dict[str, str]) -> list[str]:
    """GPU pods on a non-CUDA image, or without the EFA interfaces their instance type has (or
    with EFA it lacks); CPU pods that tolerate the GPU taint (they would hold GPU nodes)."""
    from hpcml.cluster.spec import GPU_TAINT, INSTANCE_TYPES
    from hpcml.k8s.train import EFA_INTERFACES

    probs = []
    for ref, pod in pod_templates(out):
        cs = pod.get("containers", [])
        gpus = sum(quantity(v) for c in cs for k, v in c.get("resources", {}).get("limits", {}).items()
                   if k.startswith("nvidia.com/"))  # whole GPUs, MIG slices, shared (time-sliced) GPUs
        claims = bool(pod.get("resourceClaims"))
        itype = (pod.get("nodeSelector") or {}).get("node.kubernetes.io/instance-type")
        if gpus or claims:
            for c in cs:
                if not is_cuda_image(c.get("image", ""), dockerfiles):
                    probs.append(f"{ref}: requests GPUs but container {c['name']} runs {c.get('image')}, not a CUDA image")
            if itype:
                want = EFA_INTERFACES.get(itype, 0) if INSTANCE_TYPES.get(itype, {}).get("efa") else 0
                have = sum(quantity(c.get("resources", {}).get("limits", {}).get("vpc.amazonaws.com/efa", 0)) for c in cs)
                if have != want:
                    probs.append(f"{ref}: on {itype} ({want} EFA interface(s)) it requests {have:g} vpc.amazonaws.com/efa")
                if want and not any(e.get("name") == "FI_PROVIDER" and e.get("value") == "efa"
                                    for c in cs for e in c.get("env", [])):
                    probs.append(f"{ref}: EFA requested but FI_PROVIDER=efa is not set (NCCL would fall back to TCP sockets)")
        elif ref.startswith("DaemonSet/"):
            continue  # node agents (device plugin, DCGM exporter) run on GPU nodes by design
        elif any(t.get("key") == GPU_TAINT.key for t in pod.get("tolerations", [])):
            probs.append(f"{ref}: requests no GPU but tolerates the {GPU_TAINT.key} taint (it would hold a GPU node)")
    return probs


# ---- termination grace --------------------------------------------------------------------------
def grace_problems(out: dict[str, Any], checkpoint_s: float, factor: float = GRACE_FACTOR,
                   fixed_s: float = GRACE_FIXED_S) -> list[str]:
    """Training pods (MPIJob launcher and workers) whose grace period is too short for a
    checkpoint of ``checkpoint_s`` seconds (needs > ``factor`` x checkpoint + ``fixed_s``), longer
    than a Spot notice, or whose PID 1 is sshd with no preStop hook to forward SIGTERM to the ranks."""
    need = factor * checkpoint_s + fixed_s
    probs = []
    for job in _of_kind(out, "MPIJob"):
        for role, rs in job["spec"]["mpiReplicaSpecs"].items():
            pod = rs["template"]["spec"]
            ref = f"MPIJob/{job['metadata']['name']} {role}"
            grace = pod.get("terminationGracePeriodSeconds", DEFAULT_GRACE_S)
            if grace <= need:
                probs.append(f"{ref}: terminationGracePeriodSeconds {grace} <= {need:.0f} s "
                             f"({factor:g} x the {checkpoint_s:.1f} s checkpoint + {fixed_s:.0f} s)")
            if grace > SPOT_NOTICE_S:
                probs.append(f"{ref}: terminationGracePeriodSeconds {grace} > the {SPOT_NOTICE_S} s Spot notice")
            for c in pod.get("containers", []):
                if "sshd" in " ".join(c.get("command", [])) and "preStop" not in c.get("lifecycle", {}):
                    probs.append(f"{ref}: PID 1 is sshd, so SIGTERM never reaches the ranks; a preStop hook must forward it")
    return probs


# ---- resilience across availability zones ---------------------------------------------------------
ZONE_KEY = "topology.kubernetes.io/zone"


def resilience_problems(out: dict[str, Any]) -> list[str]:
    """What an AZ outage or a drain would break: a cluster in one AZ or behind one NAT gateway,
    an EFA node group spread over AZs (EFA needs one placement group, so one AZ), a multi-replica
    Deployment with no hard zone spread or no PodDisruptionBudget, and training pods that no
    PodDisruptionBudget protects."""
    probs = []
    for cfg in _of_kind(out, "ClusterConfig"):
        zones = cfg.get("availabilityZones", [])
        if len(zones) < 2:
            probs.append(f"ClusterConfig: {len(zones)} availability zone(s); EKS and serving need two or more")
        if cfg.get("vpc", {}).get("nat", {}).get("gateway") != "HighlyAvailable":
            probs.append("ClusterConfig: a single NAT gateway: losing its AZ cuts the other AZs' egress")
        for ng in cfg.get("managedNodeGroups", []):
            if ng.get("efaEnabled") and len(ng.get("availabilityZones", zones)) != 1:
                probs.append(f"node group {ng['name']}: EFA across AZs (a cluster placement group lives in one AZ)")
    pdbs = _of_kind(out, "PodDisruptionBudget")
    hpa_min = {h["spec"]["scaleTargetRef"]["name"]: h["spec"].get("minReplicas", 1)
               for h in _of_kind(out, "HorizontalPodAutoscaler")}
    for d in _of_kind(out, "Deployment"):
        name, tpl = d["metadata"]["name"], d["spec"]["template"]
        if max(d["spec"].get("replicas", 1), hpa_min.get(name, 0)) < 2:
            continue
        zone = [t for t in tpl["spec"].get("topologySpreadConstraints", []) if t["topologyKey"] == ZONE_KEY]
        if not any(t.get("whenUnsatisfiable") == "DoNotSchedule" and t.get("minDomains", 1) >= 2 for t in zone):
            probs.append(f"Deployment/{name}: no hard zone spread over two or more zones "
                         "(a soft one lets every replica land in one AZ)")
        if not any(selector_matches(p["spec"]["selector"], tpl["metadata"]["labels"]) for p in pdbs):
            probs.append(f"Deployment/{name}: no PodDisruptionBudget, so a node-group upgrade may drain every replica")
    for job in _of_kind(out, "MPIJob"):
        for role, rs in job["spec"]["mpiReplicaSpecs"].items():
            if not any(selector_matches(p["spec"]["selector"], rs["template"]["metadata"].get("labels", {}))
                       for p in pdbs):
                probs.append(f"MPIJob/{job['metadata']['name']} {role}: no PodDisruptionBudget protects it")
    return probs


# ---- the registry --------------------------------------------------------------------------------
def dockerfile_texts() -> dict[str, str]:
    """``{path: text}`` of the project's Dockerfiles (for :func:`gpu_problems`)."""
    from hpcml import paths

    return {str(p.relative_to(paths.repo_root())): p.read_text(encoding="utf-8")
            for p in sorted((paths.repo_root() / "docker").glob("Dockerfile.*"))}


#: name -> (what it checks, how to run it on a rendering). ``grace`` takes the checkpoint seconds.
CHECKS: dict[str, tuple[str, Callable[..., list[str]]]] = {
    "quota": ("every workload fits its namespace's ResourceQuota and LimitRange", quota_problems),
    "network": ("the NetworkPolicies allow and block exactly the flow table's rows", network_problems),
    "cni": ("the EKS definition's CNI enforces NetworkPolicies", cni_problems),
    "s3": ("every S3 URI is granted to its workload's role, and nothing more", s3_problems),
    "gpu": ("GPU pods run a CUDA image and request their instance type's EFA",
            lambda out: gpu_problems(out, dockerfile_texts())),
    "grace": ("training pods' grace period covers a checkpoint and reaches the ranks", grace_problems),
    "resilience": ("AZ spread, NAT per AZ, EFA in one AZ, PDBs for serving and training", resilience_problems),
}


def run(name: str, out: dict[str, Any] | None = None, **kwargs: Any) -> list[str]:
    """Run check ``name`` of :data:`CHECKS` on ``out`` (default: the current rendering)."""
    return CHECKS[name][1](out if out is not None else rendered(), **kwargs)


def to_json(problems: dict[str, list[str]]) -> str:
    return json.dumps(problems, indent=1)
