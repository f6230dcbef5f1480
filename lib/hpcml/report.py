"""Record a notebook's metrics and figures, and read them back.

Every notebook calls :func:`begin` once (it records the notebook's parameters: the names
its ``parameters`` cell declares, with their values in the kernel), then :func:`record`
for each headline number (or :func:`record_all` for the :class:`Metric` list a stage's
summary function builds) and :func:`figure` for each plot. Results land in
``build/metrics/<notebook>.json`` (written atomically after every call) and
``build/figures/<notebook>/<name>.png``. The review notebook and the site index
read them back with :func:`load` / :func:`load_all` / :func:`value` — numbers are
never retyped.

Example:
    >>> from hpcml import report
    >>> report.begin("00_cluster_setup")
    >>> report.record("slurm_start_s", 3.2, unit="s", headline=True)
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hpcml import claims, paths
from hpcml.params import parameters_source, parse_parameters_cell


class MissingMetricsError(LookupError):
    """A stage's metrics are not there: its notebook has not been run yet."""


@dataclass(frozen=True)
class Metric:
    """One metric to record: the arguments of :func:`record`, built by a summary function."""

    name: str
    value: Any
    unit: str = ""
    description: str = ""
    headline: bool = False


@dataclass
class _Run:
    notebook: str
    data: dict[str, Any] = field(default_factory=dict)


_current: _Run | None = None


def _clean(value: Any) -> Any:
    """Make ``value`` JSON-safe (numpy scalars, tuples, NaN -> None)."""
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", 0) == 0:
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if hasattr(value, "tolist"):
        return _clean(value.tolist())
    if isinstance(value, Path):
        return str(value)
    return value


def metrics_path(notebook: str) -> Path:
    return paths.metrics_dir() / f"{notebook}.json"


def _save() -> None:
    assert _current is not None
    paths.atomic_write_text(
        metrics_path(_current.notebook), json.dumps(_current.data, indent=2, sort_keys=False)
    )


def _require() -> _Run:
    if _current is None:
        raise RuntimeError("hpcml.report: call report.begin('<notebook name>') first")
    return _current


def find_notebook(notebook: str) -> Path | None:
    """The ``.ipynb`` file of ``notebook``: in the working directory (papermill runs a
    notebook in its own folder), else in ``notebooks/``; ``None`` when neither has it."""
    for folder in (Path.cwd(), paths.notebooks_dir()):
        path = folder / f"{notebook}.ipynb"
        if path.is_file():
            return path
    return None


def notebook_parameters(notebook: str, namespace: Mapping[str, Any]) -> dict[str, Any]:
    """The parameters of ``notebook`` as they are in ``namespace``.

    Args:
        notebook: the notebook's stem.
        namespace: the kernel's globals: the parameters cell ran there, and after it
            papermill's injected cell, so these are the values the run uses.

    Returns:
        ``{name: value}`` for each name the notebook's ``parameters`` cell declares, in its
        order; empty when the notebook file or its parameters cell is not found.
    """
    path = find_notebook(notebook)
    source = parameters_source(path) if path else None
    if source is None:
        return {}
    return {p.name: namespace[p.name] for p in parse_parameters_cell(source) if p.name in namespace}


def begin(notebook: str, params: dict[str, Any] | None = None) -> Path:
    """Start (or restart) recording for ``notebook``; earlier results of it are replaced.

    Args:
        notebook: the notebook's stem, e.g. ``"02_horovod_training"``.
        params: the parameters to record; by default the notebook's own, read by
            :func:`notebook_parameters` from the caller's globals (a notebook cell's
            globals are the kernel's namespace).

    Returns:
        The path of the metrics JSON.
    """
    global _current
    if not notebook or "/" in notebook:
        raise ValueError(f"report.begin: notebook must be a stem like '00_cluster_setup', got {notebook!r}")
    if params is None:
        params = notebook_parameters(notebook, sys._getframe(1).f_globals)
    _current = _Run(
        notebook,
        {
            "notebook": notebook,
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "params": _clean(params or {}),
            "metrics": {},
            "figures": [],
            "claims": [],
            "conclusions": {},
        },
    )
    _save()
    return metrics_path(notebook)


def record(
    name: str,
    value: Any,
    unit: str = "",
    description: str = "",
    headline: bool = False,
) -> Any:
    """Record one metric of the current notebook and return ``value`` unchanged.

    Args:
        name: snake_case metric name, unique within the notebook.
        value: a number, string, list or dict (tables are fine).
        unit: unit for display, e.g. ``"s"``, ``"img/s"``, ``"USD"``.
        description: one line saying what was measured and how.
        headline: show it on the site index card.
    """
    run = _require()
    if not name or not name.replace("_", "").replace(".", "").isalnum():
        raise ValueError(f"report.record: metric name must be snake_case, got {name!r}")
    run.data["metrics"][name] = {
        "value": _clean(value),
        "unit": unit,
        "description": description,
        "headline": bool(headline),
    }
    _save()
    return value


def record_all(metrics: Iterable[Metric]) -> dict[str, Any]:
    """Record each :class:`Metric` in order, as :func:`record` does.

    Returns:
        ``{name: value}`` of the recorded metrics.
    """
    return {m.name: record(m.name, m.value, m.unit, m.description, m.headline) for m in metrics}


