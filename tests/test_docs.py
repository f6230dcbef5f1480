"""The guides stay true: the module map lists every module, and every module path, file and
project command they name exists."""

import importlib
import importlib.util
import re
from pathlib import Path

import pytest

from hpcml import layers

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "docs" / "architecture.md", ROOT / "docs" / "extending.md"]
#: Top-level folders whose files the guides may name (``build/`` is generated, so it is not checked).
REPO_DIRS = ("lib/", "tests/", "ci/", "notebooks/", "manifests/", "params/", "diagrams/", "docs/", "docker/", ".ci/")


def code_spans(text: str) -> list[str]:
    return re.findall(r"`([^`\n]+)`", text)


def map_modules(text: str) -> list[str]:
    """The modules listed between the module-map markers (first column of the table)."""
    block = text.split("<!-- module-map:start -->", 1)[1].split("<!-- module-map:end -->", 1)[0]
    return re.findall(r"^\|\s*`(hpcml[\w.]*)`", block, flags=re.M)


def missing_from_map(text: str, modules: list[str]) -> list[str]:
    listed = set(map_modules(text))
    return [m for m in modules if m not in listed]


def resolves(dotted: str) -> bool:
    """True when ``dotted`` is a module of hpcml, or an attribute reachable from its longest module prefix."""
    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ModuleNotFoundError:
            continue
        for attr in parts[i:]:
            if not hasattr(obj, attr):
                return False
            obj = getattr(obj, attr)
        return True
    return False


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_guide_exists_and_is_linked_from_the_readme(doc):
    assert doc.exists(), f"{doc} is missing"
    assert f"docs/{doc.name}" in (ROOT / "README.md").read_text(), f"README does not link docs/{doc.name}"


def test_module_map_lists_every_module():
    text = DOCS[0].read_text()
    modules = [m for m, _ in layers.table()]
    assert missing_from_map(text, modules) == [], "docs/architecture.md's module map lacks these modules"
    assert sorted(set(map_modules(text)) - set(modules)) == [], "the module map names modules that do not exist"


def test_module_map_check_fails_for_a_new_module():
    text = DOCS[0].read_text()
    modules = [m for m, _ in layers.table()] + ["hpcml.train.brand_new"]
    assert missing_from_map(text, modules) == ["hpcml.train.brand_new"]


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_named_modules_files_and_commands_exist(doc):
    bad = []
    for span in code_spans(doc.read_text()):
        for token in re.findall(r"\bhpcml(?:\.\w+)+", span):
            token = token.rstrip(".")
            if not resolves(token):
                bad.append(f"{token} (in `{span}`)")
        for token in re.findall(r"(?<![\w/.])((?:%s)[^\s`]*)" % "|".join(re.escape(d) for d in REPO_DIRS), span):
            path = token.rstrip(".,:)")
            if any(c in path for c in "<*") or "NN" in path:  # a pattern, not a file
                continue
            if not (ROOT / path).exists():
                bad.append(f"{path} (in `{span}`)")
        m = re.match(r"(?:\.venv/bin/)?python -m (hpcml[\w.]*)", span)
        if m and importlib.util.find_spec(m.group(1)) is None:
            bad.append(f"command module {m.group(1)} (in `{span}`)")
    assert not bad, f"{doc.name} names things that do not exist:\n" + "\n".join(bad)


def test_guides_render_as_site_pages(build_tmp):
    from hpcml import site

    index = site.render_site([], build_tmp / "site")
    html = index.read_text()
    assert 'href="architecture.html"' in html and 'href="extending.html"' in html
    arch = (build_tmp / "site" / "architecture.html").read_text()
    assert 'href="extending.html"' in arch and 'href="extending.md"' not in arch  # links follow the pages
    assert 'src="figures/architecture.png"' in arch and (build_tmp / "site" / "figures" / "architecture.png").exists()
    assert "<table>" in arch  # the tables are rendered, not left as pipes
