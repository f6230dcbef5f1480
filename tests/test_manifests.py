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


def yaml_aliases(text: str) -> list[str]:
    """Anchors and aliases in a YAML stream (from the parser's events, not a text search)."""
    import yaml

    out = []
    for ev in yaml.parse(text, Loader=yaml.SafeLoader):
        if isinstance(ev, yaml.AliasEvent):
            out.append(f"*{ev.anchor} at line {ev.start_mark.line + 1}")
        elif getattr(ev, "anchor", None):
            out.append(f"&{ev.anchor} at line {ev.start_mark.line + 1}")
    return out


def _embedded_yaml(text: str) -> list[str]:
    """YAML documents carried as strings in ConfigMap data (``*.yaml`` / ``*.yml`` keys)."""
    import yaml

    found = []
    for doc in yaml.safe_load_all(text):
        if isinstance(doc, dict) and doc.get("kind") == "ConfigMap":
            found += [v for k, v in (doc.get("data") or {}).items() if k.endswith((".yaml", ".yml"))]
    return found


def test_no_manifest_has_yaml_anchors_or_aliases():
    from hpcml import paths

    root = paths.manifests_dir()
    bad = {}
    for p in sorted(root.rglob("*")):
        if p.is_file() and p.suffix in (".yaml", ".yml"):
            text = p.read_text()
            found = yaml_aliases(text) + [a for inner in _embedded_yaml(text) for a in yaml_aliases(inner)]
            if found:
                bad[str(p.relative_to(root))] = found
    assert not bad, bad


@pytest.mark.parametrize("text,found", [
    ("a: &x {k: 1}\nb: *x\n", ["&x at line 1", "*x at line 2"]),
    ("a: {k: 1}\nb: {k: 1}\n", []),
], ids=["alias", "copies"])
def test_alias_finder(text, found):
    assert yaml_aliases(text) == found


def test_a_shared_object_is_written_out_twice():
    shared = {"cpu": "1", "memory": "1Gi"}
    doc = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x"},
           "spec": {"containers": [{"name": "c", "resources": {"requests": shared, "limits": shared}}]}}
    text = render.to_text("x.yaml", [doc], "test")
    assert yaml_aliases(text) == [] and text.count("memory: 1Gi") == 2
    from hpcml.k8s.common import dump_yaml

    assert yaml_aliases(dump_yaml({"a": shared, "b": shared})) == []
