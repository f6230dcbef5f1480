"""The latency/throughput chart of notebook 04 (hpcml.serve.plots) from hand-made load results."""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pytest

from hpcml.serve import plots
from hpcml.serve.loadgen import LoadResult

pytestmark = pytest.mark.unit


def _result(c, ok, p99):
    return LoadResult("closed", c, None, ok, ok, {}, 1.0, np.full(100, p99))


def test_latency_throughput_two_curves_and_the_objective():
    curves = {"dynamic batching": [_result(1, 100, 2.0), _result(4, 300, 5.0)],
              "batch size 1": [_result(1, 90, 2.5), _result(4, 120, 20.0)]}
    fig = plots.latency_throughput([1, 4], curves)
    a1, a2 = fig.axes
    assert [list(line.get_ydata()) for line in a1.get_lines()] == [[100.0, 300.0], [90.0, 120.0]]
    assert [list(line.get_ydata()) for line in a2.get_lines()][:2] == [[2.0, 5.0], [2.5, 20.0]]
    assert list(a2.get_lines()[2].get_ydata()) == [50.0, 50.0]
    assert [t.get_text() for t in a2.get_legend().get_texts()] == ["dynamic batching", "batch size 1", "50 ms objective"]
    assert [t.get_text() for t in a1.get_legend().get_texts()] == ["dynamic batching", "batch size 1"]
    assert (a1.get_xscale(), a2.get_xscale(), a2.get_yscale()) == ("log", "log", "log")
    assert (a1.get_title(), a2.get_title(), a2.get_ylabel()) == ("throughput", "p99 latency", "p99 latency (ms)")
    plt.close("all")
