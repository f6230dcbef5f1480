"""What every stage's typed spec shares: one error type, one message shape, one JSON form.

Specs are dataclasses validated in ``__post_init__``. A bad field raises :class:`SpecError`
(a ``ValueError``) whose message names the spec, the field, what was expected and what was
given, so a user fixes it without reading the code::

    TrainSpec.world_size: expected an integer >= 1, got 0
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


class SpecError(ValueError):
    """A spec field is invalid; the message names the field and what was expected."""


def fail(spec: object | str, field: str, expected: str, got: Any = dataclasses.MISSING) -> SpecError:
    """Build the one-line error for ``spec.field`` (raise what it returns).

    Args:
        spec: the spec instance, its class, or its name.
        field: the field (or ``a/b`` for a relation between two fields).
        expected: what a valid value looks like, phrased to follow "expected".
        got: the value given (omitted from the message when not passed).
    """
    name = spec if isinstance(spec, str) else (spec.__name__ if isinstance(spec, type) else type(spec).__name__)
    msg = f"{name}.{field}: expected {expected}"
    if got is not dataclasses.MISSING:
        msg += f", got {got!r}"
    return SpecError(msg)


def to_dict(spec: Any) -> dict[str, Any]:
    """The spec's fields as plain JSON-able values (nested dataclasses included)."""
    return dataclasses.asdict(spec)


def to_json(spec: Any, path: Path | str | None = None) -> str:
    """Serialise a spec (sorted keys, indented); also write it atomically to ``path`` if given."""
    text = json.dumps(to_dict(spec), indent=2, sort_keys=True)
    if path is not None:
        from hpcml.paths import atomic_write_text

        atomic_write_text(Path(path), text)
    return text


def from_dict(cls: type[T], data: dict[str, Any]) -> T:
    """Build ``cls`` from a dict, naming any key the spec does not have."""
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - names)
    if unknown:
        raise SpecError(f"{cls.__name__}: unknown field(s) {unknown}; the fields are {sorted(names)}")
    return cls(**data)


def from_json(cls: type[T], text_or_path: str | Path) -> T:
    """Build ``cls`` from JSON text or from a JSON file."""
    p = Path(text_or_path) if not str(text_or_path).lstrip().startswith("{") else None
    text = p.read_text() if p is not None else str(text_or_path)
    return from_dict(cls, json.loads(text))
