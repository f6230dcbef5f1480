"""Unit tests of the tuning stage's Kubernetes builders (hpcml.k8s.tune)."""

from __future__ import annotations

import pytest

from hpcml.k8s import tune as ktune
from hpcml.tune.space import default_space

pytestmark = pytest.mark.unit
SPEC = ktune.PRODUCTION_SPEC


def _pod(doc: dict) -> dict:
    return doc["spec"]["template"]["spec"]


@pytest.mark.parametrize("workers", [1, 2, 8], ids=["one", "two", "eight"])
def test_indexed_job_runs_p_workers(workers):
    job = ktune.worker_job(SPEC, workers=workers)
    s = job["spec"]
    assert (s["completionMode"], s["parallelism"], s["completions"]) == ("Indexed", workers, workers)
    pod = _pod(job)
    assert pod["serviceAccountName"] == "tuner" and pod["restartPolicy"] == "Never"
    c = pod["containers"][0]
    assert c["command"][c["command"].index("--of") + 1] == str(workers)
    assert c["securityContext"]["runAsNonRoot"] and c["securityContext"]["readOnlyRootFilesystem"]
    assert c["resources"]["requests"] == c["resources"]["limits"]
    env = {e["name"]: e for e in c["env"]}
    assert env["HPCML_TUNE_STORAGE_FILE"]["value"].startswith("/etc/hpcml/db/")
    secret_vols = [v for v in pod["volumes"] if "secret" in v]
    assert secret_vols and secret_vols[0]["secret"]["secretName"] == ktune.SECRET
    assert job["metadata"]["labels"]["hpcml.io/stage"] == "tune"


def test_bad_worker_count():
    with pytest.raises(ValueError, match="workers and cpus must be >= 1"):
        ktune.worker_job(SPEC, workers=0)


def test_postgres_statefulset_has_claim_and_headless_service():
    svc, sts = ktune.postgres_service(), ktune.postgres_statefulset()
    assert svc["spec"]["clusterIP"] == "None" and sts["spec"]["serviceName"] == svc["metadata"]["name"]
    assert sts["spec"]["volumeClaimTemplates"][0]["metadata"]["name"] == "data"
    # the cluster NetworkPolicies select the database by this label
    assert _pod(sts) and sts["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/name"] == "postgresql"


def test_no_secret_is_committed():
    rendered = ktune.render()
    for rel, content in rendered.items():
        docs = content if isinstance(content, list) else [content]
        assert not any(isinstance(d, dict) and d.get("kind") == "Secret" for d in docs), rel
    script = rendered["tune/create-db-secret.sh"]
    assert "openssl rand" in script and "hpcml-tune-db" in script


def test_katib_experiment_uses_the_same_space():
    exp = ktune.katib_experiment(SPEC)["spec"]
    assert [p["name"] for p in exp["parameters"]] == default_space().names
    assert exp["earlyStopping"]["algorithmName"] == "medianstop" and exp["algorithm"]["algorithmName"] == "tpe"
    cmd = exp["trialTemplate"]["trialSpec"]["spec"]["template"]["spec"]["containers"][0]["command"]
    assert all(f"--set={n}=${{trialParameters.{n}}}" in cmd for n in default_space().names)
    assert {p["reference"] for p in exp["trialTemplate"]["trialParameters"]} == set(default_space().names)
