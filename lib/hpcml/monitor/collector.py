"""Central logs on the local cluster: an rsyslog collector on the head, an rsyslog shipper in every node.

Why rsyslog: it is what HPC and platform sites already run on every node (Debian's default
syslog daemon), and it has the two pieces this path needs built in: ``imfile`` tails the JSON
log files with persisted read positions, and RELP (``omrelp``/``imrelp``) acknowledges every
message, so with a disk-assisted queue on the sender nothing is lost while the head is away.
syslog-ng would do as well (its ``network()`` with disk buffers), but its reliable transport
(ALTP) is in the commercial edition only, and RELP ships in Debian as ``rsyslog-relp``.
``systemd-journal-remote`` needs journald on every node, and PID 1 here is not systemd.

RELP prevents loss, not duplicates: a message sent but not yet acknowledged when the collector
goes away is sent again. Every line carries ``(node, seq)`` (:mod:`hpcml.monitor.logs`), so the
store (:mod:`hpcml.monitor.logstore`) loads it once and counts the raw duplicates.

Processes: ``rsyslogd -n -f <conf> -i <pidfile>`` with its own work folder, started and stopped
by pid; the shippers run inside their nodes (``cl.node_argv``). Nothing touches
``/etc/rsyslog.conf`` or ``/dev/log``. Without a multi-node cluster (no root) the collector
listens on 127.0.0.1 and one shipper, node ``head``, runs on this machine.

Example:
    >>> logs_path = CentralLogs.start(cl, build / "central-logs")
    >>> env = logs_path.node_env("n1")       # HPCML_NODE, HPCML_LOG_DIR for a job on n1
    >>> logs_path.restart_collector()
    >>> logs_path.stop()
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from hpcml import proc
from hpcml.monitor import syslog_conf
from hpcml.report import Metric

#: The node name of the shipper when there is no multi-node cluster (everything on this machine).
SINGLE_NODE = "head"
LOOPBACK = "127.0.0.1"


def rsyslogd() -> str:
    """The ``rsyslogd`` binary.

    Raises:
        FileNotFoundError: it is not installed (Debian packages rsyslog and rsyslog-relp).
    """
    found = proc.which("rsyslogd")
    if not found:
        raise FileNotFoundError("rsyslogd not found: install Debian's rsyslog and rsyslog-relp (ci/setup does)")
    return found


@dataclass
class Daemon:
    """One ``rsyslogd`` started by this process: its config, work folder, pid file and log."""

    name: str
    conf: Path
    work_dir: Path
    prefix: list[str] = field(default_factory=list)  # argv prefix that puts it inside a node
    popen: subprocess.Popen | None = None

    @property
    def pid_file(self) -> Path:
        return self.work_dir / "rsyslogd.pid"

    @property
    def log(self) -> Path:
        return self.work_dir / "rsyslogd.log"

    def start(self, ready, timeout_s: float = 15.0) -> "Daemon":
        """Start ``rsyslogd -n`` and wait until ``ready()``; it fails with its log when it exits first."""
        self.pid_file.unlink(missing_ok=True)
        argv = [*self.prefix, rsyslogd(), "-n", "-f", str(self.conf), "-i", str(self.pid_file)]
        self.popen = proc.spawn(argv, log_path=self.log)
        proc.wait_until(ready, timeout_s, f"rsyslogd ({self.name})", proc=self.popen, log_path=self.log)
        return self

    def stop(self, timeout_s: float = 10.0) -> int | None:
        """SIGTERM (rsyslog saves its queues to the work folder), SIGKILL after ``timeout_s``."""
        code = proc.stop(self.popen, timeout_s=timeout_s)
        self.popen = None
        return code

    @property
    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None


@dataclass
class CentralLogs:
    """The running log path: a collector, one shipper per node, and where everything lives.

    Attributes:
        root: the folder of it all: ``store/`` (what the collector wrote), ``nodes/<node>/`` (each
            node's JSON logs, shipped), ``collector/`` and ``shipper-<node>/`` (rsyslog's own).
        address: the collector's address (the head's bridge address, or 127.0.0.1).
        port: its RELP port.
        mode: ``multi`` (shippers inside the cluster's nodes) or ``single`` (one on this machine).
    """

    root: Path
    address: str
    port: int
    mode: str
    collector: Daemon
    shippers: dict[str, Daemon]

    @property
    def store(self) -> Path:
        return self.root / "store"

    def node_dir(self, node: str) -> Path:
        """The folder a node's processes log into (its shipper tails ``*.jsonl`` there)."""
        return self.root / "nodes" / node

    def node_env(self, node: str) -> dict[str, str]:
        """Environment for a process on ``node``: its name and its log folder (see :mod:`hpcml.monitor.logs`)."""
        if node not in self.shippers:
            raise ValueError(f"node_env: no shipper for node {node!r}; the nodes are {sorted(self.shippers)}")
        return {"HPCML_NODE": node, "HPCML_LOG_DIR": str(self.node_dir(node))}

    @classmethod
    def start(cls, cl, root: Path, port: int | None = None) -> "CentralLogs":
        """Collector on the head, a shipper in every node of ``cl`` (a :class:`~hpcml.cluster.local.LocalCluster`).

        Args:
            cl: the cluster; ``None`` or ``cl.mode == "single"`` gives the loopback, one-node layout.
            root: the folder of it all (emptied first).
            port: the RELP port; default a free one on the collector's address.
        """
        multi = cl is not None and cl.mode == "multi"
        address = cl.plan.head_address if multi else LOOPBACK
        nodes = [n.name for n in cl.plan.nodes] if multi else [SINGLE_NODE]
        root = Path(root)
        shutil.rmtree(root, ignore_errors=True)
        port = port or proc.free_port(address)
        collector = _daemon(root, "collector", syslog_conf.collector_conf(address, port, str(root / "store"),
                                                                          str(root / "collector")), [])
        self = cls(root, address, port, "multi" if multi else "single", collector, {})
        try:
            self._start_collector()
            for node in nodes:
                d = self.node_dir(node)
                d.mkdir(parents=True, exist_ok=True)
                conf = syslog_conf.shipper_conf(node, str(d), address, port, str(root / f"shipper-{node}"))
                sh = _daemon(root, f"shipper-{node}", conf, cl.node_argv(node, []) if multi else [])
                self.shippers[node] = sh.start(lambda sh=sh: sh.pid_file.exists())
        except BaseException:
            self.stop()
            raise
        return self

    def _start_collector(self) -> None:
        self.collector.start(lambda: proc.port_open(self.port, self.address))

    def restart_collector(self, down_s: float = 1.0) -> float:
        """Stop the collector (SIGTERM), leave it down ``down_s``, start it again; returns seconds it was down."""
        t0 = time.monotonic()
        self.collector.stop()
        time.sleep(down_s)
        self._start_collector()
        return time.monotonic() - t0

    def sent_lines(self) -> dict[str, list[str]]:
        """Every line the nodes wrote into their shipped logs, by node (what should arrive)."""
        return {n: [ln for f in sorted(self.node_dir(n).glob("*.jsonl"))
                    for ln in f.read_text(errors="replace").splitlines() if ln.strip()] for n in self.shippers}

    def stored_lines(self) -> int:
        """Lines in the collector's files now (raw, duplicates included)."""
        total = 0
        for f in self.store.glob(f"*/*{syslog_conf.STORE_SUFFIX}"):
            with open(f, "rb") as fh:
                total += sum(1 for _ in fh)
        return total

    def wait_stored(self, at_least: int, timeout_s: float = 30.0, settle_s: float = 1.0) -> int:
        """Wait until at least ``at_least`` raw lines are stored and the count stops growing for ``settle_s``."""
        proc.wait_until(lambda: self.stored_lines() >= at_least, timeout_s, f"{at_least} stored log lines")
        last = -1
        while (now := self.stored_lines()) != last:
            last = now
            time.sleep(settle_s)
        return now

    def stop(self) -> dict[str, int | None]:
        """Stop the shippers first (they save their queues), then the collector; exit codes by name."""
        codes = {name: sh.stop() for name, sh in self.shippers.items()}
        codes["collector"] = self.collector.stop()
        return codes


def _daemon(root: Path, name: str, conf: str, prefix: list[str]) -> Daemon:
    work = root / name
    work.mkdir(parents=True, exist_ok=True)
    path = work / "rsyslog.conf"
    path.write_text(conf)
    return Daemon(name, path, work, prefix)


def ship_node_job(cl, central: CentralLogs, run_id: str, steps: int = 40, size: int = 192,
                  timeout_s: float = 120.0) -> dict:
    """Run :mod:`hpcml.monitor.nodejob` on every node at once, wait for its lines at the collector, load them.

    Returns:
        ``run_id``, ``nodes``, ``exit_codes``, ``sent`` (lines the nodes wrote), ``stored_raw`` (lines in the
        collector's files), the counts of :func:`hpcml.monitor.logstore.load` (``raw_duplicates``,
        ``json_rows``, ``other_rows``), ``lost`` (sent records whose ``(node, seq)`` is not in the store),
        ``db`` (the DuckDB file) and ``con`` (an open connection to it).
    """
    import sys

    import duckdb

    from hpcml.monitor import logstore

    jobs = []
    for rank, node in enumerate(central.shippers):
        argv, env = node_job_argv(cl, node, [sys.executable, "-m", "hpcml.monitor.nodejob", "--rank", str(rank),
                                             "--steps", str(steps), "--size", str(size)], central)
        jobs.append(subprocess.Popen(argv, env={**env, "HPCML_RUN_ID": run_id}, stdout=subprocess.DEVNULL))
    codes = [j.wait(timeout=timeout_s) for j in jobs]
    sent = central.sent_lines()
    total = sum(map(len, sent.values()))
    delay = proc.wait_until(lambda: central.stored_lines() >= total, 30.0, f"{total} stored log lines", interval_s=0.05)
    raw = central.wait_stored(total, timeout_s=30)
    db = central.root / "logs.duckdb"
    con = duckdb.connect(str(db))
    counts = logstore.load(central.store, con)
    stored = {n: set(v) for n, v in logstore.seqs_by_node(con).items()}
    keys = [(n, obj["seq"]) for n, lines in sent.items() for obj in map(lambda ln: logstore.classify(ln)[0], lines) if obj]
    lost = sum(1 for n, seq in keys if seq not in stored.get(n, set()))
    return {"run_id": run_id, "nodes": list(central.shippers), "exit_codes": codes, "sent": total, "stored_raw": raw,
            **counts, "lost": lost, "delay_s": delay, "db": db, "con": con}


def metrics(shipped: dict) -> list[Metric]:
    """The numbers notebook 05 records from :func:`ship_node_job`."""
    return [
        Metric("log_lines_sent", shipped["sent"], "lines", f"lines the burn-in wrote on {len(shipped['nodes'])} node(s)"),
        Metric("log_lines_stored", shipped["json_rows"] + shipped["other_rows"], "lines",
               "rows in DuckDB after loading the collector's files: records on (node, seq), other lines on (node, stage, offset)"),
        Metric("log_lines_lost", shipped["lost"], "lines", "records sent whose (node, seq) is not in the store", True),
        Metric("log_lines_raw_duplicates", shipped["raw_duplicates"], "lines",
               "lines the collector received more than once (RELP re-sends), stored once"),
        Metric("log_lines_not_json", shipped["other_rows"], "lines", "lines that were not JSON records: kept, counted"),
        Metric("log_ship_delay_s", round(shipped["delay_s"], 2), "s",
               "from the last node job's exit until every line was in the collector's files (50 ms polls; "
               "0 = all there at the first check: a job's interpreter exits later than its last line ships)"),
    ]


def node_job_argv(cl, node: str, argv: list[str], logs: CentralLogs) -> tuple[list[str], dict[str, str]]:
    """``argv`` run inside ``node`` (or here, single mode), and its environment (node name, log folder)."""
    env = {**os.environ, **logs.node_env(node)}
    return (cl.node_argv(node, argv) if logs.mode == "multi" else list(argv)), env
