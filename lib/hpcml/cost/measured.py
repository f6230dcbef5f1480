"""The measured inputs of the cost review, read from the stages' recorded metrics.

Nothing is retyped: every number comes from :func:`hpcml.report.value` (or a recorded
parameter of the run that measured it), and a missing stage raises
:class:`hpcml.report.MissingMetricsError` naming the notebook to run first. Where a
measurement is carried to another size, the projection is computed here from the project's
own models (counted FLOPs, parameter counts) and says so in the provenance.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any

from hpcml import report
from hpcml.cost.interconnect import GRAD_BYTES_PER_PARAM
from hpcml.cost.models import Basis, scaling_efficiency
from hpcml.train.spec import TrainSpec

#: Metrics this module reads, per upstream notebook (the lead checks the names exist).
READS: dict[str, tuple[str, ...]] = {
    "00_cluster_setup": ("node_cpus",),
    "01_spark_preprocessing": ("dataset_rows_clean",),
    "02_horovod_training": ("train_samples_per_s", "scaling_efficiency", "resnet50_img_per_s_per_worker",
                            "checkpoint_projection_resnet50_s"),
    "04_serving": ("max_rps_at_p99_50ms", "max_rps_at_p99_50ms_is_lower_bound", "encoding_rps"),
}
#: Parameters of 02 this module reads (recorded by ``report.begin``).
READS_PARAMS: dict[str, tuple[str, ...]] = {
    "02_horovod_training": ("world_size", "bench_image_size", "width", "batch_size")}
#: The parameter of 02 that holds the number of workers behind ``train_samples_per_s``: the
#: notebook's ``TrainSpec.world_size``, recorded among its params under that field's name.
WORLD_SIZE_PARAM = TrainSpec.__dataclass_fields__["world_size"].name
#: The parameter of 02 that holds the image side of its ResNet-50 synthetic benchmark.
IMAGE_SIZE_PARAM = "bench_image_size"
#: The image side of the projected ImageNet workload.
WORKLOAD_IMAGE_SIZE = 224
#: Bytes of one MNIST row in the shards: 784 float32 pixels + an int32 label.
BYTES_PER_ROW = 784 * 4 + 4


@functools.lru_cache(maxsize=8)
def resnet50_train_flops(image_size: int) -> float:
    """Training FLOPs (forward + backward) of one ResNet-50 image at ``image_size`` px, counted
    by torch's ``FlopCounterMode`` on the project's own model, as
    :func:`hpcml.train.models.train_flops_per_sample` counts them, but on the meta device
    (shapes only: the same count in a fraction of the time)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from hpcml.train.models import make_model

    with torch.device("meta"):
        model = make_model("resnet50")
        x = torch.empty(1, 3, image_size, image_size)
    model.train()
    with FlopCounterMode(display=False) as fc:
        model(x).float().sum().backward()
    return float(fc.get_total_flops())


@functools.lru_cache(maxsize=8)
def param_count(arch: str, **kw: Any) -> int:
    """Parameters of the project's model ``arch`` (:func:`hpcml.train.models.make_model`)."""
    import torch

    from hpcml.train.models import make_model

    with torch.device("meta"):
        return sum(p.numel() for p in make_model(arch, **kw).parameters())


def grad_bytes(arch: str, **kw: Any) -> float:
    """Bytes all-reduced per step: the model's parameters as float32 gradients."""
    return float(param_count(arch, **kw) * GRAD_BYTES_PER_PARAM)


