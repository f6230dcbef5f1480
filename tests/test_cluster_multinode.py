"""The multi-node cluster for real: namespaces, links, Slurm and sshd in every node, shaping, clean-up.

One 2-node cluster (the ``mcluster`` fixture of conftest, name ``hpcmlt``) is shared by the tests
of this module and of the other modules that need nodes. Where namespaces can't be made, the tests skip, except
under ``CI=true``, where they fail: CI installs and runs everything they need.

The node-failure drill runs once per suite, in notebook 00 (its checks cell asserts it);
:func:`test_the_drill_of_notebook_00` reads what it recorded.
"""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from hpcml.cluster import fabric, local, netns
from hpcml.cluster.fabric import LocalClusterSpec
from hpcml.cluster.slurm import daemons
from hpcml.specbase import SpecError

pytestmark = pytest.mark.integration
NAME = os.environ.get("HPCML_TEST_CLUSTER", "hpcmlt")


def test_up_is_idempotent(mcluster):
    again = local.up(LocalClusterSpec(nodes=2, name=NAME), mcluster.state_dir)
    assert not again.started_here and again.plan.subnet == mcluster.plan.subnet
    assert again.sshd_pids == mcluster.sshd_pids


def test_srun_lands_on_two_addresses_each_on_its_own_core(mcluster):
    rows = local.srun_placement(mcluster)
    assert [r["node"] for r in rows] == [n.name for n in mcluster.plan.nodes]
    assert [r["address"] for r in rows] == [n.address for n in mcluster.plan.nodes]
    assert [r["hostname"] for r in rows] == [r["node"] for r in rows]  # each node's own UTS namespace
    if (os.cpu_count() or 1) >= 2:
        assert [r["cores"] for r in rows] == [",".join(map(str, n.cpus)) for n in mcluster.plan.nodes]
    assert set(daemons.SlurmCluster(mcluster.slurm.state_dir).node_states().values()) == {"idle"}


def test_nodes_have_one_interface_name_and_no_route_out(mcluster):
    for n in mcluster.plan.nodes:
        routes = netns.ip("-j", "-4", "route", netns=n.netns)
        assert json.loads(routes) == [{"dst": mcluster.plan.subnet, "dev": fabric.NODE_IFACE, "protocol": "kernel",
                                       "scope": "link", "prefsrc": n.address, "flags": []}]


def test_sshd_takes_the_cluster_key_only_on_the_node_address(mcluster, tmp_path):
    n = mcluster.plan.nodes[1]
    assert mcluster.ssh(n.name, "hostname").strip() == n.name
    listening = mcluster.run_on(n.name, ["ss", "-Hltn", "sport = :22"])
    assert f"{n.address}:22" in listening and "0.0.0.0:22" not in listening
    other = tmp_path / "other"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    # -F /dev/null: not the cluster's ssh_config drop-in, which would offer the cluster key too
    p = subprocess.run(["ssh", "-F", "/dev/null", *fabric.ssh_options(str(other), str(tmp_path / "kh")),
                        f"root@{n.address}", "true"],
                       capture_output=True, text=True, timeout=30)
    assert p.returncode != 0 and "Permission denied" in p.stderr


def test_a_bandwidth_profile_measurably_limits_throughput(mcluster):
    rows = local.measure_links(mcluster, ["unshaped", "100mbit"], seconds=1.0, rtt_n=50,
                               client=mcluster.plan.nodes[0].name, server=mcluster.plan.nodes[1].name)
    free, shaped = rows[0]["gbit_s"], rows[1]["gbit_s"]
    assert shaped <= 0.1 * 1.05, rows  # tbf holds the rate
    assert free > 3 * shaped, rows  # a ratio within this run, not a wall-clock limit
    assert "tbf" not in netns.qdisc(mcluster.plan, mcluster.plan.nodes[0])  # the cluster's own profile is back


def test_a_cut_link_is_restored_whatever_happens(mcluster):
    n = mcluster.plan.nodes[1]
    with pytest.raises(RuntimeError, match="inside"):
        with mcluster.link_cut(n.name):
            assert not netns.link_up(n)
            raise RuntimeError("inside the cut")
    assert netns.link_up(n)


def test_a_subnet_in_use_is_refused_and_nothing_is_built():
    used = [u for u in netns.used_networks(NAME) if not u.startswith("127.")]
    if not used:
        pytest.skip("no IPv4 network on this machine to clash with")
    clash = used[0].rsplit(".", 1)[0] + ".0/24"
    with pytest.raises(SpecError, match=r"LocalClusterSpec\.subnet: expected a /24 that no interface"):
        local.up(LocalClusterSpec(nodes=1, name="hpcmlx", subnet=clash))
    assert not any(local.leftovers("hpcmlx").values())


def test_missing_packages_are_named():
    msg = netns.available("/nonexistent")
    assert "openssh-server" in msg and "iproute2" in msg and "apt-get install" in msg


