"""The local multi-node cluster: ``up()`` and ``down()`` of the wires, Slurm and SSH on every node.

``up()`` makes the bridge, one network namespace per node with a (shaped) veth link
(:mod:`hpcml.cluster.netns`), adds the node names to ``/etc/hosts`` in a marked block, creates
a cluster SSH key under the state folder, starts munged and ``slurmctld`` on the head (this
machine, at the bridge address) and, in every node, ``slurmd -N nK`` and Debian's ``sshd``
pinned to the node's cores. ``down()`` stops all of it by pid, kills whatever is still inside
the namespaces (``slurmstepd``/``srun`` orphans included), removes namespaces, links and the
hosts block.

Ownership: notebook 00 brings the cluster up and leaves it running; later notebooks reuse it
(``up()`` with the same spec returns the running one); the pipeline runner
(:mod:`hpcml.pipeline`) calls :func:`down` for its build tree when the run ends. Run alone in
Jupyter, ``python -m hpcml.cluster.local down`` takes it down.

Where namespaces can't be made (not root, no CAP_NET_ADMIN, iproute2/openssh missing), mode
``auto`` falls back to the single-node Slurm cluster of :mod:`hpcml.cluster.slurm.daemons`.

Example:
    >>> cl = ensure(mode="auto", spec=LocalClusterSpec(nodes=2))
    >>> cl.mode, [n.address for n in cl.plan.nodes]
    >>> cl.slurm.cmd(["srun", "-N2", "hostname"])
    >>> with cl.link_cut("n2"): ...      # the link is restored whatever happens inside
    >>> down()
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import time
from contextlib import AbstractContextManager, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator

from hpcml import paths
from hpcml.cluster import fabric, netns
from hpcml.cluster.fabric import ClusterPlan, LocalClusterSpec, NodePlan
from hpcml.cluster.slurm import daemons
from hpcml.proc import cmdlines, pid_alive, stop, tail, wait_until

MODES = ("auto", "multi", "single")
HOSTS_FILE = Path("/etc/hosts")
SSH_CONFIG_DIR = Path("/etc/ssh/ssh_config.d")
#: Slurm's SlurmdTimeout on the local cluster: a node silent this long is marked down (default 300 s).
SLURMD_TIMEOUT_S = 6


class ClusterError(RuntimeError):
    """The cluster could not be brought up (what failed, and its log), after cleaning up."""


def default_state_dir() -> Path:
    return paths.build_dir() / "cluster"


@dataclass
class LocalCluster:
    """Handle on a running cluster (``mode`` multi), or on the single-node fallback (``mode`` single)."""

    mode: str
    state_dir: Path
    slurm: daemons.SlurmCluster
    spec: LocalClusterSpec | None = None
    plan: ClusterPlan | None = None
    started_here: bool = False
    start_s: float | None = None
    reason: str = ""  # why the single-node fallback was taken
    sshd_pids: dict[str, int] = field(default_factory=dict)

    # ---- files --------------------------------------------------------------------------
    @property
    def key(self) -> Path:
        return self.state_dir / "ssh" / "id_ed25519"

    @property
    def known_hosts(self) -> Path:
        return self.state_dir / "ssh" / "known_hosts"

    def describe(self) -> str:
        """One line: which cluster this is."""
        if self.mode == "single":
            return f"single-node Slurm cluster on this machine ({self.reason})"
        p = self.plan
        return (f"{len(p.nodes)}-node cluster in network namespaces: head {p.head_address}, "
                + ", ".join(f"{n.name} {n.address} cores {','.join(map(str, n.cpus))}" for n in p.nodes)
                + f"; links {p.spec.bandwidth}")

    # ---- running things on nodes ---------------------------------------------------------------
    def node_argv(self, node: str, argv: list[str], pin: bool = True) -> list[str]:
        """``argv`` run inside ``node`` (its network and hostname, pinned to its cores)."""
        return netns.node_prefix(self.plan, self.plan.node(node), cpus=pin) + list(argv)

    def run_on(self, node: str, argv: list[str], timeout: float = 60, check: bool = True) -> str:
        p = subprocess.run(self.node_argv(node, argv), capture_output=True, text=True, timeout=timeout)
        if check and p.returncode != 0:
            raise ClusterError(f"on {node}: `{' '.join(argv)}` failed (exit {p.returncode}): {(p.stderr or p.stdout).strip()}")
        return p.stdout

    def ssh_argv(self, node: str, command: str) -> list[str]:
        """``ssh`` from the head to ``node`` with the cluster key (root, key only)."""
        return ([netns.which("ssh") or "ssh"] + fabric.ssh_options(str(self.key), str(self.known_hosts))
                + [f"root@{self.plan.node(node).address}", command])

    def ssh(self, node: str, command: str, timeout: float = 30) -> str:
        p = subprocess.run(self.ssh_argv(node, command), capture_output=True, text=True, timeout=timeout)
        if p.returncode != 0:
            raise ClusterError(f"ssh {node} {command!r} failed (exit {p.returncode}): {p.stderr.strip()}")
        return p.stdout

    # ---- links ---------------------------------------------------------------------------
    def shape(self, bandwidth: str) -> None:
        """Re-shape every node's link (``"unshaped"`` or a tc rate), both directions."""
        netns.shape(self.plan, fabric.parse_rate(bandwidth))
        self.spec = dataclasses.replace(self.spec, bandwidth=bandwidth)
        self.plan = dataclasses.replace(self.plan, spec=self.spec, rate_bps=fabric.parse_rate(bandwidth))
        _save(self)

    @contextmanager
    def link_cut(self, node: str) -> Iterator[float]:
        """Cut ``node``'s link for the block; yields the time of the cut; restores it in ``finally``."""
        n = self.plan.node(node)
        netns.set_link(n, up=False)
        try:
            yield time.time()
        finally:
            netns.set_link(n, up=True)

    # ---- measurements -------------------------------------------------------------------------
    @contextmanager
    def _server(self, node: str, argv: list[str], port: int) -> Iterator[None]:
        """Run ``argv`` in ``node`` for the block, from the moment it listens on ``port``; stop it after."""
        addr = self.plan.node(node).address
        proc = subprocess.Popen(self.node_argv(node, argv), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True)
        try:
            wait_until(lambda: _listening(self, node, addr, port), 10, f"{Path(argv[0]).name} on {node}:{port}",
                       proc=proc, interval_s=0.05)
            yield
        finally:
            stop(proc, timeout_s=5)

    def iperf(self, client: str, server: str, seconds: float = 2.0, timeout: float = 30) -> float:
        """TCP throughput (bits/s) from ``client`` to ``server`` with iperf3, one stream."""
        addr = self.plan.node(server).address
        with self._server(server, [netns.which("iperf3"), "-s", "-1", "-B", addr], 5201):
            out = self.run_on(client, [netns.which("iperf3"), "-c", addr, "-t", f"{seconds:g}", "-J"], timeout=timeout)
        return float(json.loads(out)["end"]["sum_received"]["bits_per_second"])

    def rtt(self, client: str, server: str, n: int = 200, size: int = 64, timeout: float = 30) -> list[float]:
        """Round-trip times (s) of ``n`` ``size``-byte messages over one TCP connection (TCP_NODELAY)."""
        addr = self.plan.node(server).address
        port = 5301
        server_py = ("import socket,sys\ns=socket.socket();s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n"
                     f"s.bind(({addr!r},{port}));s.listen(1);c,_=s.accept()\n"
                     "c.setsockopt(socket.IPPROTO_TCP,socket.TCP_NODELAY,1)\n"
                     "while True:\n d=c.recv(65536)\n if not d: break\n c.sendall(d)\n")
        client_py = ("import socket,time,json\n"
                     f"c=socket.create_connection(({addr!r},{port}),timeout=10)\n"
                     "c.setsockopt(socket.IPPROTO_TCP,socket.TCP_NODELAY,1)\n"
                     f"m=b'x'*{size};out=[]\n"
                     f"for i in range({n + 10}):\n t=time.perf_counter();c.sendall(m);g=0\n"
                     f" while g<{size}: g+=len(c.recv(65536))\n out.append(time.perf_counter()-t)\n"
                     "print(json.dumps(out[10:]))\n")
        with self._server(server, [sys.executable, "-c", server_py], port):
            return json.loads(self.run_on(client, [sys.executable, "-c", client_py], timeout=timeout))


