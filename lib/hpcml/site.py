"""Render the executed notebooks into the HTML walkthrough under ``build/site/``.

Each executed notebook becomes ``NN_topic.html`` (nbconvert's lab template) with a
shared header: previous/next/index navigation, the run's parameters, a table of
contents built from the notebook's headings, and — for a failed notebook — a banner
showing the failing cell. Cells tagged ``hide-input`` show only their output; cells
tagged ``remove-cell`` are dropped. ``index.html`` has the pipeline picture and one
card per notebook with status, duration, headline metrics and the main figure's
thumbnail. The project's guides (``docs/*.md``: the architecture and the extending recipes)
become pages beside the notebooks, linked from the index. All links are relative, so the
folder can be copied to any static host.
"""

from __future__ import annotations

import html
import json
import re
import shutil
from pathlib import Path
from typing import Any

from hpcml import paths, report

_CSS = """
:root{--fg:#1d2330;--muted:#5b6475;--ok:#1a7f37;--bad:#c62828;--skip:#8a8f98;--card:#f6f8fa;--accent:#0b5cad}
body.hpcml-index{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;color:var(--fg);max-width:1100px;margin:2rem auto;padding:0 1rem;line-height:1.45}
.hpcml-index h1{margin-bottom:.2rem}.hpcml-index .sub{color:var(--muted);margin-top:0}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(320px,1fr));gap:1rem}
.card{background:var(--card);border:1px solid #d8dee4;border-radius:8px;padding:1rem;display:flex;flex-direction:column}
.card h2{font-size:1.05rem;margin:.1rem 0 .4rem}.card a{color:var(--accent);text-decoration:none}
.card img{width:100%;height:170px;object-fit:contain;background:#fff;border:1px solid #e5e8eb;border-radius:4px;margin:.4rem 0}
.status{font-size:.8rem;font-weight:600;padding:.1rem .5rem;border-radius:10px;color:#fff}
.status.ok{background:var(--ok)}.status.failed{background:var(--bad)}.status.skipped,.status.pending,.status.missing{background:var(--skip)}
.blurb{font-size:.88rem;color:var(--muted);margin:.2rem 0 .5rem}
table.metrics{border-collapse:collapse;font-size:.82rem;width:100%;table-layout:fixed}table.metrics td{padding:.15rem .3rem;border-bottom:1px solid #e5e8eb;overflow-wrap:anywhere}
table.metrics td:first-child{width:58%}
table.metrics td.v{text-align:right;font-variant-numeric:tabular-nums}
.pipeline-pic{max-width:100%;border:1px solid #d8dee4;border-radius:6px;margin:1rem 0}
.hpcml-nav{font-family:system-ui,sans-serif;background:#f6f8fa;border-bottom:1px solid #d8dee4;padding:.6rem 1rem;display:flex;gap:1.2rem;align-items:center;flex-wrap:wrap;position:sticky;top:0;z-index:10}
.hpcml-nav a{color:#0b5cad;text-decoration:none;font-weight:500}.hpcml-nav .title{font-weight:700;margin-right:auto}
.hpcml-meta{font-family:system-ui,sans-serif;max-width:1100px;margin:1rem auto;padding:0 1rem}
.hpcml-meta details{background:#f6f8fa;border:1px solid #d8dee4;border-radius:6px;padding:.5rem .8rem;margin:.5rem 0}
.hpcml-meta code{font-size:.85rem}.hpcml-meta ul.toc{columns:2;margin:.3rem 0}
.code-toggle{font:inherit;font-size:.85rem;border:1px solid #d8dee4;border-radius:4px;background:#fff;cursor:pointer}
body.hpcml-hide-code .jp-CodeCell .jp-Cell-inputWrapper{display:none}
.hpcml-fail{background:#fdecea;border:1px solid var(--bad);border-radius:6px;padding:.6rem 1rem}
.hpcml-fail pre{white-space:pre-wrap;background:#fff;padding:.5rem;border-radius:4px;overflow:auto}
"""


def _headings(body: str) -> list[tuple[int, str, str]]:
    """(level, id, text) of the h1-h3 headings nbconvert rendered (ids as it made them)."""
    out = []
    for m in re.finditer(r'<h([1-3]) id="([^"]+)"[^>]*>(.*?)</h\1>', body, flags=re.S):
        text = re.sub(r"<a class=\"anchor-link\".*?</a>", "", m.group(3), flags=re.S)
        text = html.unescape(re.sub(r"<[^>]+>", "", text)).strip()
        out.append((int(m.group(1)), m.group(2), text))
    return out