@dataclass(frozen=True)
class Measured:
    """The upstream numbers, with where each came from.

    ``resnet50_img_s_per_worker`` is what 02 measured, at ``resnet50_measured_px``;
    ``resnet50_img_s_224`` is the same worker at the workload's 224 px: the measurement itself
    when 02 ran at 224 px, else scaled by the ratio of counted training FLOPs
    (``resnet50_projection`` says which).
    """

    node_cpus: int
    dataset_rows: int
    cnn_samples_per_s: float
    cnn_workers: int
    scaling_efficiency_2: float
    resnet50_img_s_per_worker: float
    resnet50_measured_px: int
    resnet50_img_s_224: float
    resnet50_projection: str
    serve_max_rps: float
    serve_rps_is_lower_bound: bool
    serve_encoding: str
    provenance: list[dict[str, Any]] = field(default_factory=list)

    def cnn_basis(self, width: int, batch_per_worker: int, overlap: bool = False) -> Basis:
        """Per-core CNN throughput: all-worker samples/s / (workers x modelled efficiency)."""
        eff = scaling_efficiency(self.cnn_workers, self.scaling_efficiency_2)
        return Basis(self.cnn_samples_per_s / (self.cnn_workers * eff), self.scaling_efficiency_2,
                     self.resnet50_img_s_224, grad_bytes=grad_bytes("cnn", width=width),
                     batch_per_worker=batch_per_worker, overlap=overlap)

    def resnet50_basis(self, batch_per_worker: int, overlap: bool = False) -> Basis:
        """Per-core ResNet-50 throughput at 224 px: one CPU worker (1 thread) of 02's synthetic
        benchmark, projected to 224 px where it ran smaller; ResNet-50's float32 gradients."""
        return Basis(self.resnet50_img_s_224, self.scaling_efficiency_2, self.resnet50_img_s_224,
                     grad_bytes=grad_bytes("resnet50"), batch_per_worker=batch_per_worker, overlap=overlap)

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


def _int_param(notebook: str, name: str) -> int:
    params = report.load(notebook).get("params", {})
    n = params.get(name)
    if isinstance(n, int) and not isinstance(n, bool) and n >= 1:
        return n
    raise report.MissingMetricsError(
        f"{notebook} recorded no {name}: params.{name} is {n!r} (expected an integer >= 1); "
        f"recorded params: {', '.join(sorted(params)) or 'none'} - re-run notebooks/{notebook}.ipynb")


def world_size(notebook: str = "02_horovod_training") -> int:
    """Workers behind 02's all-worker throughput: its recorded :data:`WORLD_SIZE_PARAM` parameter."""
    return _int_param(notebook, WORLD_SIZE_PARAM)


def image_size(notebook: str = "02_horovod_training") -> int:
    """The image side 02's ResNet-50 benchmark ran at: its recorded :data:`IMAGE_SIZE_PARAM`."""
    return _int_param(notebook, IMAGE_SIZE_PARAM)


def cnn_shape(notebook: str = "02_horovod_training") -> tuple[int, int]:
    """The CNN 02 trained: its recorded ``width`` and per-worker ``batch_size`` parameters."""
    return _int_param(notebook, "width"), _int_param(notebook, "batch_size")


def project_to_224(img_s: float, measured_px: int) -> tuple[float, str]:
    """``img_s`` measured at ``measured_px`` carried to :data:`WORKLOAD_IMAGE_SIZE` px, and how.

    At 224 px the measurement stands. Otherwise per-image time is taken to grow with the
    training FLOPs counted on the project's ResNet-50 at both sizes (close to (224/px)^2 for
    a conv net; the classifier's FLOPs do not grow).
    """
    if measured_px == WORKLOAD_IMAGE_SIZE:
        return img_s, f"measured at {WORKLOAD_IMAGE_SIZE} px by 02"
    ratio = resnet50_train_flops(WORKLOAD_IMAGE_SIZE) / resnet50_train_flops(measured_px)
    return img_s / ratio, (f"scaled from 02's {measured_px} px measurement by counted training FLOPs "
                           f"({WORKLOAD_IMAGE_SIZE} px / {measured_px} px = {ratio:.2f}x per image)")


def read() -> Measured:
    """Read every upstream number the cost review needs (clear error if a stage is missing)."""
    prov: list[dict[str, Any]] = []
    g = lambda nb, name: _get(nb, name, prov)  # noqa: E731
    r50 = float(g("02_horovod_training", "resnet50_img_per_s_per_worker"))
    px = image_size()
    r50_224, how = project_to_224(r50, px)
    m = Measured(
        node_cpus=int(g("00_cluster_setup", "node_cpus")),
        dataset_rows=int(g("01_spark_preprocessing", "dataset_rows_clean")),
        cnn_samples_per_s=float(g("02_horovod_training", "train_samples_per_s")),
        cnn_workers=world_size(),
        scaling_efficiency_2=float(g("02_horovod_training", "scaling_efficiency")),
        resnet50_img_s_per_worker=r50, resnet50_measured_px=px, resnet50_img_s_224=r50_224, resnet50_projection=how,
        serve_max_rps=float(g("04_serving", "max_rps_at_p99_50ms")),
        serve_rps_is_lower_bound=bool(g("04_serving", "max_rps_at_p99_50ms_is_lower_bound")),
        serve_encoding=serving_encoding(g("04_serving", "encoding_rps")),
        provenance=prov,
    )
    prov += [{"notebook": "02_horovod_training", "metric": f"params.{WORLD_SIZE_PARAM}", "value": m.cnn_workers,
              "unit": "workers"},
             {"notebook": "02_horovod_training", "metric": f"params.{IMAGE_SIZE_PARAM}", "value": px, "unit": "px"},
             {"notebook": "06 (projection)", "metric": "resnet50_img_s_224", "value": round(r50_224, 4),
              "unit": "img/s", "how": how}]
    return m


