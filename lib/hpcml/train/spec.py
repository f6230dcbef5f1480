"""``TrainSpec``: one typed description of a training job, for every target.

The same spec runs locally (``horovodrun``), on the local Slurm cluster (``sbatch``),
renders a Kubernetes MPIJob, a SageMaker training job and an AWS Batch multi-node job.
Workers receive it as a JSON file: ``python -m hpcml.train.worker --spec spec.json``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hpcml import specbase

ARCHS = ("cnn", "resnet18", "resnet50")
#: The training backends (one loop, two collective layers: :mod:`hpcml.train.comm`). Named here,
#: the spec layer, and re-exported by ``hpcml.train.comm.BACKENDS``.
BACKENDS = ("horovod", "ddp")
OPTIMIZERS = ("sgd", "adamw")
TARGETS = ("local", "slurm", "kubernetes", "sagemaker", "batch")
#: The training images, named once: docker/Dockerfile.train (CPU, Gloo) builds
#: ``<TRAIN_REGISTRY>/<TRAIN_REPO>:<TRAIN_TAG>`` and docker/Dockerfile.train-cuda (CUDA, cuDNN,
#: NCCL, EFA) ``<TRAIN_REGISTRY>/<TRAIN_CUDA_REPO>:<TRAIN_TAG>``. :attr:`TrainSpec.image`, the
#: tuning manifests (:mod:`hpcml.k8s.tune`) and the cluster targets
#: (:mod:`hpcml.train.targets.layout`, which also names their ECR copies) use these.
TRAIN_REGISTRY = "ghcr.io/example"
TRAIN_REPO, TRAIN_CUDA_REPO, TRAIN_TAG = "hpcml-train", "hpcml-train-cuda", "0.1.0"
TRAIN_IMAGE = f"{TRAIN_REGISTRY}/{TRAIN_REPO}:{TRAIN_TAG}"
TRAIN_CUDA_IMAGE = f"{TRAIN_REGISTRY}/{TRAIN_CUDA_REPO}:{TRAIN_TAG}"

# The training exporter's Prometheus metric names (per-rank, label ``rank``): rules, dashboards,
# plots and the cost review import these rather than retype them.
METRIC_STEP_SECONDS = "hpcml_train_step_seconds"  # histogram: one training step's wall time
METRIC_SAMPLES = "hpcml_train_samples"  # counter (exposed as ..._total): samples processed
METRIC_LOSS = "hpcml_train_loss"  # gauge: rank-averaged loss of the last step
METRIC_ALLREDUCE_SECONDS = "hpcml_train_allreduce_seconds"  # histogram: time in the gradient allreduce
METRIC_STEP = "hpcml_train_step"  # gauge: last completed global step
METRIC_LAST_STEP_TS = "hpcml_train_last_step_timestamp_seconds"  # gauge: unix time of the last step


@dataclass
class TrainSpec:
    """A distributed training job.

    Attributes:
        name: job name (DNS-1123: lowercase letters, digits, '-').
        world_size: number of Horovod workers (processes); must equal the shard count.
        threads_per_worker: intra-op threads per worker (its share of the cores).
        arch: model architecture, one of ARCHS.
        width, depth, dropout: CNN shape.
        epochs: passes over the training shards.
        batch_size: per-worker batch size.
        lr: base learning rate (scaled by world_size, with warm-up).
        warmup_epochs: epochs of linear LR warm-up from lr to lr*world_size.
        weight_decay, optimizer, momentum: optimiser settings.
        fp16_allreduce: compress gradients to fp16 for the allreduce.
        backend: the collective layer, one of BACKENDS: ``"horovod"`` (horovodrun, Gloo) or
            ``"ddp"`` (torchrun, PyTorch DistributedDataParallel over Gloo); independent of
            the target (the same worker runs either).
        bucket_mb: gradient bucket size in MiB: Horovod's fusion threshold, DDP's
            ``bucket_cap_mb``; None = each tool's own default (Horovod 128, DDP 25 MiB).
        record_losses: rank 0 records the first N per-step losses (``metrics["step_losses"]``)
            so two runs can be compared (:func:`hpcml.train.loop.loss_parity`); 0 = none.
        seed: random seed (same seed -> same result).
        dataset_dir: the Parquet shards (hpcml.data layout); None = default.
        out_dir: checkpoints, logs and the model; None = build/runs/<name>.
        checkpoint_every: steps between checkpoints (0 = only at epoch ends).
        max_steps: stop after this many steps in total (0 = no limit; for benchmarks/tests).
        metrics_port: base port of the per-rank Prometheus exporter (0 = off).
        elastic: run under hvd.elastic with min_workers..world_size workers.
        min_workers: the fewest workers an elastic job continues with.
        pin_cpus: pin each worker to its own cores (CPU affinity).
        keep_heap: each worker keeps freed memory for reuse instead of giving it back to the
            kernel every step (glibc's mmap/trim thresholds, :func:`hpcml.train.heap.keep`).
        gpus_per_worker: GPUs per worker on a GPU cluster (0 here).
        image: container image for the cluster targets.
        instance_type: EC2 instance type for SageMaker / Batch / node selectors.
    """

    name: str = "mnist-cnn"
    world_size: int = 2
    threads_per_worker: int = 1
    arch: str = "cnn"
    width: int = 32
    depth: int = 2
    dropout: float = 0.1
    epochs: int = 3
    batch_size: int = 64
    lr: float = 0.01
    warmup_epochs: float = 1.0
    weight_decay: float = 0.0
    optimizer: str = "sgd"
    momentum: float = 0.9
    fp16_allreduce: bool = False
    backend: str = "horovod"
    bucket_mb: float | None = None
    record_losses: int = 100
    seed: int = 0
    dataset_dir: str | None = None
    out_dir: str | None = None
    checkpoint_every: int = 0
    max_steps: int = 0
    metrics_port: int = 0
    elastic: bool = False
    min_workers: int = 1
    pin_cpus: bool = True
    keep_heap: bool = True
    gpus_per_worker: int = 0
    image: str = TRAIN_IMAGE
    instance_type: str = "g4dn.12xlarge"
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        def bad(field_name: str, expected: str) -> None:
            raise specbase.fail(self, field_name, expected, getattr(self, field_name))

        if not re.fullmatch(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?", self.name):
            bad("name", "a DNS-1123 label (lowercase letters, digits, '-')")
        for f in ("world_size", "threads_per_worker", "epochs", "batch_size", "depth", "width"):
            if not isinstance(getattr(self, f), int) or getattr(self, f) < 1:
                bad(f, "an integer >= 1")
        for f in ("checkpoint_every", "max_steps", "metrics_port", "gpus_per_worker", "record_losses"):
            if not isinstance(getattr(self, f), int) or getattr(self, f) < 0:
                bad(f, "an integer >= 0")
        if self.arch not in ARCHS:
            bad("arch", f"one of {ARCHS}")
        if self.backend not in BACKENDS:
            bad("backend", f"one of {BACKENDS}")
        if self.bucket_mb is not None and (isinstance(self.bucket_mb, bool)
                                           or not isinstance(self.bucket_mb, (int, float)) or not self.bucket_mb > 0):
            bad("bucket_mb", "None (each tool's default) or a positive number of MiB")
        if self.optimizer not in OPTIMIZERS:
            bad("optimizer", f"one of {OPTIMIZERS}")
        if not (self.lr > 0):
            bad("lr", "a positive float")
        if not (0 <= self.dropout < 1):
            bad("dropout", "a float in [0, 1)")
        if self.weight_decay < 0:
            bad("weight_decay", "a float >= 0")
        if self.warmup_epochs < 0:
            bad("warmup_epochs", "a float >= 0")
        if not (1 <= self.min_workers <= self.world_size):
            bad("min_workers", f"an integer in [1, world_size={self.world_size}]")

    # --- serialisation (hpcml.specbase: one JSON form for every stage's spec) -------
    def to_dict(self) -> dict[str, Any]:
        """The fields as plain JSON-able values."""
        return specbase.to_dict(self)

    def to_json(self, path: str | Path | None = None) -> str:
        """Sorted, indented JSON; also written atomically to ``path`` when given."""
        return specbase.to_json(self, path)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainSpec":
        """Build from a dict; an unknown key is a :class:`~hpcml.specbase.SpecError` naming it."""
        return specbase.from_dict(cls, data)

    @classmethod
    def from_json(cls, path_or_text: str | Path) -> "TrainSpec":
        """Build from JSON text or a JSON file (a missing file is a FileNotFoundError naming it)."""
        p = Path(path_or_text) if not str(path_or_text).lstrip().startswith("{") else None
        if p is not None and not p.exists():
            raise FileNotFoundError(f"TrainSpec file not found: {p}")
        return specbase.from_json(cls, path_or_text)

    # --- derived -------------------------------------------------------------------
    def resolved_dataset_dir(self) -> Path:
        """``dataset_dir``, or the data stage's published dataset (:func:`hpcml.paths.dataset_dir`)."""
        from hpcml import paths

        return Path(self.dataset_dir) if self.dataset_dir else paths.dataset_dir()

    def resolved_out_dir(self) -> Path:
        """``out_dir``, or ``build/runs/<name>``."""
        from hpcml import paths

        return Path(self.out_dir) if self.out_dir else paths.build_dir() / "runs" / self.name
