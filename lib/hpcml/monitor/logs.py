"""Structured JSON logs for every stage, and a gatherer that reads them back.

Every stage calls :func:`get_logger` once and logs as usual; each record becomes one
JSON object per line in ``build/logs/<stage>.jsonl`` with the fields a log pipeline
(Fluent Bit -> Elasticsearch / CloudWatch Logs) indexes on::

    {"ts": "2025-01-01T12:00:00.123Z", "level": "WARNING", "run_id": "…", "stage": "train",
     "rank": 1, "logger": "hpcml.train", "message": "…", "node": "n1", "seq": 812, "step": 40}

``node`` is where the record was written (``$HPCML_NODE``, else the host name, which is the
node's own name inside a cluster node's UTS namespace) and ``seq`` a per-node sequence number:
one counter per node and log folder, kept in ``<log_dir>/.seq-<node>`` and advanced under an
``flock`` for every record, so every process on the node (all ranks, and a process restarted
later) draws from the same counter. ``(node, seq)`` is therefore unique for ever on that node,
which is the key the central log store (:mod:`hpcml.monitor.logstore`) de-duplicates on. The
alternative, ``(node, boot id, seq)`` with an in-memory counter, would need a third key column,
and two processes on one node (two ranks) would still need a shared counter; a file next to the
log costs one lock per record (about 20 µs here, against 8 µs for the JSON itself) and keeps the key at two columns.

Keyword fields passed with ``extra={...}`` land at the top level of the object (a field
that would overwrite one of the fixed keys or a ``LogRecord`` attribute is kept under
``extra_<name>``).
:func:`gather` reads every ``*.jsonl`` under the logs folder into one DataFrame;
malformed lines are counted, never fatal. :func:`summary` counts records by stage and level.

Example:
    >>> log = get_logger("train", run_id="r1", rank=0)
    >>> log.warning("straggler", extra={"step": 40, "lag_s": 1.2})
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import time
import uuid
from pathlib import Path
from typing import Any

from hpcml import paths

FIXED = ("ts", "level", "run_id", "stage", "rank", "logger", "message", "node", "seq")
# attributes every LogRecord has; anything else on a record came from ``extra=``
_RECORD_ATTRS = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}
_default_run_id: str | None = None


def logs_dir() -> Path:
    """``$HPCML_LOG_DIR`` if set (a launcher points a node's processes at that node's folder),
    else ``build/logs`` (not created here)."""
    env = os.environ.get("HPCML_LOG_DIR")
    return Path(env) if env else paths.build_dir() / "logs"


def node_name() -> str:
    """The node a record is written on: ``$HPCML_NODE``, else the host name (per UTS namespace)."""
    return os.environ.get("HPCML_NODE") or os.uname().nodename


def next_seq(counter: Path) -> int:
    """Advance the per-node counter file ``counter`` by one under an exclusive ``flock``; returns the new value.

    The file holds the last number handed out as decimal text; a missing or empty file starts at 1.
    """
    fd = os.open(counter, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        raw = os.pread(fd, 32, 0).strip()
        value = (int(raw) if raw else 0) + 1
        text = str(value).encode()
        os.pwrite(fd, text, 0)
        os.ftruncate(fd, len(text))
        return value
    finally:
        os.close(fd)  # closing the descriptor drops the lock


def default_run_id() -> str:
    """``$HPCML_RUN_ID`` if set (so child processes share it), else one id per process."""
    global _default_run_id
    env = os.environ.get("HPCML_RUN_ID")
    if env:
        return env
    if _default_run_id is None:
        _default_run_id = time.strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6]
    return _default_run_id


class JsonFormatter(logging.Formatter):
    """One JSON object per record: the fixed keys, then the record's extra fields.

    Args:
        counter: the per-node sequence file (see :func:`next_seq`); ``None`` leaves ``seq`` null.
        node: the node name written into every record; default :func:`node_name`.
    """

    def __init__(self, counter: Path | None = None, node: str | None = None) -> None:
        super().__init__()
        self.counter = counter
        self.node = node or node_name()

    def format(self, record: logging.LogRecord) -> str:
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        obj: dict[str, Any] = {
            "ts": f"{ts}.{int(record.msecs):03d}Z",
            "level": record.levelname,
            "run_id": getattr(record, "run_id", None),
            "stage": getattr(record, "stage", None),
            "rank": getattr(record, "rank", None),
            "logger": record.name,
            "message": record.getMessage(),
            "node": self.node,
            "seq": next_seq(self.counter) if self.counter is not None else None,
        }
        for key, value in vars(record).items():
            if key in _RECORD_ATTRS or key in ("run_id", "stage", "rank"):
                continue
            obj[f"extra_{key}" if key in FIXED else key] = value
        if record.exc_info:
            obj["exc_info"] = self.formatException(record.exc_info)
        return json.dumps(obj, default=str)


class _StageAdapter(logging.LoggerAdapter):
    """Adds run_id/stage/rank to every record and keeps the caller's ``extra`` fields."""

    def process(self, msg, kwargs):
        extra = {(f"extra_{k}" if k in _RECORD_ATTRS else k): v for k, v in (kwargs.get("extra") or {}).items()}
        kwargs["extra"] = {**extra, **self.extra}
        return msg, kwargs


