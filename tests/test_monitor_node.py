"""The node sampler: Prometheus naming conventions, sane values, GPU detection reported either way."""

from __future__ import annotations

import re
import urllib.request

import psutil
import pytest

from hpcml.monitor import node

SMI = ("0, GPU-1a2b, NVIDIA H100 80GB HBM3, 87, 40960, 81559, 61, 512.30\n"
       "1, GPU-3c4d, NVIDIA H100 80GB HBM3, [N/A], 0, 81559, 35, [N/A]\n")


@pytest.mark.unit
def test_names_follow_prometheus_conventions():
    s = node.sample()
    names = {k.split("{")[0] for k in s}
    assert all(n.startswith("hpcml_node_") for n in names)
    counters = {"hpcml_node_cpu_seconds_total", "hpcml_node_network_receive_bytes_total",
                "hpcml_node_network_transmit_bytes_total"}
    assert counters <= names
    for n in names:
        if n.endswith("_total"):
            assert re.search(r"_(seconds|bytes|errors)_total$", n), n
    assert "hpcml_node_memory_available_bytes" in names and "hpcml_node_gpus" in names


@pytest.mark.unit
def test_values_are_sane():
    s = node.sample()
    total, avail = s["hpcml_node_memory_total_bytes"], s["hpcml_node_memory_available_bytes"]
    assert abs(total - psutil.virtual_memory().total) < 1e6 and 0 < avail <= total
    cores = {k for k in s if k.startswith("hpcml_node_cpu_seconds_total") and 'mode="user"' in k}
    assert len(cores) == psutil.cpu_count() == s["hpcml_node_cpus"]
    assert all(s[k] > 0 for k in cores)
    assert s['hpcml_node_network_receive_bytes_total{device="lo"}'] >= 0
    assert 0 < s['hpcml_node_filesystem_avail_bytes{mountpoint="/"}'] <= s['hpcml_node_filesystem_size_bytes{mountpoint="/"}']
    assert 0 < s["hpcml_node_scrape_duration_seconds"] < 10


@pytest.mark.unit
def test_gpu_presence_is_reported_either_way():
    source, reason, gpus = node.read_gpus()
    s = node.sample()
    assert s["hpcml_node_gpus"] == len(gpus)
    info = [k for k in s if k.startswith("hpcml_node_gpu_source_info")]
    assert len(info) == 1 and f'source="{source}"' in info[0]
    if source == "none":
        assert "nvidia-smi" in reason and not gpus
    else:
        assert gpus and all(0 <= g["util_ratio"] <= 1 for g in gpus if g["util_ratio"] is not None)


@pytest.mark.unit
def test_parse_nvidia_smi_units_and_missing_values():
    g = node.parse_nvidia_smi(SMI)
    assert [x["index"] for x in g] == ["0", "1"]
    assert g[0]["util_ratio"] == pytest.approx(0.87) and g[0]["mem_used_bytes"] == 40960 * 2**20
    assert g[0]["power_watts"] == pytest.approx(512.3)
    assert g[1]["util_ratio"] is None and g[1]["power_watts"] is None


@pytest.mark.unit
@pytest.mark.parametrize("text", ["0, GPU-x, name, 50", "garbage"], ids=["short", "garbage"])
def test_parse_nvidia_smi_rejects_unexpected_output(text):
    with pytest.raises(ValueError, match="expected 8 fields"):
        node.parse_nvidia_smi(text)


@pytest.mark.integration
def test_sampler_process_serves_metrics_and_stops():
    ns = node.NodeSampler.start()
    try:
        body = urllib.request.urlopen(ns.url + "/metrics", timeout=5).read().decode()
        assert "# TYPE hpcml_node_cpu_seconds_total counter" in body
        assert "hpcml_node_memory_total_bytes" in body
    finally:
        rc = ns.stop()
    assert rc == 0 and ns.proc.poll() is not None
