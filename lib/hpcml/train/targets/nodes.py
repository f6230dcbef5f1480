"""Starting a module on the local cluster's nodes: ``horovodrun`` over SSH, or ``torchrun`` per node (c10d).

Two ways to run one job across the nodes of a running multi-node :class:`~hpcml.cluster.local.LocalCluster`:

* **Horovod** (:func:`horovod_argv`): one ``horovodrun --gloo -H n1:1,n2:1`` started inside the
  first node; it starts every rank over SSH with the cluster's key, on the nodes' ``eth1``.
* **torchrun** (:func:`torchrun_argv`): one elastic agent per node, each started inside its node;
  the agents meet at a c10d rendezvous hosted by the first node's agent (``--rdzv-endpoint``
  on its address) and start ``--nproc-per-node`` workers each; Gloo talks over ``eth1``.

:func:`start` starts either and returns a :class:`NodesJob` (progress and error lines parsed as
:func:`hpcml.train.targets.local.parse_line` does; ``wait``, ``kill``). A rank that dies fails the
job with an error naming its node and that node's last log lines; a rendezvous that times out
names the node(s) that never joined. :func:`run_spec` runs the training worker for a
:class:`~hpcml.train.spec.TrainSpec` on the nodes and returns its metrics.

Every process a job starts carries ``HPCML_NODES_JOB=<job id>`` in its environment (horovodrun
passes the environment on to the ranks it starts over SSH), so :meth:`NodesJob.kill` finds
and kills, by pid, whatever the job left on any node.

:mod:`hpcml.train.targets.nodes_selftest` is a small data-parallel job for either backend that
checks the plumbing without the training data.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from hpcml import paths
from hpcml.cluster.fabric import NODE_IFACE
from hpcml.train.spec import BACKENDS
from hpcml.train.targets.layout import WORKER_MODULE
from hpcml.train.targets.local import TrainJobError, parse_line

if TYPE_CHECKING:
    from hpcml.cluster.local import LocalCluster
    from hpcml.train.spec import TrainSpec

#: The environment variable that tags every process of a job (its value is the job id).
JOB_ENV = "HPCML_NODES_JOB"
#: The port of the c10d rendezvous store on the first node (torchrun's default).
RDZV_PORT = 29400
#: Seconds a torchrun agent waits for the other nodes (at most 60: the project's collective limit).
RDZV_TIMEOUT_S = 30
#: Seconds horovodrun waits for its ranks to start over SSH.
HOROVOD_START_TIMEOUT_S = 30
TAIL_LINES = 15
#: Elastic torchrun: seconds a rendezvous round stays open for more nodes once the minimum joined.
LAST_CALL_S = 2
#: Elastic torchrun: seconds between an agent's heartbeats in the rendezvous store.
KEEP_ALIVE_S = 1
#: What a torchrun agent logs once it reached the rendezvous store and waits for the others.
JOINING = "Rendezvous'ing worker group"
#: What a Gloo worker prints when its peer went away first (a consequence of that peer's failure, not a cause)
PEER_LOST = re.compile(r"(closed|reset) by peer|remote worker (crash|hang)", re.I)


class NodesJobError(TrainJobError):
    """A job on the nodes failed; ``.node`` is the node it failed on (None when unknown)."""

    def __init__(self, message: str, node: str | None = None, events: list[dict] | None = None,
                 returncode: int | None = None):
        super().__init__(message, events, returncode)
        self.node = node


def check_hosts(cl: LocalCluster, hosts: list[str]) -> list[str]:
    """``hosts`` when it names nodes of ``cl`` (each once, at least one); else one clear error.

    Raises:
        ValueError: the cluster is not the multi-node one, the list is empty, repeats a node or
            names one the cluster does not have.
    """
    if cl.mode != "multi" or cl.plan is None:
        raise ValueError(f"jobs on nodes need the multi-node cluster; this is the {cl.describe()}")
    names = [n.name for n in cl.plan.nodes]
    if not hosts:
        raise ValueError(f"the host list is empty; expected one or more of the cluster's nodes {names}")
    unknown = [h for h in hosts if h not in names]
    if unknown:
        raise ValueError(f"the host list names {', '.join(map(repr, unknown))}, not a node of this cluster; "
                         f"expected some of its nodes {names}")
    dup = sorted({h for h in hosts if hosts.count(h) > 1})
    if dup:
        raise ValueError(f"the host list names {', '.join(dup)} more than once ({hosts}); give each node once "
                         "and the processes per node as slots")
    return list(hosts)


def _python_bin(name: str) -> str:
    p = Path(sys.executable).parent / name
    if not p.exists():
        raise FileNotFoundError(f"{name} not found next to {sys.executable}: install it into this environment")
    return str(p)


def horovod_argv(cl: LocalCluster, hosts: list[str], slots: int, module: str, module_args: list[str],
                 env: dict[str, str] | None = None) -> list[str]:
    """``horovodrun --gloo -H n1:S,n2:S …`` run inside the first node: its ranks start over SSH.

    Args:
        cl: the running multi-node cluster.
        hosts: the nodes, in rank order (rank r runs on ``hosts[r // slots]``).
        slots: processes per node.
        module: the module each rank runs (``python -m module``).
        module_args: its arguments.
        env: not part of the argv (horovodrun passes its own environment on); accepted so both
            launchers have one signature.
    """
    check_hosts(cl, hosts)
    if slots < 1:
        raise ValueError(f"slots must be >= 1 (processes per node), got {slots}")
    # one host is the launcher's own: horovodrun then looks for 127.0.0.1 among the named interfaces
    # ("No interface is found for address 127.0.0.1" with eth1), so only a multi-host job names eth1
    nic = ["--network-interface", NODE_IFACE] if len(hosts) > 1 else []
    argv = [_python_bin("horovodrun"), "--gloo", "-np", str(slots * len(hosts)),
            "-H", ",".join(f"{h}:{slots}" for h in hosts), *nic,
            "--ssh-identity-file", str(cl.key), "--start-timeout", str(HOROVOD_START_TIMEOUT_S),
            sys.executable, "-m", module, *module_args]
    return cl.node_argv(hosts[0], argv, pin=False)


def torchrun_argv(cl: LocalCluster, node: str, hosts: list[str], slots: int, module: str, module_args: list[str],
                  job_id: str, port: int = RDZV_PORT, min_nodes: int | None = None, max_restarts: int = 0,
                  rdzv_timeout_s: int = RDZV_TIMEOUT_S, log_dir: Path | None = None) -> list[str]:
    """The torchrun agent of ``node`` (run inside it): c10d rendezvous at the first node's address.

    Args:
        node: the node this agent runs on (one of ``hosts``).
        hosts: the job's nodes; the first hosts the rendezvous store.
        slots: workers per node (``--nproc-per-node``).
        job_id: the rendezvous id (one per job).
        min_nodes: elastic: ``--nnodes=min_nodes:len(hosts)``; None: exactly ``len(hosts)``.
        max_restarts: times the agents restart the workers after a failure or a membership change.
        rdzv_timeout_s: how long an agent waits for the others (1..60).
        log_dir: torchrun's own log folder (default: a new one under the system's temp folder).
    """
    check_hosts(cl, hosts)
    if node not in hosts:
        raise ValueError(f"node {node!r} is not in the job's hosts {hosts}")
    if not 1 <= rdzv_timeout_s <= 60:
        raise ValueError(f"rdzv_timeout_s must be within 1..60 s, got {rdzv_timeout_s}")
    if min_nodes is not None and not 1 <= min_nodes <= len(hosts):
        raise ValueError(f"min_nodes must be within 1..{len(hosts)} (the hosts), got {min_nodes}")
    nnodes = str(len(hosts)) if min_nodes is None else f"{min_nodes}:{len(hosts)}"
    first = cl.plan.node(hosts[0]).address
    conf = f"join_timeout={rdzv_timeout_s},read_timeout={rdzv_timeout_s},is_host={str(node == hosts[0]).lower()}"
    if min_nodes is not None:
        # elastic: a round closes LAST_CALL_S after min_nodes joined (default 30 s), and a node that stops
        # its heartbeat is dropped after 3 missed beats of KEEP_ALIVE_S (default 5 s)
        conf += f",last_call_timeout={LAST_CALL_S},keep_alive_interval={KEEP_ALIVE_S},keep_alive_max_attempt=3"
    argv = [_python_bin("torchrun"), f"--nnodes={nnodes}", f"--nproc-per-node={slots}",
            "--rdzv-backend=c10d", f"--rdzv-endpoint={first}:{port}", f"--rdzv-id={job_id}",
            f"--rdzv-conf={conf}", f"--max-restarts={max_restarts}", f"--local-addr={cl.plan.node(node).address}",
            "--monitor-interval=0.5"] + ([f"--log-dir={log_dir}"] if log_dir else []) + ["-m", module, *module_args]
    return cl.node_argv(node, argv)


def job_env(job_id: str, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of every process of the job: this one's, the tag, Gloo on ``eth1``, ``extra``."""
    return {**os.environ, "PYTHONUNBUFFERED": "1", JOB_ENV: job_id, "GLOO_SOCKET_IFNAME": NODE_IFACE,
            "LOGLEVEL": "INFO", **(extra or {})}


def free_port(cl: LocalCluster, node: str, first: int = RDZV_PORT, tries: int = 100) -> int:
    """The first TCP port from ``first`` that nothing listens on in ``node`` (two jobs never share a rendezvous)."""
    out = cl.run_on(node, ["ss", "-Hltn"], timeout=10)
    used = {int(m) for m in re.findall(r":(\d+)\s", out)}
    for port in range(first, first + tries):
        if port not in used:
            return port
    raise RuntimeError(f"no free port in {first}..{first + tries - 1} on {node}: {sorted(used)}")


def _environ(pid: int) -> dict[str, str]:
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return {}
    return dict(kv.split("=", 1) for kv in raw.decode(errors="replace").split("\0") if "=" in kv)


def tagged_pids(cl: LocalCluster, node: str, job_id: str) -> dict[int, dict[str, str]]:
    """Processes in ``node`` whose environment carries the job's tag: pid -> environment."""
    from hpcml.cluster import netns

    found = {}
    for pid in netns.pids_in(cl.plan.node(node).netns):
        env = _environ(pid)
        if env.get(JOB_ENV) == job_id:
            found[pid] = env
    return found


def _tail(lines: list[str], n: int = TAIL_LINES) -> str:
    return "\n".join(ln.rstrip() for ln in lines[-n:])


@dataclass
class NodesJob:
    """A job running on the cluster's nodes: one horovodrun, or one torchrun agent per node.

    Attributes:
        procs: node -> the process started there (Horovod: the first node's horovodrun only).
        logs: node -> its log file (Horovod: every rank's output is in the launcher's log).
        events / errors: progress and error events of rank 0 (``HPCML`` / ``HPCML-ERROR`` lines).
    """

    cl: LocalCluster
    backend: str
    hosts: list[str]
    slots: int
    job_id: str
    procs: dict[str, subprocess.Popen]
    logs: dict[str, Path]
    rdzv_timeout_s: int = RDZV_TIMEOUT_S
    skipped: tuple[str, ...] = ()
    min_nodes: int | None = None
    events: list[dict] = field(default_factory=list)
    errors: list[dict] = field(default_factory=list)
    lines: dict[str, list[str]] = field(default_factory=dict)
    exited_at: dict[str, float] = field(default_factory=dict)
    on_progress: Callable[[dict], None] | None = None
    _readers: list[threading.Thread] = field(default_factory=list)

    def _pump(self, node: str) -> None:
        proc, lines = self.procs[node], self.lines.setdefault(node, [])
        with open(self.logs[node], "a", encoding="utf-8") as log:
            for line in proc.stdout:  # type: ignore[union-attr]
                log.write(line)
                log.flush()
                lines.append(line)
                parsed = parse_line(line)
                if parsed is None:
                    continue
                kind, ev = parsed
                ev.setdefault("t", time.time())
                (self.errors if kind == "error" else self.events).append(ev)
                if kind == "progress" and self.on_progress is not None:
                    self.on_progress(ev)
        proc.wait()
        self.exited_at[node] = time.time()

    def running(self) -> bool:
        return any(p.poll() is None for p in self.procs.values())

    def wait_for(self, pred: Callable[[dict], bool], timeout_s: float) -> dict:
        """Block until a progress event satisfies ``pred``; returns it.

        Raises:
            NodesJobError: the job ended first (the message says where and why).
            TimeoutError: no such event within ``timeout_s``.
        """
        deadline, seen = time.monotonic() + timeout_s, 0
        while time.monotonic() < deadline:
            for ev in self.events[seen:]:
                if pred(ev):
                    return ev
            seen = len(self.events)
            if not self.running() and seen == len(self.events):
                self._join()
                raise self.failure() or NodesJobError(f"the {self.backend} job ended before the awaited event",
                                                      events=self.errors)
            time.sleep(0.05)
        raise TimeoutError(f"no matching event from the {self.backend} job within {timeout_s:g} s; "
                           f"logs: {', '.join(map(str, self.logs.values()))}")

    def rank_pids(self, node: str) -> dict[int, int]:
        """The job's ranks running in ``node``: rank -> pid (found by the job's tag)."""
        ranks = {}
        for pid, env in tagged_pids(self.cl, node, self.job_id).items():
            rank = env.get("HOROVOD_RANK") if self.backend == "horovod" else env.get("RANK")
            if rank is not None and ("TORCHELASTIC_RUN_ID" in env or self.backend == "horovod"):
                ranks[int(rank)] = pid
        return ranks

    def kill_rank(self, node: str, sig: int = signal.SIGKILL) -> int:
        """Kill one rank in ``node`` (fault injection); returns its pid."""
        ranks = self.rank_pids(node)
        if not ranks:
            raise NodesJobError(f"no rank of job {self.job_id} is running in {node}", node)
        pid = ranks[min(ranks)]
        os.kill(pid, sig)
        return pid

    def kill(self) -> None:
        """Kill everything the job started on every node: its process groups, then any tagged process."""
        for p in self.procs.values():
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        for node in self.hosts:
            for pid in tagged_pids(self.cl, node, self.job_id):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        for p in self.procs.values():
            p.wait()
        self._join()

    def _join(self) -> None:
        for t in self._readers:
            t.join(timeout=5)

    def wait(self, timeout_s: float) -> None:
        """Wait for every process of the job; raises what went wrong, naming the node.

        Raises:
            TimeoutError: the job ran past ``timeout_s`` (it is killed).
            NodesJobError: a rank, agent or the rendezvous failed (see :meth:`failure`).
        """
        deadline = time.monotonic() + timeout_s
        while self.running():
            if time.monotonic() > deadline:
                self.kill()
                raise TimeoutError(f"the {self.backend} job {self.job_id} on {', '.join(self.hosts)} exceeded "
                                   f"{timeout_s:g} s and was killed; logs: {', '.join(map(str, self.logs.values()))}")
            if self.backend == "ddp" and self.min_nodes is None and \
                    any(self.procs[n].poll() not in (None, 0) for n in self.procs):
                # one agent failed: the others would wait for their collectives or rendezvous; end them now
                time.sleep(1.0)
                self.kill()
            time.sleep(0.1)
        self._join()
        err = self.failure()
        if err is not None:
            raise err

    # ---- what went wrong ----------------------------------------------------------------------
    def failure(self) -> NodesJobError | None:
        """The job's failure as one error naming the node (None when every process exited 0)."""
        rcs = {n: p.returncode for n, p in self.procs.items()}
        if all(rc == 0 for rc in rcs.values()) and not self.errors:
            return None
        if self.min_nodes is not None and sum(rc == 0 for rc in rcs.values()) >= self.min_nodes and not self.errors:
            return None  # elastic: the job finished on the nodes that were left
        if self.backend == "horovod":
            return self._horovod_failure(rcs[self.hosts[0]])
        return self._torchrun_failure(rcs)

    def _horovod_failure(self, rc: int | None) -> NodesJobError:
        lines = self.lines.get(self.hosts[0], [])
        text = "".join(lines)
        m = re.search(r"Process name: (\d+)\s+Exit code: (-?\d+)", text)
        worker = "; ".join(e.get("message", str(e)) for e in self.errors[:1])
        if m:
            rank = int(m.group(1))
            node = self.hosts[rank // self.slots]
            mine = [ln for ln in lines if any(ln.startswith(f"[{r}]<") for r in self._ranks_of(node))]
            said = (f"last lines of {node}:\n{_tail(mine)}" if mine else
                    f"{node} printed nothing before it ended; last lines of horovodrun on {self.hosts[0]}:\n"
                    + _tail([ln for ln in lines if not ln.startswith("[")] or lines))
            return NodesJobError(f"rank {rank} on {node} exited with code {m.group(2)}"
                                 + (f" ({worker})" if worker else "") + f"; {said}", node, self.errors, rc)
        return NodesJobError(f"horovodrun on {self.hosts[0]} exited with {rc}" + (f" ({worker})" if worker else "")
                             + f"; last lines:\n{_tail(lines)}", self.hosts[0], self.errors, rc)

    def _ranks_of(self, node: str) -> range:
        i = self.hosts.index(node)
        return range(i * self.slots, (i + 1) * self.slots)

    def _torchrun_failure(self, rcs: dict[str, int | None]) -> NodesJobError:
        texts = {n: "".join(self.lines.get(n, [])) for n in self.procs}
        if any("RendezvousTimeoutError" in t for t in texts.values()) or self.skipped:
            joined = [n for n, t in texts.items() if JOINING in t]
            never = [n for n in self.hosts if n not in joined]
            where = self.hosts[0]
            return NodesJobError(
                f"the torchrun rendezvous {self.job_id} at {where} did not complete within {self.rdzv_timeout_s} s: "
                f"{', '.join(never)} never joined (joined: {', '.join(joined) or 'none'})"
                + "".join(f"; {n}: " + ("its agent never started" if n in self.skipped else
                                         "last lines:\n" + _tail(self.lines.get(n, []), 6)) for n in never),
                never[0] if never else None, self.errors, rcs.get(where))
        # the node whose worker died by a signal (the cause); else the first agent that failed. A worker that
        # saw its peer vanish (Gloo's "closed by peer") can abort by a signal too: it is named only after the
        # others, and agents that ended first come first
        blame_order = {n: (bool(PEER_LOST.search(t)), self.exited_at.get(n, float("inf"))) for n, t in texts.items()}
        signalled = sorted((n for n, t in texts.items() if re.search(r"exitcode\s*:\s*-\d+|Signal \d+ \(SIG", t)),
                           key=blame_order.get)
        failed = sorted((n for n, rc in rcs.items() if rc not in (0, None) and rc != -signal.SIGKILL), key=blame_order.get)
        named = [e["host"] for e in self.errors if e.get("host") in self.procs]
        node = (named or signalled or failed or [self.hosts[0]])[0]
        worker = "; ".join(e.get("message", str(e)) for e in self.errors[:1])
        return NodesJobError(f"a rank on {node} failed (torchrun agent exit {rcs.get(node)})"
                             + (f" ({worker})" if worker else "") + f"; last lines of {node}:\n"
                             + _tail(self.lines.get(node, [])), node, self.errors, rcs.get(node))


def start(cl: LocalCluster, backend: str, hosts: list[str], slots: int, module: str, module_args: list[str],
          env: dict[str, str] | None = None, log_dir: Path | None = None, min_nodes: int | None = None,
          max_restarts: int = 0, rdzv_timeout_s: int = RDZV_TIMEOUT_S, port: int | None = None,
          on_progress: Callable[[dict], None] | None = None, skip_agents: tuple[str, ...] = ()) -> NodesJob:
    """Start ``python -m module module_args`` on ``slots`` processes per node of ``hosts``.

    Args:
        cl: the running multi-node cluster.
        backend: ``horovod`` (horovodrun over SSH) or ``ddp`` (a torchrun agent per node).
        hosts: the nodes; the first runs horovodrun / hosts the rendezvous.
        slots: processes per node.
        env: extra environment of every process.
        log_dir: where the logs go (``<node>.log``); default ``build/nodes/<job id>``.
        min_nodes / max_restarts / rdzv_timeout_s: torchrun's elastic range, restarts and rendezvous
            wait (see :func:`torchrun_argv`).
        port: the rendezvous port on the first node (default: the first free one from ``RDZV_PORT``).
        on_progress: called with each progress event of rank 0.
        skip_agents: fault injection: nodes counted in the job whose agent is never started.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    check_hosts(cl, hosts)
    job_id = f"hpcml-{uuid.uuid4().hex[:10]}"
    log_dir = paths.ensure(Path(log_dir or paths.build_dir() / "nodes" / job_id))
    full_env = job_env(job_id, env)
    if backend == "horovod":
        argvs = {hosts[0]: horovod_argv(cl, hosts, slots, module, module_args)}
    else:
        port = port or free_port(cl, hosts[0])
        argvs = {n: torchrun_argv(cl, n, hosts, slots, module, module_args, job_id, port, min_nodes, max_restarts,
                                  rdzv_timeout_s, log_dir / f"torchelastic-{n}") for n in hosts if n not in skip_agents}
    job = NodesJob(cl, backend, list(hosts), slots, job_id, {}, {}, rdzv_timeout_s, tuple(skip_agents),
                   min_nodes if backend == "ddp" else None, on_progress=on_progress)
    try:
        for node, argv in argvs.items():
            job.logs[node] = log_dir / f"{node}.log"
            job.logs[node].write_text(" ".join(argv) + "\n", encoding="utf-8")
            job.procs[node] = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                               bufsize=1, env=full_env, cwd=str(log_dir), start_new_session=True)
            t = threading.Thread(target=job._pump, args=(node,), daemon=True)
            t.start()
            job._readers.append(t)
    except BaseException:
        job.kill()
        raise
    return job


def run_spec(cl: LocalCluster, spec: TrainSpec, hosts: list[str] | None = None, timeout_s: float = 900,
             on_progress: Callable[[dict], None] | None = None, env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run the training worker for ``spec`` on the nodes (``spec.world_size`` ranks, spread evenly).

    An elastic DDP spec runs ``torchrun --nnodes=MIN:N --max-restarts=3`` with MIN the nodes that
    hold ``spec.min_workers``. An elastic Horovod spec needs host discovery: run it with
    :func:`hpcml.cluster.elastic.horovod_elastic_run` instead. The out_dir's checkpoints, if any,
    are resumed from.

    Args:
        hosts: the nodes (default: as many of the cluster's as divide ``world_size``, up to all).

    Returns:
        The run's final metrics (``metrics.json`` of rank 0).

    Raises:
        ValueError: the hosts don't divide the world size, or a bad host list.
        NodesJobError / TimeoutError: as :meth:`NodesJob.wait`.
    """
    from hpcml.train import shards

    backend = spec.backend
    if hosts is None:
        names = [n.name for n in cl.plan.nodes] if cl.plan else []
        hosts = names[:max([k for k in range(1, len(names) + 1) if spec.world_size % k == 0] or [0])]
    check_hosts(cl, hosts)
    if spec.world_size % len(hosts):
        raise ValueError(f"TrainSpec.world_size={spec.world_size} does not divide over {len(hosts)} nodes {hosts}: "
                         "expected a multiple of the number of hosts (the same slots on every node)")
    if spec.elastic and backend == "horovod":
        raise ValueError("an elastic Horovod spec needs a host-discovery script: run it with "
                         "hpcml.cluster.elastic.horovod_elastic_run, or set TrainSpec.backend='ddp' (torchrun elastic)")
    slots = spec.world_size // len(hosts)
    elastic = dict(min_nodes=-(-spec.min_workers // slots), max_restarts=3) if spec.elastic else {}
    shards.check_world_size(spec.resolved_dataset_dir(), spec.world_size, elastic=spec.elastic)
    out = paths.ensure(spec.resolved_out_dir())
    spec_path = out / "spec.json"
    spec.to_json(spec_path)
    job = start(cl, backend, hosts, slots, WORKER_MODULE, ["--spec", str(spec_path)],
                env=env, log_dir=out / "logs", on_progress=on_progress, **elastic)
    try:
        job.wait(timeout_s)
    finally:
        job.kill()
    metrics = out / "metrics.json"
    if not metrics.exists():
        raise NodesJobError(f"the {backend} job on {', '.join(hosts)} ended without {metrics}", hosts[0], job.errors)
    return json.loads(metrics.read_text(encoding="utf-8"))