def figure(fig: Any, name: str, caption: str = "", main: bool = False) -> Path:
    """Save a matplotlib figure as PNG for the current notebook and list it.

    Args:
        fig: a ``matplotlib.figure.Figure``.
        name: file stem, e.g. ``"scaling"``.
        caption: one line shown under the thumbnail on the site.
        main: use it as the notebook's thumbnail on the site index.

    Returns:
        The PNG path.
    """
    run = _require()
    out = paths.ensure(paths.figures_dir() / run.notebook) / f"{name}.png"
    tmp = out.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=110, bbox_inches="tight")
    tmp.replace(out)
    figs = [f for f in run.data["figures"] if f["name"] != name]
    if main:
        for f in figs:
            f["main"] = False
    figs.append({"name": name, "path": str(out), "caption": caption, "main": bool(main)})
    run.data["figures"] = figs
    _save()
    return out


def metric_values() -> dict[str, Any]:
    """``{name: value}`` of every metric the current notebook recorded so far."""
    return {k: m["value"] for k, m in _require().data["metrics"].items()}


def say(template: str, **values: Any) -> claims.Markdown:
    """A sentence rendered from measured values, recorded, and displayed as Markdown.

    Write the numbers a sentence states through this (or a summary function that calls it),
    never by hand: ``report.say("Spark took {s:.1f} s", s=report.get("spark_s"))``. Metric
    names the template uses and ``values`` does not give are read from the recorded metrics.

    Raises:
        hpcml.claims.ClaimError: a value is missing, ``None`` or NaN (the run fails; the
            text never prints "None").
    """
    run = _require()
    text = claims.render(template, {**metric_values(), **values})
    run.data.setdefault("claims", []).append(text)
    _save()
    return claims.Markdown(text)


def conclude(name: str, rule: str, yes: str, no: str, expect: bool | None = None) -> str:
    """Decide a conclusion from recorded metrics, record it, and return the word for it.

    Args:
        name: snake_case name of the conclusion.
        rule: an expression over recorded metric names (:func:`hpcml.claims.evaluate`),
            e.g. ``"spark_vs_pandas_1m > 1"``.
        yes: the words the text uses when the rule holds (``"ahead of"``).
        no: the words when it does not (``"behind"``).
        expect: ``True`` (or ``False``) when the narrative around it states the conclusion
            unconditionally: :func:`check_conclusions` then fails unless the rule gives that.

    Returns:
        ``yes`` or ``no``.
    """
    run = _require()
    holds = claims.evaluate(rule, metric_values())
    run.data.setdefault("conclusions", {})[name] = {
        "rule": rule, "holds": holds, "word": yes if holds else no, "expect": expect,
        "values": {n: metric_values().get(n) for n in claims.rule_names(rule)},
    }
    _save()
    return yes if holds else no


def check_conclusions() -> dict[str, bool]:
    """Re-evaluate every recorded conclusion against the metrics as they stand now.

    The checks cell calls it. It fails (``AssertionError``, naming each conclusion) when a
    rule's metric is gone or NaN, when a metric changed after the text was rendered so the
    printed word is no longer the rule's, or when an expected conclusion does not hold.

    Returns:
        ``{name: holds}`` of every conclusion.
    """
    run = _require()
    values = metric_values()
    problems, out = [], {}
    for name, c in run.data.get("conclusions", {}).items():
        try:
            holds = claims.evaluate(c["rule"], values)
        except claims.ClaimError as e:
            problems.append(f"{name}: {e}")
            continue
        out[name] = holds
        if holds != c["holds"]:
            problems.append(f"{name}: the text printed {c['word']!r} but {c['rule']} is now {holds}")
        if c.get("expect") is not None and holds != c["expect"]:
            problems.append(f"{name}: the text states {c['rule']} is {c['expect']}, the run gives {holds}")
    assert not problems, "conclusions that do not agree with this run: " + "; ".join(problems)
    return out


def get(name: str) -> Any:
    """Value of a metric recorded by the current notebook."""
    run = _require()
    try:
        return run.data["metrics"][name]["value"]
    except KeyError:
        raise KeyError(f"metric {name!r} was not recorded by {run.notebook}") from None


def load(notebook: str) -> dict[str, Any]:
    """The recorded results of ``notebook``.

    Raises:
        MissingMetricsError: naming the notebook to run first.
    """
    path = metrics_path(notebook)
    if not path.exists():
        raise MissingMetricsError(
            f"no recorded metrics for {notebook} ({path}): run notebooks/{notebook}.ipynb first"
        )
    return json.loads(path.read_text(encoding="utf-8"))


def load_all() -> dict[str, dict[str, Any]]:
    """All recorded notebooks, keyed by notebook stem, in order."""
    d = paths.metrics_dir()
    if not d.exists():
        return {}
    return {p.stem: json.loads(p.read_text(encoding="utf-8")) for p in sorted(d.glob("*.json"))}


def value(notebook: str, name: str) -> Any:
    """One metric's value from another notebook, with a clear error if missing."""
    data = load(notebook)
    try:
        return data["metrics"][name]["value"]
    except KeyError:
        raise MissingMetricsError(
            f"{notebook} recorded no metric {name!r}: re-run notebooks/{notebook}.ipynb "
            f"(recorded: {', '.join(sorted(data['metrics'])) or 'none'})"
        ) from None


def headlines(data: dict[str, Any]) -> list[tuple[str, Any, str]]:
    """(name, value, unit) of the headline metrics in one notebook's results."""
    return [
        (k, m["value"], m.get("unit", ""))
        for k, m in data.get("metrics", {}).items()
        if m.get("headline")
    ]