def get_logger(stage: str, run_id: str | None = None, rank: int | None = None,
               log_dir: Path | None = None, echo: bool = False) -> logging.LoggerAdapter:
    """A logger writing JSON lines to ``<log_dir>/<stage>.jsonl`` (default ``build/logs``).

    Args:
        stage: pipeline stage (``data``, ``train``, ``tune``, ``serve``, ``monitor`` …);
            letters, digits, ``-`` and ``_`` only (it names the file).
        run_id: the run these records belong to; default :func:`default_run_id`.
        rank: the worker rank (training), or ``None``.
        log_dir: where the file goes; default :func:`logs_dir`.
        echo: also print WARNING and above to stderr (plain text).

    Returns:
        A ``LoggerAdapter``; call ``.info(msg, extra={...})`` etc.

    Raises:
        ValueError: ``stage`` is empty or contains characters unsafe in a file name.
    """
    if not stage or not stage.replace("-", "").replace("_", "").isalnum():
        raise ValueError(f"get_logger: stage must be letters/digits/'-'/'_' (it names the file), got {stage!r}")
    if rank is not None and (not isinstance(rank, int) or rank < 0):
        raise ValueError(f"get_logger: rank must be an int >= 0 or None, got {rank!r}")
    folder = paths.ensure(Path(log_dir) if log_dir else logs_dir())
    path = folder / f"{stage}.jsonl"
    logger = logging.getLogger(f"hpcml.{stage}.{path}")  # one logger (one handler) per file
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    if not any(isinstance(h, logging.FileHandler) for h in logger.handlers):
        handler = logging.FileHandler(path, mode="a", encoding="utf-8")
        node = node_name()
        handler.setFormatter(JsonFormatter(folder / f".seq-{node}", node))
        logger.addHandler(handler)
    if echo and not any(getattr(h, "_hpcml_echo", False) for h in logger.handlers):
        err = logging.StreamHandler()
        err.setLevel(logging.WARNING)
        err.setFormatter(logging.Formatter(f"%(levelname)s [{stage}] %(message)s"))
        err._hpcml_echo = True  # type: ignore[attr-defined]
        logger.addHandler(err)
    return _StageAdapter(logger, {"run_id": run_id or default_run_id(), "stage": stage, "rank": rank})


def close_all() -> None:
    """Close every hpcml log file handler (tests, or before deleting the logs folder)."""
    for name, logger in list(logging.Logger.manager.loggerDict.items()):
        if name.startswith("hpcml.") and isinstance(logger, logging.Logger):
            for h in list(logger.handlers):
                h.close()
                logger.removeHandler(h)


def gather(log_dir: Path | None = None, run_id: str | None = None):
    """Every structured record under ``log_dir`` as a DataFrame, oldest first.

    Args:
        log_dir: folder of ``*.jsonl`` files; default :func:`logs_dir`.
        run_id: keep only this run's records.

    Returns:
        A ``pandas.DataFrame`` with the fixed columns (``ts`` parsed as UTC datetime),
        the extra fields as further columns, and ``file``. ``df.attrs["malformed"]``
        holds ``{file: count}`` of lines that were not JSON objects.
    """
    import pandas as pd

    root = Path(log_dir) if log_dir else logs_dir()
    rows: list[dict] = []
    malformed: dict[str, int] = {}
    for f in sorted(root.glob("*.jsonl")) if root.exists() else []:
        with open(f, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                    if not isinstance(obj, dict):
                        raise ValueError("not an object")
                except ValueError:
                    malformed[f.name] = malformed.get(f.name, 0) + 1
                    continue
                obj["file"] = f.name
                rows.append(obj)
    df = pd.DataFrame(rows, columns=None if rows else [*FIXED, "file"])
    for col in FIXED:
        if col not in df:
            df[col] = None
    df["ts"] = pd.to_datetime(df["ts"], utc=True, errors="coerce")
    if run_id is not None:
        df = df[df["run_id"] == run_id]
    df = df.sort_values("ts", kind="stable").reset_index(drop=True)
    df.attrs["malformed"] = malformed
    return df


def summary(df) -> Any:
    """Records per stage (rows) and level (columns), with ``ERROR``/``WARNING`` always present."""
    import pandas as pd

    if df.empty:
        return pd.DataFrame(columns=["ERROR", "WARNING"])
    table = pd.crosstab(df["stage"].fillna("?"), df["level"].fillna("?"))
    for lvl in ("ERROR", "WARNING"):
        if lvl not in table:
            table[lvl] = 0
    order = [c for c in ("CRITICAL", "ERROR", "WARNING", "INFO", "DEBUG") if c in table]
    return table[order + [c for c in table if c not in order]]
