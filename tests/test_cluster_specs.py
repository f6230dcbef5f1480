"""hpcml.cluster.spec and hpcml.k8s.cluster: bad specs fail with the field named, before anything
is written; the builders encode the scheduling/security scheme."""

from __future__ import annotations

import pytest

from hpcml.aws.account import REGION
from hpcml.cluster.spec import (GPU_TAINT, ClusterSpec, LimitSpec, NamespaceSpec, NodeGroupSpec, QuotaSpec,
                                TaintSpec, default_cluster)
from hpcml.k8s import cluster as kc

pytestmark = pytest.mark.unit

SYSTEM = NodeGroupSpec("system", "m5.xlarge", 1, 2, 1)

BAD = [
    (lambda: NodeGroupSpec("gpu", "g4dn.xlarge", gpus=-1, taints=(GPU_TAINT,)), "NodeGroupSpec.gpus"),
    (lambda: NodeGroupSpec("gpu", "g4dn.xlarge", gpus=2, taints=(GPU_TAINT,)), "NodeGroupSpec.gpus"),
    (lambda: NodeGroupSpec("gpu", "g9.huge"), "NodeGroupSpec.instance_type"),
    (lambda: NodeGroupSpec("spot", "m5.large", spot=True, extra_instance_types=("m9.x",)), "extra_instance_types"),
    (lambda: TaintSpec("nvidia.com/gpu", "present"), "TaintSpec.effect"),
    (lambda: TaintSpec("nvidia.com/gpu", "present", "NoRun"), "TaintSpec.effect"),
    (lambda: TaintSpec("", "x", "NoSchedule"), "TaintSpec.key"),
    (lambda: NodeGroupSpec("gpu", "g4dn.xlarge"), "NodeGroupSpec.taints"),
    (lambda: NodeGroupSpec("gpu", "p3.8xlarge", efa=True, taints=(GPU_TAINT,)), "NodeGroupSpec.efa"),
    (lambda: NodeGroupSpec("Bad_Name", "m5.large"), "NodeGroupSpec.name"),
    (lambda: NodeGroupSpec("ng", "m5.large", min_size=3, max_size=2, desired=2), "NodeGroupSpec.desired"),
    (lambda: NodeGroupSpec("ng", "m5.large", min_size=-1), "NodeGroupSpec.min_size"),
    (lambda: NodeGroupSpec("ng", "m5.large", labels={"hpcml.io/x": "bad value"}), "labels"),
    (lambda: QuotaSpec(requests_cpu="lots"), "QuotaSpec.requests_cpu"),
    (lambda: QuotaSpec(gpus=-2), "QuotaSpec.gpus"),
    (lambda: LimitSpec(max_memory="1 GB"), "LimitSpec.max_memory"),
    (lambda: NamespaceSpec("hpcml", "strict"), "NamespaceSpec.pod_security"),
    (lambda: ClusterSpec(account_id="1234"), "ClusterSpec.account_id"),
    (lambda: ClusterSpec(region="mars-1"), "ClusterSpec.region"),
    (lambda: ClusterSpec(availability_zones=("us-west-2a",)), "ClusterSpec.availability_zones"),
    (lambda: ClusterSpec(node_groups=(SYSTEM, SYSTEM)), "unique names"),
    (lambda: ClusterSpec(node_groups=(NodeGroupSpec("gpu", "g4dn.xlarge", taints=(GPU_TAINT,)),)), "system"),
]


@pytest.mark.parametrize("make,field", BAD, ids=[
    "negative-gpus", "more-gpus-than-type", "unknown-type", "unknown-spot-type", "taint-without-effect",
    "taint-bad-effect", "taint-empty-key", "gpu-group-without-gpu-taint", "efa-unsupported", "bad-name",
    "desired-out-of-range", "negative-min", "bad-label", "bad-quantity", "negative-gpu-quota", "bad-limit",
    "unknown-psa-level", "short-account", "bad-region", "one-az", "duplicate-groups", "no-system-group"])
def test_bad_spec_raises_naming_field(make, field):
    with pytest.raises(ValueError, match=field):
        make()


def test_bad_spec_fails_before_render(tmp_path, monkeypatch):
    """Render with a spec that cannot be built: nothing is written."""
    monkeypatch.setenv("HPCML_ROOT", str(tmp_path))
    with pytest.raises(ValueError, match="TaintSpec.effect"):
        kc.render(ClusterSpec(node_groups=(SYSTEM, NodeGroupSpec("gpu", "g4dn.xlarge", taints=(TaintSpec("k", "v"),)))))
    assert not any(tmp_path.rglob("*"))


def test_gpu_groups_from_table():
    g = NodeGroupSpec("gpu", "p3.8xlarge", taints=(GPU_TAINT,))
    assert g.gpu_count == 4 and NodeGroupSpec("e", "p4d.24xlarge", efa=True, taints=(GPU_TAINT,)).efa


@pytest.mark.parametrize("name,check", [
    ("psa-restricted", lambda r: r["cluster/namespaces.yaml"][0]["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"),
    ("no-secrets-for-data-scientists", lambda r: all("secrets" not in rule["resources"]
                                                     for rule in r["cluster/rbac.yaml"][4]["rules"])),
    ("irsa-on-every-sa", lambda r: all(d["metadata"]["annotations"]["eks.amazonaws.com/role-arn"].startswith("arn:aws:iam::111122223333:role/hpcml-")
                                       for d in r["cluster/rbac.yaml"] if d["kind"] == "ServiceAccount")),
    ("default-deny-first", lambda r: r["cluster/network-policies.yaml"][0]["spec"] == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}),
    ("device-plugin-only-on-gpu-nodes", lambda r: r["cluster/nvidia-device-plugin.yaml"][0]["spec"]["template"]["spec"]["nodeSelector"] == {"hpcml.io/accelerator": "nvidia"}),
    ("gpu-groups-tainted", lambda r: all({"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"} in g["taints"]
                                         for g in r["eks/cluster.yaml"]["managedNodeGroups"] if g["name"].startswith("gpu"))),
    ("efa-in-one-az", lambda r: [g["availabilityZones"] for g in r["eks/cluster.yaml"]["managedNodeGroups"] if g.get("efaEnabled")] == [[f"{REGION}a"]]),
    ("spot-diversified", lambda r: [len(g["instanceTypes"]) for g in r["eks/cluster.yaml"]["managedNodeGroups"] if g.get("spot")] == [3]),
    ("serving-outranks-training", lambda r: r["cluster/priority-classes.yaml"][0]["value"] > r["cluster/priority-classes.yaml"][1]["value"]),
    ("karpenter-gpu-families", lambda r: r["karpenter/nodepools.yaml"][1]["spec"]["template"]["spec"]["requirements"][1]["values"] == ["g4dn", "p3"]),
    ("sbatch-shebang-first", lambda r: all(t.startswith("#!/bin/bash\n") for k, t in r.items() if k.endswith(".sbatch"))),
])
def test_rendered_scheme(name, check):
    assert check(kc.render(default_cluster()))


def test_every_crd_kind_declared():
    kinds = {(d["apiVersion"], d["kind"]) for docs in kc.render().values() if isinstance(docs, (list, dict))
             for d in (docs if isinstance(docs, list) else [docs]) if "." in d["apiVersion"].split("/")[0]
             and not d["apiVersion"].split("/")[0].endswith("k8s.io")}
    assert kinds == set(kc.CRD_REQUIRED)
