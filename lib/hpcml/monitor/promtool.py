"""``promtool`` on the rules of :mod:`hpcml.monitor.rules`: syntax checks and rule unit tests.

:func:`check_rules` runs ``promtool check rules`` on a rule file; :func:`run_rule_tests` renders
the rule files a set of promtool test files names (``tests/promtool``) next to copies of them and
runs ``promtool test rules``. The binary is found like Prometheus' own
(:func:`hpcml.monitor.prom.find_binary`: ``$HPCML_PROMTOOL``, ``PATH``, ``/usr/bin``).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from hpcml import paths
from hpcml.monitor.prom import find_binary
from hpcml.monitor.rules import Thresholds, write_rules


def promtool(*args: str, binary: str | Path | None = None, cwd: Path | None = None) -> tuple[int, str]:
    """Run ``promtool`` and return (exit code, stdout+stderr)."""
    exe = find_binary("promtool", binary)
    res = subprocess.run([str(exe), *args], capture_output=True, text=True, timeout=120, cwd=cwd)
    return res.returncode, res.stdout + res.stderr


def check_rules(path: Path) -> tuple[int, str]:
    """``promtool check rules <path>``."""
    return promtool("check", "rules", str(path))


def run_rule_tests(test_files: list[Path], rules: dict[str, Thresholds] | None = None,
                   workdir: Path | None = None) -> tuple[int, str]:
    """``promtool test rules`` on ``test_files``, after writing the rule files they name.

    Args:
        test_files: promtool unit-test YAML files.
        rules: ``{rule file name: thresholds}`` to render next to the copies of the tests
            (e.g. ``{"hpcml-drill.rules.yml": DRILL}``).
        workdir: where copies go (default ``build/prometheus/promtool``).
    """
    wd = paths.ensure(Path(workdir) if workdir else paths.build_dir() / "prometheus" / "promtool")
    for name, t in (rules or {}).items():
        write_rules(wd / name, t)
    copies = []
    for f in test_files:
        dst = wd / Path(f).name
        shutil.copyfile(f, dst)
        copies.append(dst.name)
    return promtool("test", "rules", *copies, cwd=wd)
