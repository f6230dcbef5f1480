"""manifests/ is the rendered output of the hpcml.k8s builders: no drift, and every
document valid for the pinned Kubernetes version and the next minor (upgrade check)."""

import pytest

from hpcml.k8s import render
from hpcml.k8s.validate import validate_doc, validate_manifests

pytestmark = pytest.mark.unit

DOCS = list(render.documents())


def test_no_drift():
    bad = render.drift()
    assert not bad, "manifests/ differs from the builders; run: python -m hpcml.k8s.render\n" + "\n".join(bad)


@pytest.mark.parametrize("version", [render.K8S_VERSION, render.K8S_NEXT_VERSION], ids=["pinned", "next-minor"])
def test_every_document_validates(version):
    if not DOCS:
        pytest.skip("no manifests rendered yet")
    problems = [f"{rel}: {p}" for rel, doc in DOCS for p in validate_doc(doc, version)]
    assert not problems, "\n".join(problems)


def test_validator_catches_bad_documents():
    bad_core = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x"}, "spec": {"containers": [{"image": 3}]}}
    assert validate_doc(bad_core, render.K8S_VERSION)
    removed = {"apiVersion": "batch/v1beta1", "kind": "CronJob", "metadata": {"name": "x"}, "spec": {}}
    assert "API removed" in validate_doc(removed, render.K8S_VERSION)[0]
    unknown_crd = {"apiVersion": "example.com/v1", "kind": "Thing", "metadata": {"name": "x"}}
    assert "no CRD_REQUIRED entry" in validate_doc(unknown_crd, render.K8S_VERSION)[0]


def test_validate_manifests_reports_per_version():
    assert validate_manifests([render.K8S_VERSION]) == {render.K8S_VERSION: []}
