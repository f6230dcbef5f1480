"""Serving definitions: the objects and fields production serving relies on are in them, and
the SageMaker requests validate against botocore's service model."""

import json

import pytest

from hpcml.aws import requests as aws_requests
from hpcml.k8s import serve
from hpcml.k8s.validate import validate_doc
from hpcml.serve import sagemaker
from hpcml.serve.spec import METRIC_INFLIGHT, ServeConfig, ServeSpec

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
    assert hpa["metrics"][1]["pods"]["metric"]["name"] == METRIC_INFLIGHT
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
    for op, req in serve.sagemaker_requests(ServeSpec()).items():
        aws_requests.validate_request("sagemaker", op, req)
    results = sagemaker.deploy(dry_run=True)
    assert [r["operation"] for r in results] == ["CreateModel", "CreateEndpointConfig", "CreateEndpoint"]
    assert not any(r["sent"] for r in results)


@pytest.mark.parametrize("kw,expected", [
    ({}, 22),  # the default: 70 % of the 32 requests a pod holds at p99 <= 50 ms
    (dict(concurrency_at_slo=8), 5),
    (dict(concurrency_at_slo=1), 1),
    (dict(concurrency_at_slo=40, target_cpu_utilisation=50), 20),
    (dict(target_inflight=12), 12),
])
def test_hpa_inflight_target_derives_from_the_concurrency_at_the_objective(kw, expected):
    spec = ServeSpec(**kw)
    assert spec.target_inflight == expected <= spec.concurrency_at_slo
    pods = next(m for m in serve.hpa(spec)["spec"]["metrics"] if m["type"] == "Pods")["pods"]
    assert pods["target"]["averageValue"] == str(expected)


def test_rendered_hpa_target_is_below_the_pods_capacity_at_the_objective():
    spec = ServeSpec()
    pods = next(m for m in doc("serve/hpa.yaml")["spec"]["metrics"] if m["type"] == "Pods")["pods"]
    assert int(pods["target"]["averageValue"]) == spec.target_inflight < spec.concurrency_at_slo


@pytest.mark.parametrize("kw,msg", [
    (dict(min_replicas=5, max_replicas=2), "min_replicas"),
    (dict(image="ghcr.io/example/hpcml-serve:latest"), "pinned"),
    (dict(account_id="123"), "12 digits"),
    (dict(target_cpu_utilisation=0), "target_cpu_utilisation"),
    (dict(model_s3_uri="/local/model.tar.gz"), "s3://"),
    (dict(max_wait_ms=5000), "ServeConfig.max_wait_ms"),
    (dict(max_batch_size=0), "ServeConfig.max_batch_size"),
    (dict(model_name="a/b"), "ServeConfig.model_name"),
    (dict(target_inflight=33), r"target_inflight: expected an integer in 1..concurrency_at_slo \(32\)"),
    (dict(target_inflight=0), "target_inflight"),
    (dict(concurrency_at_slo=0), "concurrency_at_slo"),
], ids=["min-over-max", "latest-image", "bad-account", "zero-cpu-target", "not-s3", "wait-over-1s", "zero-batch",
        "slash-in-name", "inflight-above-slo-concurrency", "zero-inflight", "zero-slo-concurrency"])
def test_spec_rejects(kw, msg):
    with pytest.raises(ValueError, match=msg):
        ServeSpec(**kw)


def test_container_args_are_the_server_cli_of_the_spec_config():
    """The rendered args parse back, through the server's own CLI, into the spec's ServeConfig."""
    from hpcml.serve import server

    spec = ServeSpec(model_name="digits", max_batch_size=16, max_wait_ms=2.5, workers=3)
    args = serve.container(spec)["args"]
    assert args[:2] == ["-m", "hpcml.serve.server"]
    a = server.parser().parse_args(args[2:])
    assert (a.host, a.port, a.workers) == ("0.0.0.0", serve.PORT, 3)
    assert ServeConfig(model_file=a.model, state_dir=a.state_dir, **json.loads(a.config)) == spec.server_config()


def test_default_container_args_unchanged():
    assert doc("serve/deployment.yaml")["spec"]["template"]["spec"]["containers"][0]["args"] == [
        "-m", "hpcml.serve.server", "--model", "/opt/hpcml/model/model.onnx", "--host", "0.0.0.0", "--port", "8080",
        "--workers", "2", "--state-dir", "/tmp/hpcml-serve", "--config",
        '{"model_name":"mnist","max_batch_size":32,"max_wait_ms":0.0}']
