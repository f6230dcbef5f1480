"""Slurm configuration text and batch scripts, as pure functions of their inputs.

:func:`parse_node_config` reads what ``slurmd -C`` reports about a node into a
:class:`NodeSpec`; :func:`render_slurm_conf` turns it into ``slurm.conf`` text (the local
one-node cluster of :mod:`hpcml.cluster.slurm.daemons`, or the multi-node example that
:mod:`hpcml.k8s.cluster` renders under ``manifests/slurm``); :func:`batch_script` writes an
``sbatch`` script. Nothing here starts a process or touches the disk.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from hpcml.specbase import fail

#: SchedulerParameters of the local cluster: start batch jobs at once instead of batching
#: them for up to 3 s (Slurm's default ``batch_sched_delay``), which suits a high-rate HPC
#: site but only adds latency to a one-node cluster.
FAST_SCHEDULING = "batch_sched_delay=0"
#: The local multi-node cluster's credential lifetime, which also holds a requeued job back.
REQUEUE_CRED_EXPIRE_S = 10


@dataclass(frozen=True)
class LocalNode:
    """A node of the local multi-node cluster as slurm.conf declares it."""

    name: str
    address: str
    cpus: int
    mem_mb: int


@dataclass(frozen=True)
class NodeSpec:
    """What ``slurmd -C`` reports for this node."""

    name: str
    cpus: int
    boards: int
    sockets_per_board: int
    cores_per_socket: int
    threads_per_core: int
    real_memory_mb: int

    def __post_init__(self) -> None:
        for f in ("cpus", "boards", "sockets_per_board", "cores_per_socket", "threads_per_core", "real_memory_mb"):
            if getattr(self, f) < 1:
                raise fail(self, f, "an integer >= 1", getattr(self, f))


def parse_node_config(text: str) -> NodeSpec:
    """Parse the first line of ``slurmd -C`` (``NodeName=vm CPUs=2 … RealMemory=24105``)."""
    kv = dict(tok.split("=", 1) for tok in text.split() if "=" in tok)
    try:
        return NodeSpec(kv["NodeName"], int(kv["CPUs"]), int(kv.get("Boards", 1)),
                        int(kv["SocketsPerBoard"]), int(kv["CoresPerSocket"]), int(kv["ThreadsPerCore"]),
                        int(kv["RealMemory"]))
    except (KeyError, ValueError) as exc:
        raise ValueError(f"cannot read the node from `slurmd -C` output (missing/bad {exc}): {text[:200]!r}") from None


def render_slurm_conf(node: NodeSpec, run_dir: Path | str, state_dir: Path | str, ctld_port: int = 6817,
                      slurmd_port: int = 6818, partition: str = "batch", cluster_name: str = "hpcml",
                      slurm_user: str = "root", mem_fraction: float = 0.9,
                      scheduler_parameters: str = FAST_SCHEDULING, gpus: int = 0, node_count: int = 1,
                      controller: str | None = None, nodes: Sequence[LocalNode] = (),
                      controller_address: str | None = None, slurmd_timeout_s: int = 60) -> str:
    """``slurm.conf`` text for a one-node cluster: cons_tres, one default partition, loopback only.

    Args:
        node: the node as ``slurmd -C`` describes it.
        run_dir: pid files, munge socket, slurmd spool (short path: Unix sockets live there).
        state_dir: slurmctld state, logs, job completion log.
        ctld_port, slurmd_port: TCP ports on 127.0.0.1.
        partition: name of the default partition.
        mem_fraction: share of RealMemory handed to jobs (the rest is the OS's).
        scheduler_parameters: ``SchedulerParameters`` (Slurm's default delays batch jobs
            by up to ``batch_sched_delay=3`` s; empty string = Slurm defaults).
        gpus: GPUs per node (adds ``GresTypes=gpu`` and ``Gres=gpu:N``; needs a gres.conf).
        node_count, controller: for a multi-node site (the example in manifests/slurm): nodes
            ``<name>[1-N]`` on their own addresses, the controller host by name, cgroup
            process tracking and PMIx. Without ``controller`` everything is on 127.0.0.1.
        nodes, controller_address: the local multi-node cluster (:mod:`hpcml.cluster.local`):
            each node on its own namespace address, ``slurmctld`` on this host (``node``) at
            ``controller_address`` (the bridge), one pid file, spool and log per node (``%n``).
        slurmd_timeout_s: ``SlurmdTimeout``: how long an unresponsive node stays up before it
            is marked down (Slurm's default 300 s; the local multi-node cluster uses 10 s).
    """
    run, st = Path(run_dir), Path(state_dir)
    mem = max(1, int(node.real_memory_mb * mem_fraction))
    multi = bool(nodes)  # the local multi-node cluster: nodes in network namespaces
    if multi and not controller_address:
        raise ValueError("a multi-node local cluster needs controller_address (the bridge address slurmctld binds)")
    # plain process tracking on this machine (one node, or namespace nodes pinned with taskset);
    # a real site (the manifests/slurm example) confines jobs with cgroups
    local = controller is None
    if multi:
        header = (f"# slurm.conf generated by hpcml.cluster.local: {len(nodes)} node(s) in network namespaces, "
                  f"slurmctld on {node.name} at {controller_address}")
        ctld_host = f"{node.name}({controller_address})"
        # cred_expire: a requeued job is held for cred_expire + 1 s (default 120 s) so that the old
        # allocation's credentials expire first; 10 s still leaves a step launch ample time here
        auth = f",cred_expire={REQUEUE_CRED_EXPIRE_S}"
        comm = ["CommunicationParameters=NoCtldInAddrAny"]  # slurmctld binds the bridge address only
        per_node = "-%n"  # one pid file, spool and log per node
        # bf_interval: a requeued job that becomes eligible is started by the next backfill pass
        # (every 30 s by default), not by an event
        sched = ",".join(p for p in (scheduler_parameters, "bf_interval=5") if p)
        names = ",".join(n.name for n in nodes)
        node_lines = [f"NodeName={n.name} NodeAddr={n.address} NodeHostname={n.name} CPUs={n.cpus} Boards=1 "
                      f"SocketsPerBoard=1 CoresPerSocket={n.cpus} ThreadsPerCore=1 RealMemory={n.mem_mb} State=UNKNOWN"
                      for n in nodes]
    else:
        header = f"# slurm.conf generated by hpcml.cluster.slurm from `slurmd -C` on {node.name}"
        ctld_host = f"{node.name}(127.0.0.1)" if local else controller
        auth = ""
        comm = ["CommunicationParameters=NoCtldInAddrAny,NoInAddrAny"] if local else []
        per_node = ""
        sched = scheduler_parameters
        names = node.name if node_count == 1 else f"{node.name}[1-{node_count}]"
        node_lines = [f"NodeName={names}" + (" NodeAddr=127.0.0.1" if local else "") + f" CPUs={node.cpus} "
                      f"Boards={node.boards} SocketsPerBoard={node.sockets_per_board} "
                      f"CoresPerSocket={node.cores_per_socket} ThreadsPerCore={node.threads_per_core} RealMemory={mem}"
                      + (f" Gres=gpu:{gpus}" if gpus else "") + " State=UNKNOWN"]
    return "\n".join([
        header,
        f"ClusterName={cluster_name}",
        f"SlurmctldHost={ctld_host}",
        f"SlurmctldPort={ctld_port}",
        f"SlurmdPort={slurmd_port}",
        f"SlurmUser={slurm_user}",
        "SlurmdUser=root",
        "AuthType=auth/munge",
        "CredType=cred/munge",
        f"AuthInfo=socket={run / 'munge.socket'}{auth}",
        *comm,
        f"StateSaveLocation={st / 'ctld'}",
        f"SlurmdSpoolDir={run / f'spool{per_node}'}",
        f"SlurmctldPidFile={run / 'slurmctld.pid'}",
        f"SlurmdPidFile={run / f'slurmd{per_node}.pid'}",
        f"SlurmctldLogFile={st / 'log' / 'slurmctld.log'}",
        f"SlurmdLogFile={st / 'log' / f'slurmd{per_node}.log'}",
        f"PlugStackConfig={st / 'plugstack.conf'}",
        "MailProg=/bin/true",
        "ProctrackType=proctrack/linuxproc" if local else "ProctrackType=proctrack/cgroup",
        # task/none on the namespace nodes: each slurmd runs pinned to its node's cores and its steps
        # inherit that set; task/affinity would map a one-CPU node's CPU 0 onto the machine's core 0
        "TaskPlugin=task/none" if local else "TaskPlugin=task/cgroup,task/affinity",
        "JobAcctGatherType=jobacct_gather/none" if local else "JobAcctGatherType=jobacct_gather/cgroup",
        "AccountingStorageType=accounting_storage/none",
        "JobCompType=jobcomp/filetxt",
        f"JobCompLoc={st / 'log' / 'jobcomp.log'}",
        "MpiDefault=none" if local else "MpiDefault=pmix",
        "SchedulerType=sched/backfill",
        *([f"SchedulerParameters={sched}"] if sched else []),
        "SelectType=select/cons_tres",
        "SelectTypeParameters=CR_Core_Memory",
        *([] if multi else [f"DefMemPerCPU={mem // node.cpus}"]),
        "ReturnToService=2",  # a node that was down* comes back to service when its slurmd registers
        "MinJobAge=3600",
        "KillWait=5",
        f"SlurmdTimeout={slurmd_timeout_s}",
        # one RPC to a cut node gives up after this long (default 10 s), so a failure is seen sooner
        *([f"MessageTimeout={max(2, slurmd_timeout_s // 2)}"] if multi else []),
        "InactiveLimit=0",
        *(["GresTypes=gpu"] if gpus else []),
        *node_lines,
        f"PartitionName={partition} Nodes={names} Default=YES MaxTime=INFINITE State=UP",
        "",
    ])


def batch_script(body: str, name: str, ntasks: int = 1, cpus_per_task: int = 1, time_limit_min: int = 10,
                 stdout: Path | str | None = None, stderr: Path | str | None = None,
                 workdir: Path | str | None = None, array: str | None = None, mem_mb: int | None = None,
                 partition: str | None = None, nodes: int | None = None, gpus_per_node: int = 0,
                 stamp_dir: Path | str | None = None, ntasks_per_node: int | None = None,
                 exclusive: bool = False) -> str:
    """An ``sbatch`` script: ``#SBATCH`` directives, optional start/end stamps, then ``body``.

    ``ntasks_per_node`` also sets ``$SLURM_NTASKS_PER_NODE`` in the job (Slurm sets it only when
    the option is given), which a multi-node host list needs; ``exclusive`` keeps other jobs
    off the allocated nodes.

    Raises:
        ValueError: naming the argument when a count or the time limit is not positive, or
            when ``ntasks_per_node`` does not fit ``ntasks`` over ``nodes``.
    """
    for field_name, v in (("ntasks", ntasks), ("cpus_per_task", cpus_per_task), ("time_limit_min", time_limit_min)):
        if not isinstance(v, int) or v < 1:
            raise ValueError(f"{field_name} must be a positive integer, got {v!r}")
    if ntasks_per_node is not None and (not isinstance(ntasks_per_node, int) or ntasks_per_node < 1
                                        or ntasks_per_node * (nodes or 1) != ntasks):
        raise ValueError(f"ntasks_per_node must be a positive integer with ntasks_per_node x nodes == ntasks "
                         f"({ntasks}), got {ntasks_per_node!r} x {nodes or 1}")
    if array is not None and not re.fullmatch(r"[0-9,\-:%]+", array):
        raise ValueError(f"array must look like '0-3', '1,5,7' or '0-15%4', got {array!r}")
    opts = [("job-name", name), ("partition", partition), ("nodes", nodes), ("ntasks", ntasks),
            ("ntasks-per-node", ntasks_per_node), ("cpus-per-task", cpus_per_task), ("time", time_limit_min), ("mem", mem_mb),
            ("gres", f"gpu:{gpus_per_node}" if gpus_per_node else None), ("array", array),
            ("output", stdout), ("error", stderr), ("chdir", workdir)]
    lines = ["#!/bin/bash"] + [f"#SBATCH --{k}={v}" for k, v in opts if v is not None]
    if exclusive:
        lines.append("#SBATCH --exclusive")
    if stamp_dir is not None:
        lines += [
            "# hpcml: stamp start/end times (submit-to-start latency, run time)",
            '_hpcml_t=${SLURM_ARRAY_JOB_ID:+${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}}',
            f'_hpcml_s="{stamp_dir}/${{_hpcml_t:-$SLURM_JOB_ID}}"',
            'date +%s.%N > "$_hpcml_s.start"',
            "trap 'date +%s.%N > \"$_hpcml_s.end\"' EXIT",
        ]
    return "\n".join(lines + ["", body.rstrip("\n"), ""])