def checkpoint_projection_s(notebook: str = "02_horovod_training") -> float:
    """02's projection of one ResNet-50 checkpoint write (weights + optimiser state at the write
    rate 02 measured), in seconds: ``checkpoint_projection_resnet50_s``. Read only when asked,
    so a notebook parameter can override it without the metric."""
    val = report.value(notebook, "checkpoint_projection_resnet50_s")
    if val is None or not val > 0:
        raise report.MissingMetricsError(f"{notebook} recorded checkpoint_projection_resnet50_s as {val!r}: "
                                         f"re-run notebooks/{notebook}.ipynb")
    return float(val)


def checkpoint_time_s(notebook: str = "02_horovod_training") -> tuple[float, str]:
    """Seconds per ResNet-50 checkpoint for Young/Daly, and where the number comes from.

    The projection at 02's measured write rate to the bucket (``checkpoint_projection_resnet50_bucket_s``:
    ResNet-50's weight and SGD-momentum bytes over the rate a checkpoint reached the object store)
    when 02 recorded it; else 02's projection at its local-disk rate. Both are projections.

    Raises:
        MissingMetricsError: 02 recorded neither.
    """
    try:
        val = report.value(notebook, "checkpoint_projection_resnet50_bucket_s")
    except report.MissingMetricsError:  # 02 ran before it measured the bucket
        val = None
    if val is not None and val > 0:
        return float(val), ("PROJECTION: ResNet-50 weights + SGD momentum at 02's measured checkpoint write rate "
                            "to the bucket (checkpoint_projection_resnet50_bucket_s)")
    return checkpoint_projection_s(notebook), ("PROJECTION: ResNet-50 weights + SGD momentum at 02's measured "
                                               "checkpoint write rate to local disk (checkpoint_projection_resnet50_s)")


def serving_encoding(encoding_rps: dict[str, float]) -> str:
    """The request encoding 04 served with: the faster of the ones it compared (04 keeps it)."""
    if not isinstance(encoding_rps, dict) or not encoding_rps:
        raise report.MissingMetricsError(f"04_serving recorded encoding_rps as {encoding_rps!r}, expected "
                                         "{encoding: req/s}: re-run notebooks/04_serving.ipynb")
    return max(encoding_rps, key=encoding_rps.get)


def hpa_min_replicas() -> int:
    """The serving HPA's ``minReplicas``, read from the manifest the serving builder renders."""
    from hpcml.k8s.serve import hpa
    from hpcml.serve.spec import ServeSpec

    return int(hpa(ServeSpec())["spec"]["minReplicas"])


def payload_bytes(encoding: str = "binary") -> tuple[int, int]:
    """Bytes of one single-image v2 inference request and of its response, built with the
    server's own protocol code (:mod:`hpcml.serve.protocol`) on a normalised-looking image.

    Args:
        encoding: ``"binary"`` (the binary tensor extension) or ``"json"``.
    """
    import json

    import numpy as np

    from hpcml.serve import protocol

    x = np.random.default_rng(0).standard_normal((1, 784)).astype("float32")
    if encoding == "binary":
        body, _ = protocol.make_binary_infer_request(x)
    elif encoding == "json":
        body = protocol.make_infer_body(x)
    else:
        raise ValueError(f"encoding must be 'binary' or 'json', got {encoding!r}")
    logits = np.random.default_rng(1).standard_normal((1, 10)).astype("float32")
    resp = json.dumps(protocol.infer_response("mnist", None, logits), separators=(",", ":")).encode()
    return len(body), len(resp)
