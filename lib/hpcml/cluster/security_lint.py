"""Security lint of rendered manifests with checkov (kubernetes framework), run as a subprocess.

:func:`lint_manifests` runs checkov over ``manifests/`` (or any folder) and splits its failed
checks into those excused by ``tests/checkov_skips.yaml`` (each with a reason) and the rest.
checkov lives in its own environment, ``.venv-tools`` (:func:`checkov_path`).
"""

from __future__ import annotations

import fnmatch
import json
import subprocess
from pathlib import Path

import yaml

from hpcml import paths


def checkov_path() -> Path:
    """Where checkov is installed (``.venv-tools``, beside the project's own environment)."""
    return paths.repo_root() / ".venv-tools" / "bin" / "checkov"


def lint_manifests(directory: Path | None = None, skips_file: Path | None = None, timeout_s: float = 600) -> dict:
    """Run checkov (kubernetes framework) over ``directory`` and split findings by the skip list.

    Args:
        directory: default ``manifests/``.
        skips_file: YAML list of ``{check, resources: [fnmatch patterns], reason}``
            (default ``tests/checkov_skips.yaml``).

    Returns:
        ``{"passed", "failed": [unexcused findings], "excused": [findings on the skip list]}``.

    Raises:
        FileNotFoundError: checkov is not installed in ``.venv-tools``.
        RuntimeError: checkov failed or could not parse a manifest.
    """
    directory = Path(directory or paths.manifests_dir())
    skips_file = Path(skips_file or paths.repo_root() / "tests" / "checkov_skips.yaml")
    skips = yaml.safe_load(skips_file.read_text()) or []
    for i, sk in enumerate(skips):
        if not sk.get("check") or not sk.get("resources") or len(str(sk.get("reason", "")).strip()) < 20:
            raise ValueError(f"{skips_file.name} entry {i}: needs check, resources and a reason (>= 20 characters)")
    exe = checkov_path()
    if not exe.exists():
        raise FileNotFoundError(f"checkov not installed at {exe} (ci/setup installs it into .venv-tools)")
    p = subprocess.run([str(exe), "-d", str(directory), "--framework", "kubernetes", "-o", "json", "--quiet",
                        "--compact", "--skip-download"], capture_output=True, text=True, timeout=timeout_s)
    if p.returncode not in (0, 1) or not p.stdout.strip():
        raise RuntimeError(f"checkov failed (exit {p.returncode}): {p.stderr[-2000:]}")
    reports = json.loads(p.stdout)
    reports = reports if isinstance(reports, list) else [reports]
    if any(r.get("summary", {}).get("parsing_errors") for r in reports):
        raise RuntimeError(f"checkov could not parse some manifests: {p.stdout[:2000]}")
    out: dict = {"passed": sum(r.get("summary", {}).get("passed", 0) for r in reports), "failed": [], "excused": []}
    for r in reports:
        for f in r.get("results", {}).get("failed_checks", []):
            line = f"{f['check_id']} {f['resource']} ({f['file_path']}): {f['check_name']}"
            hit = any(sk["check"] == f["check_id"] and any(fnmatch.fnmatchcase(f["resource"], pat) for pat in sk["resources"])
                      for sk in skips)
            out["excused" if hit else "failed"].append(line)
    return out
