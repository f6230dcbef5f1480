"""The rendered manifests agree with each other the way a real API server, admission controller,
CNI or IAM would insist (hpcml.k8s.coherence): each invariant holds on the rendering, and each
check reports a rendering broken the way the manifests once were (so a pass means something)."""

import copy
import os
import signal
import subprocess
import sys
import time

import pytest

from hpcml.k8s import coherence as co
from hpcml.k8s import flows
from hpcml.k8s import train as kt

pytestmark = pytest.mark.unit

OUT = co.rendered()


def broken(mutate):
    """A deep copy of the rendering with ``mutate(out)`` applied."""
    out = copy.deepcopy(OUT)
    mutate(out)
    return out


def doc(out, rel, kind, name=None):
    content = out[rel]
    for d in content if isinstance(content, list) else [content]:
        if isinstance(d, dict) and d.get("kind") == kind and (name is None or d["metadata"]["name"] == name):
            return d
    raise KeyError((rel, kind, name))


def worker(out, rel="train/mpijob.yaml"):
    return doc(out, rel, "MPIJob")["spec"]["mpiReplicaSpecs"]["Worker"]["template"]["spec"]


def policy(out, name):
    return doc(out, "cluster/network-policies.yaml", "NetworkPolicy", name)


# ---- quota and LimitRange --------------------------------------------------------------------------
def test_every_workload_fits_the_quota_and_limit_range():
    assert co.quota_problems(OUT) == []


def test_the_gpu_job_is_counted_whole():
    w = next(w for w in co.workloads(OUT) if w.ref == f"MPIJob/{kt.PRODUCTION_SPEC.name}")
    tot = co.workload_totals(w)
    assert tot["pods"] == 3 and tot["requests.nvidia.com/gpu"] == kt.PRODUCTION_SPEC.world_size
    quota = doc(OUT, "cluster/quota.yaml", "ResourceQuota")["spec"]["hard"]
    assert tot["requests.cpu"] <= co.quantity(quota["requests.cpu"])


def _old_mpijob_size(out):  # what the workers asked for before: 10 threads x 4 ranks, 0.75 of 192 GiB
    for c in worker(out)["containers"]:
        c["resources"]["requests"].update(cpu="40", memory="144Gi")
        c["resources"]["limits"].update(cpu="40", memory="144Gi")


def _hpa_to_80(out):
    doc(out, "serve/hpa.yaml", "HorizontalPodAutoscaler")["spec"]["maxReplicas"] = 80


def _over_limit_range_max(out):
    doc(out, "cluster/quota.yaml", "LimitRange")["spec"]["limits"][0]["max"]["memory"] = "64Gi"


def _one_unscoped_quota(out):  # the namespace quota before serving had a scoped quota of its own
    from hpcml.cluster.spec import default_cluster
    from hpcml.k8s import cluster as kc

    ns = next(n for n in default_cluster().namespaces if n.name == "hpcml")
    out["cluster/quota.yaml"] = [*kc.resource_quotas(ns, serving=None),
                                 doc(out, "cluster/quota.yaml", "LimitRange")]


def _serving_quota_halved(out):
    doc(out, "cluster/quota.yaml", "ResourceQuota", "hpcml-serving-quota")["spec"]["hard"]["requests.cpu"] = "24"


def _request_above_limit(out):
    c = doc(out, "tune/postgresql.yaml", "StatefulSet")["spec"]["template"]["spec"]["containers"][0]
    c["resources"]["requests"]["memory"] = "4Gi"


@pytest.mark.parametrize("mutate,finding", [
    (_old_mpijob_size, "needs requests.cpu = 81"),
    (_hpa_to_80, "Deployment/hpcml-serve needs requests.cpu = 80"),
    (_over_limit_range_max, "above the LimitRange max 64Gi"),
    (_request_above_limit, "request memory"),
    (_one_unscoped_quota, "at once, requests.cpu = 90 (Deployment/hpcml-serve 20 + InferenceService/mnist 20 + "
                          "StatefulSet/postgresql 1 + MPIJob/resnet50-train 49) but the hpcml quota hpcml-quota allows 64"),
    (_serving_quota_halved, "at once, requests.cpu = 40 (Deployment/hpcml-serve 20 + InferenceService/mnist 20) "
                            "but the hpcml quota hpcml-serving-quota allows 24"),
], ids=["mpijob-80cpu-288gi", "hpa-max-80", "limitrange-max", "request-over-limit", "one-quota-serving-plus-gpu-job",
        "serving-quota-too-small"])
