"""``TuneSpec``: one typed description of a study, shared by every tuning target.

Local worker processes, the Slurm array, the Kubernetes indexed Job and Katib all run the
same spec (carried to workers as JSON). It is validated before any trial runs; the sampler
and pruner are named from :data:`SAMPLER_NAMES` / :data:`PRUNER_NAMES` (their registries
live in :mod:`hpcml.tune.study`), and the storage URL is checked for form here (no I/O):
``journal:///abs/file.log`` or a database URL (:data:`STORAGE_SCHEMES`).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from hpcml import specbase
from hpcml.specbase import fail
from hpcml.tune.space import SearchSpace, default_space

SAMPLER_NAMES = ("tpe", "random")
PRUNER_NAMES = ("hyperband", "sha", "median", "none")
STORAGE_SCHEMES = ("journal:///<absolute path>", "postgresql://user:pass@host:port/db", "sqlite:///<path> (one worker)")


def journal_path(url: str) -> Path | None:
    """The file behind a ``journal:///abs/path`` URL (None for other schemes)."""
    if not url.startswith("journal://"):
        return None
    p = url[len("journal://"):]
    if not p.startswith("/"):
        raise ValueError(f"journal storage URL needs an absolute path (journal:///abs/file.log), got {url!r}")
    return Path(p)


def check_storage_url(url: str) -> str:
    """Validate the form of a storage URL (no I/O); returns its scheme."""
    if not isinstance(url, str) or "://" not in url:
        raise ValueError(f"storage must be a URL, one of {list(STORAGE_SCHEMES)}; got {url!r}")
    scheme = url.split("://", 1)[0]
    if scheme == "journal":
        journal_path(url)
        return scheme
    if scheme.split("+")[0] in ("postgresql", "postgres", "sqlite", "mysql"):
        return scheme.split("+")[0]
    raise ValueError(f"unsupported storage scheme {scheme!r} in {url!r}; use one of {list(STORAGE_SCHEMES)}")


@dataclasses.dataclass
class TuneSpec:
    """What a study searches and how (one spec for every target).

    Args:
        study_name: Optuna study name; running again with the same name resumes it.
        storage: storage URL (see :func:`hpcml.tune.study.open_storage`).
        n_trials: trials to add in one run (split across workers).
        epochs: maximum epochs per trial (the pruners' max resource).
        sampler, pruner: registry names (:data:`SAMPLER_NAMES`, :data:`PRUNER_NAMES`).
        reduction_factor: eta of the successive-halving / Hyperband pruners (>= 2).
        space: the search space.
        fixed: config keys every trial shares (arch, dropout, …).
        seed: sampler seed (worker ``i`` uses ``seed + i``) and the training seed.
        train_rows, val_rows: subset of the train/val splits per trial (None = all).
        dataset_dir: the shards (default ``paths.dataset_dir()``).
    """

    study_name: str
    storage: str
    n_trials: int = 12
    epochs: int = 9
    sampler: str = "tpe"
    pruner: str = "hyperband"
    reduction_factor: int = 3
    space: SearchSpace = dataclasses.field(default_factory=default_space)
    fixed: dict = dataclasses.field(default_factory=lambda: {"arch": "cnn", "dropout": 0.1})
    seed: int = 0
    train_rows: int | None = None
    val_rows: int | None = None
    dataset_dir: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.study_name, str) or not self.study_name.strip():
            raise fail(self, "study_name", "a non-empty string", self.study_name)
        try:
            check_storage_url(self.storage)
        except ValueError as e:
            raise fail(self, "storage", f"a storage URL ({e})") from None
        for f in ("n_trials", "epochs"):
            v = getattr(self, f)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise fail(self, f, "an int >= 1", v)
        if isinstance(self.reduction_factor, bool) or not isinstance(self.reduction_factor, int) \
                or self.reduction_factor < 2:
            raise fail(self, "reduction_factor", "an int >= 2", self.reduction_factor)
        if self.sampler not in SAMPLER_NAMES:
            raise fail(self, "sampler", f"one of {sorted(SAMPLER_NAMES)}", self.sampler)
        if self.pruner not in PRUNER_NAMES:
            raise fail(self, "pruner", f"one of {sorted(PRUNER_NAMES)}", self.pruner)
        if isinstance(self.space, dict):
            self.space = SearchSpace.from_dict(self.space)
        if not isinstance(self.space, SearchSpace):
            raise fail(self, "space", "a SearchSpace", type(self.space).__name__)
        clash = sorted(set(self.fixed) & set(self.space.names))
        if clash:
            raise fail(self, "fixed", "config keys that are not also searched in the space (keep each in one place)",
                       clash)
        for f in ("train_rows", "val_rows"):
            v = getattr(self, f)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
                raise fail(self, f, "None or an int >= 1", v)

    def replace(self, **kw: Any) -> "TuneSpec":
        return dataclasses.replace(self, **kw)

    def to_json(self) -> str:
        """The spec as JSON, the space in its tagged form (:meth:`SearchSpace.to_dict`).

        Written with ``indent=1`` and the fields in declaration order: the rendered ConfigMap
        in ``manifests/tune/`` carries this text.
        """
        d = specbase.to_dict(self)
        d["space"] = self.space.to_dict()
        return json.dumps(d, indent=1)

    @classmethod
    def from_json(cls, text: str) -> "TuneSpec":
        """Inverse of :meth:`to_json` (JSON text or a file); unknown fields are named."""
        return specbase.from_json(cls, text)
