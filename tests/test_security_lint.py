"""Security lint of manifests/ with checkov (kubernetes framework): no failed check except the
ones listed, each with a reason, in tests/checkov_skips.yaml."""

from __future__ import annotations

import pytest
import yaml

from hpcml import paths
from hpcml.cluster import security_lint

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def checkov():
    if not security_lint.checkov_path().exists():
        pytest.skip(f"checkov not installed at {security_lint.checkov_path()} (ci/setup installs it into .venv-tools)")


def test_manifests_pass_security_lint(checkov):
    if not any(paths.manifests_dir().rglob("*.yaml")):
        pytest.skip("no manifests rendered yet")
    res = security_lint.lint_manifests()
    assert res["passed"] > 0
    assert not res["failed"], "checkov findings not in tests/checkov_skips.yaml:\n" + "\n".join(res["failed"])


def test_lint_catches_an_insecure_pod(checkov, tmp_path):
    """The lint is live: a privileged root pod with no limits fails checks that are not skipped."""
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "bad", "namespace": "hpcml"},
           "spec": {"containers": [{"name": "c", "image": "busybox:1.36",
                                    "securityContext": {"privileged": True, "runAsUser": 0}}]}}
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(pod))
    ids = {line.split()[0] for line in security_lint.lint_manifests(tmp_path)["failed"]}
    assert {"CKV_K8S_16", "CKV_K8S_11"} <= ids, ids  # privileged container; no CPU limits


@pytest.mark.unit
def test_skip_entries_need_a_reason(tmp_path):
    bad = tmp_path / "skips.yaml"
    bad.write_text(yaml.safe_dump([{"check": "CKV_K8S_8", "resources": ["*"], "reason": "meh"}]))
    with pytest.raises(ValueError, match="skips.yaml entry 0: .*reason"):
        security_lint.lint_manifests(tmp_path, skips_file=bad)
