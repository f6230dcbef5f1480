"""The allreduce micro-benchmark: its maths (unit) and one small run across the cluster's nodes.

Run the node test on a cluster of your own: ``HPCML_TEST_CLUSTER=<name> pytest tests/test_allreduce.py``.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from hpcml.proc import cmdlines
from hpcml.train import allreduce_stats as st

MiB = 2**20


# ---- sizes -------------------------------------------------------------------------------------
@pytest.mark.unit
@pytest.mark.parametrize("text, expected", [
    ("4096", 4096), (4096, 4096), ("4KiB", 4096), ("4k", 4096), ("16MiB", 16 * MiB), (" 1 GiB ", 2**30),
    ("128mib", 128 * MiB), ("8B", 8),
])
def test_parse_size(text, expected):
    assert st.parse_size(text) == expected


@pytest.mark.unit
@pytest.mark.parametrize("text, words", [
    ("4kb", "such as '4KiB'"), ("4 MB", "such as '4KiB'"), ("abc", "such as '4KiB'"), ("-4", "such as '4KiB'"),
    ("3", "multiple of 4 bytes"), ("0", "multiple of 4 bytes"), (6, "multiple of 4 bytes"), (True, "such as"),
])
def test_parse_size_rejects_bad_input_naming_what_is_expected(text, words):
    with pytest.raises(ValueError, match="message size") as e:
        st.parse_size(text)
    assert words in str(e.value) and repr(text) in str(e.value)


@pytest.mark.unit
def test_parse_sizes_ranges_and_lists():
    assert st.parse_sizes(st.DEFAULT_SIZES) == [4096 * 4**k for k in range(8)] + [128 * MiB]
    x2 = st.parse_sizes("4KiB..128MiB:x2")
    assert x2[0] == 4096 and x2[-1] == 128 * MiB and len(x2) == 16
    assert st.parse_sizes("16MiB,4KiB, 4096") == [4096, 16 * MiB]  # sorted, no repeats
    assert st.parse_sizes(["64KiB", 16 * MiB]) == [65536, 16 * MiB]
    assert st.parse_sizes("1MiB..1MiB") == [MiB]


@pytest.mark.unit
@pytest.mark.parametrize("text, words", [
    ("16MiB..4KiB", "starts above its end"), ("4KiB..1MiB:x3", "':x2' or ':x4'"), ("", "at least one size"),
    (" , ", "at least one size"), ("4KiB,7", "multiple of 4"),
])
def test_parse_sizes_rejects_bad_input(text, words):
    with pytest.raises(ValueError, match="message size") as e:
        st.parse_sizes(text)
    assert words in str(e.value)


@pytest.mark.unit
def test_size_label():
    assert [st.size_label(n) for n in (4096, 16 * MiB, 2**30, 1000, 6 * 2**10)] == \
        ["4 KiB", "16 MiB", "1 GiB", "1000 B", "6 KiB"]


# ---- bandwidth maths -----------------------------------------------------------------------------
@pytest.mark.unit
@pytest.mark.parametrize("ranks, factor", [(1, 0.0), (2, 1.0), (4, 1.5), (8, 1.75)])
def test_bus_factor_is_nccl_tests_2_n_minus_1_over_n(ranks, factor):
    assert st.bus_factor(ranks) == pytest.approx(factor)


@pytest.mark.unit
@pytest.mark.parametrize("ranks", [0, -1, 2.0, True, None])
def test_bus_factor_rejects_bad_rank_counts(ranks):
    with pytest.raises(ValueError, match="ranks: expected an integer >= 1"):
        st.bus_factor(ranks)


@pytest.mark.unit
def test_algbw_and_busbw():
    # 16 MiB through a perfect 1 Gbit/s ring of 2 ranks takes 8 x 16 MiB / 1e9 s: busbw = the link
    t = 8 * 16 * MiB / 1e9
    assert st.algbw(16 * MiB, t) == pytest.approx(1e9)
    assert st.busbw(16 * MiB, t, 2) == pytest.approx(1e9)
    assert st.busbw(16 * MiB, t, 4) == pytest.approx(1.5e9)  # 4 ranks move 1.5 x S per rank
    with pytest.raises(ValueError, match="positive size and time"):
        st.algbw(16 * MiB, 0.0)


@pytest.mark.unit
def test_median_interval_order_statistics():
    med, lo, hi, cov = st.median_interval([9.0, 1, 8, 2, 7, 3, 6, 4, 5, 0])  # 0..9 shuffled
    assert (med, lo, hi) == (4.5, 1.0, 8.0)  # x_(2), x_(9) of 10
    assert cov == pytest.approx(1 - 2 * 11 / 1024)
    med, lo, hi, cov = st.median_interval([5.0, 1, 3, 2, 4])  # 5 reps cannot reach 95 %: [min, max]
    assert (med, lo, hi) == (3.0, 1.0, 5.0) and cov == pytest.approx(0.9375)
    assert st.median_interval([100.0] + [1.0] * 19)[2] == 1.0  # one slow rep moves nothing
    with pytest.raises(ValueError, match="no values"):
        st.median_interval([])


@pytest.mark.unit
def test_collective_times_take_the_slowest_rank_per_rep():
    assert st.collective_times([[1.0, 5.0, 2.0], [2.0, 1.0, 2.5]]) == [2.0, 5.0, 2.5]
    with pytest.raises(ValueError, match="same number"):
        st.collective_times([[1.0, 2.0], [1.0]])
    with pytest.raises(ValueError, match="same number"):
        st.collective_times([])


def _df(rows):
    import pandas as pd

    return pd.DataFrame(rows)


def _row(tool, profile, rate, size, seconds):
    return st.summarise(tool, profile, rate, 2, size, list(seconds))


@pytest.mark.unit
def test_summarise_puts_the_interval_on_the_bandwidths():
    r = _row("mpi", "1gbit", 1e9, 16 * MiB, [0.15, 0.16, 0.14, 0.2, 0.15, 0.15, 0.17, 0.16, 0.15, 0.5])
    assert r["size"] == "16 MiB" and r["reps"] == 10 and r["link_gbit"] == 1.0
    assert r["busbw_gbit"] == pytest.approx(8 * 16 * MiB / 0.155 / 1e9)
    assert r["busbw_lo_gbit"] == pytest.approx(8 * 16 * MiB / r["time_hi_s"] / 1e9)  # slow end of time -> low busbw
    assert r["busbw_lo_gbit"] < r["busbw_gbit"] < r["busbw_hi_gbit"]
    assert r["busbw_lo_frac_link"] == pytest.approx(r["busbw_lo_gbit"])
    assert _row("mpi", "unshaped", None, MiB, [0.001])["busbw_frac_link"] is None


@pytest.mark.unit
def test_target_applies_to_shaped_profiles_up_to_1gbit():
    assert [st.target_applies(r) for r in (None, 1e8, 1e9, 1e10)] == [False, True, True, False]


@pytest.mark.unit
def test_metrics_name_every_tool_and_profile():
    fast, slow = 8 * 16 * MiB / 0.95e9, 8 * 16 * MiB / 0.5e9
    df = _df([_row(t, p, rate, size, [sec] * 6)
              for p, rate in (("unshaped", None), ("1gbit", 1e9))
              for t, sec in (("horovod", slow), ("torch", fast))
              for size in (4096, 16 * MiB)] + [_row("mpi", "1gbit", 1e9, 4 * MiB, [0.05] * 6)])
    m = {x.name: x.value for x in st.metrics(df)}
    assert m["allreduce_ranks"] == 2 and m["allreduce_largest_bytes"] == 16 * MiB
    assert m["allreduce_torch_1gbit_link_frac_lo"] == pytest.approx(0.95)
    assert m["allreduce_horovod_1gbit_link_frac_lo"] == pytest.approx(0.5)
    assert m["allreduce_horovod_vs_torch_1gbit_time_ratio"] == pytest.approx(1.9)
    assert "allreduce_torch_unshaped_link_frac_lo" not in m  # no link rate to compare with
    assert "allreduce_mpi_1gbit_link_frac_lo" not in m  # no message >= 16 MiB measured
    assert m["allreduce_mpi_1gbit_small_us"] == pytest.approx(5e4)
    assert m["allreduce_best_1gbit_tool"] == "torch" and m["allreduce_best_1gbit_link_frac_lo"] == pytest.approx(0.95)
    assert m["allreduce_best_unshaped_busbw_gbit"] == pytest.approx(0.95)
    assert all(isinstance(v, (int, float)) and math.isfinite(v) for k, v in m.items() if not k.endswith("_tool"))
    assert {(v["profile"], v["tool"], v["verdict"]) for v in st.verdicts(df)} == {
        ("1gbit", "torch", "met"), ("1gbit", "horovod", "missed")}  # mpi: no message >= 16 MiB; unshaped: no target
    assert {"link", "tool", "size", "busbw Gbit/s"} <= set(st.table(df).columns)
    fig = st.plot(df)
    assert len(fig.axes) == 2 and fig.axes[1].get_title().startswith("link: 1gbit")


@pytest.mark.unit
def test_driver_rejects_bad_input():
    from hpcml.train import allreduce as ar

    with pytest.raises(ValueError, match=r"expected some of \['horovod', 'torch', 'mpi'\], got \['nccl'\]"):
        ar.check_tools(["nccl"])
    with pytest.raises(ValueError, match="need the multi-node cluster"):
        ar.run(None, profiles=["1gbit"], tools=["mpi"])
    with pytest.raises(ValueError, match="LocalClusterSpec.bandwidth"):
        ar.run(None, profiles=["fast"], tools=["mpi"])
    with pytest.raises(ValueError, match="reps >= 1"):
        ar.run_tool("mpi", [4096], Path("/nonexistent"), reps=0)


# ---- real runs -----------------------------------------------------------------------------------
def _leftover(marker: str) -> list[str]:
    return list(cmdlines(marker).values())


@pytest.mark.integration
def test_open_mpi_on_loopback(tmp_path):
    from hpcml.train import allreduce as ar

    recs = ar.run_tool("mpi", [4096, MiB], tmp_path / "mpi", None, warmup=1, reps=3, timeout_s=60)
    assert sorted(r["rank"] for r in recs) == [0, 1] and all(len(r["times"][str(MiB)]) == 3 for r in recs)
    rows = ar.rows(recs, "unshaped", None)
    assert [r["size_bytes"] for r in rows] == [4096, MiB] and all(r["busbw_gbit"] > 0 for r in rows)


@pytest.mark.integration
def test_a_run_past_its_timeout_names_the_node_and_leaves_nothing(mcluster, tmp_path):
    from hpcml.train import allreduce as ar

    out = tmp_path / "slow"
    with pytest.raises(ar.AllreduceError, match=rf"mpi allreduce: the launcher on {mcluster.plan.nodes[0].name} ran past"):
        ar.run(mcluster, profiles=["100mbit"], sizes="64MiB", tools=["mpi"], reps=5, timeout_s=3, out_dir=out)
    assert mcluster.spec.bandwidth == "unshaped"  # restored on error too
    assert not _leftover(str(out.resolve()))


@pytest.mark.unit
def test_a_collective_that_does_not_sum_fails_instead_of_reporting_a_time():
    """The worker checks every size's result: a 'collective' that moves nothing is caught."""
    import numpy as np

    from hpcml.train.allreduce_worker import _Tool, measure

    t = _Tool()
    t.rank, t.size, t.barrier, t.finish = 0, 2, lambda: None, lambda: None
    t.make = lambda n: np.ones(n, dtype=np.float32)
    t.allreduce = lambda buf: None  # two ranks' sum would be 2 everywhere
    with pytest.raises(RuntimeError, match="expected 2 everywhere"):
        measure(t, [4096], warmup=0, reps=2)
    t.allreduce = lambda buf: buf.__imul__(2)  # what a 2-rank sum of ones gives
    times = measure(t, [4096, 65536], warmup=1, reps=3)
    assert sorted(times) == ["4096", "65536"] and all(len(v) == 3 and min(v) >= 0 for v in times.values())