def _exporter():
    from nbconvert import HTMLExporter
    from traitlets.config import Config

    c = Config()
    c.TagRemovePreprocessor.enabled = True
    c.TagRemovePreprocessor.remove_cell_tags = ("remove-cell",)
    c.TagRemovePreprocessor.remove_input_tags = ("hide-input",)
    c.HTMLExporter.preprocessors = ["nbconvert.preprocessors.TagRemovePreprocessor"]
    ex = HTMLExporter(config=c, extra_template_basedirs=[str(Path(__file__).parent / "templates")],
                      template_name="hpcml")
    ex.exclude_anchor_links = False
    return ex


def _header(name: str, title: str, prev: str | None, nxt: str | None) -> str:
    links = ['<a href="index.html">&#8962; Index</a>',
             '<button type="button" class="code-toggle" '
             'onclick="document.body.classList.toggle(\'hpcml-hide-code\')">show/hide code</button>']
    links.append(f'<a href="{prev}.html" rel="prev">&larr; {html.escape(prev)}</a>' if prev else "")
    links.append(f'<a href="{nxt}.html" rel="next">{html.escape(nxt)} &rarr;</a>' if nxt else "")
    return (
        f'<nav class="hpcml-nav"><span class="title">hpcml &middot; {html.escape(title)}</span>'
        + "".join(links)
        + "</nav>"
    )