def srun_placement(cl: LocalCluster) -> list[dict]:
    """Where one task per node lands: ``srun`` reports its rank, node, hostname, address and allowed cores.

    On the single-node fallback two tasks run on the one node.
    """
    shape = ["-N", str(len(cl.plan.nodes)), "--ntasks-per-node=1"] if cl.mode == "multi" else ["-n", "2"]
    argv = ["srun", *shape, "bash", "-c", 'echo "$SLURM_PROCID $SLURMD_NODENAME $(hostname) '
            '$(hostname -I | cut -d" " -f1) $(grep Cpus_allowed_list /proc/self/status | cut -f2)"']
    if cl.mode == "multi":
        # srun listens on ephemeral ports for its tasks' I/O, on every address it has (Slurm has no
        # bind-address option for it): run it from the first node, as from a login node, so those
        # ports open inside the cluster's namespace, not on the machine's interfaces
        argv = cl.node_argv(cl.plan.nodes[0].name, [netns.which("srun") or "srun", *argv[1:]], pin=False)
    out = cl.slurm.cmd(argv, timeout=60)
    rows = [dict(zip(("rank", "node", "hostname", "address", "cores"), ln.split())) for ln in out.splitlines() if ln.strip()]
    return sorted(rows, key=lambda r: int(r["rank"]))


