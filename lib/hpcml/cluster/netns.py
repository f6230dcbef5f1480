"""The wires of the local cluster: a bridge, one network namespace per node, veth links, tc shaping.

Creates what a :class:`~hpcml.cluster.fabric.ClusterPlan` names, with Debian's iproute2 and
util-linux (``ip``, ``tc``, ``nsenter``, ``unshare``), and removes it again. Each node also gets
a UTS namespace (its own hostname), kept alive by a bind mount under ``/run/hpcml/<name>/``.

Processes are started in a node with :func:`node_prefix` (``nsenter --net=… --uts=…``), not
``ip netns exec``: the latter remounts ``/sys`` and ``slurmd`` then fails ("No filesystem
mounted on /sys/fs/cgroup").

Everything created carries the cluster's name prefix, so :func:`reclaim` finds a crashed run's
leftovers (namespaces, links, the bridge, UTS mounts, and the processes inside the namespaces)
and removes them; nothing without the prefix is ever touched.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

from hpcml.cluster import fabric
from hpcml.cluster.fabric import NODE_IFACE, ClusterPlan, NodePlan, tbf_args
from hpcml.proc import missing_packages, which

#: command -> Debian package that ships it.
PACKAGES = {"ip": "iproute2", "tc": "iproute2", "nsenter": "util-linux", "unshare": "util-linux",
            "sshd": "openssh-server", "ssh": "openssh-client", "ssh-keygen": "openssh-client", "iperf3": "iperf3"}
RUN_ROOT = Path(fabric.RUN_ROOT)
NETNS_DIR = Path("/run/netns")


class NetError(RuntimeError):
    """An ``ip``/``tc`` command failed; the message carries the command and what it printed."""


def available(search_path: str | None = None) -> str | None:
    """``None`` when namespaces can be made here, else one line saying what is missing and why.

    Args:
        search_path: ``PATH``-style folders to look in (default :data:`hpcml.proc.SEARCH_PATH`).
    """
    missing, pkgs = missing_packages(PACKAGES, search_path)
    if missing:
        return (f"the multi-node cluster needs {', '.join(missing)}: install the Debian package(s) "
                f"{' '.join(pkgs)} (apt-get install {' '.join(pkgs)})")
    if os.geteuid() != 0:
        return "the multi-node cluster needs root (CAP_NET_ADMIN) to make network namespaces; running as a user"
    probe = f"hpcmlprobe{os.getpid()}"
    p = subprocess.run([which("ip"), "netns", "add", probe], capture_output=True, text=True)
    if p.returncode != 0:
        return f"network namespaces cannot be made here (ip netns add: {p.stderr.strip()})"
    subprocess.run([which("ip"), "netns", "del", probe], capture_output=True)
    return None


def ip(*args: str, netns: str | None = None, check: bool = True) -> str:
    """Run ``ip`` (``ip -n NETNS`` inside a namespace); raise :class:`NetError` on failure."""
    argv = [which("ip") or "ip"] + (["-n", netns] if netns else []) + list(args)
    return _run(argv, check)


def tc(*args: str, netns: str | None = None, check: bool = True) -> str:
    argv = [which("tc") or "tc"] + (["-n", netns] if netns else []) + list(args)
    return _run(argv, check)


def _run(argv: list[str], check: bool) -> str:
    p = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    if check and p.returncode != 0:
        raise NetError(f"`{' '.join(argv)}` failed (exit {p.returncode}): {(p.stderr or p.stdout).strip()}")
    return p.stdout


def used_networks(prefix: str) -> list[str]:
    """IPv4 networks of the machine's addresses and routes, except on the project's own links."""
    out = []
    for link in json.loads(ip("-j", "-4", "addr") or "[]"):
        if link.get("ifname", "").startswith(prefix + "-"):
            continue
        out += [f"{a['local']}/{a['prefixlen']}" for a in link.get("addr_info", []) if "local" in a]
    for r in json.loads(ip("-j", "-4", "route") or "[]"):
        if r.get("dev", "").startswith(prefix + "-") or r.get("dst") in (None, "default"):
            continue
        out.append(r["dst"] if "/" in r["dst"] else r["dst"] + "/32")
    return out


def uts_path(prefix: str, node: str) -> Path:
    return RUN_ROOT / prefix / f"uts-{node}"


def node_prefix(p: ClusterPlan, node: NodePlan, cpus: bool = True) -> list[str]:
    """argv prefix that runs a command in ``node``: its network and hostname, pinned to its cores."""
    argv = [which("nsenter") or "nsenter", f"--net={NETNS_DIR / node.netns}"]
    uts = uts_path(p.spec.name, node.name)
    if uts.exists():
        argv.append(f"--uts={uts}")
    if cpus:
        argv = [which("taskset") or "taskset", "-c", ",".join(map(str, node.cpus))] + argv
    return argv


def create(p: ClusterPlan) -> None:
    """Bridge at the head address, then per node: namespace, hostname, veth pair, address, shaping."""
    ip("link", "add", p.bridge, "type", "bridge")
    ip("addr", "add", f"{p.head_address}/{p.prefixlen}", "dev", p.bridge)
    ip("link", "set", p.bridge, "up")
    for n in p.nodes:
        ip("netns", "add", n.netns)
        _make_uts(p.spec.name, n.name)
        ip("link", "add", n.host_link, "type", "veth", "peer", "name", NODE_IFACE, "netns", n.netns)
        ip("link", "set", n.host_link, "master", p.bridge, "up")
        ip("addr", "add", f"{n.address}/{p.prefixlen}", "dev", NODE_IFACE, netns=n.netns)
        ip("link", "set", NODE_IFACE, "up", netns=n.netns)
        ip("link", "set", "lo", "up", netns=n.netns)
    shape(p, p.rate_bps)


def _make_uts(prefix: str, node: str) -> None:
    path = uts_path(prefix, node)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch()
    p = subprocess.run([which("unshare") or "unshare", f"--uts={path}", "hostname", node],
                       capture_output=True, text=True, timeout=10)
    if p.returncode != 0:  # where UTS namespaces can't be made, the node keeps the machine's hostname
        path.unlink(missing_ok=True)


def shape(p: ClusterPlan, rate_bps: float | None) -> None:
    """Apply ``tbf`` at ``rate_bps`` on every node's link in both directions (``None``: remove it)."""
    for n in p.nodes:
        for dev, ns in ((n.host_link, None), (NODE_IFACE, n.netns)):
            if rate_bps is None:
                tc("qdisc", "del", "dev", dev, "root", netns=ns, check=False)
            else:
                tc("qdisc", "replace", "dev", dev, "root", *tbf_args(rate_bps), netns=ns)


