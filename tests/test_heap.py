"""hpcml.train.heap: keeping freed memory in the process (glibc's mmap/trim thresholds)."""

from __future__ import annotations

import os

import pytest

from hpcml.train import heap


@pytest.mark.unit
@pytest.mark.parametrize("bad", [0, -1, 2**31, 1.5e9])
def test_keep_refuses_a_threshold_mallopt_cannot_take(bad):
    with pytest.raises(ValueError, match="threshold_bytes"):
        heap.keep(bad)


@pytest.mark.unit
def test_summary_ratios():
    def run(step, flt, rss, applied=True):
        return {"step_s": [step, step], "minflt_per_step": flt, "system_s_per_step": 0.1, "maxrss_mib": rss,
                "applied": applied}
    s = heap.summary([{"default": run(4.0, 1000.0, 100.0), "kept": run(3.2, 100.0, 150.0)},
                      {"default": run(4.4, 1200.0, 110.0), "kept": run(4.0, 0.0, 140.0)}])
    assert s["speedup"] == pytest.approx(4.2 / 3.6)
    assert s["speedup_per_round"] == pytest.approx([1.25, 1.1])
    assert s["fault_ratio"] == pytest.approx(1100.0 / 50.0)
    assert s["rss_growth_mib"] == pytest.approx(40.0)
    assert s["applied"] is True


@pytest.mark.unit
def test_the_arms_swap_cores_every_round():
    assert [heap.arm_cores([3, 5, 7], r) for r in range(3)] == [(3, 5), (5, 3), (3, 5)]


@pytest.mark.unit
def test_compare_rejects_bad_sizes():
    with pytest.raises(ValueError, match="steps must be an integer >= 1"):
        heap.compare(steps=0)


@pytest.mark.integration
def test_compare_keeps_the_pages_a_real_step_would_fault_in_again():
    # ResNet-18 at 224 px, batch 16: the first activations (51 MB) are above glibc's 32 MiB
    # mmap-threshold ceiling, so with its defaults every step maps and faults them in anew
    res = heap.compare(arch="resnet18", image_size=224, batch_size=16, steps=2, rounds=1)
    (r,) = res["rounds"]
    assert (r["default"]["core"], r["kept"]["core"]) == heap.arm_cores(sorted(os.sched_getaffinity(0)), 0)
    s = res["summary"]
    assert s["applied"] is True and not r["default"]["applied"]
    # without keep() the ratio is about 1. Measured: 4.6-6.1 over 2 steps (5 runs). One step gave
    # 4.3-8.9 here but 2.45 once in a loaded CI run, so this checks the 2-step mean against 2.
    assert s["fault_ratio"] > 2, s
    assert s["kept"]["system_s_per_step"] < s["default"]["system_s_per_step"], s
