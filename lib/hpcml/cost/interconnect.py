"""Multi-GPU scaling from an interconnect model: compute per step plus a ring allreduce over the slowest link, with and without overlap with backward.

The model (one function, :func:`step_time`)::

    comm      = 2(n-1)/n * gradient_bytes / bandwidth  +  2(n-1) * alpha
    no overlap: step = compute + comm
    overlap:    step = forward + max(backward, comm),  backward = BACKWARD_FRACTION * compute

``bandwidth`` is the slowest link a ring over the ``n`` workers crosses, one direction:
inside one instance the GPU-to-GPU link of :data:`GPU_LINKS` (NVLink/NVSwitch, or PCIe
where a type has no NVLink); between instances the instance's own network
(``network_gbps`` of the price table, shared by the instance's GPUs, since NCCL's rings
cross each instance's NICs once in each direction), EFA or plain TCP by its ``efa``
column (:func:`link_for`). Scaling efficiency is ``compute / step`` (weak scaling: the
per-worker batch stays fixed).

Everything here is nominal (spec-sheet bandwidths, round latencies) and is stated as an
assumption. :func:`fit_step_time` fits :func:`step_time` to step times measured across the
cluster's shaped links (issue 25's sweep): two free parameters, the share ``eta`` of the
link rate the allreduce reaches and a per-step ``overhead_s`` no bandwidth removes;
:func:`knee_bandwidth` is where the fitted communication equals the compute, and
:func:`carry_to_gpus` puts the same model on 8-GPU nodes (EFA vs plain TCP). The
no-overlap form is the conservative bound; the overlap form is optimistic (the last
gradient bucket can never overlap).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

#: Share of a training step's compute spent in the backward pass: backward costs about two
#: forwards (one matmul for the input gradient, one for the weight gradient per forward
#: matmul), so backward = 2/3 of forward + backward.
BACKWARD_FRACTION = 2.0 / 3.0
#: Bytes per gradient element that Horovod/NCCL all-reduce (float32, no compression).
GRAD_BYTES_PER_PARAM = 4


@dataclass(frozen=True)
class Link:
    """One class of link: its one-direction bandwidth and its per-hop latency.

    Attributes:
        name: what it is (``"NVSwitch (NVLink 4)"``, ``"EFA"``, ``"TCP"`` ...).
        bytes_per_s: one-direction bandwidth in bytes/s, per GPU inside an instance, per
            instance between instances.
        alpha_s: per-hop latency in seconds (the ``alpha`` of ``2(n-1) alpha``).
        source: where the number comes from.
    """

    name: str
    bytes_per_s: float
    alpha_s: float
    source: str


_NV = "NVIDIA datasheet: total NVLink bandwidth (both directions), halved for one direction"
#: GPU-to-GPU links inside one instance, per GPU type, one direction (nominal).
GPU_LINKS: dict[str, Link] = {
    "V100": Link("NVLink 2.0", 150e9, 5e-6, f"{_NV}: V100 SXM2 300 GB/s"),
    "A100": Link("NVSwitch (NVLink 3)", 300e9, 5e-6, f"{_NV}: A100 SXM4 600 GB/s"),
    "H100": Link("NVSwitch (NVLink 4)", 450e9, 5e-6, f"{_NV}: H100 SXM5 900 GB/s"),
    "T4": Link("PCIe Gen3 x16", 15.75e9, 5e-6, "PCIe 3.0 x16 (T4 has no NVLink): 15.75 GB/s one direction"),
    "A10G": Link("PCIe Gen4 x16", 31.5e9, 5e-6, "PCIe 4.0 x16 (A10G has no NVLink): 31.5 GB/s one direction"),
}
#: Per-hop latency between instances (planning assumptions, order of magnitude: to be fitted).
ALPHA_EFA_S = 15e-6
ALPHA_TCP_S = 50e-6


def checked_number(name: str, value: float, allow_zero: bool = False) -> float:
    """``value`` as a float; ValueError naming ``name`` unless finite and > 0 (>= 0 with ``allow_zero``)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    if value < 0 or (value == 0 and not allow_zero):
        raise ValueError(f"{name} must be {'>= 0' if allow_zero else '> 0'}, got {value!r}")
    return float(value)


