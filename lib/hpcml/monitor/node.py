"""A node sampler exporter: CPU per core, memory, network, disk, and GPUs where present.

Retired for node metrics: the notebook's nodes run Debian's node_exporter
(:mod:`hpcml.monitor.nodes`) and every rule reads node_exporter's names. What this module still
does is the **GPUs** (``--gpus-only``, job ``gpu`` in 05): node_exporter has no GPU collector,
and the cluster's DCGM exporter needs a data-center GPU and its host engine, so on a workstation
NVML / ``nvidia-smi`` is what reads them. The host part stays for :func:`sample` and its tests.

Values are read at scrape time (a custom collector: no sampling thread, nothing stale)
and named after Prometheus conventions — base units in the name (``_bytes``,
``_seconds``, ``_ratio``), ``_total`` on counters, one metric per quantity with labels
for the dimension (``cpu``, ``mode``, ``device``). They mirror node_exporter's
``node_cpu_seconds_total`` etc. under the ``hpcml_node_`` prefix so a laptop and a
cluster read alike.

GPUs: NVML (``pynvml`` / ``nvidia-ml-py``) if importable, else ``nvidia-smi`` on PATH,
else none. ``hpcml_node_gpu_source_info{source=…, reason=…}`` always says which (the
``reason`` explains an absence), and ``hpcml_node_gpus`` counts them.

Run it as a process: ``python -m hpcml.monitor.node --port 9101`` (127.0.0.1), or with
:meth:`NodeSampler.start` which returns a handle with ``.url`` and ``.stop()``.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from hpcml.monitor.spec import (METRIC_NODE_CPU_SECONDS, METRIC_NODE_MEMORY_AVAILABLE, METRIC_NODE_MEMORY_TOTAL,
                                NODE_PREFIX)

SMI_QUERY = "index,uuid,name,utilization.gpu,memory.used,memory.total,temperature.gpu,power.draw"


def parse_nvidia_smi(csv_text: str) -> list[dict]:
    """Parse ``nvidia-smi --query-gpu=<SMI_QUERY> --format=csv,noheader,nounits`` output.

    Returns:
        One dict per GPU: index, uuid, name, util_ratio, mem_used_bytes, mem_total_bytes,
        temp_celsius, power_watts (``None`` where nvidia-smi printed ``[N/A]``).

    Raises:
        ValueError: a line without the expected 8 comma-separated fields.
    """
    def num(s: str) -> float | None:
        s = s.strip()
        try:
            return float(s)
        except ValueError:
            return None

    gpus = []
    for i, line in enumerate(l for l in csv_text.splitlines() if l.strip()):
        parts = [p.strip() for p in line.split(",")]
        if len(parts) != 8:
            raise ValueError(f"nvidia-smi line {i + 1}: expected 8 fields ({SMI_QUERY}), got {line!r}")
        util, used, total = num(parts[3]), num(parts[4]), num(parts[5])
        gpus.append({
            "index": parts[0], "uuid": parts[1], "name": parts[2],
            "util_ratio": None if util is None else util / 100.0,
            "mem_used_bytes": None if used is None else used * 2**20,
            "mem_total_bytes": None if total is None else total * 2**20,
            "temp_celsius": num(parts[6]), "power_watts": num(parts[7]),
        })
    return gpus


def read_gpus() -> tuple[str, str, list[dict]]:
    """(source, reason, gpus): NVML first, then nvidia-smi, else ``("none", why, [])``."""
    try:
        import pynvml  # type: ignore[import-not-found]

        pynvml.nvmlInit()
        out = []
        for i in range(pynvml.nvmlDeviceGetCount()):
            h = pynvml.nvmlDeviceGetHandleByIndex(i)
            mem = pynvml.nvmlDeviceGetMemoryInfo(h)
            name = pynvml.nvmlDeviceGetName(h)
            out.append({
                "index": str(i), "uuid": str(pynvml.nvmlDeviceGetUUID(h)),
                "name": name.decode() if isinstance(name, bytes) else str(name),
                "util_ratio": pynvml.nvmlDeviceGetUtilizationRates(h).gpu / 100.0,
                "mem_used_bytes": float(mem.used), "mem_total_bytes": float(mem.total),
                "temp_celsius": float(pynvml.nvmlDeviceGetTemperature(h, 0)),
                "power_watts": pynvml.nvmlDeviceGetPowerUsage(h) / 1000.0,
            })
        return "nvml", "", out
    except Exception as exc:  # ImportError, or NVML present but no driver/GPU
        nvml_why = f"NVML unavailable ({type(exc).__name__})"
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return "none", f"{nvml_why}; nvidia-smi not on PATH (no NVIDIA driver)", []
    try:
        res = subprocess.run([smi, f"--query-gpu={SMI_QUERY}", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return "none", f"{nvml_why}; nvidia-smi failed: {exc}", []
    if res.returncode != 0:
        return "none", f"{nvml_why}; nvidia-smi exit {res.returncode}: {res.stderr.strip()[:200]}", []
    return "nvidia-smi", "", parse_nvidia_smi(res.stdout)


class NodeCollector:
    """A prometheus_client collector reading psutil (and the GPUs) at every scrape."""

    def __init__(self, disk_path: Path | str = "/", gpus: bool = True, host: bool = True):
        self.disk_path = str(disk_path)
        self.gpus = gpus
        self.host = host

    def collect(self) -> Iterator:
        import psutil
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        t0 = time.perf_counter()
        if self.host:
            yield from self._host_metrics()
        if self.gpus:
            yield from self._gpu_metrics()
        d = GaugeMetricFamily(NODE_PREFIX + "scrape_duration_seconds", "Time this sampler took to read the node")
        d.add_metric([], time.perf_counter() - t0)
        yield d

    def _host_metrics(self) -> Iterator:
        import psutil
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        cpu = CounterMetricFamily(METRIC_NODE_CPU_SECONDS, "CPU time per core and mode", labels=["cpu", "mode"])
        for i, times in enumerate(psutil.cpu_times(percpu=True)):
            for mode, v in times._asdict().items():
                cpu.add_metric([str(i), mode], v)
        yield cpu
        g = GaugeMetricFamily(NODE_PREFIX + "cpus", "Logical CPUs")
        g.add_metric([], psutil.cpu_count() or 0)
        yield g
        load = GaugeMetricFamily(NODE_PREFIX + "load_average", "Run-queue load average", labels=["period"])
        for period, v in zip(("1m", "5m", "15m"), psutil.getloadavg()):
            load.add_metric([period], v)
        yield load
        vm, sw = psutil.virtual_memory(), psutil.swap_memory()
        for name, v, doc in ((METRIC_NODE_MEMORY_TOTAL, vm.total, "Physical memory"),
                             (METRIC_NODE_MEMORY_AVAILABLE, vm.available, "Memory available without swapping"),
                             (NODE_PREFIX + "memory_used_bytes", vm.used, "Memory in use"),
                             (NODE_PREFIX + "swap_used_bytes", sw.used, "Swap in use")):
            g = GaugeMetricFamily(name, doc)
            g.add_metric([], v)
            yield g
        net = psutil.net_io_counters(pernic=True)
        for name, attr in (("network_receive_bytes", "bytes_recv"), ("network_transmit_bytes", "bytes_sent"),
                           ("network_receive_errors", "errin"), ("network_transmit_errors", "errout")):
            c = CounterMetricFamily(NODE_PREFIX + name, f"Network {attr} per interface", labels=["device"])
            for dev, io in net.items():
                c.add_metric([dev], getattr(io, attr))
            yield c
        disks = psutil.disk_io_counters(perdisk=True) or {}
        for name, attr in (("disk_read_bytes", "read_bytes"), ("disk_written_bytes", "write_bytes")):
            c = CounterMetricFamily(NODE_PREFIX + name, f"Disk {attr} per device", labels=["device"])
            for dev, io in disks.items():
                c.add_metric([dev], getattr(io, attr))
            yield c
        du = shutil.disk_usage(self.disk_path)
        for name, v in (("filesystem_size_bytes", du.total), ("filesystem_avail_bytes", du.free)):
            g = GaugeMetricFamily(NODE_PREFIX + name, "Filesystem holding the build tree", labels=["mountpoint"])
            g.add_metric([self.disk_path], v)
            yield g

    @staticmethod
    def _gpu_metrics() -> Iterator:
        from prometheus_client.core import GaugeMetricFamily

        source, reason, gpus = read_gpus()
        info = GaugeMetricFamily(NODE_PREFIX + "gpu_source_info", "How GPUs are read (none: reason says why)",
                                 labels=["source", "reason"])
        info.add_metric([source, reason], 1)
        yield info
        n = GaugeMetricFamily(NODE_PREFIX + "gpus", "NVIDIA GPUs seen")
        n.add_metric([], len(gpus))
        yield n
        for key, name, doc in (("util_ratio", "gpu_utilization_ratio", "share of the sample period in which any kernel ran (NVML utilization.gpu, 0-1): not SM occupancy"),
                               ("mem_used_bytes", "gpu_memory_used_bytes", "GPU memory in use"),
                               ("mem_total_bytes", "gpu_memory_total_bytes", "GPU memory"),
                               ("temp_celsius", "gpu_temperature_celsius", "GPU temperature"),
                               ("power_watts", "gpu_power_watts", "GPU power draw")):
            g = GaugeMetricFamily(NODE_PREFIX + name, doc, labels=["gpu", "uuid", "model"])
            for gpu in gpus:
                if gpu[key] is not None:
                    g.add_metric([gpu["index"], gpu["uuid"], gpu["name"]], gpu[key])
            yield g


def sample(disk_path: Path | str = "/") -> dict[str, float]:
    """One reading as ``{"name{labels}": value}`` (the exposition, parsed) — for checks."""
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    reg = CollectorRegistry()
    reg.register(NodeCollector(disk_path))
    out = {}
    for fam in text_string_to_metric_families(generate_latest(reg).decode()):
        for s in fam.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
            out[f"{s.name}{{{labels}}}" if labels else s.name] = s.value
    return out


@dataclass
class NodeSampler:
    """The sampler running as its own process: ``url``, ``pid``, ``stop()``."""

    port: int
    proc: subprocess.Popen = field(repr=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        return self.proc.pid

    @classmethod
    def start(cls, port: int | None = None, disk_path: Path | str = "/", timeout_s: float = 20.0,
              gpus_only: bool = False) -> "NodeSampler":
        """Start ``python -m hpcml.monitor.node`` on 127.0.0.1 and wait until /metrics answers."""
        from hpcml.proc import free_port

        port = port or free_port()
        proc = subprocess.Popen([sys.executable, "-m", "hpcml.monitor.node", "--port", str(port),
                                 "--disk-path", str(disk_path)] + (["--gpus-only"] if gpus_only else []),
                                stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True)
        ns = cls(port, proc)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"node sampler exited with {proc.returncode}: {proc.stderr.read()[-2000:]}")
            try:
                with urllib.request.urlopen(ns.url + "/metrics", timeout=2) as r:
                    if r.status == 200:
                        return ns
            except OSError:
                time.sleep(0.1)
        ns.stop()
        raise RuntimeError(f"node sampler on port {port} did not answer within {timeout_s}s")

    def stop(self, timeout_s: float = 5.0) -> int | None:
        """SIGTERM, then SIGKILL after ``timeout_s``; returns the exit code."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stderr:
            self.proc.stderr.close()
        return self.proc.returncode


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="hpcml node sampler (Prometheus exporter on 127.0.0.1)")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--disk-path", default="/")
    ap.add_argument("--gpus-only", action="store_true", help="only the GPU metrics (node_exporter serves the rest)")
    args = ap.parse_args(argv)
    from prometheus_client import CollectorRegistry, start_http_server

    reg = CollectorRegistry()
    reg.register(NodeCollector(args.disk_path, host=not args.gpus_only))
    server, thread = start_http_server(args.port, addr="127.0.0.1", registry=reg)
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))
    while not stop:
        time.sleep(0.2)
    server.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
