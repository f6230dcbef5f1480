"""Claims come from the run: sentences rendered from recorded numbers, conclusions that are
checked, and the rule that keeps measured-looking numbers out of hand-written text.

Three pieces, all pure:

* :func:`render` formats a Markdown sentence from named values and refuses a value that is
  missing, ``None``, NaN or infinite (a claim never prints "None"). :func:`hpcml.report.say`
  wraps it, records the sentence and returns an object a notebook displays as Markdown.
* :func:`evaluate` decides a conclusion written as a small expression over recorded metric
  names (``"spark_vs_pandas_1m > 1"``). :func:`hpcml.report.conclude` records the rule, its
  outcome and the word it chose; :func:`hpcml.report.check_conclusions` (the checks cell)
  re-evaluates every rule against the metrics as they stand and fails when one no longer
  gives the word the text printed, or when a conclusion the narrative states unconditionally
  (``expect=True``) does not hold.
* :func:`target_verdict` says whether a target is met the way this project means it: the
  95 % interval clears the target, not the point estimate.

The hand-written-number rule (:func:`unlabelled_numbers`), checked on every notebook by
``tests/test_claims.py``:

    In a markdown cell, outside code spans and fenced code, a number with a decimal point,
    a number followed by a unit (``%``, ``×``, ``s``, ``ms``, ``min``, ``h``, ``GB``, ``MiB``,
    ``Gbit/s``, ``img/s``, ``req/s`` …) or a ``$`` price is *measured-looking*. Each must sit
    on a line labelled ``(historical: YYYY-MM-DD, <commit>)``, ``(source: …)``,
    ``(quoted: …)`` or carrying a Markdown link to its source.

Exceptions, and only these: a version (``a.b.c``, or ``a.b`` after a product name, ``v``,
``version``, ``release`` or ``since``); a bound after ``≤ ≥ < > =`` or "at most"/"at least"
(a target or threshold is a definition, not a measurement); a number inside ``$…$`` or
``\\(…\\)`` maths is not exempt.
"""

from __future__ import annotations

import ast
import math
import operator
import re
import string
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


class ClaimError(ValueError):
    """A claim could not be rendered or checked from the recorded numbers."""


def _bad(value: Any) -> bool:
    if value is None:
        return True
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", 0) == 0:
        value = value.item()
    return isinstance(value, float) and not math.isfinite(value)


def render(template: str, values: Mapping[str, Any]) -> str:
    """``template`` formatted with ``values`` (``str.format`` syntax: ``{ratio:.2f}``).

    Raises:
        ClaimError: a placeholder has no value, or its value is ``None``, NaN or infinite;
            the message names the placeholder.
    """
    fields = [f for _, f, _, _ in string.Formatter().parse(template) if f]
    for name in fields:
        root = re.split(r"[.\[]", name, maxsplit=1)[0]
        if root not in values:
            raise ClaimError(f"claim {template[:60]!r}: no value for {{{root}}} (given: {', '.join(sorted(values)) or 'none'})")
        if _bad(values[root]):
            raise ClaimError(f"claim {template[:60]!r}: {{{root}}} is {values[root]!r}: the metric is missing or not a number")
    return template.format(**values)


@dataclass(frozen=True)
class Markdown:
    """A rendered sentence; Jupyter displays it as Markdown (``_repr_markdown_``)."""

    text: str

    def _repr_markdown_(self) -> str:
        return self.text

    def __str__(self) -> str:
        return self.text


# --- conclusions: a tiny, safe expression language over metric names -------------------
_BINOPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
           ast.Div: operator.truediv, ast.Pow: operator.pow}
_CMPOPS = {ast.Gt: operator.gt, ast.GtE: operator.ge, ast.Lt: operator.lt, ast.LtE: operator.le,
           ast.Eq: operator.eq, ast.NotEq: operator.ne}
_FUNCS = {"abs": abs, "min": min, "max": max}


def rule_names(rule: str) -> list[str]:
    """The metric names ``rule`` reads, in order of first use."""
    tree = ast.parse(rule, mode="eval")
    seen: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and node.id not in _FUNCS and node.id not in seen:
            seen.append(node.id)
    return seen


def evaluate(rule: str, values: Mapping[str, Any]) -> bool:
    """The truth of ``rule`` (comparisons, arithmetic, ``and``/``or``/``not``, ``abs``/``min``/
    ``max`` over numbers and metric names) with the names taken from ``values``.

    Raises:
        ClaimError: a name is missing, ``None`` or NaN, or the rule uses anything else.
    """

    def ev(node: ast.AST) -> Any:
        if isinstance(node, ast.Expression):
            return ev(node.body)
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
            return node.value
        if isinstance(node, ast.Name):
            if node.id not in values:
                raise ClaimError(f"rule {rule!r}: metric {node.id!r} was not recorded")
            v = values[node.id]
            if _bad(v) or isinstance(v, (str, list, dict)):
                raise ClaimError(f"rule {rule!r}: metric {node.id!r} is {v!r}, not a number")
            return v
        if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
            return _BINOPS[type(node.op)](ev(node.left), ev(node.right))
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            return -ev(node.operand)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
            return not ev(node.operand)
        if isinstance(node, ast.BoolOp):  # short-circuit, as Python: "gap > 0 and share >= 0.8"
            decided = isinstance(node.op, ast.Or)  # the value that ends an 'or' (True) or an 'and' (False)
            return decided if any(bool(ev(v)) == decided for v in node.values) else not decided
        if isinstance(node, ast.Compare):
            left = ev(node.left)
            for op, comp in zip(node.ops, node.comparators):
                if type(op) not in _CMPOPS:
                    break
                right = ev(comp)
                if not _CMPOPS[type(op)](left, right):
                    return False
                left = right
            else:
                return True
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _FUNCS
                and not node.keywords):
            return _FUNCS[node.func.id](*[ev(a) for a in node.args])
        raise ClaimError(f"rule {rule!r}: {ast.unparse(node)!r} is not allowed in a rule")

    try:
        tree = ast.parse(rule, mode="eval")
    except SyntaxError as e:
        raise ClaimError(f"rule {rule!r} is not an expression: {e.msg}") from None
    return bool(ev(tree))


