"""Debian's ``prometheus-node-exporter`` on every node of the local cluster, scraped from the head.

:func:`start_all` starts one node_exporter inside each node's network namespace
(:meth:`hpcml.cluster.local.LocalCluster.node_argv`: nsenter + taskset onto the node's cores),
listening on the node's own address only; Prometheus on the head reaches it across the node's
link, so a cut link is a failed scrape. Where the cluster can't run (no namespaces: the
``single`` fallback), :func:`start_all` starts one node_exporter on loopback instead, node
label ``local``. Every exporter is stopped by pid (:meth:`NodeExporters.stop`).

What a network namespace isolates and what it does not: each node has its own interfaces,
addresses, routes and ports, but shares the host's ``/proc`` and ``/sys``, its memory and
its CPUs. So every node_exporter reports **host-wide** ``node_cpu_seconds_total`` (all cores)
and ``node_memory_*``. A node's own CPU is the cores of its cpuset (``taskset`` pins what
runs in it): :func:`cpu_busy_query` selects ``node_cpu_seconds_total`` of those cores only.
Memory has no per-node figure here (the nodes are not memory cgroups).

Collectors: the defaults minus the ones that read host-wide hardware that no rule or panel
uses (``--no-collector.*`` in :data:`DISABLED`), to keep a scrape cheap.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from hpcml import paths
from hpcml import proc as _proc

DEBIAN_PACKAGE = "prometheus-node-exporter"
BINARY = "prometheus-node-exporter"
PORT = 9100
#: node label of the single loopback exporter of the fallback
LOCAL_NODE = "local"
DISABLED = ("arp", "bcache", "bonding", "btrfs", "conntrack", "edac", "entropy", "fibrechannel", "hwmon",
            "infiniband", "ipvs", "mdadm", "nfs", "nfsd", "nvme", "powersupplyclass", "rapl", "schedstat",
            "sockstat", "softnet", "tapestats", "textfile", "thermal_zone", "timex", "udp_queues", "xfs", "zfs",
            "systemd", "selinux", "pressure", "cpufreq", "dmi", "netclass")


def find_binary(path: str | Path | None = None) -> Path:
    """node_exporter: ``path``, ``$HPCML_NODE_EXPORTER``, ``PATH``, then ``/usr/bin``.

    Raises:
        FileNotFoundError: naming the Debian package that provides it.
    """
    cand = path or os.environ.get("HPCML_NODE_EXPORTER") or shutil.which(BINARY) or f"/usr/bin/{BINARY}"
    p = Path(cand)
    if not (p.is_file() and os.access(p, os.X_OK)):
        raise FileNotFoundError(f"{BINARY} not found (looked for {p}): install the Debian package "
                                f"'{DEBIAN_PACKAGE}' (sudo apt-get install {DEBIAN_PACKAGE})")
    return p


def argv(address: str, port: int = PORT, binary: str | Path | None = None) -> list[str]:
    """node_exporter's command line, listening on ``address:port`` only (pure but for the binary lookup)."""
    if address in ("", "0.0.0.0", "::"):
        raise ValueError(f"node_exporter must listen on one address (a node's or loopback), got {address!r}")
    return [str(find_binary(binary)), f"--web.listen-address={address}:{port}", "--log.level=warn",
            *(f"--no-collector.{c}" for c in DISABLED)]


def cpu_busy_query(node: str, cpus: tuple[int, ...] | None, window: str) -> str:
    """PromQL: CPU busy share (0-1) of ``node``: its cpuset's cores only (all cores when ``None``)."""
    sel = f'node="{node}",mode="idle"' + (f',cpu=~"{"|".join(map(str, cpus))}"' if cpus else "")
    return f"1 - avg(rate(node_cpu_seconds_total{{{sel}}}[{window}]))"


def scrape_cost_queries(job: str, window: str) -> dict[str, str]:
    """PromQL for node_exporter's cost per scrape, by node: its own CPU seconds per scrape
    (``process_cpu_seconds_total`` over the scrapes counted by ``up``) and ``scrape_duration_seconds``."""
    return {"cpu_s_per_scrape": f'increase(process_cpu_seconds_total{{job="{job}"}}[{window}]) / '
                                f'count_over_time(up{{job="{job}"}}[{window}])',
            "scrape_duration_s": f'avg_over_time(scrape_duration_seconds{{job="{job}"}}[{window}])'}


@dataclass
class Exporter:
    """One running node_exporter: node name, address, port, process."""

    node: str
    address: str
    port: int
    proc: subprocess.Popen = field(repr=False)
    cpus: tuple[int, ...] | None = None

    @property
    def target(self) -> str:
        return f"{self.address}:{self.port}"

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self) -> int | None:
        return _proc.stop(self.proc, timeout_s=5)


@dataclass
class NodeExporters:
    """The node_exporters of a cluster (or the one loopback exporter): ``targets``, ``stop()``."""

    exporters: list[Exporter]
    mode: str  # "multi": one per node namespace; "single": one on loopback
    reason: str = ""

    def by_node(self, node: str) -> Exporter:
        for e in self.exporters:
            if e.node == node:
                return e
        raise KeyError(f"no node_exporter on {node!r}; they run on {[e.node for e in self.exporters]}")

    def stop(self) -> dict[str, int | None]:
        """Stop every exporter by pid; returns ``{node: exit code}``."""
        return {e.node: e.stop() for e in self.exporters}


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as r:
            return r.status == 200
    except OSError:
        return False


def _start(node: str, address: str, cmd: list[str], log: Path, port: int, cpus, timeout_s: float) -> Exporter:
    ex = Exporter(node, address, port, _proc.spawn(cmd, log, die_with_parent=True), cpus)
    try:
        # the head reaches the node's address over the bridge: ready is "scrapable from the head"
        _proc.wait_until(lambda: _answers(f"http://{ex.target}/metrics"), timeout_s, f"node_exporter on {node}",
                         ex.proc, log)
    except BaseException:
        ex.stop()
        raise
    return ex


def start_all(cl=None, port: int = PORT, timeout_s: float = 20.0) -> NodeExporters:
    """One node_exporter per node of ``cl`` (mode ``multi``), else one on 127.0.0.1.

    Args:
        cl: a :class:`hpcml.cluster.local.LocalCluster`, or ``None`` for the loopback fallback.
        port: the port on each node's address (loopback: a free port instead).
    """
    logdir = paths.ensure(paths.build_dir() / "prometheus" / "node_exporter")
    if cl is None or cl.mode != "multi":
        p = _proc.free_port()
        ex = _start(LOCAL_NODE, _proc.LOOPBACK, argv(_proc.LOOPBACK, p), logdir / "local.log", p, None, timeout_s)
        why = "no cluster given" if cl is None else cl.reason
        return NodeExporters([ex], "single", f"one node_exporter on loopback: the multi-node cluster is not running ({why})")
    started: list[Exporter] = []
    try:
        for n in cl.plan.nodes:
            started.append(_start(n.name, n.address, cl.node_argv(n.name, argv(n.address, port)),
                                  logdir / f"{cl.spec.name}-{n.name}.log", port, tuple(n.cpus), timeout_s))
    except BaseException:
        for e in started:
            e.stop()
        raise
    return NodeExporters(started, "multi")


def wait_gone(ex: Exporter, timeout_s: float = 5.0) -> None:
    """Wait until ``ex`` no longer answers (after a kill)."""
    deadline = time.monotonic() + timeout_s
    while _answers(f"http://{ex.target}/metrics") and time.monotonic() < deadline:
        time.sleep(0.05)