def test_quota_check_catches(mutate, finding):
    probs = co.quota_problems(broken(mutate))
    assert any(finding in p for p in probs), probs


def test_serving_at_its_maximum_beside_the_gpu_job_fits_every_quota():
    lr = doc(OUT, "cluster/quota.yaml", "LimitRange")
    ws = [w for w in co.workloads(OUT) if w.namespace == "hpcml"]
    quotas = [d for d in OUT["cluster/quota.yaml"] if d["kind"] == "ResourceQuota"]
    for q in quotas:
        for key, (used, who) in co.concurrent_usage(ws, q, lr).items():
            assert used <= co.quantity(q["spec"]["hard"][key]), (q["metadata"]["name"], key, used, who)
    serve = next(w for w in ws if w.ref == "Deployment/hpcml-serve")
    gpu = next(w for w in ws if w.ref == f"MPIJob/{kt.PRODUCTION_SPEC.name}")
    counted = {q["metadata"]["name"]: (co.quota_usage(serve, q, lr).get("requests.cpu", 0),
                                       co.quota_usage(gpu, q, lr).get("requests.cpu", 0)) for q in quotas}
    # the serving pods are counted by the serving quota only, the training pods by the batch quota only
    assert counted["hpcml-serving-quota"][1] == 0 and counted["hpcml-quota"][0] == 0
    assert counted["hpcml-serving-quota"][0] == 20 and counted["hpcml-quota"][1] > 0


@pytest.mark.parametrize("scope,pc,expected", [
    ({"scopeName": "PriorityClass", "operator": "In", "values": ["hpcml-serving"]}, "hpcml-serving", True),
    ({"scopeName": "PriorityClass", "operator": "In", "values": ["hpcml-serving"]}, "hpcml-training", False),
    ({"scopeName": "PriorityClass", "operator": "NotIn", "values": ["hpcml-serving"]}, "", True),
    ({"scopeName": "PriorityClass", "operator": "NotIn", "values": ["hpcml-serving"]}, "hpcml-serving", False),
    ({"scopeName": "PriorityClass", "operator": "Exists"}, "", False),
    ({"scopeName": "PriorityClass", "operator": "DoesNotExist"}, "", True),
    (None, "anything", True),
])
def test_quota_scope_matches_as_admission_does(scope, pc, expected):
    quota = {"metadata": {"name": "q"}, "spec": {"hard": {}}}
    if scope:
        quota["spec"]["scopeSelector"] = {"matchExpressions": [scope]}
    pod = {"priorityClassName": pc, "containers": [{"name": "c"}]} if pc else {"containers": [{"name": "c"}]}
    assert co.scope_matches(quota, pod) is expected


def test_quota_scope_not_modelled_is_an_error():
    quota = {"metadata": {"name": "q"}, "spec": {"hard": {}, "scopeSelector": {"matchExpressions": [
        {"scopeName": "CrossNamespacePodAffinity", "operator": "Exists"}]}}}
    with pytest.raises(ValueError, match="CrossNamespacePodAffinity"):
        co.scope_matches(quota, {"containers": []})


def test_spark_pods_count_their_memory_overhead():
    w = next(w for w in co.workloads(OUT) if w.kind == "SparkApplication")
    (_, driver), (n, executor) = w.pods
    app = doc(OUT, "data/spark-application.yaml", "SparkApplication")["spec"]
    assert n == app["executor"]["instances"]
    mem = co.pod_totals(executor)["requests.memory"]
    assert mem == int(co._spark_memory(app["executor"]["memory"]) * 1.4)  # PySpark: 40 % overhead


# ---- network policies ----------------------------------------------------------------------------
@pytest.mark.parametrize("row", flows.FLOWS, ids=[f"{f.src}->{f.dst}:{f.port}/{f.protocol}" for f in flows.FLOWS])
def test_flow_table_row(row):
    eps = flows.endpoints(OUT)
    policies = [d for _, d in co.k8s_docs(OUT) if d["kind"] == "NetworkPolicy"]
    namespaces = [d for _, d in co.k8s_docs(OUT) if d["kind"] == "Namespace"]
    ok, why = co.flow_allowed(eps[row.src], eps[row.dst], row.port, row.protocol, policies, namespaces)
    assert ok == row.allowed, f"{row.why}: {why}"


