"""The multi-node cluster's plan, as pure functions: spec validation, subnets, cores, hosts, slurm.conf."""

from __future__ import annotations

import pytest

from hpcml.cluster import fabric
from hpcml.cluster.fabric import LocalClusterSpec, plan
from hpcml.cluster.slurm.conf import LocalNode, NodeSpec, render_slurm_conf
from hpcml.specbase import SpecError

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("kw, field", [
    (dict(nodes=0), "nodes"), (dict(nodes=9), "nodes"), (dict(nodes=True), "nodes"),
    (dict(bandwidth="fast"), "bandwidth"), (dict(bandwidth="1gbps"), "bandwidth"), (dict(bandwidth="0mbit"), "bandwidth"),
    (dict(subnet="10.0.0.0/16"), "subnet"), (dict(subnet="8.8.8.0/24"), "subnet"), (dict(subnet="nope"), "subnet"),
    (dict(cpus_per_node=0), "cpus_per_node"), (dict(mem_mb_per_node=10), "mem_mb_per_node"),
    (dict(name="Bad-Name"), "name"), (dict(name="waytoolongname"), "name"),
])
def test_bad_spec_names_the_field(kw, field):
    with pytest.raises(SpecError, match=rf"LocalClusterSpec\.{field}: expected"):
        LocalClusterSpec(**kw)


@pytest.mark.parametrize("text, bps", [("unshaped", None), ("1gbit", 1e9), ("10gbit", 1e10), ("100mbit", 1e8),
                                       ("2.5gbit", 2.5e9), ("512kbit", 5.12e5)])
def test_rates(text, bps):
    assert fabric.parse_rate(text) == bps


def test_default_subnet_avoids_every_network_in_use():
    used = ["192.0.2.2/24", "10.250.0.5/24", "10.250.1.0/24", "127.0.0.1/8"]
    p = plan(LocalClusterSpec(), used=used, cores=2)
    assert p.subnet == "10.250.2.0/24" and p.head_address == "10.250.2.1"
    assert [n.address for n in p.nodes] == ["10.250.2.11", "10.250.2.12"]


def test_a_clashing_subnet_is_refused_naming_what_uses_it():
    with pytest.raises(SpecError, match=r"subnet: expected a /24 that no interface or route .*10\.9\.0\.0/16 is in use"):
        plan(LocalClusterSpec(subnet="10.9.3.0/24"), used=["10.9.0.0/16"], cores=2)


def test_the_default_route_does_not_count_as_a_clash():
    assert plan(LocalClusterSpec(), used=["0.0.0.0/0"], cores=2).subnet == fabric.CANDIDATE_SUBNETS[0]


def test_names_links_and_interfaces():
    p = plan(LocalClusterSpec(nodes=8, name="hpcmlt"), used=[], cores=2)
    assert p.bridge == "hpcmlt-br" and all(len(n.host_link) <= 15 for n in p.nodes)
    assert [n.name for n in p.nodes] == [f"hpcmltn{k}" for k in range(1, 9)]  # not n1..: the project's cluster's names
    assert len({n.netns for n in p.nodes}) == 8


@pytest.mark.parametrize("nodes, cores, per, sets, shared", [
    (2, 2, None, ((0,), (1,)), False),  # this machine: one core each
    (2, 8, None, ((0, 1, 2, 3), (4, 5, 6, 7)), False),
    (3, 2, None, ((0,), (1,), (0,)), True),  # more nodes than cores: said plainly
    (2, 4, 1, ((0,), (1,)), False),
])
def test_cpu_sets(nodes, cores, per, sets, shared):
    got, notes = fabric.cpu_sets(nodes, cores, per)
    assert got == sets
    assert bool(notes) == shared
    if shared:
        assert "share cores" in notes[0]


def test_hosts_block_is_added_once_and_removed_byte_for_byte():
    p = plan(LocalClusterSpec(), used=[], cores=2)
    original = "127.0.0.1 localhost\n# a comment\n10.1.1.1 other\n"
    once = fabric.with_hosts_block(original, p)
    assert fabric.with_hosts_block(once, p) == once
    assert "10.250.0.11\tn1" in once and "10.250.0.1\thpcml-head" in once
    assert fabric.without_hosts_block(once, "hpcml") == original
    assert fabric.without_hosts_block(once, "other") == once


def test_tbf_burst_is_at_least_a_millisecond_of_traffic():
    args = fabric.tbf_args(1e10)
    assert args[:3] == ["tbf", "rate", "10000000000bit"] and int(args[4]) >= 1e10 / 8 / 1000


def test_sshd_config_is_key_only_on_the_node_address():
    text = fabric.sshd_config("10.250.0.11", "/k/host", "/k/auth", "/k/pid")
    assert "ListenAddress 10.250.0.11" in text and "PasswordAuthentication no" in text
    assert "PermitRootLogin prohibit-password" in text and "UsePAM no" in text


def test_multinode_slurm_conf():
    head = NodeSpec("hpcml-head", 2, 1, 1, 2, 1, 24000)
    nodes = [LocalNode("n1", "10.250.0.11", 1, 2048), LocalNode("n2", "10.250.0.12", 1, 2048)]
    text = render_slurm_conf(head, "/r", "/s", ctld_port=7000, slurmd_port=6818, nodes=nodes,
                             controller_address="10.250.0.1", slurmd_timeout_s=6)
    assert "SlurmctldHost=hpcml-head(10.250.0.1)" in text
    assert "NodeName=n1 NodeAddr=10.250.0.11 NodeHostname=n1 CPUs=1" in text
    assert "SlurmdPidFile=/r/slurmd-%n.pid" in text and "SlurmdTimeout=6" in text
    assert "TaskPlugin=task/none" in text  # task/affinity would put every 1-CPU node's tasks on core 0
    assert "PartitionName=batch Nodes=n1,n2 Default=YES" in text and "ReturnToService=2" in text
    with pytest.raises(ValueError, match="controller_address"):
        render_slurm_conf(head, "/r", "/s", nodes=nodes)


def test_notebook_00_states_the_settings_the_cluster_runs_with():
    """00's text names SlurmdTimeout and cred_expire as configuration: they must be the values rendered."""
    import json
    from pathlib import Path

    from hpcml.cluster.local import SLURMD_TIMEOUT_S
    from hpcml.cluster.slurm.conf import REQUEUE_CRED_EXPIRE_S

    nb = json.loads((Path(__file__).resolve().parent.parent / "notebooks" / "00_cluster_setup.ipynb").read_text())
    text = "".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "markdown")
    assert f"`SlurmdTimeout={SLURMD_TIMEOUT_S}`" in text and f"`cred_expire={REQUEUE_CRED_EXPIRE_S}`" in text
