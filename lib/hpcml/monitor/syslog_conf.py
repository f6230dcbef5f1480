"""rsyslog configurations of the central log path, as pure text: a collector and a node's shipper.

Shipper (one ``rsyslogd`` per node, inside the node)::

    imfile  <node log folder>/*.jsonl   (inotify, a state file per log: a restart resumes, never re-reads)
      -> omrelp to the head, through a disk-assisted action queue (kept on disk while the head is away)

Each line goes out unchanged as the syslog message, with the node as HOSTNAME, the stage (the
file's name without ``.jsonl``) as TAG and the line's byte offset in its file in front of it::

    <134>2026-12-05T02:50:01.123456+00:00 n1 train: 4096 {"ts": ..., "node": "n1", "seq": 17, ...}

Collector (one ``rsyslogd`` on the head): imrelp on the head's bridge address (loopback in
single-node mode), a disk-assisted main queue saved on shutdown (RELP acknowledges a message once
it is queued, so a stopped collector must keep what it had queued), and omfile into
``<store>/<node>/<stage>.log``, one received message per line. It does not parse the line: a line
that is not JSON is stored like any other and counted when loaded (:mod:`hpcml.monitor.logstore`).

Example:
    >>> print(collector_conf("10.250.0.1", 2514, "/srv/logs/store", "/srv/logs/collector"))
"""

from __future__ import annotations

import ipaddress
import re

#: The TAG, HOSTNAME and file-name characters allowed for nodes and stages (they name folders and files).
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,31}$")
#: Largest line carried (rsyslog's default is 8 KiB; a JSON record with a traceback can be longer).
MAX_MESSAGE = "64k"
#: The suffix of the collector's stored files.
STORE_SUFFIX = ".log"


def _check(what: str, value: str, pattern: re.Pattern[str], expected: str) -> None:
    if not isinstance(value, str) or not pattern.match(value):
        raise ValueError(f"rsyslog config: {what} must be {expected}, got {value!r}")


def _check_common(address: str, port: int, *dirs: str) -> None:
    try:
        ipaddress.IPv4Address(address)
    except (ValueError, TypeError):
        raise ValueError(f"rsyslog config: address must be an IPv4 address such as '127.0.0.1', got {address!r}") from None
    if not isinstance(port, int) or isinstance(port, bool) or not 1024 <= port <= 65535:
        raise ValueError(f"rsyslog config: port must be an integer from 1024 to 65535, got {port!r}")
    for d in dirs:
        if not isinstance(d, str) or not d.startswith("/") or '"' in d or "\n" in d:
            raise ValueError(f"rsyslog config: folders must be absolute paths without quotes or newlines, got {d!r}")


def collector_conf(address: str, port: int, store_dir: str, work_dir: str) -> str:
    """The head's ``rsyslogd`` config: RELP in, one file per node and stage out.

    Args:
        address: where imrelp listens (the head's bridge address, or 127.0.0.1).
        port: its RELP port.
        store_dir: where ``<node>/<stage>.log`` files are written.
        work_dir: rsyslog's own folder (the main queue's spill files live here).

    Raises:
        ValueError: naming the argument that is wrong and what is expected.
    """
    _check_common(address, port, store_dir, work_dir)
    return "\n".join([
        f'global(workDirectory="{work_dir}" maxMessageSize="{MAX_MESSAGE}")',
        # disk-assisted: in memory while it keeps up, spilled to disk and saved on shutdown
        'main_queue(queue.type="LinkedList" queue.filename="collector-main" queue.saveOnShutdown="on"',
        '           queue.timeoutShutdown="2000" queue.syncqueuefiles="off")',
        'module(load="imrelp")',
        f'input(type="imrelp" address="{address}" port="{port}" maxDataSize="{MAX_MESSAGE}")',
        # the received line exactly as the shipper read it (msg keeps one leading space after TAG)
        'template(name="hpcmlStored" type="string" string="%msg:::drop-last-lf%\\n")',
        f'template(name="hpcmlPath" type="string" string="{store_dir}/%hostname:::secpath-replace%/'
        f'%programname:::secpath-replace%{STORE_SUFFIX}")',
        'action(type="omfile" dynaFile="hpcmlPath" template="hpcmlStored" dynaFileCacheSize="64"',
        '       createDirs="on" dirCreateMode="0755" fileCreateMode="0644" asyncWriting="off" flushOnTXEnd="on")',
        "",
    ])


def shipper_conf(node: str, log_dir: str, head: str, port: int, work_dir: str) -> str:
    """One node's ``rsyslogd`` config: tail its JSON logs, ship them to the head over RELP.

    Args:
        node: the node's name (sent as HOSTNAME; the collector's folder for it).
        log_dir: the node's log folder; every ``*.jsonl`` in it is shipped.
        head: the collector's address.
        port: the collector's RELP port.
        work_dir: rsyslog's own folder (imfile's read positions and the action queue's spill files).

    Raises:
        ValueError: naming the argument that is wrong and what is expected.
    """
    _check("node", node, NAME, "1-32 letters, digits, '-' or '_'")
    _check_common(head, port, log_dir, work_dir)
    stage = r"%$!metadata!filename:R,ERE,1,DFLT:([A-Za-z0-9_-]+)[.]jsonl$--end%"
    return "\n".join([
        f'global(workDirectory="{work_dir}" maxMessageSize="{MAX_MESSAGE}" localHostname="{node}")',
        'module(load="imfile" mode="inotify")',
        'module(load="omrelp")',
        f'input(type="imfile" file="{log_dir}/*.jsonl" tag="hpcml" addMetadata="on" ruleset="ship"',
        '      reopenOnTruncate="on" freshStartTail="off" persistStateInterval="1")',
        f'template(name="hpcmlForward" type="string" string="<%PRI%>%TIMESTAMP:::date-rfc3339% {node} '
        f'{stage}: %$!metadata!fileoffset% %msg%")',
        'ruleset(name="ship") {',
        f'  action(type="omrelp" target="{head}" port="{port}" template="hpcmlForward"',
        '         action.resumeRetryCount="-1" action.resumeInterval="1"',
        '         queue.type="LinkedList" queue.filename="ship" queue.saveOnShutdown="on"',
        '         queue.maxDiskSpace="256m" queue.timeoutShutdown="2000")',
        '}',
        "",
    ])
