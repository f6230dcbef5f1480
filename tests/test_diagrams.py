"""Architecture diagrams as code: every script renders a PNG with Graphviz, offline."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from hpcml import diagrams

ROOT = Path(__file__).resolve().parent.parent
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("name", diagrams.NAMES)
def test_each_diagram_renders_a_png(build_tmp, name):
    out = diagrams.render(name)
    assert out == build_tmp / "figures" / "diagrams" / f"{name}.png"
    data = out.read_bytes()
    assert data[:8] == PNG_MAGIC and len(data) > 20_000, f"{name}: not a real drawing ({len(data)} bytes)"


def test_render_all_copies_the_site_picture_only_when_asked(build_tmp, monkeypatch, tmp_path):
    fake_root = tmp_path / "repo"
    shutil.copytree(ROOT / "diagrams", fake_root / "diagrams", ignore=shutil.ignore_patterns("*.png"))
    monkeypatch.setenv("HPCML_ROOT", str(fake_root))
    diagrams.render_all(("pipeline_eks",), copy_pipeline_to_repo=False)
    assert not (fake_root / "diagrams" / "pipeline_eks.png").exists()
    diagrams.render_all(("pipeline_eks",), copy_pipeline_to_repo=True)
    assert (fake_root / "diagrams" / "pipeline_eks.png").read_bytes()[:8] == PNG_MAGIC


@pytest.mark.skipif(shutil.which("unshare") is None, reason="util-linux unshare not available")
def test_renders_without_network(tmp_path):
    """The icons ship inside the diagrams package: no download is attempted."""
    probe = subprocess.run(["unshare", "-n", "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"cannot create a network namespace here: {probe.stderr.decode().strip()}")
    code = ("import socket\nfrom hpcml import diagrams\np = diagrams.render('pipeline_eks')\n"
            "try:\n    socket.create_connection(('192.0.2.1', 80), timeout=1); raise SystemExit('network reachable')\n"
            "except OSError:\n    print(p)\n")
    out = subprocess.run(["unshare", "-n", sys.executable, "-c", code], capture_output=True, text=True,
                         env={"HPCML_BUILD": str(tmp_path), "PATH": "/usr/bin:/bin"}, timeout=120)
    assert out.returncode == 0, out.stderr
    assert Path(out.stdout.strip()).read_bytes()[:8] == PNG_MAGIC


def test_missing_script_and_missing_dot(build_tmp, monkeypatch):
    with pytest.raises(diagrams.DiagramError, match="diagram script .*nope.py does not exist"):
        diagrams.render("nope")
    monkeypatch.setattr(shutil, "which", lambda _: None)
    with pytest.raises(diagrams.DiagramError, match="install the Debian package 'graphviz'"):
        diagrams.render("security")