def test_flow_table_covers_the_design():
    pairs = {(f.src, f.dst, f.allowed) for f in flows.FLOWS}
    assert {("alb", "inference", True), ("prometheus", "train-worker", True), ("train-launcher", "train-worker", True),
            ("train-worker", "train-launcher", True), ("inference", "kube-dns", True),
            ("inference", "train-worker", False)} <= pairs
    to_db = {f.src for f in flows.FLOWS if f.dst == "postgresql" and f.port == flows.PG_PORT}
    assert {s for s in to_db if any(f.src == s and f.dst == "postgresql" and f.allowed for f in flows.FLOWS)} == \
        {"tuning-worker"}, "only the tuning workers reach the database"
    assert len(to_db) >= 6


def _nginx_ingress(out):  # the policy as it was: ingress-nginx and monitoring only
    policy(out, "allow-inference-ingress")["spec"]["ingress"] = [{
        "from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}},
                 {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}],
        "ports": [{"protocol": "TCP", "port": 8080}]}]


def _db_open_to_namespace(out):
    policy(out, "allow-postgresql-from-tuners")["spec"]["ingress"][0]["from"] = [{"podSelector": {}}]
    policy(out, "allow-tuner-to-postgresql")["spec"]["podSelector"] = {}


def _no_dns(out):
    out["cluster/network-policies.yaml"] = [d for d in out["cluster/network-policies.yaml"]
                                            if d["metadata"]["name"] != "allow-dns"]


def _peers_ssh_only(out):
    for rule in policy(out, "allow-trainer-peers")["spec"]["ingress"]:
        rule["ports"] = [{"protocol": "TCP", "port": 2222}]


def _no_default_deny_and_open_egress(out):
    out["cluster/network-policies.yaml"] = [d for d in out["cluster/network-policies.yaml"]
                                            if d["metadata"]["name"] not in ("default-deny-all", "allow-dns")]


@pytest.mark.parametrize("mutate,finding", [
    (_nginx_ingress, "alb -> inference 8080/TCP should be allowed"),
    (_db_open_to_namespace, "inference -> postgresql 5432/TCP should be blocked"),
    (_no_dns, "inference -> kube-dns 53/UDP should be allowed"),
    (_peers_ssh_only, "train-worker -> train-launcher 45123/TCP should be allowed"),
    (_no_default_deny_and_open_egress, "inference -> s3 443/TCP should be blocked"),
], ids=["ingress-nginx-only", "db-open", "no-dns", "peers-ssh-only", "no-default-deny"])
def test_network_check_catches(mutate, finding):
    probs = co.network_problems(broken(mutate))
    assert any(p.startswith(finding) for p in probs), probs


def _ep(name, ns, ip="10.0.0.5", **labels):
    return co.Endpoint(name, ip, ns, tuple(sorted(labels.items())))


def _pol(ns, selector, types, **rules):
    return {"kind": "NetworkPolicy", "metadata": {"name": "p", "namespace": ns},
            "spec": {"podSelector": selector, **({"policyTypes": types} if types else {}), **rules}}


