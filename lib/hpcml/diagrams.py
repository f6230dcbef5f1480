"""Render the architecture diagrams in ``diagrams/*.py`` (the ``diagrams`` package + Graphviz).

Each script defines ``build(out: Path) -> Path``. :func:`render_all` draws them into
``build/figures/diagrams/`` and, when asked, copies ``pipeline_eks.png`` next to its
script, where the site index looks for it. The icons ship inside the ``diagrams``
package, so rendering needs no network.

Example:
    >>> from hpcml import diagrams
    >>> pngs = diagrams.render_all()
"""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

from hpcml import paths

NAMES = ("pipeline_eks", "hpc_parallelcluster", "security", "architecture")


class DiagramError(RuntimeError):
    """A diagram could not be drawn; the message says which and why."""


def scripts_dir() -> Path:
    return paths.repo_root() / "diagrams"


def out_dir() -> Path:
    return paths.figures_dir() / "diagrams"


def check_graphviz() -> str | None:
    """``None`` when Graphviz ``dot`` is usable, else a message naming what to install."""
    if shutil.which("dot") is None:
        return "Graphviz 'dot' not found on PATH: install the Debian package 'graphviz' (or conda 'graphviz')"
    return None


def _load(name: str):
    path = scripts_dir() / f"{name}.py"
    if not path.exists():
        raise DiagramError(f"diagram script {path} does not exist (known: {', '.join(NAMES)})")
    spec = importlib.util.spec_from_file_location(f"hpcml_diagram_{name}", path)
    mod = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(mod)
    if not hasattr(mod, "build"):
        raise DiagramError(f"{path} defines no build(out: Path) function")
    return mod


def render(name: str, out: Path | None = None) -> Path:
    """Draw one diagram to PNG (default ``build/figures/diagrams/<name>.png``)."""
    missing = check_graphviz()
    if missing:
        raise DiagramError(missing)
    out = Path(out or out_dir() / f"{name}.png")
    paths.ensure(out.parent)
    _load(name).build(out)
    if not out.exists() or out.stat().st_size == 0:
        raise DiagramError(f"diagram {name} produced no PNG at {out}")
    return out


def render_all(names: tuple[str, ...] = NAMES, copy_pipeline_to_repo: bool = False) -> dict[str, Path]:
    """Draw every diagram into ``build/figures/diagrams/``.

    Args:
        names: which diagrams.
        copy_pipeline_to_repo: also refresh the committed ``diagrams/*.png`` (the README's
            pictures; ``python -m hpcml.diagrams`` does this).
    """
    done = {n: render(n) for n in names}
    if copy_pipeline_to_repo:
        for n, png in done.items():
            shutil.copyfile(png, scripts_dir() / f"{n}.png")
    return done


if __name__ == "__main__":
    for name, png in render_all(copy_pipeline_to_repo=True).items():
        print(f"{name}: {png} -> diagrams/{name}.png")