def qdisc(p: ClusterPlan, node: NodePlan) -> str:
    """The root qdisc on the node's host-side link, as ``tc`` prints it."""
    return tc("qdisc", "show", "dev", node.host_link).strip()


def set_link(node: NodePlan, up: bool) -> None:
    """Cut (``up=False``) or restore a node's link: its host-side veth goes down or up."""
    ip("link", "set", node.host_link, "up" if up else "down")


def link_up(node: NodePlan) -> bool:
    return "UP" in json.loads(ip("-j", "link", "show", node.host_link) or "[{}]")[0].get("flags", [])


def ours(prefix: str) -> dict[str, list[str]]:
    """The namespaces, links and UTS mounts with the prefix that exist now."""
    ns = [ln.split()[0] for ln in ip("netns", "list").splitlines() if ln.split() and ln.split()[0].startswith(prefix + "-")]
    links = [l["ifname"] for l in json.loads(ip("-j", "link") or "[]") if l.get("ifname", "").startswith(prefix + "-")]
    uts = sorted(str(x) for x in (RUN_ROOT / prefix).glob("uts-*")) if (RUN_ROOT / prefix).exists() else []
    return {"netns": ns, "links": links, "uts": uts}


def pids_in(netns: str) -> list[int]:
    """Processes whose network namespace is ``netns`` (matched by inode)."""
    try:
        ino = os.stat(NETNS_DIR / netns).st_ino
    except OSError:
        return []
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if os.stat(entry / "ns" / "net").st_ino == ino:
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def kill_all(pids: list[int], grace_s: float = 5.0) -> list[int]:
    """SIGTERM, wait up to ``grace_s``, then SIGKILL whatever is left; returns the pids signalled."""
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM if grace_s > 0 else signal.SIGKILL)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + grace_s
    left = list(pids)
    while left and time.monotonic() < deadline:
        left = [p for p in left if alive(p)]
        time.sleep(0.05)
    for pid in left:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return pids


def alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def reclaim(prefix: str, timeout_s: float = 20.0) -> dict[str, list[str]]:
    """Remove everything with the prefix: processes in its namespaces, namespaces, links, UTS mounts.

    Returns:
        What was found (and removed), as :func:`ours` lists it, plus ``pids`` killed.
    """
    found = ours(prefix)
    killed = []
    for ns in found["netns"]:
        killed += kill_all(pids_in(ns))
    for ns in found["netns"]:
        ip("netns", "del", ns, check=False)
    for link in found["links"]:
        if "-v" in link or link.endswith("-br"):
            ip("link", "del", link, check=False)
    for path in found["uts"]:
        subprocess.run(["umount", path], capture_output=True)
        Path(path).unlink(missing_ok=True)
    deadline = time.monotonic() + timeout_s  # a namespace's links go once its last process has gone
    while time.monotonic() < deadline and any(ours(prefix)[k] for k in ("netns", "links")):
        for link in ours(prefix)["links"]:
            ip("link", "del", link, check=False)
        time.sleep(0.1)
    left = ours(prefix)
    if any(left.values()):
        raise NetError(f"cluster {prefix!r}: still present after {timeout_s:g}s: {left}")
    if (RUN_ROOT / prefix).exists():
        shutil.rmtree(RUN_ROOT / prefix, ignore_errors=True)
    return {**found, "pids": [str(p) for p in killed]}