def measure_links(cl: LocalCluster, profiles: list[str], seconds: float = 2.0, rtt_n: int = 200,
                  client: str | None = None, server: str | None = None) -> list[dict]:
    """Throughput (iperf3, one TCP stream) and small-message round trips between two nodes, per profile.

    ``client`` and ``server`` default to the first two nodes. The cluster's own bandwidth is
    restored afterwards.

    Returns:
        One row per profile: ``bandwidth``, ``rate_gbit`` (the tbf rate, None unshaped),
        ``gbit_s`` (measured), ``rtt_p50_us``, ``rtt_p99_us`` (64-byte messages, TCP_NODELAY).
    """
    import numpy as np

    client, server = client or cl.plan.nodes[0].name, server or cl.plan.nodes[1].name
    before = cl.spec.bandwidth
    rows = []
    try:
        for prof in profiles:
            cl.shape(prof)
            rtts = np.array(cl.rtt(client, server, n=rtt_n)) * 1e6
            rate = fabric.parse_rate(prof)
            rows.append({"bandwidth": prof, "rate_gbit": None if rate is None else rate / 1e9,
                         "gbit_s": cl.iperf(client, server, seconds=seconds) / 1e9,
                         "rtt_p50_us": float(np.percentile(rtts, 50)), "rtt_p99_us": float(np.percentile(rtts, 99))})
    finally:
        cl.shape(before)
    return rows


def _listening(cl: LocalCluster, node: str, addr: str, port: int) -> bool:
    out = cl.run_on(node, ["ss", "-Hltn", f"sport = :{port}"], check=False, timeout=10)
    return f"{addr}:{port}" in out


# ---- state ----------------------------------------------------------------------------------
def _state_file(state_dir: Path) -> Path:
    return state_dir / "cluster.json"