# --- targets: "met" means the 95 % interval clears the target ----------------------------
MET, MISSED, UNDECIDED = "met", "missed", "undecided"


def target_verdict(mean: float, half_width: float, target: float, higher_is_better: bool) -> str:
    """``"met"`` when the whole interval ``mean ± half_width`` is on the good side of
    ``target``, ``"missed"`` when the whole of it is on the bad side, else ``"undecided"``.

    Raises:
        ClaimError: a value is missing or NaN, or ``half_width`` is negative.
    """
    for name, v in (("mean", mean), ("half_width", half_width), ("target", target)):
        if _bad(v):
            raise ClaimError(f"target_verdict: {name} is {v!r}")
    if half_width < 0:
        raise ClaimError(f"target_verdict: half_width must be >= 0, got {half_width}")
    lo, hi = mean - half_width, mean + half_width
    if higher_is_better:
        return MET if lo >= target else MISSED if hi < target else UNDECIDED
    return MET if hi <= target else MISSED if lo > target else UNDECIDED


# --- the hand-written-number rule ------------------------------------------------------
UNITS = (
    r"%|×|x(?![A-Za-z0-9])|µs|us|ms|s|sec|min|h|hours?|minutes?|seconds?|days?|"
    r"[KMGT]i?B(?:/s)?|[kMGT]b(?:it)?/s|[KMGT]bps|Gbit|Mbit|"
    r"img/s|images/s|samples/s|req/s|rows/s|steps/s|tok/s|FLOP/s|[GT]FLOP/s|[GT]FLOPS|"
    r"USD|rps"
)
_NUMBER = r"\d[\d,]*(?:\.\d+)?"
_MEASURED = re.compile(
    rf"(?P<price>\$\s?{_NUMBER})"
    rf"|(?P<unit>(?<![\w.]){_NUMBER}\s?(?:{UNITS})(?![A-Za-z0-9]))"
    rf"|(?P<decimal>(?<![\w.]){_NUMBER}\.\d+|(?<![\w.])\d+\.\d+)"
)
#: A line with one of these carries its label: a historical figure, a sourced or quoted one.
LABELS = re.compile(r"\((?:historical|source|quoted)[:\s]|\]\(https?://|<sup>\[?source", re.I)
_VERSION_WORDS = (r"v|version|versions|release|since|kubernetes|k8s|eks|horovod|pytorch|torch|spark|"
                  r"pyspark|slurm|python|java|jdk|nccl|cuda|efa|prometheus|optuna|triton|kserve|"
                  r"debian|openssh|iperf3|alertmanager|node_exporter|seaweedfs|onnx|opset|tls|http")
_VERSION = re.compile(rf"(?:\b(?:{_VERSION_WORDS})\s?)v?\d+(?:\.\d+)+|\b\d+\.\d+\.\d+(?:\.\d+)*\b", re.I)
_BOUND = re.compile(rf"(?:[≤≥<>=]|at most|at least|up to|under|over|below|above)\s*\$?\s*{_NUMBER}", re.I)
_CODE_FENCE = re.compile(r"```.*?```|~~~.*?~~~", re.S)
_CODE_SPAN = re.compile(r"`[^`\n]*`")
_LINK_URL = re.compile(r"\]\([^)]*\)")
_COMMENT = re.compile(r"<!--.*?-->", re.S)


def _blank(match: re.Match[str]) -> str:
    """The match as spaces, its newlines kept (line numbers stay right)."""
    return re.sub(r"[^\n]", " ", match.group(0))


def unlabelled_numbers(markdown: str) -> list[tuple[int, str, str]]:
    """The measured-looking numbers of ``markdown`` that carry no label, as
    ``(line number, the number, the line)``; empty when the text follows the rule (the
    module docstring states it and its exceptions)."""
    text = _COMMENT.sub(_blank, markdown)
    text = _CODE_FENCE.sub(_blank, text)
    out: list[tuple[int, str, str]] = []
    for n, line in enumerate(text.splitlines(), 1):
        if LABELS.search(line):
            continue
        clean = _LINK_URL.sub(_blank, _CODE_SPAN.sub(_blank, line))
        clean = _VERSION.sub(_blank, clean)
        clean = _BOUND.sub(_blank, clean)
        out += [(n, m.group(0).strip(), markdown.splitlines()[n - 1].strip()) for m in _MEASURED.finditer(clean)]
    return out