def test_evaluator_semantics():
    a, b = _ep("a", "x", app="a"), _ep("b", "y", app="b")
    ns = [{"metadata": {"name": "y", "labels": {"team": "t"}}}]
    # no policy selects the pods: not isolated
    assert co.flow_allowed(a, b, 80, "TCP", [], ns)[0]
    # policyTypes defaults to Ingress (plus Egress when egress rules exist)
    assert not co.flow_allowed(b, a, 80, "TCP", [_pol("x", {}, None, ingress=[])], ns)[0]
    # namespaceSelector AND podSelector in one peer; the same two as separate peers are an OR
    both = [{"namespaceSelector": {"matchLabels": {"team": "t"}}, "podSelector": {"matchLabels": {"app": "z"}}}]
    either = [{"namespaceSelector": {"matchLabels": {"team": "t"}}}, {"podSelector": {"matchLabels": {"app": "z"}}}]
    assert not co.flow_allowed(b, a, 80, "TCP", [_pol("x", {}, ["Ingress"], ingress=[{"from": both}])], ns)[0]
    assert co.flow_allowed(b, a, 80, "TCP", [_pol("x", {}, ["Ingress"], ingress=[{"from": either}])], ns)[0]
    # a bare podSelector selects the policy's own namespace only
    same = [{"podSelector": {"matchLabels": {"app": "b"}}}]
    assert not co.flow_allowed(b, a, 80, "TCP", [_pol("x", {}, ["Ingress"], ingress=[{"from": same}])], ns)[0]
    # ports with endPort, and protocols
    rng = [{"ports": [{"protocol": "TCP", "port": 9100, "endPort": 9199}]}]
    assert co.flow_allowed(b, a, 9150, "TCP", [_pol("x", {}, ["Ingress"], ingress=rng)], ns)[0]
    assert not co.flow_allowed(b, a, 9150, "UDP", [_pol("x", {}, ["Ingress"], ingress=rng)], ns)[0]
    # ipBlock with except
    block = [{"from": [{"ipBlock": {"cidr": "10.0.0.0/16", "except": ["10.0.0.0/24"]}}]}]
    assert not co.flow_allowed(b, a, 80, "TCP", [_pol("x", {}, ["Ingress"], ingress=block)], ns)[0]
    assert co.flow_allowed(_ep("c", "y", ip="10.0.1.5"), a, 80, "TCP", [_pol("x", {}, ["Ingress"], ingress=block)], ns)[0]
    # egress of the source counts too
    assert not co.flow_allowed(a, b, 80, "TCP", [_pol("x", {}, ["Egress"])], ns)[0]


# ---- CNI ------------------------------------------------------------------------------------------
def test_network_policies_are_enforced_by_the_cni():
    assert co.cni_problems(OUT) == []


def _cni_without_policy(out):
    for a in out["eks/cluster.yaml"]["addons"]:
        a.pop("configurationValues", None)


def _no_cni(out):
    out["eks/cluster.yaml"]["addons"] = [a for a in out["eks/cluster.yaml"]["addons"] if a["name"] != "vpc-cni"]


@pytest.mark.parametrize("mutate,finding", [(_cni_without_policy, "enableNetworkPolicy"), (_no_cni, "no vpc-cni")],
                         ids=["no-enable-network-policy", "no-vpc-cni"])
def test_cni_check_catches(mutate, finding):
    assert any(finding in p for p in co.cni_problems(broken(mutate)))


# ---- S3 and IAM -----------------------------------------------------------------------------------
def test_every_s3_uri_is_granted_and_nothing_more():
    assert co.s3_problems(OUT) == []


def test_the_rendered_uris_are_read():
    where = {(u.where.split("/")[0], u.action, u.uri.split("/", 3)[3].split("/")[0]) for u in co.s3_uses(OUT)}
    assert {("SparkApplication", "read", "raw"), ("SparkApplication", "write", "processed"),
            ("data", "write", "logs"), ("serve", "read", "models")} <= where


def _spark_writes_curated(out):
    args = doc(out, "data/spark-application.yaml", "SparkApplication")["spec"]["arguments"]
    args[args.index("--output") + 1] = args[args.index("--output") + 1].replace("/processed/", "/curated/")


def _emr_logs_ungranted(out):
    pol = out["iam/hpcml-s3-spark.json"]
    for s in pol["Statement"]:
        if s["Sid"] == "WriteOutputs":
            s["Resource"] = [r for r in s["Resource"] if "logs" not in r]


def _model_in_models_bucket(out):
    req = out["serve/sagemaker-create-model.json"]
    req["PrimaryContainer"]["ModelDataUrl"] = "s3://hpcml-models-111122223333/best/model.tar.gz"


def _inference_may_write(out):
    out["iam/hpcml-s3-inference.json"]["Statement"].append(
        {"Sid": "Extra", "Effect": "Allow", "Action": "s3:PutObject", "Resource": "arn:aws:s3:::hpcml-data-111122223333/models/*"})


def _trainer_cannot_rotate(out):
    pol = out["iam/hpcml-s3-trainer.json"]
    pol["Statement"] = [s for s in pol["Statement"] if s["Sid"] != "DeleteRotated"]


