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
