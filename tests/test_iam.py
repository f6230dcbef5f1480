"""IAM policies shipped under manifests/iam: least privilege, checked by parliament."""

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from hpcml.k8s import iam
from hpcml.k8s.render import to_text

ROOT = Path(__file__).resolve().parent.parent
PARLIAMENT = ROOT / ".venv-tools" / "bin" / "parliament"
RENDERED = iam.render()

#: Findings accepted, with the reason. Nothing else may be reported.
ALLOWED = {
    ("iam/resource/hpcml-data-key-policy.json", "RESOURCE_STAR"):
        "a KMS key policy is attached to one key; AWS requires Resource '*' there and it means 'this key'",
}


def _parliament(doc: dict) -> list[dict]:
    exe = str(PARLIAMENT) if PARLIAMENT.exists() else shutil.which("parliament")
    if not exe:
        pytest.fail("parliament is not installed: expected .venv-tools/bin/parliament (ci/setup installs it)")
    out = subprocess.run([exe, "--string", json.dumps(doc), "--json"], capture_output=True, text=True,
                         stdin=subprocess.DEVNULL, timeout=120)
    assert out.returncode in (0, 1), out.stderr
    return [json.loads(line) for line in out.stdout.splitlines() if line.strip()]


@pytest.mark.unit
def test_rendered_files_are_checked_in():
    for rel, doc in RENDERED.items():
        path = ROOT / "manifests" / rel
        assert path.exists(), f"manifests/{rel} missing: python -m hpcml.k8s.render"
        assert path.read_text() == to_text(rel, doc, "iam"), f"manifests/{rel} drifted from hpcml.k8s.iam"


@pytest.mark.integration
@pytest.mark.parametrize("rel", sorted(RENDERED), ids=lambda r: r.rsplit("/", 1)[-1])
def test_parliament_has_no_findings(rel):
    findings = [f for f in _parliament(RENDERED[rel]) if (rel, f["issue"]) not in ALLOWED]
    assert not findings, findings


@pytest.mark.integration
def test_parliament_catches_a_broad_policy():
    """The linter is live: a wildcard policy is reported (so a clean result means something)."""
    bad = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}
    assert any(f["issue"] == "RESOURCE_STAR" for f in _parliament(bad))


@pytest.mark.unit
@pytest.mark.parametrize("sa,reads,writes,deletes,not_readable", [
    ("spark", ["raw", "processed"], ["processed", "logs/emr"], [], ["models", "checkpoints"]),
    ("trainer", ["processed", "checkpoints"], ["checkpoints", "models"], ["checkpoints"], ["raw"]),
    ("tuner", ["processed"], ["tuning"], [], ["models"]),
    ("inference", ["models"], [], [], ["processed", "raw"]),
    ("sagemaker", ["processed", "checkpoints", "models"], ["checkpoints", "models"], ["checkpoints"], ["raw"]),
], ids=["spark", "trainer", "tuner", "inference", "sagemaker"])
def test_least_privilege_per_role(sa, reads, writes, deletes, not_readable):
    spec = iam.IamSpec()
    doc = iam.workload_policy(spec, sa)
    by_sid = {s["Sid"]: s for s in doc["Statement"]}
    assert sorted(by_sid["ReadInputs"]["Resource"]) == sorted(spec.objects(p) for p in reads)
    assert sorted(by_sid.get("WriteOutputs", {}).get("Resource", [])) == sorted(spec.objects(p) for p in writes)
    assert sorted(by_sid.get("DeleteRotated", {}).get("Resource", [])) == sorted(spec.objects(p) for p in deletes)
    text = json.dumps(doc)
    assert '"*"' not in text and "s3:*" not in text
    assert ("s3:DeleteObject" in text) == bool(deletes)  # only checkpoint rotation deletes
    for p in not_readable:
        assert f"/{p}/" not in text


@pytest.mark.unit
def test_ingestion_writes_raw_only():
    """The role that lands the raw lake (notebook 01's staging): put ``raw/*`` with the data key,
    list only ``raw/``, read nothing, delete nothing."""
    spec = iam.IamSpec()
    doc = iam.policies(spec)[f"{spec.cluster.name}-ingestion"]
    assert iam.role_policies(spec)[spec.role_arn("ingestion")] == f"{spec.cluster.name}-ingestion"
    by_sid = {s["Sid"]: s for s in doc["Statement"]}
    assert set(by_sid) == {"ListOwnPrefixes", "WriteOutputs", "UseDataKeyThroughS3"}
    assert by_sid["WriteOutputs"]["Resource"] == [spec.objects("raw")]
    assert "s3:PutObject" in by_sid["WriteOutputs"]["Action"]
    assert by_sid["ListOwnPrefixes"]["Condition"]["StringLike"]["s3:prefix"] == ["raw/*"]
    assert by_sid["UseDataKeyThroughS3"]["Resource"] == spec.key_arn
    assert "kms:GenerateDataKey" in by_sid["UseDataKeyThroughS3"]["Action"]
    text = json.dumps(doc)
    assert "s3:GetObject" not in text and "s3:DeleteObject" not in text
    assert all(f"/{p}/" not in text for p in iam.PREFIXES if p != "raw")
    users = iam.key_policy(spec)["Statement"][1]["Principal"]["AWS"]
    assert spec.role_arn("ingestion") in users


@pytest.mark.unit
def test_policy_names_match_the_cluster_definition():
    cluster = (ROOT / "manifests" / "eks" / "cluster.yaml").read_text()
    for name in iam.policies():
        if "-s3-" in name:
            assert f"policy/{name}" in cluster, f"{name} is not attached to any IRSA role in manifests/eks/cluster.yaml"


@pytest.mark.unit
def test_bucket_policy_enforces_tls_and_kms():
    doc = iam.bucket_policy(iam.IamSpec())
    conds = json.dumps([s["Condition"] for s in doc["Statement"]])
    assert all(s["Effect"] == "Deny" for s in doc["Statement"])
    assert "aws:SecureTransport" in conds and "aws:kms" in conds


@pytest.mark.unit
@pytest.mark.parametrize("kwargs,msg", [
    (dict(bucket="Bad_Bucket"), "IamSpec.bucket"), (dict(key_id="nope"), "IamSpec.key_id"),
    (dict(key_alias="hpcml"), "IamSpec.key_alias"),
], ids=["bucket", "key-id", "alias"])
def test_bad_spec(kwargs, msg):
    with pytest.raises(ValueError, match=msg):
        iam.IamSpec(**kwargs)


@pytest.mark.unit
def test_unknown_service_account_and_prefix():
    with pytest.raises(ValueError, match="ServiceAccount 'web'"):
        iam.workload_policy(iam.IamSpec(), "web")
    with pytest.raises(ValueError, match="prefix 'tmp'"):
        iam.IamSpec().objects("tmp")
