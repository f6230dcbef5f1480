"""Security lint of manifests/ with checkov (kubernetes framework): no failed check except the
ones listed, each with a reason, in tests/checkov_skips.yaml."""

from __future__ import annotations

import fnmatch
import json
import subprocess
from pathlib import Path

import pytest
import yaml

from hpcml import paths

pytestmark = pytest.mark.integration

CHECKOV = paths.repo_root() / ".venv-tools" / "bin" / "checkov"
SKIPS_FILE = Path(__file__).with_name("checkov_skips.yaml")


def load_skips() -> list[dict]:
    skips = yaml.safe_load(SKIPS_FILE.read_text()) or []
    for i, s in enumerate(skips):
        if not s.get("check") or not s.get("resources") or len(str(s.get("reason", "")).strip()) < 20:
            raise ValueError(f"{SKIPS_FILE.name} entry {i}: needs check, resources and a reason (>= 20 chars)")
    return skips


def failed_checks(directory: Path) -> list[dict]:
    """Run checkov over ``directory``; the failed checks as dicts (check_id, resource, file_path, …)."""
    p = subprocess.run([str(CHECKOV), "-d", str(directory), "--framework", "kubernetes", "-o", "json",
                        "--quiet", "--compact", "--skip-download"],
                       capture_output=True, text=True, timeout=600)
    if p.returncode not in (0, 1) or not p.stdout.strip():
        raise RuntimeError(f"checkov failed (exit {p.returncode}): {p.stderr[-2000:]}")
    reports = json.loads(p.stdout)
    reports = reports if isinstance(reports, list) else [reports]
    if any(r.get("summary", {}).get("parsing_errors") for r in reports):
        raise RuntimeError(f"checkov could not parse some manifests: {p.stdout[:2000]}")
    return [f for r in reports for f in r.get("results", {}).get("failed_checks", [])]


def unexcused(failed: list[dict], skips: list[dict]) -> list[str]:
    out = []
    for f in failed:
        if not any(s["check"] == f["check_id"] and any(fnmatch.fnmatchcase(f["resource"], pat) for pat in s["resources"])
                   for s in skips):
            out.append(f"{f['check_id']} {f['resource']} ({f['file_path']}): {f['check_name']}")
    return out


@pytest.fixture(scope="module")
def checkov():
    if not CHECKOV.exists():
        pytest.skip(f"checkov not installed at {CHECKOV} (ci/setup installs it into .venv-tools)")
    return CHECKOV


def test_skip_list_is_well_formed():
    assert load_skips()


def test_manifests_pass_security_lint(checkov):
    root = paths.manifests_dir()
    if not any(root.rglob("*.yaml")):
        pytest.skip("no manifests rendered yet")
    problems = unexcused(failed_checks(root), load_skips())
    assert not problems, "checkov findings not in tests/checkov_skips.yaml:\n" + "\n".join(problems)


def test_lint_catches_an_insecure_pod(checkov, tmp_path):
    """The lint is live: a privileged root pod with no limits fails checks that are not skipped."""
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "bad", "namespace": "hpcml"},
           "spec": {"containers": [{"name": "c", "image": "busybox:1.36",
                                    "securityContext": {"privileged": True, "runAsUser": 0}}]}}
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(pod))
    problems = unexcused(failed_checks(tmp_path), load_skips())
    ids = {p.split()[0] for p in problems}
    assert {"CKV_K8S_16", "CKV_K8S_11"} <= ids, problems  # privileged container; no CPU limits
