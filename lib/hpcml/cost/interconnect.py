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
assumption: the training issue fits :func:`step_time` to points measured across the
cluster's links. The no-overlap form is the conservative bound; the overlap form is
optimistic (the last gradient bucket can never overlap).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

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
