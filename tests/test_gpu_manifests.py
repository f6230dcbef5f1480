"""hpcml.k8s.gpu: the GPU Operator ClusterPolicy, the device-plugin and MIG configs, the DRA
objects and the smoke Jobs validate (core kinds against the pinned Kubernetes schema, the
ClusterPolicy against the fields its CRD requires), follow their readers' rules, and agree with
each other; each check is shown to fail on a broken copy."""

from __future__ import annotations

import copy

import pytest
import yaml

from hpcml.k8s import gpu
from hpcml.k8s.render import K8S_NEXT_VERSION, K8S_VERSION
from hpcml.k8s.validate import validate_doc

pytestmark = pytest.mark.unit


def _docs(rendered):
    return [d for v in rendered.values() if isinstance(v, list) for d in v]


def _find(rendered, kind, name):
    return next(d for d in _docs(rendered) if d["kind"] == kind and d["metadata"]["name"] == name)


@pytest.mark.parametrize("version", [K8S_VERSION, K8S_NEXT_VERSION])
def test_every_gpu_document_validates(version):
    probs = {f"{d['kind']}/{d['metadata']['name']}": validate_doc(d, version) for d in _docs(gpu.render())}
    assert not any(probs.values()), probs


def test_dra_is_validated_against_the_core_schema_and_v1_is_new_in_1_34():
    """resource.k8s.io/v1 (DRA GA) is in the 1.34 schema and absent from 1.33's."""
    dc = gpu.training_device_class()
    assert validate_doc(dc, "1.34") == []
    assert "no schema in Kubernetes 1.33" in validate_doc(dc, "1.33")[0]


@pytest.mark.parametrize("breakage, needle", [
    (lambda r: r["spec"]["spec"]["devices"]["requests"][0].update(exact=r["spec"]["spec"]["devices"]["requests"][0].pop("exactly")),
     "'exact' was unexpected"),
    (lambda r: r["spec"]["spec"]["devices"]["requests"][0]["exactly"].pop("deviceClassName"), "'deviceClassName' is a required"),
    (lambda r: r["spec"]["spec"]["devices"]["requests"][0].pop("name"), "'name' is a required"),
], ids=["misspelt-exactly", "no-device-class", "no-request-name"])
def test_schema_catches_a_broken_claim_template(breakage, needle):
    t = copy.deepcopy(gpu.dra_objects()[1])
    breakage(t)
    assert needle in " ".join(validate_doc(t, K8S_VERSION))


@pytest.mark.parametrize("field", gpu.CRD_REQUIRED[("nvidia.com/v1", "ClusterPolicy")])
def test_cluster_policy_missing_a_required_field_fails(field):
    cp = copy.deepcopy(gpu.cluster_policy())
    *parents, leaf = field.split(".")
    node = cp
    for p in parents:
        node = node[p]
    del node[leaf]
    assert any(f"missing required field {field}" in p for p in validate_doc(cp, K8S_VERSION))


def test_cluster_policy_runs_what_the_ami_lacks():
    spec = gpu.cluster_policy()["spec"]
    assert (spec["driver"]["enabled"], spec["toolkit"]["enabled"]) == (False, False)  # EKS accelerated AMI has them
    assert spec["devicePlugin"]["config"] == {"name": gpu.DEVICE_PLUGIN_CONFIG, "default": "whole-gpu"}
    assert spec["migManager"]["config"]["name"] == gpu.MIG_CONFIG
    assert spec["dcgmExporter"]["enabled"] is False  # the monitoring stage runs its own
    with pytest.raises(ValueError, match="mig_strategy"):
        gpu.cluster_policy("some")


def test_device_plugin_configs_follow_the_plugin_rules():
    cm = gpu.device_plugin_config()
    cfgs = {k: yaml.safe_load(v) for k, v in cm["data"].items()}
    assert set(cfgs) == {"whole-gpu", "time-sliced", "mps"}
    assert {k: gpu.check_device_plugin_config(c) for k, c in cfgs.items()} == {k: [] for k in cfgs}
    assert cfgs["time-sliced"]["sharing"]["timeSlicing"]["resources"] == [{"name": "nvidia.com/gpu", "replicas": 4}]


@pytest.mark.parametrize("cfg, needle", [
    ({"version": "v2"}, "version must be 'v1'"),
    ({"version": "v1", "flags": {"migStrategy": "split"}}, "migStrategy"),
    ({"version": "v1", "sharing": {"timeSlicing": {"resources": [{"name": "nvidia.com/gpu", "replicas": 2}]},
                                    "mps": {"resources": [{"name": "nvidia.com/gpu", "replicas": 2}]}}}, "mutually exclusive"),
    ({"version": "v1", "sharing": {"timeSlicing": {"resources": []}}}, "no resources"),
    ({"version": "v1", "sharing": {"timeSlicing": {"resources": [{"name": "nvidia.com/gpu", "replicas": 1}]}}}, "replicas"),
    ({"version": "v1", "sharing": {"timeSlicing": {"resources": [{"name": "vendor.com/fpga", "replicas": 2}]}}}, "cannot be shared"),
    ({"version": "v1", "sharing": {"mps": {"resources": [{"name": "nvidia.com/mig-1g.10gb", "replicas": 2}]}}}, "MPS does not share MIG"),
], ids=["version", "strategy", "both-sharings", "no-resources", "one-replica", "not-a-gpu", "mps-on-mig"])
def test_device_plugin_config_check_fails_when_broken(cfg, needle):
    assert any(needle in p for p in gpu.check_device_plugin_config(cfg))