@pytest.mark.parametrize("mutate,finding", [
    (_spark_writes_curated, "may not write s3://hpcml-data-111122223333/curated/mnist/"),
    (_emr_logs_ungranted, "may not write s3://hpcml-data-111122223333/logs/emr/"),
    (_model_in_models_bucket, "may not read s3://hpcml-models-111122223333/best/model.tar.gz"),
    (_inference_may_write, "grants s3:PutObject on hpcml-data-111122223333/models/* but no workload of hpcml-inference"),
    (_trainer_cannot_rotate, "may not delete"),
], ids=["spark-curated", "emr-logs", "model-bucket", "inference-writes", "no-rotation"])
def test_s3_check_catches(mutate, finding):
    probs = co.s3_problems(broken(mutate))
    assert any(finding in p for p in probs), probs


# ---- GPU image and EFA -----------------------------------------------------------------------------
DOCKERFILES = co.dockerfile_texts()


def test_gpu_pods_run_cuda_and_request_efa():
    assert co.gpu_problems(OUT, DOCKERFILES) == []
    res = worker(OUT)["containers"][0]["resources"]["limits"]
    assert res["vpc.amazonaws.com/efa"] == "1"  # g4dn.12xlarge: one EFA interface
    assert co.is_cuda_image(kt.CUDA_IMAGE, DOCKERFILES) and not co.is_cuda_image(kt.CPU_IMAGE, DOCKERFILES)


def test_efa_only_where_the_instance_type_has_it():
    from hpcml.cluster.spec import INSTANCE_TYPES

    assert not INSTANCE_TYPES["g4dn.xlarge"]["efa"] and INSTANCE_TYPES["g4dn.12xlarge"]["efa"]
    assert all(INSTANCE_TYPES[t]["efa"] for t in kt.EFA_INTERFACES)
    small = kt.TrainSpec(name="t4-small", world_size=1, threads_per_worker=2, gpus_per_worker=1,
                         instance_type="g4dn.xlarge", image=kt.CUDA_IMAGE)
    limits = kt.worker_template(small)["spec"]["containers"][0]["resources"]["limits"]
    assert "vpc.amazonaws.com/efa" not in limits and limits["nvidia.com/gpu"] == "1"


def _cpu_image_on_gpus(out):
    for c in worker(out)["containers"]:
        c["image"] = kt.CPU_IMAGE


def _no_efa(out):
    for c in worker(out)["containers"]:
        for kind in ("requests", "limits"):
            c["resources"][kind].pop("vpc.amazonaws.com/efa")


def _efa_on_g4dn_xlarge(out):
    worker(out)["nodeSelector"]["node.kubernetes.io/instance-type"] = "g4dn.xlarge"


def _cpu_pod_on_gpu_nodes(out):
    worker(out, "train/mpijob-cpu.yaml")["tolerations"] = [{"key": "nvidia.com/gpu", "operator": "Exists"}]


@pytest.mark.parametrize("mutate,finding", [
    (_cpu_image_on_gpus, "not a CUDA image"),
    (_no_efa, "requests 0 vpc.amazonaws.com/efa"),
    (_efa_on_g4dn_xlarge, "on g4dn.xlarge (0 EFA interface(s)) it requests 1"),
    (_cpu_pod_on_gpu_nodes, "requests no GPU but tolerates"),
], ids=["cpu-image", "no-efa", "efa-without-efa", "cpu-on-gpu-nodes"])
def test_gpu_check_catches(mutate, finding):
    probs = co.gpu_problems(broken(mutate), DOCKERFILES)
    assert any(finding in p for p in probs), probs


# ---- termination grace vs checkpoint time ------------------------------------------------------------
def test_grace_period_exceeds_the_projected_checkpoint(tmp_path):
    """ResNet-50's weights + SGD momentum at the write rate measured here: a projection (this run
    trains a small CNN), which the grace period must exceed GRACE_FACTOR-fold plus GRACE_FIXED_S."""
    from hpcml.review import measure_write_rate
    from hpcml.train.checkpoint import projected_checkpoint_s, resnet50_checkpoint_bytes

    rate = measure_write_rate(tmp_path)  # a real 32 MiB file written and fsynced here
    proj = projected_checkpoint_s(rate)
    need = co.GRACE_FACTOR * proj + co.GRACE_FIXED_S
    print(f"projected ResNet-50 checkpoint: {resnet50_checkpoint_bytes() / 1e6:.0f} MB at {rate / 1e6:.0f} MB/s "
          f"-> {proj:.2f} s; grace {kt.TERMINATION_GRACE_S} s vs needed {need:.1f} s")
    assert kt.TERMINATION_GRACE_S > need
    assert co.grace_problems(OUT, proj) == []


