"""The measured inputs of the cost review, read from the stages' recorded metrics.

Nothing is retyped: every number comes from :func:`hpcml.report.value`, and a missing
stage raises :class:`hpcml.report.MissingMetricsError` naming the notebook to run first.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hpcml import report
from hpcml.cost.models import Basis, scaling_efficiency
from hpcml.train.spec import TrainSpec

#: Metrics this module reads, per upstream notebook (the lead checks the names exist).
READS: dict[str, tuple[str, ...]] = {
    "00_cluster_setup": ("node_cpus",),
    "01_spark_preprocessing": ("dataset_rows_clean",),
    "02_horovod_training": ("train_samples_per_s", "scaling_efficiency", "resnet50_img_per_s_per_worker"),
    "04_serving": ("max_rps_at_p99_50ms",),
}
#: The parameter of 02 that holds the number of workers behind ``train_samples_per_s``: the
#: notebook's ``TrainSpec.world_size``, recorded among its params under that field's name.
WORLD_SIZE_PARAM = TrainSpec.__dataclass_fields__["world_size"].name
#: Bytes of one MNIST row in the shards: 784 float32 pixels + an int32 label.
BYTES_PER_ROW = 784 * 4 + 4


@dataclass(frozen=True)
class Measured:
    """The upstream numbers, with where each came from."""

    node_cpus: int
    dataset_rows: int
    cnn_samples_per_s: float
    cnn_workers: int
    scaling_efficiency_2: float
    resnet50_img_s_per_worker: float
    serve_max_rps: float
    provenance: list[dict[str, Any]] = field(default_factory=list)

    def cnn_basis(self) -> Basis:
        """Per-core CNN throughput: all-worker samples/s / (workers x modelled efficiency)."""
        eff = scaling_efficiency(self.cnn_workers, self.scaling_efficiency_2)
        return Basis(self.cnn_samples_per_s / (self.cnn_workers * eff), self.scaling_efficiency_2,
                     self.resnet50_img_s_per_worker)

    def resnet50_basis(self) -> Basis:
        """Per-core ResNet-50 throughput: one CPU worker (1 thread) of 02's synthetic benchmark."""
        return Basis(self.resnet50_img_s_per_worker, self.scaling_efficiency_2, self.resnet50_img_s_per_worker)

    @property
    def dataset_gb(self) -> float:
        return self.dataset_rows * BYTES_PER_ROW / 1e9


def _get(notebook: str, name: str, prov: list) -> Any:
    data = report.load(notebook)
    val = report.value(notebook, name)
    if val is None:
        raise report.MissingMetricsError(f"{notebook} recorded {name!r} as empty: re-run notebooks/{notebook}.ipynb")
    unit = data["metrics"][name].get("unit", "")
    prov.append({"notebook": notebook, "metric": name, "value": val, "unit": unit})
    return val


def world_size(notebook: str = "02_horovod_training") -> int:
    """Workers behind 02's all-worker throughput: its recorded :data:`WORLD_SIZE_PARAM` parameter."""
    params = report.load(notebook).get("params", {})
    n = params.get(WORLD_SIZE_PARAM)
    if isinstance(n, int) and not isinstance(n, bool) and n >= 1:
        return n
    raise report.MissingMetricsError(
        f"{notebook} recorded no worker count: params.{WORLD_SIZE_PARAM} is {n!r} (expected an integer >= 1); "
        f"recorded params: {', '.join(sorted(params)) or 'none'} - re-run notebooks/{notebook}.ipynb")


def read() -> Measured:
    """Read every upstream number the cost review needs (clear error if a stage is missing)."""
    prov: list[dict[str, Any]] = []
    g = lambda nb, name: _get(nb, name, prov)  # noqa: E731
    m = Measured(
        node_cpus=int(g("00_cluster_setup", "node_cpus")),
        dataset_rows=int(g("01_spark_preprocessing", "dataset_rows_clean")),
        cnn_samples_per_s=float(g("02_horovod_training", "train_samples_per_s")),
        cnn_workers=world_size(),
        scaling_efficiency_2=float(g("02_horovod_training", "scaling_efficiency")),
        resnet50_img_s_per_worker=float(g("02_horovod_training", "resnet50_img_per_s_per_worker")),
        serve_max_rps=float(g("04_serving", "max_rps_at_p99_50ms")),
        provenance=prov,
    )
    prov.append({"notebook": "02_horovod_training", "metric": f"params.{WORLD_SIZE_PARAM}", "value": m.cnn_workers,
                 "unit": "workers"})
    return m