def test_mig_layouts_fit_an_h100_and_no_t4_has_mig():
    cfg = yaml.safe_load(gpu.mig_config()["data"]["config.yaml"])
    assert gpu.check_mig_config(cfg, "H100-80GB") == []
    assert "no MIG" in gpu.check_mig_config(cfg, "T4")[0]
    assert set(gpu.MIG_GPU_OF_TYPE.values()) <= set(gpu.MIG_PROFILES)


@pytest.mark.parametrize("devices, needle", [
    ({"1g.10gb": 8}, "at most 7"),
    ({"3g.40gb": 2, "2g.20gb": 1}, "8/7 compute"),
    ({"4g.40gb": 1, "3g.40gb": 1, "1g.10gb": 1}, "9/8 memory"),
    ({"1g.5gb": 1}, "not a H100-80GB profile"),
], ids=["too-many-1g", "compute-overflow", "memory-overflow", "a100-profile-on-h100"])
def test_mig_check_fails_when_a_layout_cannot_fit(devices, needle):
    cfg = {"version": "v1", "mig-configs": {"bad": [{"devices": "all", "mig-enabled": True, "mig-devices": devices}]}}
    assert any(needle in p for p in gpu.check_mig_config(cfg, "H100-80GB")), gpu.check_mig_config(cfg, "H100-80GB")


def test_rendered_gpu_objects_agree():
    assert gpu.consistency_problems() == []


def _break_mig_profile(r):
    _find(r, "Job", "gpu-smoke-mig")["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"] = {"nvidia.com/mig-2g.10gb": 1}


def _break_single_strategy(r):
    r["gpu/gpu-operator-clusterpolicy.yaml"] = [gpu.cluster_policy("single")]


def _break_no_rename(r):
    cm = _find(r, "ConfigMap", gpu.DEVICE_PLUGIN_CONFIG)
    cfg = yaml.safe_load(cm["data"]["time-sliced"])
    cfg["sharing"]["timeSlicing"]["renameByDefault"] = False
    cm["data"]["time-sliced"] = yaml.safe_dump(cfg)


def _break_claim_template(r):
    _find(r, "Job", "gpu-smoke-dra")["spec"]["template"]["spec"]["resourceClaims"][0]["resourceClaimTemplateName"] = "gone"


def _break_container_claim(r):
    _find(r, "Job", "gpu-smoke-dra")["spec"]["template"]["spec"]["containers"][0]["resources"]["claims"] = [{"name": "gpu"}]


def _break_device_class(r):
    _find(r, "ResourceClaimTemplate", "hpcml-train-gpus")["spec"]["spec"]["devices"]["requests"][0]["exactly"]["deviceClassName"] = "nope"


def _break_mig_label(r):
    _find(r, "Job", "gpu-smoke-mig")["spec"]["template"]["spec"]["nodeSelector"][gpu.MIG_CONFIG_LABEL] = "all-7g.80gb"


def _break_default_config(r):
    r["gpu/gpu-operator-clusterpolicy.yaml"][0]["spec"]["devicePlugin"]["config"]["default"] = "missing"


def _break_mig_layout(r):
    cm = _find(r, "ConfigMap", gpu.MIG_CONFIG)
    cfg = yaml.safe_load(cm["data"]["config.yaml"])
    cfg["mig-configs"]["all-1g.10gb"][0]["mig-devices"]["1g.10gb"] = 9
    cm["data"]["config.yaml"] = yaml.safe_dump(cfg)


@pytest.mark.parametrize("breakage, needle", [
    (_break_mig_profile, "no MIG layout creates"),
    (_break_single_strategy, "only with mig strategy 'mixed'"),
    (_break_no_rename, "renameByDefault"),
    (_break_claim_template, "names no rendered ResourceClaimTemplate"),
    (_break_container_claim, "is not in spec.resourceClaims"),
    (_break_device_class, "no DeviceClass nope"),
    (_break_mig_label, "names no MIG layout"),
    (_break_default_config, "names no rendered config"),
    (_break_mig_layout, "at most 7"),
], ids=["mig-profile", "single-strategy", "no-rename", "claim-template", "container-claim", "device-class",
        "mig-label", "default-config", "mig-layout"])
def test_consistency_check_fails_when_broken(breakage, needle):
    r = copy.deepcopy(gpu.render())
    breakage(r)
    probs = gpu.consistency_problems(r)
    assert any(needle in p for p in probs), probs


def test_smoke_jobs_are_restricted_and_gpu_only():
    for job in gpu.smoke_jobs():
        pod = job["spec"]["template"]["spec"]
        sc = pod["containers"][0]["securityContext"]
        assert pod["securityContext"]["runAsNonRoot"] and sc["allowPrivilegeEscalation"] is False
        assert sc["capabilities"] == {"drop": ["ALL"]} and sc["seccompProfile"]["type"] == "RuntimeDefault"
        assert pod["nodeSelector"]["hpcml.io/accelerator"] == "nvidia"
        assert pod["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Equal", "value": "present", "effect": "NoSchedule"}]


def test_dra_claim_asks_for_a_training_node_worth_of_gpus():
    from hpcml.k8s.train import PRODUCTION_SPEC
    from hpcml.train.targets.layout import node_layout

    t = _find(gpu.render(), "ResourceClaimTemplate", "hpcml-train-gpus")
    assert t["spec"]["spec"]["devices"]["requests"][0]["exactly"]["count"] == node_layout(PRODUCTION_SPEC).gpus_per_node
    with pytest.raises(ValueError, match="count"):
        gpu.claim_template("x", gpu.TRAINING_CLASS, count=0)