def _declared(executed: str):
    """The parameters declared in the executed notebook's ``parameters`` cell."""
    import nbformat

    from hpcml.params import parse_parameters_cell

    p = Path(executed)
    if not p.exists():
        return []
    nb = nbformat.read(str(p), as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code" and "parameters" in cell.get("metadata", {}).get("tags", []):
            return parse_parameters_cell(cell.source)
    return []


def _meta_block(run: dict[str, Any], body: str) -> str:
    parts = ['<div class="hpcml-meta">']
    status = run.get("status", "ok")
    parts.append(
        f'<p><span class="status {status}">{status}</span> &nbsp;'
        f'ran in {run.get("duration_s", 0):.1f} s</p>'
    )
    if status == "failed" and run.get("error"):
        err = run["error"]
        parts.append(
            '<div class="hpcml-fail"><strong>This notebook failed</strong> at cell '
            f'{html.escape(str(err.get("cell_index", "?")))}:'
            f'<pre>{html.escape(str(err.get("source", "")))}</pre>'
            f'<pre>{html.escape(str(err.get("ename", "")))}: {html.escape(str(err.get("evalue", ""))[:3000])}</pre></div>'
        )
    params = run.get("parameters") or {}
    rows = ""
    for p in _declared(run.get("executed", "")):
        if p.name in params:
            val, note = json.dumps(params[p.name]), " <em>(from the profile)</em>"
        else:
            val, note = p.default, ""
        rows += (f"<li><code>{html.escape(p.name)} = {html.escape(val)}</code>{note}"
                 f" <small>{html.escape(p.comment)}</small></li>")
    parts.append(
        "<details open><summary>Parameters of this run</summary>"
        + (f"<ul>{rows}</ul>" if rows else "<p>none</p>")
        + "</details>"
    )
    heads = _headings(body)
    if heads:
        toc = "".join(
            f'<li style="margin-left:{(lvl - 1)}em"><a href="#{hid}">{html.escape(t)}</a></li>'
            for lvl, hid, t in heads
        )
        parts.append(f'<details open><summary>Contents</summary><ul class="toc">{toc}</ul></details>')
    parts.append("</div>")
    return "".join(parts)


def render_notebook(executed: Path, out: Path, run: dict[str, Any], prev: str | None, nxt: str | None) -> Path:
    """Render one executed notebook to ``out`` with the shared header."""
    import nbformat

    nb = nbformat.read(str(executed), as_version=4)
    body, _ = _exporter().from_notebook_node(nb)
    title = executed.stem
    body = body.replace("</head>", '<link rel="icon" href="data:,">\n</head>', 1)
    header = f"<style>{_CSS}</style>" + _header(executed.stem, title, prev, nxt) + _meta_block(run, body)
    body = re.sub(r"(<body[^>]*>)", lambda m: m.group(1) + header, body, count=1)
    body = re.sub(r"<title>.*?</title>", f"<title>{html.escape(title)} — hpcml</title>", body, count=1, flags=re.S)
    paths.atomic_write_text(out, body)
    return out


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        if abs(v) >= 1000:
            return f"{v:,.0f}"
        if abs(v) >= 10:
            return f"{v:.1f}"
        return f"{v:.3g}"
    if isinstance(v, (list, dict)):
        return f"({len(v)} items)"
    return html.escape(str(v))


def _title_and_blurb(executed: str) -> tuple[str, str]:
    """The notebook's first heading and the first sentence under it."""
    p = Path(executed)
    if not p.exists():
        return "", ""
    import nbformat

    nb = nbformat.read(str(p), as_version=4)
    for cell in nb.cells:
        tags = cell.get("metadata", {}).get("tags", [])
        if cell.cell_type != "markdown" or any(t.startswith("papermill-error") for t in tags):
            continue
        lines = [ln.strip() for ln in cell.source.splitlines() if ln.strip()]
        title = next((ln.lstrip("# ") for ln in lines if ln.startswith("# ")), "")
        rest = [ln for ln in lines if not ln.startswith("#") and not ln.startswith("**")]
        first = rest[:1]
        for ln in rest[1:]:  # continuation lines of the first paragraph or bullet
            if ln.startswith(("- ", "* ")) or ln[:2].rstrip(".").isdigit():
                break
            first.append(ln)
        blurb = re.sub(r"^[-*]\s+", "", " ".join(first))
        blurb = re.sub(r"[*_`]", "", blurb)
        if blurb:
            blurb = blurb[0].upper() + blurb[1:]
        return title, (blurb if len(blurb) <= 240 else blurb[:237].rsplit(" ", 1)[0] + "…")
    return "", ""


def _card(run: dict[str, Any], metrics: dict[str, Any] | None, site: Path) -> str:
    name = run["name"]
    status = run.get("status", "missing")
    link = f"{name}.html"
    thumb = ""
    if metrics:
        figs = metrics.get("figures", [])
        main = next((f for f in figs if f.get("main")), figs[0] if figs else None)
        if main and Path(main["path"]).exists():
            dest = paths.ensure(site / "figures" / name) / Path(main["path"]).name
            shutil.copyfile(main["path"], dest)
            rel = f"figures/{name}/{dest.name}"
            cap = html.escape(main.get("caption") or main["name"])
            thumb = f'<a href="{link}"><img src="{rel}" alt="{cap}" title="{cap}"></a>'
    rows = ""
    if metrics:
        for k, v, unit in report.headlines(metrics):
            rows += f'<tr><td>{html.escape(k)}</td><td class="v">{_fmt(v)} {html.escape(unit)}</td></tr>'
    table = f'<table class="metrics">{rows}</table>' if rows else ""
    dur = f'{run.get("duration_s", 0):.0f} s' if run.get("duration_s") else ""
    nb_title, blurb = _title_and_blurb(run.get("executed", ""))
    label = html.escape(nb_title or name)
    title = f'<a href="{link}">{label}</a>' if status in ("ok", "failed") else label
    blurb_html = f'<p class="blurb">{html.escape(blurb)}</p>' if blurb else ""
    return (
        f'<div class="card"><h2>{title}</h2><div><span class="status {status}">{status}</span> '
        f'<small>{html.escape(name)} &middot; {dur}</small></div>{thumb}{blurb_html}{table}</div>'
    )


def _pipeline_picture(site: Path) -> str:
    for src in (paths.figures_dir() / "diagrams" / "pipeline_eks.png", paths.repo_root() / "diagrams" / "pipeline_eks.png"):
        cand = src.name
        if src.exists():
            dest = paths.ensure(site / "figures") / cand
            shutil.copyfile(src, dest)
            return f'<img class="pipeline-pic" src="figures/{cand}" alt="the pipeline on EKS">'
    return ""


#: The guides rendered beside the notebooks: (file under docs/, page title).
GUIDES = (("architecture", "Architecture"), ("extending", "Extending hpcml"))
_GUIDE_CSS = """
body.hpcml-guide{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;color:var(--fg);margin:0;line-height:1.5}
.hpcml-guide main{max-width:1000px;margin:1.5rem auto;padding:0 1rem}
.hpcml-guide table{border-collapse:collapse;font-size:.9rem;margin:.6rem 0}
.hpcml-guide td,.hpcml-guide th{border:1px solid #d8dee4;padding:.25rem .5rem;vertical-align:top;text-align:left}
.hpcml-guide code{background:#f6f8fa;padding:0 .2rem;border-radius:3px;font-size:.88em}
.hpcml-guide pre{background:#f6f8fa;padding:.6rem;border-radius:6px;overflow:auto}
.hpcml-guide img{max-width:100%;border:1px solid #d8dee4;border-radius:6px}
"""


def guide_sources() -> list[tuple[Path, str]]:
    """``(markdown file, title)`` of each guide that exists under ``docs/``."""
    root = paths.repo_root() / "docs"
    return [(root / f"{name}.md", title) for name, title in GUIDES if (root / f"{name}.md").exists()]


def render_guide(md: Path, title: str, site: Path) -> Path:
    """One guide as ``<site>/<stem>.html``: links between guides point at their pages, images are copied."""
    import mistune

    text = md.read_text(encoding="utf-8")
    stems = {name for name, _ in GUIDES}

    def image(m: re.Match) -> str:
        src = (md.parent / m.group(2)).resolve()
        if not src.exists():
            raise FileNotFoundError(f"{md.name}: image {m.group(2)} does not exist ({src})")
        dest = paths.ensure(site / "figures") / src.name
        shutil.copyfile(src, dest)
        return f"![{m.group(1)}](figures/{src.name})"

    text = re.sub(r"!\[([^\]]*)\]\(([^)\s]+)\)", image, text)
    text = re.sub(r"\]\((" + "|".join(sorted(stems)) + r")\.md(#[^)]*)?\)",
                  lambda m: f"]({m.group(1)}.html{m.group(2) or ''})", text)
    body = mistune.create_markdown(plugins=["table"], escape=False)(text)
    nav = (f'<nav class="hpcml-nav"><span class="title">hpcml &middot; {html.escape(title)}</span>'
           '<a href="index.html">&#8962; Index</a>'
           + "".join(f'<a href="{n}.html">{html.escape(t)}</a>' for n, t in GUIDES if n != md.stem) + "</nav>")
    page = (f'<!doctype html><html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width,initial-scale=1"><title>{html.escape(title)} — hpcml</title>'
            f'<link rel="icon" href="data:,"><style>{_CSS}{_GUIDE_CSS}</style></head>'
            f'<body class="hpcml-guide">{nav}<main>{body}</main></body></html>')
    out = site / f"{md.stem}.html"
    paths.atomic_write_text(out, page)
    return out


def _guides_section(site: Path) -> str:
    links = [f'<li><a href="{render_guide(md, title, site).name}">{html.escape(title)}</a></li>'
             for md, title in guide_sources()]
    return f'<h2>Guides</h2><ul class="guides">{"".join(links)}</ul>' if links else ""


def render_site(runs: list | None, site: Path | None = None) -> Path:
    """Render every executed notebook and write ``index.html``; return the index path.

    Args:
        runs: :class:`hpcml.pipeline.NotebookRun` objects (or dicts) of this run;
            ``None`` re-renders from ``build/pipeline.json``.
        site: output folder (default ``build/site``).
    """
    from dataclasses import asdict, is_dataclass

    site = paths.ensure(site or paths.site_dir())
    if runs is None:
        summary = paths.build_dir() / "pipeline.json"
        if not summary.exists():
            raise FileNotFoundError(f"{summary} not found: run the pipeline first (python -m hpcml.pipeline)")
        runs = json.loads(summary.read_text())["notebooks"]
    runs = [asdict(r) if is_dataclass(r) else dict(r) for r in runs]
    pages = [r for r in runs if r.get("status") in ("ok", "failed") and Path(r["executed"]).exists()]
    names = [r["name"] for r in pages]
    for i, r in enumerate(pages):
        render_notebook(
            Path(r["executed"]), site / f"{r['name']}.html", r,
            names[i - 1] if i > 0 else None, names[i + 1] if i + 1 < len(names) else None,
        )
    all_metrics = report.load_all()
    cards = "".join(_card(r, all_metrics.get(r["name"]), site) for r in runs)
    n_ok = sum(r.get("status") == "ok" for r in runs)
    total = sum(r.get("duration_s", 0) for r in runs)
    page = f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width,initial-scale=1">
<title>hpcml — the walkthrough</title><link rel="icon" href="data:,"><style>{_CSS}</style></head>
<body class="hpcml-index"><h1>hpcml — an ML pipeline on a containerized HPC cluster</h1>
<p class="sub">Kubernetes/EKS, Slurm and MPI, Spark, Horovod, tuning, serving, monitoring and cost — every number
below was measured by the notebook it links to. {n_ok}/{len(runs)} notebooks succeeded in {total:.0f} s.</p>
{_pipeline_picture(site)}
<div class="cards">{cards}</div>
{_guides_section(site)}
</body></html>"""
    index = site / "index.html"
    paths.atomic_write_text(index, page)
    return index