def allreduce_s(grad_bytes: float, n: int, bandwidth_bytes_per_s: float, alpha_s: float = 0.0) -> float:
    """Seconds of one ring allreduce of ``grad_bytes`` over ``n`` workers:
    ``2(n-1)/n * grad_bytes / bandwidth + 2(n-1) * alpha``; 0 for one worker."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n (workers) must be an integer >= 1, got {n!r}")
    b = checked_number("grad_bytes", grad_bytes, allow_zero=True)
    bw = checked_number("bandwidth_bytes_per_s", bandwidth_bytes_per_s)
    a = checked_number("alpha_s", alpha_s, allow_zero=True)
    return 0.0 if n == 1 else 2 * (n - 1) / n * b / bw + 2 * (n - 1) * a


def step_time(compute_s: float, grad_bytes: float, n: int, bandwidth_bytes_per_s: float, overlap: bool = False,
              backward_fraction: float = BACKWARD_FRACTION, alpha_s: float = 0.0) -> float:
    """Seconds of one data-parallel training step on ``n`` workers.

    Args:
        compute_s: forward + backward time of one worker's batch, alone (no communication).
        grad_bytes: bytes all-reduced per step (``parameters x 4`` for float32 gradients).
        n: workers (GPUs, or CPU worker processes) in the ring.
        bandwidth_bytes_per_s: one-direction bandwidth of the slowest link the ring crosses
            (:func:`link_for` picks it from the instance type and the instance count).
        overlap: ``False``: step = compute + allreduce (the allreduce starts after the
            backward pass; the conservative bound). ``True``: step = forward + max(backward,
            allreduce) (gradients are reduced while the backward pass runs, as Horovod's
            and DDP's bucketed allreduce try to; optimistic).
        backward_fraction: the backward pass's share of ``compute_s`` (default 2/3).
        alpha_s: per-hop latency; adds ``2(n-1) * alpha_s``, the term that grows with ``n``.

    Returns:
        Seconds per step; ``compute_s`` for one worker.

    Example:
        >>> round(step_time(0.1, 100e6, 8, 50e9), 4)  # 0.1 s + 2*7/8*100 MB / 50 GB/s
        0.1035
    """
    c = checked_number("compute_s", compute_s)
    if not 0 <= backward_fraction <= 1:
        raise ValueError(f"backward_fraction must be in [0, 1], got {backward_fraction!r}")
    comm = allreduce_s(grad_bytes, n, bandwidth_bytes_per_s, alpha_s)
    if not overlap:
        return c + comm
    return c * (1 - backward_fraction) + max(c * backward_fraction, comm)


def efficiency(compute_s: float, grad_bytes: float, n: int, link: Link, overlap: bool = False) -> float:
    """Scaling efficiency ``compute_s / step_time`` on ``link`` (1.0 for one worker)."""
    return compute_s / step_time(compute_s, grad_bytes, n, link.bytes_per_s, overlap, alpha_s=link.alpha_s)


def network_link(network_gbps: float, efa: bool) -> Link:
    """The link between instances: the instance's own network bandwidth, over EFA or TCP."""
    gbps = checked_number("network_gbps", network_gbps)
    return Link("EFA" if efa else "TCP", gbps * 1e9 / 8, ALPHA_EFA_S if efa else ALPHA_TCP_S,
                f"instance network {gbps:g} Gbit/s ({'EFA' if efa else 'TCP, no EFA'})")


def link_for(gpu_type: str | None, gpus: int, network_gbps: float, efa: bool, instances: int) -> Link:
    """The slowest link a ring over ``instances`` instances of one type crosses.

    One instance: its GPU-to-GPU link (:data:`GPU_LINKS`). Several: the slower of that and
    the instance network (``network_gbps``, EFA or TCP); for a CPU type (``gpus == 0``) the
    network alone, since the cores inside one CPU instance scale as measured, not modelled.

    Raises:
        ValueError: a GPU type with no entry in :data:`GPU_LINKS`, one CPU instance, or a
            bad count.
    """
    if isinstance(instances, bool) or not isinstance(instances, int) or instances < 1:
        raise ValueError(f"instances must be an integer >= 1, got {instances!r}")
    if not gpus:
        if instances == 1:
            raise ValueError("one CPU instance has no modelled link: its cores scale as measured")
        return network_link(network_gbps, efa)
    if gpu_type not in GPU_LINKS:
        raise ValueError(f"no GPU link for GPU type {gpu_type!r} (known: {', '.join(GPU_LINKS)})")
    inside = GPU_LINKS[gpu_type]
    if instances == 1:
        return inside
    net = network_link(network_gbps, efa)
    return net if net.bytes_per_s <= inside.bytes_per_s else Link(inside.name, inside.bytes_per_s, net.alpha_s,
                                                                  inside.source)


@dataclass(frozen=True)
class InterconnectFit:
    """:func:`step_time` fitted to measured steps: ``step(bw) = step_time(compute_s, grad_bytes,
    n, eta * bw, overlap) + overhead_s``.

    Attributes:
        overlap: which form of :func:`step_time` was fitted.
        compute_s: the measured compute per step (one worker alone; not fitted).
        grad_bytes: bytes all-reduced per step (not fitted).
        n: workers in the ring.
        backward_fraction: the backward pass's share of ``compute_s``.
        eta: fitted share of the link rate the allreduce reaches (1 = the nominal rate).
        overhead_s: fitted seconds per step that no bandwidth removes (latency, negotiation,
            the workers slowing each other down on shared hardware), >= 0.
        bandwidths: the points' link rates, bytes/s.
        measured_s: the points' measured step times.
    """

    overlap: bool
    compute_s: float
    grad_bytes: float
    n: int
    backward_fraction: float
    eta: float
    overhead_s: float
    bandwidths: tuple[float, ...]
    measured_s: tuple[float, ...]

    def step_s(self, bandwidth_bytes_per_s: float) -> float:
        """The fitted step time at a link rate."""
        return self.overhead_s + step_time(self.compute_s, self.grad_bytes, self.n, self.eta * bandwidth_bytes_per_s,
                                           self.overlap, self.backward_fraction)

    def efficiency(self, bandwidth_bytes_per_s: float) -> float:
        """The fitted scaling efficiency ``compute_s / step`` at a link rate."""
        return self.compute_s / self.step_s(bandwidth_bytes_per_s)

    def comm_s(self, bandwidth_bytes_per_s: float) -> float:
        """The fitted allreduce seconds per step at a link rate (whether hidden or not)."""
        return allreduce_s(self.grad_bytes, self.n, self.eta * bandwidth_bytes_per_s)

    @property
    def rel_errors(self) -> list[float]:
        """Per point: (fitted efficiency - measured efficiency) / measured efficiency."""
        return [self.efficiency(bw) * t / self.compute_s - 1 for bw, t in zip(self.bandwidths, self.measured_s)]

    @property
    def max_abs_rel_error(self) -> float:
        """The largest |relative error| of the fitted efficiency over the points."""
        return max(abs(e) for e in self.rel_errors)

    @property
    def knee_bytes_per_s(self) -> float:
        """Link rate where the fitted communication equals the compute (:func:`knee_bandwidth`)."""
        return knee_bandwidth(self.compute_s, self.grad_bytes, self.n, self.eta)


def knee_bandwidth(compute_s: float, grad_bytes: float, n: int, eta: float = 1.0) -> float:
    """The link rate (bytes/s) at which one ring allreduce takes as long as the compute:
    ``2(n-1)/n * grad_bytes / (eta * compute_s)``.

    Above it the step is compute-bound and more bandwidth buys little; below it communication
    dominates and the step time grows as ``1 / bandwidth`` (the overlap form can hide at most
    the backward pass, so it bends at ``compute_s * backward_fraction``, a little above).
    """
    c = checked_number("compute_s", compute_s)
    e = checked_number("eta", eta)
    if isinstance(n, bool) or not isinstance(n, int) or n < 2:
        raise ValueError(f"n (workers) must be an integer >= 2 for a knee, got {n!r}")
    return 2 * (n - 1) / n * checked_number("grad_bytes", grad_bytes) / (e * c)


def fit_step_time(bandwidths: Sequence[float], step_s: Sequence[float], compute_s: float, grad_bytes: float,
                  n: int, overlap: bool = False, backward_fraction: float = BACKWARD_FRACTION,
                  eta_range: tuple[float, float] = (1e-3, 10.0)) -> InterconnectFit:
    """Fit ``eta`` and ``overhead_s`` of :class:`InterconnectFit` to measured step times.

    Least squares on the relative step-time errors (the target is relative: ±15 %): for each
    ``eta`` on a log grid over ``eta_range`` (refined twice around the best) the best
    ``overhead_s >= 0`` has a closed form (a weighted mean of the residuals, clipped at 0),
    so the search is one-dimensional and has no starting point to get wrong.

    Args:
        bandwidths: link rate of each point, bytes/s (the tc rate of a shaped profile, the
            measured rate of the unshaped link).
        step_s: measured seconds per step of the ``n``-worker run at each point.
        compute_s: seconds per step of one worker alone (the 1-worker run).
        grad_bytes: bytes all-reduced per step.
        n: workers of the measured runs (>= 2).
        overlap: fit the overlap form of :func:`step_time` instead of the serial one.
        backward_fraction: the backward pass's share of ``compute_s``.
        eta_range: the search interval of ``eta``.

    Raises:
        ValueError: fewer than two points, lengths that differ, or a non-positive value.
    """
    if len(bandwidths) != len(step_s):
        raise ValueError(f"fit_step_time: {len(bandwidths)} bandwidths but {len(step_s)} step times")
    if len(bandwidths) < 2:
        raise ValueError(f"fit_step_time: need at least 2 points (two parameters), got {len(bandwidths)}")
    bws = tuple(checked_number("bandwidth", b) for b in bandwidths)
    ys = np.array([checked_number("step_s", t) for t in step_s])
    checked_number("compute_s", compute_s)
    if isinstance(n, bool) or not isinstance(n, int) or n < 2:
        raise ValueError(f"n (workers) must be an integer >= 2 to fit communication, got {n!r}")
    lo, hi = (checked_number("eta_range", e) for e in eta_range)
    w = 1 / ys ** 2

    def best(eta: float) -> tuple[float, float]:
        m = np.array([step_time(compute_s, grad_bytes, n, eta * b, overlap, backward_fraction) for b in bws])
        o = max(0.0, float(np.sum(w * (ys - m)) / np.sum(w)))
        return float(np.sum(((m + o - ys) / ys) ** 2)), o

    grid = np.geomspace(lo, hi, 400)
    for _ in range(3):
        scores = [best(float(e))[0] for e in grid]
        k = int(np.argmin(scores))
        grid = np.geomspace(grid[max(k - 1, 0)], grid[min(k + 1, len(grid) - 1)], 200)
    eta = float(grid[int(np.argmin([best(float(e))[0] for e in grid]))])
    return InterconnectFit(overlap=overlap, compute_s=float(compute_s), grad_bytes=float(grad_bytes), n=n,
                           backward_fraction=backward_fraction, eta=eta, overhead_s=best(eta)[1], bandwidths=bws,
                           measured_s=tuple(float(t) for t in ys))


#: p5.48xlarge's network between instances: 3,200 Gbit/s of EFA (v2) per instance, 8 H100s.
#: Source: AWS, "Amazon EC2 P5 Instances" (aws.amazon.com/ec2/instance-types/p5/) and the
#: EC2 User Guide's "EFA configuration for P5 instances" (32 network cards); the same figure is
#: the ``network_gbps`` of p5.48xlarge in the price snapshot (``cost/data/prices_snapshot.json``).
P5_EFA_GBPS = 3200.0
#: The plain-TCP alternative the issue compares it with: 100 Gbit/s of ENA, no EFA (the
#: ``network_gbps`` of e.g. p4de/p5 peers without EFA enabled; an assumption, stated).
TCP_GBPS = 100.0


def carry_to_gpus(img_per_s_per_gpu: float, batch_per_gpu: int, grad_bytes: float, nodes: Sequence[int],
                  gpu_type: str = "H100", gpus_per_node: int = 8, eta: float = 1.0,
                  networks: Sequence[tuple[float, bool]] = ((P5_EFA_GBPS, True), (TCP_GBPS, False))) -> list[dict]:
    """The interconnect model on GPU nodes: scaling efficiency of ``nodes`` x ``gpus_per_node`` GPUs
    per inter-node network, with and without overlap.

    Args:
        img_per_s_per_gpu: training throughput of one GPU alone (a published figure: say which).
        batch_per_gpu: per-GPU batch; ``batch / img_per_s`` is the compute per step.
        grad_bytes: bytes all-reduced per step.
        nodes: instance counts to evaluate.
        gpu_type: a key of :data:`GPU_LINKS` (the link inside one node).
        gpus_per_node: GPUs per instance.
        eta: share of the nominal link rate the allreduce reaches (1: NCCL at line rate; a
            fitted ``eta`` from the CPU sweep would describe Gloo on one core, not NCCL).
        networks: ``(Gbit/s, efa)`` per inter-node network to compare.

    Returns:
        One row per network and node count: ``network``, ``nodes``, ``gpus``, ``link``,
        ``link_gbit_s``, ``compute_ms``, ``comm_ms``, ``comm_over_compute``, ``efficiency``
        (serial) and ``efficiency_overlap``.
    """
    compute = checked_number("batch_per_gpu", batch_per_gpu) / checked_number("img_per_s_per_gpu", img_per_s_per_gpu)
    rows = []
    for gbps, efa in networks:
        for k in nodes:
            link = link_for(gpu_type, gpus_per_node, gbps, efa, k)
            n = k * gpus_per_node
            bw = checked_number("eta", eta) * link.bytes_per_s
            comm = allreduce_s(grad_bytes, n, bw, link.alpha_s)
            rows.append({"network": f"{gbps:g} Gbit/s {'EFA' if efa else 'TCP'}", "nodes": k, "gpus": n,
                         "link": link.name, "link_gbit_s": link.bytes_per_s * 8 / 1e9, "compute_ms": 1e3 * compute,
                         "comm_ms": 1e3 * comm, "comm_over_compute": comm / compute,
                         "efficiency": compute / step_time(compute, grad_bytes, n, bw, alpha_s=link.alpha_s),
                         "efficiency_overlap": compute / step_time(compute, grad_bytes, n, bw, overlap=True,
                                                                   alpha_s=link.alpha_s)})
    return rows


def equivalent_bandwidth(comm_over_compute: float, compute_s: float, grad_bytes: float, n: int,
                         eta: float = 1.0) -> float:
    """The link rate (bytes/s) at which a run with ``compute_s`` per step and ``grad_bytes`` has the
    given communication/compute ratio: where another machine's operating point falls on this
    sweep's curve."""
    r = checked_number("comm_over_compute", comm_over_compute)
    return knee_bandwidth(compute_s, grad_bytes, n, eta) / r