def _save(cl: LocalCluster) -> None:
    paths.atomic_write_text(_state_file(cl.state_dir), json.dumps({
        "spec": asdict(cl.spec), "subnet": cl.plan.subnet, "start_s": cl.start_s, "sshd_pids": cl.sshd_pids,
        "owner_pid": os.getpid()}, indent=2))


def _registry(prefix: str) -> Path:
    return netns.RUN_ROOT / f"{prefix}.json"


def _lock(prefix: str) -> AbstractContextManager[None]:
    return paths.file_lock(netns.RUN_ROOT / f"{prefix}.lock")


def _plan_for(spec: LocalClusterSpec, subnet: str) -> ClusterPlan:
    return fabric.plan(LocalClusterSpec(**{**asdict(spec), "subnet": subnet}), used=[], cores=os.cpu_count() or 1)


def _running(spec: LocalClusterSpec, state_dir: Path) -> LocalCluster | None:
    """The cluster recorded in ``state_dir`` when all its parts are alive and its spec is ``spec``."""
    f = _state_file(state_dir)
    if not f.exists():
        return None
    saved = json.loads(f.read_text())
    saved_spec = LocalClusterSpec(**saved["spec"])
    if dataclasses.replace(saved_spec, bandwidth=spec.bandwidth) != spec:  # the bandwidth is re-shaped below
        return None
    plan = _plan_for(saved_spec, saved["subnet"])
    present = netns.ours(spec.name)
    if sorted(n.netns for n in plan.nodes) != sorted(present["netns"]):
        return None
    slurm = daemons.SlurmCluster(state_dir / "slurm")
    pids = saved.get("sshd_pids", {})
    if not slurm.is_running() or not all(pid_alive(pids.get(n.name), "sshd") for n in plan.nodes):
        return None
    cl = LocalCluster("multi", state_dir, slurm, saved_spec, plan,
                      start_s=saved.get("start_s"), sshd_pids=pids)
    if cl.spec.bandwidth != spec.bandwidth:
        cl.shape(spec.bandwidth)
    return cl


def up(spec: LocalClusterSpec | None = None, state_dir: Path | None = None) -> LocalCluster:
    """Bring the multi-node cluster up, or return the running one with the same spec.

    A cluster of the same name recorded elsewhere, or leftovers of a crashed run (namespaces,
    links, processes carrying the name prefix), are taken down first.

    Raises:
        ClusterError: a part did not come up (after :func:`down` has removed the rest).
        SpecError: the spec is invalid or its subnet clashes with one on this machine.
    """
    spec = spec or LocalClusterSpec()
    state_dir = Path(state_dir or default_state_dir()).resolve()
    msg = netns.available() or daemons.available()
    if msg:
        raise ClusterError(msg)
    with _lock(spec.name):
        cl = _running(spec, state_dir)
        if cl is not None:
            return cl
        _reclaim(spec.name, state_dir)
        t0 = time.perf_counter()
        plan = fabric.plan(spec, used=netns.used_networks(spec.name), cores=os.cpu_count() or 1)
        paths.ensure(state_dir)
        paths.atomic_write_text(_registry(spec.name), json.dumps({"state_dir": str(state_dir)}))
        try:
            netns.create(plan)
            _write_hosts(plan)
            _make_keys(state_dir)
            _write_ssh_config(plan, state_dir)
            slurm_dir = paths.ensure(state_dir / "slurm")
            paths.atomic_write_text(slurm_dir / "nodes.json", json.dumps({
                "head_address": plan.head_address, "head_name": f"{spec.name}-head", "slurmd_timeout_s": SLURMD_TIMEOUT_S,
                "ssh_key": str(state_dir / "ssh" / "id_ed25519"),
                "nodes": [{"name": n.name, "address": n.address, "cpus": list(n.cpus), "mem_mb": spec.mem_mb_per_node,
                           "prefix": netns.node_prefix(plan, n)} for n in plan.nodes]}, indent=2))
            slurm = daemons.SlurmCluster(slurm_dir)
            slurm.ensure_running()
            cl = LocalCluster("multi", state_dir, slurm, spec, plan, started_here=True)
            for n in plan.nodes:
                cl.sshd_pids[n.name] = _start_sshd(cl, n)
            cl.start_s = time.perf_counter() - t0
            _save(cl)
        except BaseException as exc:
            _down_locked(spec.name, state_dir)
            if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                raise
            raise ClusterError(f"the {spec.nodes}-node cluster did not come up, and what had started was "
                               f"removed: {exc}") from exc
        return cl