def test_a_failed_up_leaves_nothing_and_down_removes_everything(monkeypatch, tmp_path):
    if netns.available():
        if os.environ.get("CI") == "true":
            pytest.fail(f"the multi-node cluster must run under CI=true, but: {netns.available()}")
        pytest.skip(netns.available())

    def broken(cl, n):
        raise local.ClusterError(f"sshd on {n.name} refused to start (injected)")

    monkeypatch.setattr(local, "_start_sshd", broken)
    with pytest.raises(local.ClusterError, match="injected"):
        local.up(LocalClusterSpec(nodes=1, name="hpcmlx"), tmp_path / "x")
    assert not any(local.leftovers("hpcmlx").values()), local.leftovers("hpcmlx")
    monkeypatch.undo()
    cl = local.up(LocalClusterSpec(nodes=1, name="hpcmlx"), tmp_path / "y")
    pids = [p for p in cl.slurm.daemon_pids().values() if p] + list(cl.sshd_pids.values())
    removed = local.down(cl.state_dir, prefix="hpcmlx")
    assert removed["netns"] == ["hpcmlx-n1"]
    assert not any(local.leftovers("hpcmlx").values()), local.leftovers("hpcmlx")
    assert not [p for p in pids if daemons.pid_alive(p)]
    assert "hpcmlx" not in open("/etc/hosts").read()


@pytest.mark.notebooks
@pytest.mark.slow
def test_the_drills_of_notebook_00(pipeline_run):
    """The drills 00 ran: the requeued job resumed from its checkpoint with the same final metrics, and
    the elastic job shrank to the survivor and finished, under Horovod elastic and under torchrun elastic."""
    runs, build = pipeline_run
    rec = json.loads((build / "metrics" / "00_cluster_setup.json").read_text())
    m = {k: v["value"] for k, v in rec["metrics"].items()}
    if m.get("cluster_mode") != "multi":
        from conftest import _cannot_run

        _cannot_run(f"00 ran on the {m.get('cluster_mode')} cluster")
    assert m["drill_restarts"] >= 1 and m["drill_max_abs_diff"] <= 1e-6
    assert m["drill_resumed_from_step"] >= m["drill_checkpoint_every"]
    assert 0 < m["drill_detect_s"] < m["drill_requeue_s"] <= 60 + m["drill_detect_s"]
    assert m["drill_lost_steps"] <= m["drill_checkpoint_every"]
    assert m["elastic_world_after"] == 1 and m["elastic_epochs_run"] == rec["params"]["elastic_epochs"]
    assert m["elastic_reset_s"] <= 60
    for b in ("horovod", "ddp"):  # the same node loss under Horovod elastic and torchrun elastic
        assert m[f"elastic_{b}_final_world"] == 1 and m[f"elastic_{b}_reset_s"] <= 60
        assert 0 <= m[f"elastic_{b}_lost_steps"] <= m["elastic_cmp_checkpoint_every"]
        assert m[f"elastic_{b}_resumed_from_step"] >= m["elastic_cmp_checkpoint_every"]


# ---- elastic, side by side (elastic.elastic_side_by_side runs in a notebook; these check its record) -----
def _elastic_run(backend: str, reset_s: float, **kw):
    from hpcml.cluster.elastic import ElasticRun

    base = dict(backend=backend, launcher=backend, node_cut="n2", reset_s=reset_s, progress_s=reset_s + 1,
                step_s=0.05, step_at_cut=100.0, resumed_from_step=80, lost_steps=20.0, final_world=1, epochs_run=3,
                test_accuracy=0.9, total_s=60.0)
    return ElasticRun(**{**base, **kw})


@pytest.mark.unit
def test_the_side_by_side_record_keeps_the_elastic_drills_metric_names():
    """00 can swap elastic_drill for elastic_side_by_side: drill_metrics() gives ElasticDrill's names."""
    from hpcml.cluster.drills import ElasticDrill
    from hpcml.cluster.elastic import ElasticComparison

    cmp = ElasticComparison({"horovod": _elastic_run("horovod", 0.5), "ddp": _elastic_run("ddp", 11.0)}, 40, 0.5, 10)
    old = ElasticDrill("n2", 0.5, 1, 1, 3, 0.9, 10)
    assert [m.name for m in cmp.drill_metrics()] == [m.name for m in old.metrics()]
    got = {m.name: m.value for m in cmp.metrics()}
    assert got["elastic_horovod_reset_s"] == 0.5 and got["elastic_ddp_reset_s"] == 11.0
    assert {f"elastic_{b}_{k}" for b in ("horovod", "ddp") for k in ("lost_steps", "final_world", "progress_s")} <= set(got)
    assert [r["backend"] for r in cmp.rows()] == ["horovod", "ddp"]


@pytest.mark.unit
def test_a_torchrun_restart_is_split_into_its_phases_from_the_agent_log(tmp_path):
    from hpcml.cluster.elastic import _log_time, agent_phases

    t0 = _log_time("I1205 06:08:00.000000 1 x.py:1] start")
    log = tmp_path / "n1.log"
    log.write_text("\n".join([
        "I1205 06:07:55.579000 4809 torch/distributed/elastic/agent/server/api.py:715] [default] Starting worker group",
        "I1205 06:08:06.140000 4809 torch/distributed/elastic/agent/server/api.py:942] [default] Worker group FAILED. "
        "3/3 attempts left; will restart worker group",
        "I1205 06:08:08.467000 4809 torch/distributed/elastic/agent/server/api.py:553] [default] Rendezvous complete "
        "for workers. Result:",
        "I1205 06:08:08.468000 4809 torch/distributed/elastic/agent/server/api.py:715] [default] Starting worker group"]))
    ph = agent_phases(log, t0 + 5.0, t0 + 17.0)
    assert ph == pytest.approx({"detect": 1.14, "rendezvous": 2.327, "worker_start": 0.001, "worker_resume": 8.532},
                               abs=1e-4)
    assert agent_phases(log, t0 + 7.0, t0 + 17.0) == {}  # no failure after the loss: no phases
