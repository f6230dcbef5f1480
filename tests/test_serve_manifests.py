"""Serving definitions: what the issue requires is in them, and the SageMaker requests
validate against botocore's service model."""

import pytest

from hpcml.aws import requests as aws_requests
from hpcml.k8s import serve
from hpcml.k8s.validate import validate_doc

pytestmark = pytest.mark.unit

R = serve.render()


def doc(rel):
    return R[rel][0]


@pytest.mark.parametrize("rel", [k for k, v in R.items() if isinstance(v, list)])
def test_documents_validate(rel):
    for version in ("1.36", "1.37"):
        assert validate_doc(doc(rel), version) == []


def test_deployment_probes_security_spread():
    pod = doc("serve/deployment.yaml")["spec"]["template"]["spec"]
    c = pod["containers"][0]
    assert c["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert c["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    sc = c["securityContext"]
    assert sc["runAsNonRoot"] and sc["readOnlyRootFilesystem"] and sc["capabilities"]["drop"] == ["ALL"]
    assert not sc["allowPrivilegeEscalation"] and sc["runAsUser"] == 1000
    assert c["resources"]["requests"] and c["resources"]["limits"]
    assert pod["serviceAccountName"] == "inference" and pod["priorityClassName"] == "hpcml-serving"
    assert "topology.kubernetes.io/zone" in [t["topologyKey"] for t in pod["topologySpreadConstraints"]]


def test_ingress_hpa_vpa_kserve():
    ing = doc("serve/ingress.yaml")
    assert ing["spec"]["ingressClassName"] == "alb"
    assert ing["metadata"]["annotations"]["alb.ingress.kubernetes.io/target-type"] == "ip"
    hpa = doc("serve/hpa.yaml")["spec"]
    kinds = {m["type"] for m in hpa["metrics"]}
    assert kinds == {"Resource", "Pods"}
    assert hpa["metrics"][1]["pods"]["metric"]["name"] == "hpcml_serve_inflight_requests"
    assert {"scaleUp", "scaleDown"} <= set(hpa["behavior"])
    assert doc("serve/vpa.yaml")["spec"]["updatePolicy"]["updateMode"] == "Off"
    isvc = doc("serve/inferenceservice.yaml")
    assert isvc["spec"]["predictor"]["containers"][0]["image"] == \
        doc("serve/deployment.yaml")["spec"]["template"]["spec"]["containers"][0]["image"]
    assert ("serving.kserve.io/v1beta1", "InferenceService") in serve.CRD_REQUIRED


def test_sagemaker_requests_validate_and_stay_local_without_credentials(monkeypatch):
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(k, raising=False)
    for op, req in serve.sagemaker_requests(serve.ServeSpec()).items():
        aws_requests.validate_request("sagemaker", op, req)
    results = serve.deploy_sagemaker(dry_run=True)
    assert [r["operation"] for r in results] == ["CreateModel", "CreateEndpointConfig", "CreateEndpoint"]
    assert not any(r["sent"] for r in results)


@pytest.mark.parametrize("kw,msg", [
    (dict(min_replicas=5, max_replicas=2), "min_replicas"),
    (dict(image="ghcr.io/example/hpcml-serve:latest"), "pinned"),
    (dict(account_id="123"), "12 digits"),
    (dict(target_cpu_utilisation=0), "target_cpu_utilisation"),
    (dict(model_s3_uri="/local/model.tar.gz"), "s3://"),
], ids=["min-over-max", "latest-image", "bad-account", "zero-cpu-target", "not-s3"])
def test_spec_rejects(kw, msg):
    with pytest.raises(ValueError, match=msg):
        serve.ServeSpec(**kw)
