"""The local multi-node cluster's plan, as pure functions: nodes, addresses, cores, links, files.

A :class:`LocalClusterSpec` says how many nodes, their cores and memory, the address range and
the link bandwidth. :func:`plan` turns it (plus the networks already on the machine and its
core count) into a :class:`ClusterPlan`: every name, address and core set the backend in
:mod:`hpcml.cluster.netns` and :mod:`hpcml.cluster.local` creates. Nothing here touches the
machine, so every rule (a subnet clash, an unknown rate, more nodes than cores) is unit-tested.

Example:
    >>> p = plan(LocalClusterSpec(nodes=2, bandwidth="1gbit"), used=["192.0.2.0/24"], cores=2)
    >>> [(n.name, n.address, n.cpus) for n in p.nodes]
    [('n1', '10.250.0.11', (0,)), ('n2', '10.250.0.12', (1,))]
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field

from hpcml.specbase import fail

#: Every namespace, link and bridge the project makes starts with this; leftovers with it are reclaimed.
PREFIX = "hpcml"
#: The interface name inside every node (Gloo's and Horovod's interface selection is by name).
NODE_IFACE = "eth1"
#: Candidate private /24s, in order; the first that no interface or route on the machine uses wins.
CANDIDATE_SUBNETS = tuple(f"10.250.{i}.0/24" for i in range(0, 32)) + tuple(f"172.31.{i}.0/24" for i in range(200, 216))
MAX_NODES = 8
#: Where a running cluster registers itself (``<name>.json``: its state folder) and keeps its UTS mounts.
RUN_ROOT = "/run/hpcml"
_RATE = re.compile(r"^([0-9]+(?:\.[0-9]+)?)(kbit|mbit|gbit)$")
_UNIT = {"kbit": 1e3, "mbit": 1e6, "gbit": 1e9}
_NAME = re.compile(r"^[a-z][a-z0-9]{0,7}$")


def parse_rate(text: str) -> float | None:
    """Bits per second of a tc rate such as ``"1gbit"``, ``"100mbit"``; ``None`` for ``"unshaped"``.

    Raises:
        SpecError: naming ``bandwidth`` and the accepted forms.
    """
    if text == "unshaped":
        return None
    m = _RATE.match(text) if isinstance(text, str) else None
    if not m or float(m.group(1)) <= 0:
        raise fail("LocalClusterSpec", "bandwidth", "'unshaped' or a tc rate such as '100mbit', '1gbit', '10gbit'", text)
    return float(m.group(1)) * _UNIT[m.group(2)]


@dataclass(frozen=True)
class LocalClusterSpec:
    """A cluster of nodes on this machine, each a network namespace behind a shaped link.

    Attributes:
        nodes: compute nodes, 1-8 (the head is the machine itself, at the bridge address).
        cpus_per_node: cores each node's processes may use; ``None`` = an equal share of the
            machine's cores (at least one; nodes share cores when there are more nodes than cores).
        mem_mb_per_node: the memory each node declares to Slurm (``RealMemory``). A network
            namespace does not confine memory; Slurm's scheduling accounts it.
        subnet: an IPv4 /24 for the bridge and the nodes; ``None`` = the first candidate that no
            interface or route on the machine uses.
        bandwidth: ``"unshaped"`` or a tc rate applied with ``tbf`` on every node's link, both ways.
        name: the prefix of every namespace, link and bridge (lowercase, at most 8 characters,
            so that ``<name>-br`` and ``<name>-v8`` fit Linux's 15-character interface names).
    """

    nodes: int = 2
    cpus_per_node: int | None = None
    mem_mb_per_node: int = 2048
    subnet: str | None = None
    bandwidth: str = "unshaped"
    name: str = PREFIX

    def __post_init__(self) -> None:
        if not isinstance(self.nodes, int) or isinstance(self.nodes, bool) or not 1 <= self.nodes <= MAX_NODES:
            raise fail(self, "nodes", f"an integer from 1 to {MAX_NODES}", self.nodes)
        if self.cpus_per_node is not None and (not isinstance(self.cpus_per_node, int) or self.cpus_per_node < 1):
            raise fail(self, "cpus_per_node", "None (an equal share) or an integer >= 1", self.cpus_per_node)
        if not isinstance(self.mem_mb_per_node, int) or self.mem_mb_per_node < 256:
            raise fail(self, "mem_mb_per_node", "an integer >= 256 (MB)", self.mem_mb_per_node)
        parse_rate(self.bandwidth)
        if self.subnet is not None:
            try:
                net = ipaddress.IPv4Network(self.subnet)
            except ValueError:
                raise fail(self, "subnet", "an IPv4 /24 such as '10.250.0.0/24'", self.subnet) from None
            if net.prefixlen != 24 or not net.is_private:
                raise fail(self, "subnet", "a private IPv4 /24 such as '10.250.0.0/24'", self.subnet)
        if not isinstance(self.name, str) or not _NAME.match(self.name):
            raise fail(self, "name", "1-8 lowercase letters/digits starting with a letter", self.name)


@dataclass(frozen=True)
class NodePlan:
    """One node: its Slurm/host name, address, namespace, host-side link and cores."""

    name: str
    address: str
    netns: str
    host_link: str
    cpus: tuple[int, ...]


@dataclass(frozen=True)
class ClusterPlan:
    """Everything :mod:`hpcml.cluster.netns` creates for a spec."""

    spec: LocalClusterSpec
    subnet: str
    bridge: str
    head_address: str
    nodes: tuple[NodePlan, ...]
    rate_bps: float | None
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def prefixlen(self) -> int:
        return ipaddress.IPv4Network(self.subnet).prefixlen

    def node(self, name: str) -> NodePlan:
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(f"no node {name!r}; the nodes are {[n.name for n in self.nodes]}")


def _overlaps(net: ipaddress.IPv4Network, used: list[str]) -> str | None:
    for u in used:
        try:
            other = ipaddress.ip_network(u, strict=False)
        except ValueError:
            continue
        if other.version == 4 and other.prefixlen > 0 and net.overlaps(other):
            return u
    return None


def pick_subnet(spec: LocalClusterSpec, used: list[str]) -> str:
    """The spec's subnet, or the first candidate no network in ``used`` overlaps.

    Args:
        used: networks (``a.b.c.d/n``) of the machine's addresses and routes that the project did
            not make (its own bridge is reclaimed first, so it is not in this list). The default
            route (``0.0.0.0/0``) overlaps everything and is ignored.

    Raises:
        SpecError: when the spec's subnet clashes with one of them (naming it), or no candidate is free.
    """
    if spec.subnet is not None:
        clash = _overlaps(ipaddress.IPv4Network(spec.subnet), used)
        if clash:
            raise fail(spec, "subnet", f"a /24 that no interface or route on this machine uses ({clash} is in use)",
                       spec.subnet)
        return spec.subnet
    for cand in CANDIDATE_SUBNETS:
        if not _overlaps(ipaddress.IPv4Network(cand), used):
            return cand
    raise fail(spec, "subnet", "an explicit free /24: every default candidate is in use", None)


def cpu_sets(nodes: int, cores: int, cpus_per_node: int | None) -> tuple[tuple[tuple[int, ...], ...], list[str]]:
    """Each node's cores: consecutive blocks, wrapping round when nodes x cores exceed the machine.

    Returns:
        ``(per-node core tuples, notes)``; a note says plainly when nodes share cores.
    """
    per = cpus_per_node or max(1, cores // nodes)
    notes = []
    if per > cores:
        notes.append(f"cpus_per_node={per} is more than this machine's {cores} cores: each node gets all {cores}")
        per = cores
    sets = tuple(tuple((i * per + k) % cores for k in range(per)) for i in range(nodes))
    if nodes * per > cores:
        notes.append(f"{nodes} nodes x {per} core(s) > {cores} cores on this machine: nodes share cores, "
                     f"so they compete for CPU time as nodes of a real cluster would not")
    return sets, notes


def node_stem(name: str) -> str:
    """What a cluster's node names start with: ``n`` for the project's cluster, ``<name>n`` for another."""
    return "n" if name == PREFIX else f"{name}n"


def plan(spec: LocalClusterSpec, used: list[str], cores: int) -> ClusterPlan:
    """Names, addresses, links and cores of every node (the head is ``.1``, node k is ``.10+k``)."""
    subnet = pick_subnet(spec, used)
    base = ipaddress.IPv4Network(subnet).network_address
    sets, notes = cpu_sets(spec.nodes, cores, spec.cpus_per_node)
    # the project's cluster names its nodes n1..nN; another (a test's) prefixes them, so that two
    # clusters up at once never share a name in /etc/hosts
    stem = node_stem(spec.name)
    nodes = tuple(NodePlan(name=f"{stem}{k}", address=str(base + 10 + k), netns=f"{spec.name}-n{k}",
                           host_link=f"{spec.name}-v{k}", cpus=sets[k - 1]) for k in range(1, spec.nodes + 1))
    return ClusterPlan(spec=spec, subnet=subnet, bridge=f"{spec.name}-br", head_address=str(base + 1),
                       nodes=nodes, rate_bps=parse_rate(spec.bandwidth), notes=tuple(notes))


def tbf_args(rate_bps: float) -> list[str]:
    """``tc qdisc … tbf`` arguments for a rate: a burst of at least 1 ms of traffic (and one 64 KiB GSO
    segment), and a 50 ms queue, so TCP reaches the rate instead of stalling on a tiny bucket."""
    burst = max(64 * 1024, int(rate_bps / 8 / 1000))
    return ["tbf", "rate", f"{int(rate_bps)}bit", "burst", str(burst), "latency", "50ms"]


HOSTS_BEGIN = "# >>> hpcml cluster {name} (removed by down())"
HOSTS_END = "# <<< hpcml cluster {name}"


def hosts_block(p: ClusterPlan, head_name: str = "head") -> str:
    """The lines :func:`with_hosts_block` adds to ``/etc/hosts``: every node and the head by name."""
    lines = [HOSTS_BEGIN.format(name=p.spec.name), f"{p.head_address}\t{p.spec.name}-{head_name}"]
    lines += [f"{n.address}\t{n.name}" for n in p.nodes]
    return "\n".join(lines + [HOSTS_END.format(name=p.spec.name)]) + "\n"


def without_hosts_block(text: str, name: str) -> str:
    """``/etc/hosts`` text with this cluster's block (if any) removed, everything else kept byte for byte."""
    begin, end = HOSTS_BEGIN.format(name=name), HOSTS_END.format(name=name)
    out, skipping = [], False
    for line in text.splitlines(keepends=True):
        if line.rstrip("\n") == begin:
            skipping = True
            continue
        if skipping and line.rstrip("\n") == end:
            skipping = False
            continue
        if not skipping:
            out.append(line)
    return "".join(out)


def with_hosts_block(text: str, p: ClusterPlan) -> str:
    """``/etc/hosts`` text with exactly one block for this cluster, appended after the original."""
    base = without_hosts_block(text, p.spec.name)
    if base and not base.endswith("\n"):
        base += "\n"
    return base + hosts_block(p)


def sshd_config(address: str, host_key: str, authorized_keys: str, pid_file: str, port: int = 22) -> str:
    """An ``sshd_config`` for one node: its address only, root by key only, no passwords, no PAM."""
    return "\n".join([
        f"ListenAddress {address}",
        f"Port {port}",
        f"HostKey {host_key}",
        f"PidFile {pid_file}",
        f"AuthorizedKeysFile {authorized_keys}",
        "PermitRootLogin prohibit-password",
        "PubkeyAuthentication yes",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "UsePAM no",
        "StrictModes no",  # the key files live under build/, whose modes the checkout decides
        "PrintMotd no",
        "AcceptEnv LANG LC_* HOROVOD_* OMP_NUM_THREADS PYTHONPATH",
        "X11Forwarding no",
        "",
    ])


def ssh_client_config(p: ClusterPlan, key: str, known_hosts: str) -> str:
    """An ``ssh_config`` drop-in for the cluster's nodes: its key and its own known-hosts file.

    Horovod's launcher runs plain ``ssh <node>``; without this, every cluster's fresh host keys
    would land in (and clash inside) the user's ``~/.ssh/known_hosts``.
    """
    hosts = " ".join([n.name for n in p.nodes] + [n.address for n in p.nodes])
    return "\n".join([f"# hpcml cluster {p.spec.name} (removed by down())", f"Host {hosts}",
                      f"    IdentityFile {key}", "    IdentitiesOnly yes", f"    UserKnownHostsFile {known_hosts}",
                      "    StrictHostKeyChecking accept-new", "    LogLevel ERROR", ""])


def ssh_options(key: str, known_hosts: str) -> list[str]:
    """Client options for the cluster's sshd: its key, its own known-hosts file, never a prompt."""
    return ["-i", key, "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=accept-new",
            "-o", f"UserKnownHostsFile={known_hosts}", "-o", "ConnectTimeout=5", "-o", "LogLevel=ERROR"]