def _grace(seconds):
    def mutate(out):
        worker(out)["terminationGracePeriodSeconds"] = seconds
    return mutate


def _default_grace(out):
    worker(out).pop("terminationGracePeriodSeconds")


def _no_prestop(out):
    worker(out)["containers"][0].pop("lifecycle")


@pytest.mark.parametrize("mutate,finding", [
    (_default_grace, "terminationGracePeriodSeconds 30 <="),
    (_grace(300), "> the 120 s Spot notice"),
    (_no_prestop, "SIGTERM never reaches the ranks"),
], ids=["default-30s", "longer-than-spot-notice", "no-prestop"])
def test_grace_check_catches(mutate, finding):
    probs = co.grace_problems(broken(mutate), checkpoint_s=2.0)
    assert any(finding in p for p in probs), probs


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the hook scans /proc")
def test_prestop_hook_forwards_sigterm_and_waits(tmp_path):
    """The worker pod's preStop script, run for real: it signals a process whose argv holds the
    rank module (a unique stand-in here, so no real rank on this machine is touched), then waits
    until that process has finished its 'checkpoint' and exited."""
    token = f"hpcml.test.rank{os.getpid()}"
    code = ("import pathlib, signal, sys, time\n"
            "def on_term(*_):\n"
            f"    time.sleep(1.0); pathlib.Path({str(tmp_path)!r}, 'ckpt').write_text('saved'); sys.exit(0)\n"
            "signal.signal(signal.SIGTERM, on_term)\n"
            f"pathlib.Path({str(tmp_path)!r}, 'ready').write_text('1')\n"
            "time.sleep(60)\n")
    rank = subprocess.Popen([sys.executable, "-c", code, token])
    try:
        deadline = time.monotonic() + 30
        while not (tmp_path / "ready").exists():
            assert rank.poll() is None and time.monotonic() < deadline, "the stand-in rank did not start"
            time.sleep(0.05)
        hook = subprocess.run(["/bin/sh", "-c", kt.prestop_script(token)], timeout=60, capture_output=True, text=True)
        assert hook.returncode == 0, hook.stderr
        assert rank.poll() == 0, "the hook returned before the rank exited"
        assert (tmp_path / "ckpt").read_text() == "saved"
    finally:
        if rank.poll() is None:
            os.kill(rank.pid, signal.SIGKILL)
            rank.wait()
    assert worker(OUT)["containers"][0]["lifecycle"]["preStop"]["exec"]["command"][-1] == kt.prestop_script()


# ---- resilience across AZs ------------------------------------------------------------------------
def test_resilience_across_zones():
    assert co.resilience_problems(OUT) == []


def _soft_zone_spread(out):
    for t in doc(out, "serve/deployment.yaml", "Deployment")["spec"]["template"]["spec"]["topologySpreadConstraints"]:
        t["whenUnsatisfiable"] = "ScheduleAnyway"
        t.pop("minDomains", None)


def _one_nat(out):
    out["eks/cluster.yaml"]["vpc"]["nat"]["gateway"] = "Single"


def _efa_across_zones(out):
    for ng in out["eks/cluster.yaml"]["managedNodeGroups"]:
        ng.pop("availabilityZones", None)


def _no_training_pdb(out):
    out["cluster/pdb-training.yaml"] = []


@pytest.mark.parametrize("mutate,finding", [
    (_soft_zone_spread, "no hard zone spread"), (_one_nat, "single NAT gateway"),
    (_efa_across_zones, "EFA across AZs"), (_no_training_pdb, "no PodDisruptionBudget protects it"),
], ids=["soft-spread", "one-nat", "efa-multi-az", "no-training-pdb"])
def test_resilience_check_catches(mutate, finding):
    probs = co.resilience_problems(broken(mutate))
    assert any(finding in p for p in probs), probs
