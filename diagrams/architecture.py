"""The package's layers and the pipeline's data flow, drawn from the layer contract itself.

Left: every module of ``lib/hpcml`` in the layer :mod:`hpcml.layers` assigns it (so the
picture cannot drift from the contract the tests enforce). Right: the artifacts each stage
writes and the next one reads, from the raw lake to the served model.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

LAYER_COLOUR = {"spec": "#e8f1fb", "pure": "#eaf6ec", "backend": "#fdf3e6", "app": "#f3eafb"}
FLOW = [  # (key, label, is an artifact on disk)
    ("lake", "raw lake\nbuild/data/lake/mnist/raw/*.csv", True),
    ("data", "01 data stage (Spark)\nvalidate · quarantine · split · shard", False),
    ("shards", "Parquet shards + _manifest.json\nbuild/data/mnist/", True),
    ("train", "02 training (Horovod)\nlocal · slurm · MPIJob · SageMaker · Batch", False),
    ("model", "model artifact\nbuild/runs/<job>/model.pt", True),
    ("tune", "03 tuning (Optuna)\njournal storage, parallel workers", False),
    ("best", "best model\nbuild/models/best/model.pt", True),
    ("serve", "04 serving (v2 protocol)\nONNX / TorchScript, dynamic batching", False),
    ("monitor", "05 monitoring\nPrometheus · rules · logs", False),
    ("metrics", "metrics JSON + figures\nbuild/metrics/, build/figures/", True),
    ("review", "06 cost · 07 review · the site\nbuild/site/", False),
]


def build(out: Path) -> Path:
    import graphviz

    from hpcml import layers

    g = graphviz.Digraph("architecture", format="png", graph_attr={
        "rankdir": "TB", "fontname": "Helvetica", "fontsize": "20", "dpi": "110", "nodesep": "0.08",
        "ranksep": "0.35", "label": "hpcml: layers (imports point down) and the data flow", "labelloc": "t"})
    g.attr("node", shape="box", style="rounded,filled", fontname="Helvetica", fontsize="10")
    by_layer: dict[str, list[str]] = defaultdict(list)
    for name, layer in layers.table():
        by_layer[layer or "unassigned"].append(name.removeprefix("hpcml.") or "hpcml")
    order = list(reversed(layers.ORDER))
    with g.subgraph(name="cluster_layers") as outer:
        outer.attr(label="lib/hpcml, by layer", style="dashed")
        for layer in order:
            with outer.subgraph(name=f"cluster_{layer}") as c:
                c.attr(label=f"{layer} ({len(by_layer[layer])} modules)", style="filled",
                       fillcolor=LAYER_COLOUR[layer], fontsize="14")
                names = sorted(by_layer[layer])
                rows = [", ".join(names[i:i + 3]) for i in range(0, len(names), 3)]
                c.node(f"L_{layer}", "\n".join(rows), shape="note", fillcolor="white")
    for upper, lower in zip(order, order[1:]):
        g.edge(f"L_{upper}", f"L_{lower}", label="imports", fontsize="9")
    with g.subgraph(name="cluster_flow") as f:
        f.attr(label="data flow: what each stage writes and the next reads", style="dashed")
        for key, label, artifact in FLOW:
            f.node(f"F_{key}", label, shape="cylinder" if artifact else "box",
                   fillcolor="#ffffff" if artifact else "#dde7f3")
        for (a, *_), (b, *_) in zip(FLOW, FLOW[1:]):
            f.edge(f"F_{a}", f"F_{b}")
    out = Path(out)
    g.render(filename=out.stem, directory=str(out.parent), cleanup=True)
    return out