def _write_hosts(plan: ClusterPlan) -> None:
    text = HOSTS_FILE.read_text()
    HOSTS_FILE.write_text(fabric.with_hosts_block(text, plan))  # in place: /etc/hosts is often a bind mount


def _ssh_config_path(prefix: str) -> Path:
    return SSH_CONFIG_DIR / f"{prefix}-cluster.conf"


def _write_ssh_config(plan: ClusterPlan, state_dir: Path) -> None:
    if SSH_CONFIG_DIR.is_dir():
        d = state_dir / "ssh"
        paths.atomic_write_text(_ssh_config_path(plan.spec.name),
                                fabric.ssh_client_config(plan, str(d / "id_ed25519"), str(d / "known_hosts")))


def _make_keys(state_dir: Path) -> None:
    d = paths.ensure(state_dir / "ssh")
    os.chmod(d, 0o700)
    for name in ("id_ed25519", "host_ed25519"):
        if not (d / name).exists():
            subprocess.run([netns.which("ssh-keygen"), "-q", "-t", "ed25519", "-N", "", "-C", f"hpcml-{name}",
                            "-f", str(d / name)], check=True, capture_output=True, timeout=30)
    shutil.copyfile(d / "id_ed25519.pub", d / "authorized_keys")
    os.chmod(d / "authorized_keys", 0o600)
    (d / "known_hosts").unlink(missing_ok=True)


def _start_sshd(cl: LocalCluster, n: NodePlan) -> int:
    d = cl.state_dir / "ssh"
    pid_file = d / f"sshd-{n.name}.pid"
    conf = paths.atomic_write_text(d / f"sshd_config-{n.name}", fabric.sshd_config(
        n.address, str(d / "host_ed25519"), str(d / "authorized_keys"), str(pid_file)))
    Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege-separation folder
    pid_file.unlink(missing_ok=True)
    p = subprocess.run(cl.node_argv(n.name, [netns.which("sshd"), "-f", str(conf), "-E", str(d / f"sshd-{n.name}.log")]),
                       capture_output=True, text=True, timeout=30)
    if p.returncode != 0:
        raise ClusterError(f"sshd on {n.name} failed (exit {p.returncode}): {p.stderr.strip()} {tail(d / f'sshd-{n.name}.log')}")
    wait_until(lambda: daemons._read_pid(pid_file) and _listening(cl, n.name, n.address, 22), 15,
               f"sshd on {n.name} listening on {n.address}:22", log_path=d / f"sshd-{n.name}.log", interval_s=0.05)
    return daemons._read_pid(pid_file)


def _reclaim(prefix: str, state_dir: Path) -> None:
    """Take down what a cluster of this name left, here or recorded under another state folder."""
    reg = _registry(prefix)
    if reg.exists():
        other = Path(json.loads(reg.read_text()).get("state_dir", ""))
        if other and other != state_dir and other.exists():
            _stop_services(other)
    _down_locked(prefix, state_dir)


def _restore_hosts(prefix: str) -> None:
    _ssh_config_path(prefix).unlink(missing_ok=True)
    text = HOSTS_FILE.read_text()
    clean = fabric.without_hosts_block(text, prefix)
    if clean != text:
        HOSTS_FILE.write_text(clean)


