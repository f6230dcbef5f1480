"""The training charts (hpcml.train.plots): the A/B block chart of notebooks 02 and 05 and the
per-rank and step-split charts of 02, drawn from hand-made results."""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd
import pytest
from matplotlib.colors import to_hex

from hpcml.train import plots

pytestmark = pytest.mark.unit

BLOCKS = [{"block": 1, "on": False, "sum_s": 0.4, "steps": 4}, {"block": 2, "on": True, "sum_s": 0.5, "steps": 4},
          {"block": 3, "on": True, "sum_s": 0.6, "steps": 4}, {"block": 4, "on": False, "sum_s": 0.2, "steps": 2}]


def test_block_chart_bars_colours_and_labels():
    fig = plots.block_chart(BLOCKS, 4, "exporter on", "off", "exporter A/B", figsize=(7, 2.6))
    ax = fig.axes[0]
    bars = ax.patches
    assert [b.get_x() + b.get_width() / 2 for b in bars] == [1, 2, 3, 4]
    assert [round(b.get_height(), 6) for b in bars] == [100.0, 125.0, 150.0, 100.0]
    c0, c1 = (to_hex(plt.rcParams["axes.prop_cycle"].by_key()["color"][i]) for i in (0, 1))
    assert [to_hex(b.get_facecolor()) for b in bars] == [c0, c1, c1, c0]
    assert ax.get_xlabel() == "block of 4 steps (orange: exporter on, blue: off)"
    assert ax.get_ylabel() == "mean step (ms)" and ax.get_title() == "exporter A/B"
    assert tuple(fig.get_size_inches()) == (7, 2.6)
    assert tuple(plots.block_chart(BLOCKS, 4, "Horovod", "plain PyTorch", "t").get_size_inches()) == (7, 2.4)
    plt.close("all")


def test_per_rank_chart_one_colour_per_run_in_order():
    per_rank = pd.DataFrame([dict(run="b", rank=0, img_per_s=5.0, conf95=0.5), dict(run="b", rank=1, img_per_s=6.0, conf95=0.1),
                             dict(run="a", rank=0, img_per_s=7.0, conf95=0.2)])
    ax = plots.per_rank_chart(per_rank, "title").axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["b\n#0", "b\n#1", "a\n#0"]
    assert [b.get_height() for b in ax.patches] == [5.0, 6.0, 7.0]
    assert len({to_hex(b.get_facecolor()) for b in ax.patches[:2]}) == 1
    assert to_hex(ax.patches[0].get_facecolor()) != to_hex(ax.patches[2].get_facecolor())
    assert ax.get_title() == "title" and ax.get_ylabel() == "img/s per worker"
    plt.close("all")


def test_split_chart_stacks_phases_in_order():
    ax = plots.split_chart({"data": 0.1, "compute": 0.6, "allreduce": 0.3}).axes[0]
    assert [(round(b.get_x(), 6), round(b.get_width(), 6)) for b in ax.patches] == [(0.0, 0.1), (0.1, 0.6), (0.7, 0.3)]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["data", "compute", "allreduce"]
    assert ax.get_xlabel() == "fraction of step time"
    plt.close("all")
