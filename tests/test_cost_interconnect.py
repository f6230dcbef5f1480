"""The interconnect model of multi-GPU scaling (hpcml.cost.interconnect), table-style."""

import math

import pytest

from hpcml.cost import interconnect as ic

pytestmark = pytest.mark.unit

B = 100e6  # gradient bytes


@pytest.mark.parametrize("compute,grad,n,bw,overlap,alpha,expected", [
    (0.1, B, 1, 1e9, False, 0.0, 0.1),                                   # one worker: no communication
    (0.1, B, 2, 50e9, False, 0.0, 0.1 + 2 * 1 / 2 * B / 50e9),            # 2(n-1)/n = 1
    (0.1, B, 8, 50e9, False, 0.0, 0.1 + 2 * 7 / 8 * B / 50e9),
    (0.1, B, 64, 50e9, False, 0.0, 0.1 + 2 * 63 / 64 * B / 50e9),         # bandwidth term ~flat in n
    (0.1, B, 64, 50e9, False, 15e-6, 0.1 + 2 * 63 / 64 * B / 50e9 + 2 * 63 * 15e-6),  # latency grows with n
    (0.3, B, 8, 3.125e9, True, 0.0, 0.1 + max(0.2, 2 * 7 / 8 * B / 3.125e9)),  # overlap: fwd + max(bwd, comm)
    (0.3, B, 8, 50e9, True, 0.0, 0.3),                                    # comm hidden under backward
    (0.3, 0.0, 8, 50e9, False, 0.0, 0.3),                                 # nothing to reduce
], ids=["one", "two", "eight", "sixty-four", "latency", "overlap-comm-bound", "overlap-hidden", "no-grads"])
def test_step_time(compute, grad, n, bw, overlap, alpha, expected):
    assert ic.step_time(compute, grad, n, bw, overlap=overlap, alpha_s=alpha) == pytest.approx(expected)


@pytest.mark.parametrize("frac", [0.0, 0.5, 2 / 3, 1.0])
def test_overlap_bounds(frac):
    """Overlap is never slower than none, never faster than compute alone."""
    for bw in (1e8, 1e9, 1e10, 1e12):
        no = ic.step_time(0.2, B, 8, bw)
        ov = ic.step_time(0.2, B, 8, bw, overlap=True, backward_fraction=frac)
        assert 0.2 <= ov <= no + 1e-12


def test_backward_fraction_is_two_thirds():
    assert ic.BACKWARD_FRACTION == pytest.approx(2 / 3)


@pytest.mark.parametrize("args,msg", [
    ((0.0, B, 2, 1e9), "compute_s must be > 0"),
    ((0.1, -1.0, 2, 1e9), "grad_bytes must be >= 0"),
    ((0.1, B, 0, 1e9), "n .workers. must be an integer >= 1"),
    ((0.1, B, 2.5, 1e9), "n .workers. must be an integer >= 1"),
    ((0.1, B, 2, 0.0), "bandwidth_bytes_per_s must be > 0"),
    ((0.1, B, 2, math.nan), "bandwidth_bytes_per_s must be a finite number"),
], ids=["compute", "grad", "zero-n", "fraction-n", "bandwidth", "nan"])
def test_bad_input_names_the_argument(args, msg):
    with pytest.raises(ValueError, match=msg):
        ic.step_time(*args)


def test_backward_fraction_range():
    with pytest.raises(ValueError, match="backward_fraction"):
        ic.step_time(0.1, B, 2, 1e9, overlap=True, backward_fraction=1.5)


@pytest.mark.parametrize("gpu,gpus,gbps,efa,k,name,bytes_per_s", [
    ("V100", 8, 25, False, 1, "NVLink 2.0", 150e9),
    ("V100", 8, 25, False, 2, "TCP", 25e9 / 8),
    ("A100", 8, 400, True, 1, "NVSwitch (NVLink 3)", 300e9),
    ("A100", 8, 400, True, 4, "EFA", 50e9),
    ("H100", 8, 3200, True, 1, "NVSwitch (NVLink 4)", 450e9),
    ("H100", 8, 3200, True, 2, "EFA", 400e9),
    ("T4", 4, 50, True, 1, "PCIe Gen3 x16", 15.75e9),
    ("T4", 4, 400, True, 2, "PCIe Gen3 x16", 15.75e9),  # network faster than PCIe: PCIe is the slowest link
    (None, 0, 50, True, 2, "EFA", 50e9 / 8),
], ids=["p3-inside", "p3-across", "p4d-inside", "p4d-across", "p5-inside", "p5-across", "g4dn-inside",
        "pcie-slower-than-net", "cpu-across"])
def test_link_for(gpu, gpus, gbps, efa, k, name, bytes_per_s):
    link = ic.link_for(gpu, gpus, gbps, efa, k)
    assert (link.name, link.bytes_per_s) == (name, pytest.approx(bytes_per_s))
    if k > 1:
        assert link.alpha_s == (ic.ALPHA_EFA_S if efa else ic.ALPHA_TCP_S)


def test_link_for_refuses_what_it_does_not_model():
    with pytest.raises(ValueError, match="no GPU link for GPU type 'TPU'"):
        ic.link_for("TPU", 4, 100, True, 1)
    with pytest.raises(ValueError, match="one CPU instance"):
        ic.link_for(None, 0, 100, True, 1)


def test_p3_16xlarge_and_p5_scale_differently_across_instances():
    """The same job (ResNet-50 gradients, 256 images per GPU) on 8 instances: TCP at 25 Gbit/s
    costs a quarter of the step, EFA at 3,200 Gbit/s almost nothing."""
    grads = 25_557_032 * 4
    p3 = ic.efficiency(256 / 1200, grads, 64, ic.link_for("V100", 8, 25, False, 8))
    p5 = ic.efficiency(256 / 5000, grads, 64, ic.link_for("H100", 8, 3200, True, 8))
    assert p3 < 0.8 < 0.95 < p5
