"""Where things live: the repository root and the git-ignored ``build/`` tree.

``HPCML_BUILD`` overrides the build directory (tests point it at a temporary
folder); ``HPCML_ROOT`` overrides the repository root. Nothing is created at
import time: call :func:`ensure` to create a directory.
"""

from __future__ import annotations

import fcntl
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

_PKG = Path(__file__).resolve().parent


def repo_root() -> Path:
    """The repository root (the folder holding ``notebooks/`` and ``lib/``)."""
    env = os.environ.get("HPCML_ROOT")
    if env:
        return Path(env).resolve()
    return _PKG.parent.parent


def build_dir() -> Path:
    """The build tree (git-ignored): data, models, metrics, executed notebooks, site."""
    env = os.environ.get("HPCML_BUILD")
    return Path(env).resolve() if env else repo_root() / "build"


def notebooks_dir() -> Path:
    return repo_root() / "notebooks"


def manifests_dir() -> Path:
    return repo_root() / "manifests"


def metrics_dir() -> Path:
    return build_dir() / "metrics"


def figures_dir() -> Path:
    return build_dir() / "figures"


def data_dir() -> Path:
    return build_dir() / "data"


#: The one dataset the pipeline trains on; its folder name under ``data_dir()`` and the lake.
DATASET = "mnist"
#: The same dataset's folder inside a cluster's shared volume (EFS/FSx, mounted by every pod).
SHARED_MOUNT = "/mnt/hpcml"


def dataset_dir() -> Path:
    """The published Parquet shards with their ``_manifest.json`` (written by the data stage)."""
    return data_dir() / DATASET


def lake_dir() -> Path:
    """The raw lake: CSV text files as they arrive, before validation."""
    return data_dir() / "lake" / DATASET / "raw"


def shared_dataset_dir(mount: str = SHARED_MOUNT) -> str:
    """Where the dataset lives on a cluster's shared volume (a POSIX path inside the pods)."""
    return f"{mount}/data/{DATASET}"


def models_dir() -> Path:
    return build_dir() / "models"


def site_dir() -> Path:
    return build_dir() / "site"


def executed_dir() -> Path:
    return build_dir() / "executed"


def ensure(path: Path) -> Path:
    """Create ``path`` (and parents) if missing and return it."""
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` (created, with its folder, if missing) for the block.

    The lock file stays (removing it would let a waiter and a newcomer lock two different files).
    """
    ensure(Path(path).parent)
    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def fsync_dir(path: Path) -> None:
    """fsync directory ``path``, so the entries made in it (a rename, a new file) reach the disk.

    Renaming a file over another is atomic, but the new directory entry is only durable once
    the directory itself is synced: without it a crash can bring the old file back. A no-op on
    Windows, where a directory cannot be opened for fsync.
    """
    if os.name == "nt":
        return
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(path: Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically and durably (temp file in the same folder, fsync,
    rename, fsync of the folder).

    A reader sees the old file or the new one, never half of one; a crash leaves the old
    file in place and no temp file behind, and once this returns the new file survives a crash.
    """
    path = Path(path)
    ensure(path.parent)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
    return path


def atomic_write_text(path: Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically; see :func:`atomic_write_bytes`."""
    return atomic_write_bytes(path, text.encode("utf-8"))
