"""The allreduce micro-benchmark across the cluster's nodes: Horovod, torch.distributed, Open MPI.

One rank per node runs :mod:`hpcml.train.allreduce_worker`, started by each tool's own launcher
(Horovod and torchrun through :func:`hpcml.train.targets.nodes.start`, as the training jobs are):

===========  ===================================================================================
``horovod``  ``horovodrun --gloo -H n1:1,n2:1 --network-interface eth1`` from the first node,
             over the cluster's SSH key (this Horovod is built without MPI: Gloo does the data)
``torch``    one ``torchrun`` agent per node (backend ``ddp``), c10d rendezvous at the first node's
             address, ``GLOO_SOCKET_IFNAME=eth1``: ``torch.distributed.all_reduce`` over Gloo
``mpi``      Debian's Open MPI: ``mpirun -H n1:1,n2:1`` from the first node, ``plm_rsh_agent`` =
             ssh with the cluster's key, the TCP BTL on ``eth1`` only; mpi4py's ``Allreduce``
===========  ===================================================================================

:func:`run` sweeps link profiles (``cl.shape``; the link is restored afterwards, also on
error) and returns a :class:`pandas.DataFrame`, one row per profile x tool x size, with the
bandwidths of :mod:`hpcml.train.allreduce_stats`; :func:`hpcml.train.allreduce_stats.metrics` turns
it into :class:`hpcml.report.Metric` s; :func:`bench` is the notebook's one call and :func:`plot`
its figure. Without a cluster (``cl=None``) the ranks share this machine over loopback,
which is for development and tests only (no link to speak of).

**What NCCL would change (not measured: it needs GPUs).** NCCL is NVIDIA's collective
library for GPU buffers: it allreduces device memory without staging through the host,
picks ring or tree (and, on NVSwitch systems, NVLS) per message size, runs its
reductions as CUDA kernels, and drives the network directly: InfiniBand verbs or, on AWS,
EFA through the aws-ofi-nccl plugin (libfabric), with GPUDirect RDMA so the NIC reads the
GPU's memory. Gloo (what Horovod and ``torch.distributed`` use here) and Open MPI's TCP
BTL reduce on the CPU and move bytes through the kernel's TCP stack, one core per rank
here; their bus bandwidth is bounded by the link *and* by that core's copy-and-sum rate.
``nccl-tests``' ``all_reduce_perf`` reports the same algbw/busbw columns as this module,
so a GPU run of it is directly comparable: on 8xH100 nodes over EFA the busbw of large
messages is reported in the hundreds of GB/s, far beyond what a CPU core can sum.

Command line (the full run; the lead's quiet-machine numbers)::

    python -m hpcml.train.allreduce --profiles unshaped,1gbit --sizes 4KiB..128MiB --out build/allreduce

(``--cluster NAME`` runs on a cluster of another name; one the command brought up, it takes down.)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

from hpcml import paths
from hpcml.proc import cmdlines, tail
from hpcml.train import allreduce_stats as st
from hpcml.train.allreduce_worker import TOOLS

if TYPE_CHECKING:
    import pandas as pd

    from hpcml.cluster.local import LocalCluster
    from hpcml.report import Metric

WORKER_MODULE = "hpcml.train.allreduce_worker"
#: Seconds any rendezvous or collective waits before it fails (the issue's limit: 60).
COLLECTIVE_TIMEOUT_S = 60
#: The tools that start across the nodes through :mod:`hpcml.train.targets.nodes`, with its backend name.
NODES_BACKEND = {"horovod": "horovod", "torch": "ddp"}


class AllreduceError(RuntimeError):
    """A tool's run failed or timed out: the message names the tool, the node and the log's tail."""


def check_tools(tools: Iterable[str]) -> list[str]:
    """``tools`` as a list, each one of :data:`TOOLS` (a ValueError names the unknown one)."""
    tools = [tools] if isinstance(tools, str) else list(tools)
    bad = [t for t in tools if t not in TOOLS]
    if bad or not tools:
        raise ValueError(f"allreduce tools: expected some of {list(TOOLS)}, got {tools!r}")
    return tools


def _bin(name: str) -> str:
    p = Path(sys.executable).parent / name
    if p.exists():
        return str(p)
    found = shutil.which(name)
    if not found:
        raise AllreduceError(f"{name} not found next to {sys.executable} or on PATH (ci/setup installs it)")
    return found


def _mpi_common(iface: str) -> list[str]:
    return [_bin("mpirun"), "--allow-run-as-root", "--bind-to", "none", "--mca", "btl", "self,tcp",
            "--mca", "btl_tcp_if_include", iface, "--mca", "oob_tcp_if_include", iface,
            "--timeout", str(COLLECTIVE_TIMEOUT_S * 3), "-x", "OMP_NUM_THREADS=1", "-x", "PYTHONUNBUFFERED=1"]


def launches(tool: str, worker: list[str], cl: LocalCluster | None = None, ranks: int = 2,
             mpi_mca: dict[str, str] | None = None) -> list[tuple[str, list[str]]]:
    """``(node, argv)`` of the launcher the head starts for ``tool`` on loopback, or for ``mpi`` across the nodes.

    Across the nodes, Horovod and torchrun start through :func:`hpcml.train.targets.nodes.start`
    (the training jobs' own launcher); ``mpirun`` starts here.

    Args:
        tool: one of :data:`TOOLS`.
        worker: ``python -m hpcml.train.allreduce_worker ...`` (the rank's command).
        cl: the multi-node cluster (one rank per node), or ``None``: ``ranks`` ranks on loopback.
        ranks: the rank count on loopback (ignored with a cluster).
        mpi_mca: extra Open MPI parameters (``{"btl_tcp_links": "2"}``) on top of Debian's defaults.
    """
    extra = [a for k, v in (mpi_mca or {}).items() for a in ("--mca", str(k), str(v))]
    py_m = [sys.executable, "-m", WORKER_MODULE] + worker
    if cl is None:
        if tool == "horovod":
            return [("localhost", [_bin("horovodrun"), "--gloo", "-np", str(ranks), "-H", f"localhost:{ranks}",
                                   "--start-timeout", "30", *py_m])]
        if tool == "torch":
            return [("localhost", [_bin("torchrun"), "--standalone", "--nnodes", "1", "--nproc-per-node", str(ranks),
                                   "-m", WORKER_MODULE, *worker])]
        return [("localhost", _mpi_common("lo") + extra + ["-np", str(ranks), *py_m])]
    if cl.mode != "multi":
        raise AllreduceError(f"the allreduce benchmark across nodes needs the multi-node cluster, got {cl.describe()}")
    if tool != "mpi":
        raise ValueError(f"across the nodes, {tool} starts through hpcml.train.targets.nodes (see run_tool), not here")
    nodes = cl.plan.nodes
    first = nodes[0]
    hosts = ",".join(f"{n.name}:1" for n in nodes)
    rsh = " ".join(["ssh", *_ssh_opts(cl)])
    argv = _mpi_common("eth1") + extra + ["--mca", "plm_rsh_agent", rsh, "-np", str(len(nodes)), "-H", hosts, *py_m]
    return [(first.name, cl.node_argv(first.name, argv, pin=False))]


def _ssh_opts(cl: LocalCluster) -> list[str]:
    from hpcml.cluster import fabric

    return fabric.ssh_options(str(cl.key), str(cl.known_hosts))


def _reap(marker: str) -> None:
    """Kill, by pid, whatever still runs with ``marker`` (the run's unique folder) in its command line."""
    for pid in cmdlines(marker):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def run_tool(tool: str, sizes: list[int], out: Path, cl: LocalCluster | None = None, warmup: int = 2,
             reps: int = 10, timeout_s: float = 600, ranks: int = 2,
             mpi_mca: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """Run one tool's ranks over ``sizes`` and return every rank's record (``rank-<r>.json``).

    Raises:
        AllreduceError: a launcher exited non-zero or ran past ``timeout_s`` (everything it
            started is killed), or a rank wrote no record; names the node and the log's tail.
    """
    if reps < 1 or warmup < 0:
        raise ValueError(f"allreduce: expected reps >= 1 and warmup >= 0, got reps={reps}, warmup={warmup}")
    if out.exists():
        shutil.rmtree(out)
    paths.ensure(out)
    worker = ["--tool", tool, "--sizes", ",".join(map(str, sizes)), "--warmup", str(warmup), "--reps", str(reps),
              "--timeout", str(COLLECTIVE_TIMEOUT_S), "--out", str(out.resolve())]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo" if cl is None else "eth1",
           "HOROVOD_GLOO_TIMEOUT_SECONDS": str(COLLECTIVE_TIMEOUT_S)}
    if cl is not None and tool in NODES_BACKEND:
        _run_on_nodes(cl, tool, worker, out, env, timeout_s)
        return _records(tool, out, len(cl.plan.nodes), out / "nodes")
    procs = []
    try:
        for i, (node, argv) in enumerate(launches(tool, worker, cl, ranks, mpi_mca)):
            log = out / f"launch-{i}-{node}.log"
            log.write_text(" ".join(argv) + "\n")
            with open(log, "a", encoding="utf-8") as fh:
                procs.append((node, log, subprocess.Popen(argv, stdout=fh, stderr=subprocess.STDOUT, env=env,
                                                          cwd=str(out), start_new_session=True)))
        deadline = time.monotonic() + timeout_s
        while any(p.poll() is None for _, _, p in procs):
            failed = [(n, lg, p) for n, lg, p in procs if p.poll() not in (None, 0)]
            if failed or time.monotonic() > deadline:
                n, lg, p = failed[0] if failed else next((x for x in procs if x[2].poll() is None))
                why = f"exited {p.returncode}" if failed else f"ran past {timeout_s:.0f} s"
                raise AllreduceError(f"{tool} allreduce: the launcher on {n} {why}; {lg}:\n{tail(lg, 15)}")
            time.sleep(0.1)
        bad = [(n, lg, p) for n, lg, p in procs if p.returncode != 0]
        if bad:
            n, lg, p = bad[0]
            raise AllreduceError(f"{tool} allreduce: the launcher on {n} exited {p.returncode}; {lg}:\n{tail(lg, 15)}")
    finally:
        for _, _, p in procs:
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                p.wait()
        _reap(str(out.resolve()))
    return _records(tool, out, len(cl.plan.nodes) if cl is not None else ranks, procs[0][1])


def _run_on_nodes(cl: LocalCluster, tool: str, worker: list[str], out: Path, env: dict[str, str],
                  timeout_s: float) -> None:
    """Horovod or torchrun across the nodes, one rank each, through the training jobs' launcher."""
    from hpcml.train.targets import nodes

    hosts = [n.name for n in cl.plan.nodes]
    job = nodes.start(cl, NODES_BACKEND[tool], hosts, 1, WORKER_MODULE, worker, env=env, log_dir=out / "nodes")
    try:
        job.wait(timeout_s)
    except (TimeoutError, nodes.NodesJobError) as e:
        raise AllreduceError(f"{tool} allreduce: {e}") from e
    finally:
        job.kill()
        _reap(str(out.resolve()))


def _records(tool: str, out: Path, want: int, log: Path) -> list[dict[str, Any]]:
    recs = [json.loads(f.read_text()) for f in sorted(out.glob("rank-*.json"))]
    if len(recs) != want:
        raise AllreduceError(f"{tool} allreduce: {len(recs)} of {want} ranks wrote a record in {out}; "
                             f"logs: {log}")
    return recs


def rows(recs: list[dict[str, Any]], profile: str, rate_bps: float | None) -> list[dict[str, Any]]:
    """The results rows of one tool at one profile, from its ranks' records."""
    out = []
    for size in sorted(recs[0]["times"], key=int):
        times = st.collective_times([r["times"][size] for r in recs])
        row = st.summarise(recs[0]["tool"], profile, rate_bps, len(recs), int(size), times)
        row["hosts"] = ",".join(r["host"] for r in sorted(recs, key=lambda r: r["rank"]))
        out.append(row)
    return out


def run(cl: LocalCluster | None, profiles: Iterable[str] = ("unshaped",), sizes: str | Iterable[str | int] = st.DEFAULT_SIZES,
        tools: Iterable[str] = TOOLS, warmup: int = 2, reps: int = 10, out_dir: Path | None = None,
        timeout_s: float = 600, ranks: int = 2, mpi_mca: dict[str, str] | None = None) -> pd.DataFrame:
    """Every tool at every link profile over ``sizes``; the cluster's link is restored afterwards.

    Args:
        cl: the multi-node cluster, or ``None`` (loopback, ``ranks`` ranks; profiles must be ``unshaped``).
        profiles: ``"unshaped"`` or tc rates (``"1gbit"``, ``"100mbit"``).
        sizes: message sizes (see :func:`hpcml.train.allreduce_stats.parse_sizes`).
        tools: some of :data:`TOOLS`.
        warmup / reps: untimed and timed allreduces per size.
        out_dir: where the ranks' records and launch logs go (default ``build/allreduce``).
        timeout_s: per tool and profile.
        mpi_mca: extra Open MPI parameters (see :func:`launches`).

    Returns:
        One row per profile x tool x size (:func:`hpcml.train.allreduce_stats.summarise`).
    """
    import pandas as pd

    from hpcml.cluster.fabric import parse_rate

    profiles = [profiles] if isinstance(profiles, str) else list(profiles)
    rates = {p: parse_rate(p) for p in profiles}
    if cl is None and any(r is not None for r in rates.values()):
        raise ValueError(f"allreduce: link profiles {profiles} need the multi-node cluster (cl); on loopback "
                         "only 'unshaped' means anything")
    sizes_b, tools = st.parse_sizes(sizes), check_tools(tools)
    out_dir = Path(out_dir or paths.build_dir() / "allreduce")
    before = cl.spec.bandwidth if cl is not None else None
    table = []
    try:
        for prof in profiles:
            if cl is not None:
                cl.shape(prof)
            for tool in tools:
                recs = run_tool(tool, sizes_b, out_dir / st.metric_key(prof) / tool, cl, warmup, reps, timeout_s, ranks,
                                mpi_mca)
                table += rows(recs, prof, rates[prof])
    finally:
        if cl is not None:
            cl.shape(before)
    df = pd.DataFrame(table)
    paths.atomic_write_text(paths.ensure(out_dir) / "results.json", df.to_json(orient="records", indent=1))
    return df


def bench(cl: LocalCluster | None, profiles: Iterable[str] = ("1gbit",), sizes: str | Iterable[str | int] = "64KiB,16MiB",
          tools: Iterable[str] = TOOLS, warmup: int = 1, reps: int = 7, timeout_s: float = 120,
          out_dir: Path | None = None, mpi_mca: dict[str, str] | None = None) -> tuple[pd.DataFrame, list[Metric]]:
    """The notebook's call: :func:`run` with CI-sized defaults (two sizes, 7 reps, one shaped
    profile: about 30 s on the 2-node cluster), then the results table and its metrics.

    Returns:
        ``(results, metrics)``: one row per profile x tool x size, and the
        :func:`hpcml.train.allreduce_stats.metrics` to record.
    """
    df = run(cl, profiles, sizes, tools, warmup, reps, out_dir, timeout_s, mpi_mca=mpi_mca)
    return df, st.metrics(df)


def plot(df: pd.DataFrame) -> Any:
    """Bus bandwidth vs message size per tool, the link rate as a line (:func:`hpcml.train.allreduce_stats.plot`)."""
    return st.plot(df)


def _main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m hpcml.train.allreduce", description=__doc__.split("\n")[0])
    ap.add_argument("--profiles", default="unshaped,1gbit", help="comma-separated: unshaped and/or tc rates")
    ap.add_argument("--sizes", default=st.DEFAULT_SIZES, help="'4KiB..128MiB' (x4; ':x2' for x2) or '4KiB,16MiB'")
    ap.add_argument("--tools", default=",".join(TOOLS))
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--mpi-mca", action="append", default=[], metavar="NAME=VALUE",
                    help="an extra Open MPI parameter, e.g. btl_tcp_links=2 (repeatable)")
    ap.add_argument("--cluster", default="hpcml", help="the multi-node cluster's name (brought up if it is not "
                    "running, and then taken down again)")
    ap.add_argument("--check", action="store_true", help="exit 1 unless the best tool meets the bus-bandwidth "
                    "target (>= 80 %% of the link, 95 %% low end, messages >= 16 MiB) at every profile <= 1gbit")
    ap.add_argument("--loopback", action="store_true", help="2 ranks on this machine, no cluster (development)")
    a = ap.parse_args(argv)
    mca = dict(kv.split("=", 1) for kv in a.mpi_mca if "=" in kv)
    if len(mca) != len(a.mpi_mca):
        ap.error(f"--mpi-mca takes NAME=VALUE, got {a.mpi_mca}")
    from hpcml.cluster import local
    from hpcml.cluster.fabric import PREFIX, LocalClusterSpec

    state = None if a.cluster == PREFIX else paths.build_dir() / f"cluster-{a.cluster}"
    cl = None if a.loopback else local.ensure(mode="multi", spec=LocalClusterSpec(name=a.cluster), state_dir=state)
    out = Path(a.out or paths.build_dir() / "allreduce")
    try:
        df = run(cl, a.profiles.split(","), a.sizes, a.tools.split(","), a.warmup, a.reps, out, mpi_mca=mca)
    finally:
        if cl is not None and cl.started_here:
            local.down(cl.state_dir, prefix=a.cluster)
    text = st.table(df).to_string(index=False)
    paths.atomic_write_text(out / "table.txt", text + "\n")
    st.plot(df).savefig(out / "busbw.png", dpi=110)
    print(text)
    print(f"results: {out / 'results.json'}, {out / 'table.txt'}, {out / 'busbw.png'}")
    found = st.verdicts(df)
    for v in found:
        print(f"target busbw >= {st.TARGET_FRACTION:.0%} of the link, messages >= 16 MiB, link {v['profile']}, "
              f"{v['tool']}: {v['verdict']} (worst message: {v['frac_lo']:.0%}-{v['frac_hi']:.0%} of the link)")
    best_met = {p: any(v["verdict"] == "met" for v in found if v["profile"] == p) for p in {v["profile"] for v in found}}
    if a.check and (not best_met or not all(best_met.values())):
        print(f"CHECK FAILED: no tool met the target at {sorted(p for p, ok in best_met.items() if not ok) or 'any profile'}")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(_main(sys.argv[1:]))