def _stop_services(state_dir: Path) -> None:
    slurm_dir = state_dir / "slurm"
    if slurm_dir.exists():
        daemons.SlurmCluster(slurm_dir).stop(force=True)
    for pid_file in (state_dir / "ssh").glob("sshd-*.pid") if (state_dir / "ssh").exists() else []:
        pid = daemons._read_pid(pid_file)
        if pid_alive(pid, "sshd"):
            netns.kill_all([pid])
        pid_file.unlink(missing_ok=True)


def _down_locked(prefix: str, state_dir: Path) -> dict:
    _stop_services(state_dir)
    found = netns.reclaim(prefix)
    _restore_hosts(prefix)
    _state_file(state_dir).unlink(missing_ok=True)
    _registry(prefix).unlink(missing_ok=True)
    return found


def down(state_dir: Path | None = None, prefix: str = fabric.PREFIX) -> dict:
    """Stop everything ``up()`` started (by pid), reap orphans, remove namespaces, links and the hosts block.

    Returns:
        What was removed: ``netns``, ``links``, ``uts`` and ``pids`` killed inside the namespaces.
    """
    state_dir = Path(state_dir or default_state_dir()).resolve()
    with _lock(prefix):
        return _down_locked(prefix, state_dir)


def leftovers(prefix: str = fabric.PREFIX) -> dict[str, list]:
    """What of a cluster is still on the machine: namespaces, links, UTS mounts, hosts lines, daemons."""
    found: dict[str, list] = dict(netns.ours(prefix))
    found["hosts"] = [ln for ln in HOSTS_FILE.read_text().splitlines()
                      if ln == fabric.HOSTS_BEGIN.format(name=prefix)]
    found["hosts"] += [str(_ssh_config_path(prefix))] if _ssh_config_path(prefix).exists() else []
    found["daemons"] = []
    stem = fabric.node_stem(prefix)
    for pid, cmd in cmdlines().items():
        if (f"/{prefix}-n" in cmd or f"sshd_config-{stem}" in cmd or "slurmd -f" in cmd and f" -N {stem}" in cmd) \
                and pid_alive(pid):
            found["daemons"].append(f"{pid} {cmd[:120]}")
    return found


def ensure(mode: str = "auto", spec: LocalClusterSpec | None = None, state_dir: Path | None = None) -> LocalCluster:
    """The cluster a notebook runs on: ``multi`` (namespaces), ``single`` (one node), or ``auto``.

    ``auto`` takes ``multi`` where namespaces can be made and ``single`` otherwise (saying why);
    ``multi`` raises where it can't.
    """
    if mode not in MODES:
        raise ValueError(f"cluster mode must be one of {MODES}, got {mode!r}")
    why = ""
    if mode in ("auto", "multi"):
        why = netns.available() or ""
        if not why:
            return up(spec, state_dir)
        if mode == "multi":
            raise ClusterError(f"cluster='multi' cannot run here: {why}")
    slurm = daemons.ensure_cluster()
    return LocalCluster("single", Path(state_dir or default_state_dir()), slurm,
                        reason=why or "cluster='single' was asked for", start_s=slurm.start_s,
                        started_here=slurm.started_here)


def _main(argv: list[str]) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m hpcml.cluster.local", description=__doc__.split("\n")[0])
    ap.add_argument("action", choices=("up", "down", "status"))
    ap.add_argument("--nodes", type=int, default=2)
    ap.add_argument("--bandwidth", default="unshaped")
    ap.add_argument("--state-dir", type=Path, default=None)
    a = ap.parse_args(argv)
    if a.action == "up":
        print(up(LocalClusterSpec(nodes=a.nodes, bandwidth=a.bandwidth), a.state_dir).describe())
    elif a.action == "down":
        print("removed:", down(a.state_dir))
    else:
        print(leftovers())
    return 0


if __name__ == "__main__":
    raise SystemExit(_main(sys.argv[1:]))
