"""Jobs across the local cluster's nodes (hpcml.train.targets.nodes): horovodrun over SSH, torchrun per node.

Everything runs for real on the 2-node ``mcluster`` (namespaces, sshd, Gloo over ``eth1``); every
rendezvous and collective here times out within 60 s.
"""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest

from hpcml.train.spec import BACKENDS, TrainSpec
from hpcml.train.targets import nodes

pytestmark = pytest.mark.integration
SELFTEST = "hpcml.train.targets.nodes_selftest"


def _hosts(cl) -> list[str]:
    return [n.name for n in cl.plan.nodes]


def test_a_host_list_that_does_not_match_the_nodes_is_refused(mcluster, tmp_path):
    hosts = _hosts(mcluster)
    with pytest.raises(ValueError, match=rf"'n9', not a node of this cluster; expected some of its nodes .*{hosts[1]}"):
        nodes.check_hosts(mcluster, [hosts[0], "n9"])
    with pytest.raises(ValueError, match="more than once"):
        nodes.horovod_argv(mcluster, [hosts[0], hosts[0]], 1, SELFTEST, [])
    with pytest.raises(ValueError, match="host list is empty"):
        nodes.start(mcluster, "ddp", [], 1, SELFTEST, [])
    with pytest.raises(ValueError, match="backend must be one of"):
        nodes.start(mcluster, "mpi", hosts, 1, SELFTEST, [])
    spec = TrainSpec(name="x", world_size=3, out_dir=str(tmp_path))
    with pytest.raises(ValueError, match=r"world_size=3 does not divide over 2 nodes"):
        nodes.run_spec(mcluster, spec, hosts=hosts)
    spec = TrainSpec(name="x", world_size=2, elastic=True, min_workers=1, out_dir=str(tmp_path))
    with pytest.raises(ValueError, match="elastic Horovod spec needs a host-discovery script"):
        nodes.run_spec(mcluster, spec)


def test_the_launchers_name_the_nodes_interface_and_rendezvous(mcluster):
    h = _hosts(mcluster)
    hv = nodes.horovod_argv(mcluster, h, 1, SELFTEST, [])
    assert hv[hv.index("-H") + 1] == f"{h[0]}:1,{h[1]}:1" and "eth1" in hv and str(mcluster.key) in hv
    assert f"--net=/run/netns/{mcluster.plan.node(h[0]).netns}" in " ".join(hv)
    tr = nodes.torchrun_argv(mcluster, h[1], h, 2, SELFTEST, [], "job1", min_nodes=1, max_restarts=3)
    assert "--nnodes=1:2" in tr and "--nproc-per-node=2" in tr and "--max-restarts=3" in tr
    assert f"--rdzv-endpoint={mcluster.plan.node(h[0]).address}:{nodes.RDZV_PORT}" in tr
    assert any("is_host=false" in a and "join_timeout=30" in a for a in tr)
    with pytest.raises(ValueError, match="within 1..60"):
        nodes.torchrun_argv(mcluster, h[0], h, 1, SELFTEST, [], "job1", rdzv_timeout_s=120)


def test_a_rendezvous_port_in_use_is_skipped(mcluster):
    node = mcluster.plan.node(_hosts(mcluster)[0])
    code = (f"import socket,time;s=socket.socket();s.bind(({node.address!r},{nodes.RDZV_PORT}));s.listen();"
            "print('up',flush=True);time.sleep(30)")
    p = subprocess.Popen(mcluster.node_argv(node.name, [sys.executable, "-c", code]), stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "up"
        assert nodes.free_port(mcluster, node.name) == nodes.RDZV_PORT + 1
    finally:
        p.kill()
        p.wait()


def test_a_rendezvous_that_times_out_names_the_node_that_never_joined(mcluster, tmp_path):
    h = _hosts(mcluster)
    job = nodes.start(mcluster, "ddp", h, 1, SELFTEST, ["--backend", "ddp"], log_dir=tmp_path,
                      rdzv_timeout_s=8, skip_agents=(h[1],))
    try:
        with pytest.raises(nodes.NodesJobError, match=rf"did not complete within 8 s: {h[1]} never joined") as e:
            job.wait(40)
    finally:
        job.kill()
    assert e.value.node == h[1] and "its agent never started" in str(e.value)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_killed_rank_is_named_with_its_node_and_log_tail(mcluster, tmp_path, backend):
    h = _hosts(mcluster)
    job = nodes.start(mcluster, backend, h, 1, SELFTEST,
                      ["--backend", backend, "--steps", "600", "--step-sleep", "0.05"], log_dir=tmp_path)
    try:
        job.wait_for(lambda e: e.get("step", 0) >= 10, 60)
        assert set(job.rank_pids(h[1])) == {1}
        job.kill_rank(h[1], signal.SIGKILL)
        with pytest.raises(nodes.NodesJobError, match=rf"on {h[1]}") as e:
            job.wait(60)
    finally:
        job.kill()
    assert e.value.node == h[1] and "last lines" in str(e.value) and len(str(e.value).splitlines()) > 3
    assert not any(nodes.tagged_pids(mcluster, n, job.job_id) for n in h)


def _report(host: str, rank: int, code: str, why: str) -> list[str]:
    """torchrun's ChildFailedError report, as an agent prints it."""
    return [f"  host      : {host}\n", f"  rank      : {rank} (local_rank: 0)\n",
            f"  exitcode  : {code} (pid: 1)  ({why})\n", f"  traceback : Signal {code[1:]} ({why}) received by PID 1\n"]


@pytest.mark.parametrize("first", ["n1", "n2"])
def test_the_killed_node_is_named_when_its_peer_aborts_too(first):
    # CI saw the survivor's worker abort (SIGABRT) after Gloo lost its peer: both agents then report a
    # signal, and the cause is the one that did not see its peer go first, whichever agent ended first
    job = nodes.NodesJob(cl=None, backend="ddp", hosts=["n1", "n2"], slots=1, job_id="j", procs={}, logs={})
    job.procs = {"n1": None, "n2": None}
    job.lines = {"n1": ["RuntimeError: [pair.cc:553] Connection closed by peer [10.250.0.12]:20618.\n",
                        *_report("n1", 0, "-6", "SIGABRT")],
                 "n2": _report("n2", 1, "-9", "SIGKILL")}
    job.exited_at = {"n1": 2.0, "n2": 1.0} if first == "n2" else {"n1": 1.0, "n2": 2.0}
    err = job._torchrun_failure({"n1": 1, "n2": 1})
    assert err.node == "n2" and "a rank on n2 failed" in str(err) and "SIGKILL" in str(err)
    job.lines["n1"] = job.lines["n1"][1:]  # no word of the peer: the agent that ended first is named
    assert job._torchrun_failure({"n1": 1, "n2": 1}).node == ("n2" if first == "n2" else "n1")
