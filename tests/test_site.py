"""The HTML walkthrough, checked in a real browser (headless Chromium via chromedriver)."""

import re
from pathlib import Path

import pytest

from hpcml import sitecheck

pytestmark = [pytest.mark.browser, pytest.mark.integration]


def _assert_clean(reports):
    bad = [(r.url, r.console_errors, r.broken, r.absolute) for r in reports if not r.ok]
    assert not bad, bad


def test_failed_notebook_page_in_browser(tmp_path, build_tmp):
    """A tiny two-notebook pipeline (one fails) renders pages a browser loads cleanly."""
    import nbformat

    from hpcml import pipeline

    d = tmp_path / "nbs"
    d.mkdir()
    for name, body in [("00_fine", "from hpcml import report\nreport.begin('00_fine')\nreport.record('x', 1, headline=True)"),
                       ("01_broken", "1/0")]:
        nb = nbformat.v4.new_notebook()
        nb.metadata["kernelspec"] = {"name": "hpcml", "display_name": "Python (hpcml)", "language": "python"}
        p = nbformat.v4.new_code_cell("n: int = 1  # n")
        p.metadata["tags"] = ["parameters"]
        nb.cells = [nbformat.v4.new_markdown_cell(f"# {name}\n\nA tiny page.\n\n## Section one"), p, nbformat.v4.new_code_cell(body)]
        nbformat.write(nb, str(d / f"{name}.ipynb"))
    (tmp_path / "p.yaml").write_text("{}\n")
    runs = pipeline.run_pipeline(profile=tmp_path / "p.yaml", nb_dir=d, log=lambda *a, **k: None)
    assert [r.status for r in runs] == ["ok", "failed"]
    reports = sitecheck.check_site(build_tmp / "site", screenshot=build_tmp / "shot.png")
    assert [Path(r.url).name for r in reports] == ["index.html", "00_fine.html", "01_broken.html",
                                                   "architecture.html", "extending.html"]
    _assert_clean(reports)
    page = (build_tmp / "site" / "01_broken.html").read_text()
    assert "This notebook failed" in page and "ZeroDivisionError" in page and "1/0" in page
    assert (build_tmp / "shot.png").read_bytes()[:4] == b"\x89PNG"


def test_checker_catches_broken_links(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    (site / "index.html").write_text(
        '<!doctype html><html><head><link rel="icon" href="data:,"><title>t</title></head><body>'
        '<a href="missing.html">x</a><a href="#nowhere">y</a><img src="nope.png">'
        '<a href="https://example.invalid/">cited</a><a href="/root.html">root</a>'
        '<a href="http://127.0.0.1:8888/tree">local</a><img src="https://example.invalid/x.png"></body></html>')
    (rep,) = sitecheck.check_site(site, screenshot=tmp_path / "s.png")
    assert not rep.ok
    assert any("missing.html" in b for b in rep.broken)
    assert any("#nowhere" in b for b in rep.broken)
    assert any("nope.png" in b for b in rep.broken)
    assert rep.absolute == ["/root.html", "http://127.0.0.1:8888/tree", "https://example.invalid/x.png"]
    assert rep.external == ["https://example.invalid/"]  # a cited source: listed, not a fault


@pytest.mark.notebooks
@pytest.mark.slow
def test_walkthrough_in_browser(pipeline_run):
    """The real walkthrough: index + every notebook page, no console errors or broken links."""
    runs, build = pipeline_run
    site = build / "site"
    reports = sitecheck.check_site(site, screenshot=build / "site-index.png")
    names = [Path(r.url).name for r in reports]
    assert names == ["index.html"] + [f"{r.name}.html" for r in runs] + ["architecture.html", "extending.html"]
    _assert_clean(reports)
    index = (site / "index.html").read_text()
    for guide in ("architecture", "extending"):  # the guides are pages beside the notebooks
        assert f'href="{guide}.html"' in index
        assert 'href="index.html"' in (site / f"{guide}.html").read_text()
    for r in runs:
        assert f'href="{r.name}.html"' in index
    for r in runs:
        page = (site / f"{r.name}.html").read_text()
        assert 'rel="next"' in page or r is runs[-1]
        assert "Parameters of this run" in page and 'class="toc"' in page
        # resources load from the page's folder; only a cited source (<a href>) may point outside
        loads = [m.group(0) for m in re.finditer(r'<(\w+)\b[^>]*\b(?:src|href)="(?:https?:)?//[^"]*"', page) if m.group(1) != "a"]
        assert not loads, f"{r.name}: resources loaded from absolute URLs: {loads[:3]}"
    # a copy of the index screenshot where people look for it
    import shutil

    from hpcml import paths

    shutil.copyfile(build / "site-index.png", paths.ensure(paths.repo_root() / "build") / "site-index.png")
