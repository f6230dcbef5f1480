"""Parameter profiles for the notebooks, and their validation.

A profile is a YAML file (``params/ci.yaml``, ``params/full.yaml`` or the user's
own) with an optional ``common:`` section applied to every notebook and one section
per notebook stem::

    common:
      seed: 0
    02_horovod_training:
      world_size: 2
      epochs: 3

Values are checked against the type annotations of each notebook's tagged
``parameters`` cell before anything runs, so a typo fails in one clear line.
"""

from __future__ import annotations

import ast
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml


class ParameterError(ValueError):
    """A parameter (or parameters file) is wrong; the message says what and where."""


@dataclass(frozen=True)
class NotebookParam:
    name: str
    type_name: str  # "int", "float", "str", "bool", "list", "dict" or "" (untyped)
    default: str
    comment: str


_TYPES: dict[str, tuple[type, ...]] = {
    "int": (int,),
    "float": (float, int),
    "str": (str,),
    "bool": (bool,),
    "list": (list,),
    "dict": (dict,),
}


def parse_parameters_cell(source: str) -> list[NotebookParam]:
    """Parse ``name: type = default  # comment`` lines of a parameters cell."""
    tree = ast.parse(source)
    lines = source.splitlines()
    out: list[NotebookParam] = []
    for node in tree.body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            ann = ast.unparse(node.annotation)
            base = ann.split("[")[0].strip()
            default = ast.unparse(node.value) if node.value is not None else ""
            line = lines[node.lineno - 1]
            comment = line.split("#", 1)[1].strip() if "#" in line else ""
            out.append(NotebookParam(node.target.id, base, default, comment))
        elif isinstance(node, ast.Assign):
            for t in node.targets:
                if isinstance(t, ast.Name):
                    line = lines[node.lineno - 1]
                    comment = line.split("#", 1)[1].strip() if "#" in line else ""
                    out.append(NotebookParam(t.id, "", ast.unparse(node.value), comment))
    return out


def parameters_source(nb_path: str | Path) -> str | None:
    """The source of the notebook's first code cell tagged ``parameters``, or ``None``.

    Args:
        nb_path: an ``.ipynb`` file (read as JSON; nbformat is not needed).
    """
    nb = json.loads(Path(nb_path).read_text(encoding="utf-8"))
    for cell in nb.get("cells", []):
        if cell.get("cell_type") == "code" and "parameters" in cell.get("metadata", {}).get("tags", []):
            src = cell.get("source", "")
            return "".join(src) if isinstance(src, list) else src
    return None


def load_profile(path: str | Path) -> dict[str, dict[str, Any]]:
    """Read a parameters file into ``{notebook_stem | "common": {name: value}}``."""
    p = Path(path)
    if not p.exists():
        raise ParameterError(f"parameters file not found: {p} (expected a YAML file such as params/ci.yaml)")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ParameterError(f"parameters file {p} is not valid YAML: {exc}") from None
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise ParameterError(
            f"parameters file {p} must map notebook names (or 'common') to mappings of parameters"
        )
    return data


def check_values(notebook: str, declared: list[NotebookParam], values: dict[str, Any]) -> None:
    """Raise :class:`ParameterError` for an unknown name or a value of the wrong type."""
    by_name = {p.name: p for p in declared}
    for name, val in values.items():
        if name not in by_name:
            raise ParameterError(
                f"{notebook}: unknown parameter {name!r} (declared: {', '.join(by_name) or 'none'})"
            )
        t = by_name[name].type_name
        ok = _TYPES.get(t)
        if ok is None:
            continue
        if t in ("int", "float") and isinstance(val, bool):
            ok = ()
        if not isinstance(val, ok):
            raise ParameterError(
                f"{notebook}: parameter {name!r} must be {t} "
                f"(parameters cell: {name}: {t} = {by_name[name].default}), got {type(val).__name__} {val!r}"
            )


def values_for(notebook: str, profile: dict[str, dict[str, Any]], declared: list[NotebookParam]) -> dict[str, Any]:
    """The parameters to pass to ``notebook``: common ones it declares, then its own section."""
    names = {p.name for p in declared}
    vals = {k: v for k, v in profile.get("common", {}).items() if k in names}
    own = dict(profile.get(notebook, {}))
    check_values(notebook, declared, own)
    vals.update(own)
    check_values(notebook, declared, vals)
    return vals


def parse_override(text: str) -> tuple[str | None, str, Any]:
    """Parse ``-p [notebook.]name=value`` (value parsed as YAML) from the command line."""
    if "=" not in text:
        raise ParameterError(f"-p expects name=value or notebook.name=value, got {text!r}")
    key, raw = text.split("=", 1)
    nb, _, name = key.rpartition(".") if "." in key else (None, "", key)
    try:
        val = yaml.safe_load(raw)
    except yaml.YAMLError:
        val = raw
    return (nb or None), name.strip(), val
