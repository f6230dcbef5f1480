"""hpcml.cluster.kube without a cluster: the one-line no-cluster path, and a kubeconfig that
points at a loopback port where nothing listens (a real connection attempt, refused)."""

from __future__ import annotations

import socket

import pytest
import yaml

from hpcml.cluster import kube

pytestmark = pytest.mark.unit


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # released on close: nothing listens there


@pytest.fixture
def no_kubeconfig(tmp_path, monkeypatch):
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing-config"))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)


@pytest.fixture
def dead_cluster(tmp_path, monkeypatch):
    port = _closed_port()
    cfg = {"apiVersion": "v1", "kind": "Config", "current-context": "dead",
           "clusters": [{"name": "dead", "cluster": {"server": f"https://127.0.0.1:{port}", "insecure-skip-tls-verify": True}}],
           "users": [{"name": "u", "user": {"token": "not-a-real-token"}}],
           "contexts": [{"name": "dead", "context": {"cluster": "dead", "user": "u"}}]}
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump(cfg))
    monkeypatch.setenv("KUBECONFIG", str(path))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    return port


def test_no_cluster_is_one_line(no_kubeconfig):
    reason = kube.no_cluster_reason()
    assert reason and "no Kubernetes cluster configured" in reason and "\n" not in reason
    assert kube.inspect() == reason
    with pytest.raises(kube.KubeError, match="no Kubernetes cluster configured"):
        kube.connect()


def test_unknown_context_is_named(dead_cluster):
    reason = kube.no_cluster_reason("prod")
    assert "no context 'prod'" in reason and "dead" in reason


@pytest.mark.parametrize("call", [
    lambda kc: kube.list_nodes(kc),
    lambda kc: kube.device_plugin_status(kc),
    lambda kc: kube.apply(kc, [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "hpcml"}}]),
], ids=["list-nodes", "device-plugin", "apply"])
def test_unreachable_api_gives_clear_error(dead_cluster, call):
    assert kube.no_cluster_reason() is None  # configured...
    kc = kube.connect(timeout_s=3)
    assert kc.context == "dead" and kc.server == f"https://127.0.0.1:{dead_cluster}"
    with pytest.raises(kube.KubeError) as err:  # ...but nothing listens
        call(kc)
    msg = str(err.value)
    assert f"cannot reach the Kubernetes API at https://127.0.0.1:{dead_cluster}" in msg and "context dead" in msg


@pytest.mark.parametrize("q,gib", [("16Gi", 16.0), ("16384Mi", 16.0), ("1048576Ki", 1.0), ("1073741824", 1.0)],
                         ids=["Gi", "Mi", "Ki", "bytes"])
def test_memory_quantities(q, gib):
    assert kube._gib(q) == gib
