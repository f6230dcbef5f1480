"""A typed, validated hyperparameter search space.

One :class:`SearchSpace` drives every target: :meth:`SearchSpace.suggest` asks an Optuna
trial for a configuration (local workers, the Slurm array, the Kubernetes indexed Job),
:meth:`SearchSpace.to_katib` writes the same space as Katib ``parameters``, and
:meth:`SearchSpace.to_dict` / :meth:`SearchSpace.from_dict` carry it to worker processes as
JSON. Bad spaces fail in ``__post_init__`` with a ``ValueError`` naming the parameter, before
any trial runs.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Union

_KINDS = ("float", "int", "categorical")


def _check_name(name: Any) -> None:
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"parameter name must be an identifier string, got {name!r}")


@dataclasses.dataclass(frozen=True)
class FloatParam:
    """A real-valued parameter in ``[low, high]``, sampled on a log scale when ``log``."""

    name: str
    low: float
    high: float
    log: bool = False

    def __post_init__(self) -> None:
        _check_name(self.name)
        for f in ("low", "high"):
            v = getattr(self, f)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise ValueError(f"{self.name}.{f} must be a finite number, got {v!r}")
        if self.low > self.high:
            raise ValueError(f"{self.name}: low={self.low} > high={self.high} (expected low <= high)")
        if self.log and self.low <= 0:
            raise ValueError(f"{self.name}: log scale needs low > 0, got low={self.low}")

    def suggest(self, trial: Any) -> float:
        return trial.suggest_float(self.name, self.low, self.high, log=self.log)

    def to_katib(self) -> dict:
        return {"name": self.name, "parameterType": "double",
                "feasibleSpace": {"min": repr(float(self.low)), "max": repr(float(self.high)),
                                  "distribution": "logUniform" if self.log else "uniform"}}


@dataclasses.dataclass(frozen=True)
class IntParam:
    """An integer parameter in ``[low, high]`` (inclusive) with ``step``; log scale when ``log``."""

    name: str
    low: int
    high: int
    step: int = 1
    log: bool = False

    def __post_init__(self) -> None:
        _check_name(self.name)
        for f in ("low", "high", "step"):
            v = getattr(self, f)
            if isinstance(v, bool) or not isinstance(v, int):
                raise ValueError(f"{self.name}.{f} must be an int, got {v!r}")
        if self.low > self.high:
            raise ValueError(f"{self.name}: low={self.low} > high={self.high} (expected low <= high)")
        if self.step < 1:
            raise ValueError(f"{self.name}: step must be >= 1, got {self.step}")
        if self.log and self.low <= 0:
            raise ValueError(f"{self.name}: log scale needs low > 0, got low={self.low}")
        if (self.high - self.low) % self.step:
            raise ValueError(f"{self.name}: high - low = {self.high - self.low} is not a multiple of step={self.step}")
        if self.log and self.step != 1:
            raise ValueError(f"{self.name}: log scale needs step=1 (Optuna), got step={self.step}")

    def suggest(self, trial: Any) -> int:
        return trial.suggest_int(self.name, self.low, self.high, step=self.step, log=self.log)

    def to_katib(self) -> dict:
        return {"name": self.name, "parameterType": "int",
                "feasibleSpace": {"min": str(self.low), "max": str(self.high), "step": str(self.step)}}


@dataclasses.dataclass(frozen=True)
class CategoricalParam:
    """One of a fixed, non-empty tuple of choices (str, int, float or bool; no duplicates)."""

    name: str
    choices: tuple

    def __post_init__(self) -> None:
        _check_name(self.name)
        if isinstance(self.choices, (str, bytes)) or not hasattr(self.choices, "__iter__"):
            raise ValueError(f"{self.name}.choices must be a list/tuple of values, got {self.choices!r}")
        object.__setattr__(self, "choices", tuple(self.choices))
        if not self.choices:
            raise ValueError(f"{self.name}: choices is empty (expected at least one value)")
        for c in self.choices:
            if c is not None and not isinstance(c, (str, int, float, bool)):
                raise ValueError(f"{self.name}: choice {c!r} is not a str/int/float/bool/None")
        if len(set(self.choices)) != len(self.choices):
            raise ValueError(f"{self.name}: duplicate choices in {list(self.choices)}")

    def suggest(self, trial: Any) -> Any:
        return trial.suggest_categorical(self.name, list(self.choices))

    def to_katib(self) -> dict:
        kind = "int" if all(isinstance(c, int) and not isinstance(c, bool) for c in self.choices) else "categorical"
        if kind == "int":
            return {"name": self.name, "parameterType": "discrete",
                    "feasibleSpace": {"list": [str(c) for c in self.choices]}}
        return {"name": self.name, "parameterType": "categorical",
                "feasibleSpace": {"list": [str(c) for c in self.choices]}}


Param = Union[FloatParam, IntParam, CategoricalParam]
_CLASSES = {"float": FloatParam, "int": IntParam, "categorical": CategoricalParam}


@dataclasses.dataclass(frozen=True)
class SearchSpace:
    """An ordered, non-empty set of uniquely named parameters."""

    params: tuple

    def __post_init__(self) -> None:
        object.__setattr__(self, "params", tuple(self.params))
        if not self.params:
            raise ValueError("search space is empty: give at least one parameter")
        names = []
        for p in self.params:
            if not isinstance(p, (FloatParam, IntParam, CategoricalParam)):
                raise ValueError(f"search space entry {p!r} is not a FloatParam/IntParam/CategoricalParam")
            names.append(p.name)
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"search space: parameter(s) {dup} defined more than once")

    @property
    def names(self) -> list[str]:
        return [p.name for p in self.params]

    def suggest(self, trial: Any) -> dict[str, Any]:
        """Ask ``trial`` for one value per parameter; returns ``{name: value}``."""
        return {p.name: p.suggest(trial) for p in self.params}

    def to_katib(self) -> list[dict]:
        """Katib ``spec.parameters`` for the same space."""
        return [p.to_katib() for p in self.params]

    def to_dict(self) -> dict:
        """JSON-friendly form: ``{"params": [{"kind": ..., **fields}]}``."""
        out = []
        for p in self.params:
            kind = {FloatParam: "float", IntParam: "int", CategoricalParam: "categorical"}[type(p)]
            d = dataclasses.asdict(p)
            if kind == "categorical":
                d["choices"] = list(d["choices"])
            out.append({"kind": kind, **d})
        return {"params": out}

    @classmethod
    def from_dict(cls, data: dict) -> "SearchSpace":
        """Inverse of :meth:`to_dict`; unknown kinds or fields raise ``ValueError``."""
        if not isinstance(data, dict) or not isinstance(data.get("params"), list):
            raise ValueError(f"search space must be a dict with a 'params' list, got {data!r}")
        params = []
        for i, entry in enumerate(data["params"]):
            entry = dict(entry)
            kind = entry.pop("kind", None)
            if kind not in _CLASSES:
                raise ValueError(f"search space params[{i}].kind must be one of {list(_KINDS)}, got {kind!r}")
            try:
                params.append(_CLASSES[kind](**entry))
            except TypeError as e:
                raise ValueError(f"search space params[{i}] ({kind}): {e}") from None
        return cls(tuple(params))


def default_space(widths: tuple[int, int] = (8, 48), depths: tuple[int, int] = (1, 3),
                  batch_sizes: tuple[int, ...] = (32, 64, 128), width_step: int = 8) -> SearchSpace:
    """The MNIST CNN space: learning rate (log), batch size, width, depth, weight decay (log), optimizer."""
    return SearchSpace((
        FloatParam("lr", 1e-4, 0.3, log=True),
        CategoricalParam("batch_size", tuple(batch_sizes)),
        IntParam("width", widths[0], widths[1], step=width_step),
        IntParam("depth", depths[0], depths[1]),
        FloatParam("weight_decay", 1e-6, 1e-2, log=True),
        CategoricalParam("optimizer", ("sgd", "adamw")),
    ))
