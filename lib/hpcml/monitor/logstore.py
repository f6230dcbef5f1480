"""The collector's files loaded into DuckDB, once per line, and the cross-node queries over them.

The collector (:mod:`hpcml.monitor.collector`) writes ``<store>/<node>/<stage>.log``, one received
message per line: `` <offset> <line>``, the offset of the line in the node's file, then the line as
the node wrote it. :func:`load` puts them in two tables:

- ``logs``: JSON records with a ``node`` and ``seq`` (:mod:`hpcml.monitor.logs`), primary key
  ``(node, seq)``;
- ``other``: every other line (not JSON, or JSON without the key), kept as text with
  ``(node, stage, offset)`` as its key and the ``reason``.

Loading is idempotent (``INSERT OR IGNORE`` on those keys): a line RELP delivered twice, or a
second load of the same files, is stored once. What was seen twice is counted as ``raw_duplicates``.

Example:
    >>> con = duckdb.connect(str(db))
    >>> counts = load(store_dir, con)
    >>> errors_by_node_stage(con); job_lines(con, run_id)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hpcml.monitor.syslog_conf import STORE_SUFFIX

SCHEMA = (
    "CREATE TABLE IF NOT EXISTS logs (node VARCHAR, seq BIGINT, stage VARCHAR, ts TIMESTAMPTZ, level VARCHAR,"
    " run_id VARCHAR, rank INTEGER, logger VARCHAR, message VARCHAR, line VARCHAR, PRIMARY KEY (node, seq))",
    "CREATE TABLE IF NOT EXISTS other (node VARCHAR, stage VARCHAR, \"offset\" BIGINT, reason VARCHAR,"
    " line VARCHAR, PRIMARY KEY (node, stage, \"offset\"))",
)
LOG_COLUMNS = ("node", "seq", "stage", "ts", "level", "run_id", "rank", "logger", "message", "line")


def parse_stored(text: str) -> tuple[int, str]:
    """``(offset, line)`` of one stored message (`` <offset> <line>``).

    Raises:
        ValueError: the message does not start with an offset.
    """
    head, _, line = text.lstrip(" ").partition(" ")
    if not head.isdigit():
        raise ValueError(f"stored log line: expected ' <offset> <line>', got {text[:80]!r}")
    return int(head), line


def classify(line: str) -> tuple[dict | None, str]:
    """The JSON record of ``line`` when it has a node and an integer seq, else ``(None, why not)``."""
    try:
        obj = json.loads(line)
    except ValueError:
        return None, "not JSON"
    if not isinstance(obj, dict):
        return None, "not JSON"  # a JSON array or scalar is not a record
    if not isinstance(obj.get("seq"), int) or not isinstance(obj.get("node"), str):
        return None, "JSON without node/seq"
    return obj, ""


def read_store(store: Path) -> tuple[list[dict], list[dict], int]:
    """Every stored line as ``(records, others, raw_lines)``, duplicates included."""
    records: list[dict] = []
    others: list[dict] = []
    raw = 0
    for f in sorted(Path(store).glob(f"*/*{STORE_SUFFIX}")):
        node, stage = f.parent.name, f.name[: -len(STORE_SUFFIX)]
        with open(f, encoding="utf-8", errors="replace") as fh:
            for text in fh:
                text = text.rstrip("\n")
                if not text.strip():
                    continue
                raw += 1
                offset, line = parse_stored(text)
                obj, why = classify(line)
                if obj is None:
                    others.append({"node": node, "stage": stage, "offset": offset, "reason": why, "line": line})
                    continue
                rank = obj.get("rank")
                records.append({"node": obj["node"], "seq": obj["seq"], "stage": obj.get("stage") or stage,
                                "ts": obj.get("ts"), "level": obj.get("level"), "run_id": obj.get("run_id"),
                                "rank": rank if isinstance(rank, int) else None, "logger": obj.get("logger"),
                                "message": obj.get("message"), "line": line})
    return records, others, raw


def load(store: Path, con: Any) -> dict[str, int]:
    """Load the collector's files into ``con`` (a DuckDB connection), each line once.

    Returns:
        ``raw_lines`` (lines in the files), ``raw_duplicates`` (lines whose key was already in the
        files), ``json_rows`` and ``other_rows`` (rows in the tables after this load), ``inserted``
        (rows this load added: 0 when the same files are loaded again).
    """
    import pandas as pd

    for stmt in SCHEMA:
        con.execute(stmt)
    records, others, raw = read_store(store)
    before = _rows(con)
    rec = pd.DataFrame(records, columns=list(LOG_COLUMNS)).drop_duplicates(["node", "seq"])
    rec["ts"] = pd.to_datetime(rec["ts"], utc=True, errors="coerce")
    rec["rank"] = rec["rank"].astype("Int64")
    oth = pd.DataFrame(others, columns=["node", "stage", "offset", "reason", "line"]).drop_duplicates(
        ["node", "stage", "offset"])
    con.register("hpcml_rec", rec)
    con.register("hpcml_oth", oth)
    try:
        con.execute(f"INSERT OR IGNORE INTO logs SELECT {', '.join(LOG_COLUMNS)} FROM hpcml_rec")
        con.execute('INSERT OR IGNORE INTO other SELECT node, stage, "offset", reason, line FROM hpcml_oth')
    finally:
        con.unregister("hpcml_rec")
        con.unregister("hpcml_oth")
    unique = len(rec) + len(oth)
    after = _rows(con)
    return {"raw_lines": raw, "raw_duplicates": raw - unique, "json_rows": after[0], "other_rows": after[1],
            "inserted": sum(after) - sum(before)}


def _rows(con: Any) -> tuple[int, int]:
    return (con.execute("SELECT count(*) FROM logs").fetchall()[0][0], con.execute("SELECT count(*) FROM other").fetchall()[0][0])


def errors_by_node_stage(con: Any):
    """Per node and stage: lines, warnings, errors (ERROR and CRITICAL), and lines that were not records."""
    return con.execute("""
        WITH recs AS (
            SELECT node, stage, count(*) AS lines,
                   count(*) FILTER (WHERE level = 'WARNING') AS warnings,
                   count(*) FILTER (WHERE level IN ('ERROR', 'CRITICAL')) AS errors
            FROM logs GROUP BY node, stage),
        oth AS (SELECT node, stage, count(*) AS not_records FROM other GROUP BY node, stage)
        SELECT coalesce(r.node, o.node) AS node, coalesce(r.stage, o.stage) AS stage,
               coalesce(r.lines, 0) AS lines, coalesce(r.warnings, 0) AS warnings,
               coalesce(r.errors, 0) AS errors, coalesce(o.not_records, 0) AS not_records
        FROM recs r FULL OUTER JOIN oth o ON r.node = o.node AND r.stage = o.stage
        ORDER BY node, stage""").df()


def job_lines(con: Any, run_id: str):
    """One run's records from every node, in time order (then node and seq)."""
    return con.execute("""SELECT ts, node, seq, stage, rank, level, message FROM logs
                          WHERE run_id = ? ORDER BY ts, node, seq""", [run_id]).df()


def seqs_by_node(con: Any, run_id: str | None = None) -> dict[str, list[int]]:
    """The stored sequence numbers per node (of one run when ``run_id`` is given), ascending."""
    where, args = ("WHERE run_id = ?", [run_id]) if run_id else ("", [])
    rows = con.execute(f"SELECT node, list(seq ORDER BY seq) FROM logs {where} GROUP BY node", args).fetchall()
    return {node: list(seqs) for node, seqs in rows}
