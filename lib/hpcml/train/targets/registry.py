"""The launch registry: one :class:`~hpcml.train.spec.TrainSpec`, many targets.

:data:`LAUNCHERS` maps each target name in :data:`hpcml.train.spec.TARGETS` to its
:class:`Target` (typed options + launcher), so adding a target is one module and one entry
here, never another ``elif``::

    >>> from hpcml.train.targets.registry import launch
    >>> res = launch(spec, target="slurm")        # sbatch on the local Slurm cluster
    >>> res.job.state, res.metrics["test_accuracy"]
    >>> launch(spec, target="kubernetes").request  # the MPIJob (submitted if a cluster is set)
    >>> launch(spec, target="batch").request       # validated AWS Batch requests

Targets and what they do here (no cloud account) versus with one:

* ``local``: ``horovodrun -np N`` on this machine (:mod:`hpcml.train.targets.local`).
* ``slurm``: an ``sbatch`` script that runs ``horovodrun`` over the allocation's hosts,
  submitted to the real local Slurm cluster (:mod:`hpcml.train.targets.slurm`); the same
  script runs on AWS ParallelCluster.
* ``kubernetes``: an MPIJob + checkpoint PVC + spec ConfigMap (:mod:`hpcml.k8s.train`),
  applied (server dry-run first) when a cluster is configured, else returned.
* ``sagemaker``: the CreateTrainingJob request built by the sagemaker SDK's
  ``ModelTrainer`` with ``MPI`` distribution; sent only with AWS credentials.
* ``batch``: an AWS Batch multi-node parallel job definition and the SubmitJob
  request; sent only with AWS credentials.

Every cluster target runs the same worker (``python -m hpcml.train.worker --spec``) on a
copy of the spec whose paths point into the container, laid out over nodes by
:func:`hpcml.train.targets.layout.node_layout`.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import Any, Callable

from hpcml.train.spec import TrainSpec
from hpcml.train.targets.batch import BatchOptions, launch_batch
from hpcml.train.targets.kubernetes import KubernetesOptions, launch_kubernetes
from hpcml.train.targets.local import LocalOptions, launch_local
from hpcml.train.targets.result import LaunchResult
from hpcml.train.targets.sagemaker import SageMakerOptions, launch_sagemaker
from hpcml.train.targets.slurm import SlurmOptions, launch_slurm


@dataclass(frozen=True)
class Target:
    """One launch target.

    Attributes:
        name: the registry key (a :data:`hpcml.train.spec.TARGETS` entry).
        options: the target's options dataclass (its fields are the keywords ``launch`` takes).
        launcher: ``launcher(spec, dry_run, options) -> LaunchResult``.
    """

    name: str
    options: type
    launcher: Callable[[TrainSpec, bool | None, Any], LaunchResult]

    def option_names(self) -> list[str]:
        """The keyword options this target takes."""
        return [f.name for f in dataclasses.fields(self.options)]


LAUNCHERS: dict[str, Target] = {t.name: t for t in (
    Target("local", LocalOptions, launch_local),
    Target("slurm", SlurmOptions, launch_slurm),
    Target("kubernetes", KubernetesOptions, launch_kubernetes),
    Target("sagemaker", SageMakerOptions, launch_sagemaker),
    Target("batch", BatchOptions, launch_batch),
)}


def get_target(name: str) -> Target:
    """The registered target ``name``.

    Raises:
        ValueError: unknown target; the message lists the registry.
    """
    t = LAUNCHERS.get(name)
    if t is None:
        raise ValueError(f"unknown launch target {name!r}; registered targets: {sorted(LAUNCHERS)}")
    return t


def options_for(name: str, **kw: Any) -> Any:
    """The options dataclass of target ``name`` built from keywords.

    Raises:
        ValueError: unknown target (the message lists the registry), or a keyword the
            target does not take (the message names the target and its options).
    """
    t = get_target(name)
    unknown = sorted(set(kw) - set(t.option_names()))
    if unknown:
        raise ValueError(f"launch target {name!r} takes no option(s) {unknown}; its options "
                         f"({t.options.__name__}) are {t.option_names()}")
    return t.options(**kw)


#: The targets that launch ``TrainSpec.backend="ddp"`` (torchrun); the others render MPI launches.
DDP_TARGETS = ("local", "slurm")


def launch(spec: TrainSpec, target: str = "local", dry_run: bool | None = None, options: Any = None,
           **kw: Any) -> LaunchResult:
    """Run (or render) ``spec`` on ``target``.

    Args:
        spec: the job.
        target: a key of :data:`LAUNCHERS`.
        dry_run: True renders/validates only; False submits (failing loudly if it cannot);
            None submits where a cluster/credentials exist and renders otherwise (the local
            target always runs).
        options: the target's options dataclass (e.g. ``SlurmOptions(timeout_s=600)``),
            instead of keywords.
        **kw: the target's options as keywords (e.g. ``cluster=``, ``timeout_s=`` for slurm).

    Raises:
        ValueError: not a TrainSpec, an unknown target (the message lists the registry), an
            option the target does not take (the message lists its options), options of
            another target, or a backend the target does not launch (:data:`DDP_TARGETS`).
    """
    if not isinstance(spec, TrainSpec):
        raise ValueError(f"launch(spec=…) expects a TrainSpec, got {type(spec).__name__}")
    t = get_target(target)
    if spec.backend == "ddp" and target not in DDP_TARGETS:
        raise ValueError(f"TrainSpec.backend='ddp' runs on the targets {DDP_TARGETS} (torchrun); the {target!r} target "
                         "renders an MPI launch (MPIJob / SageMaker's MPI driver / Batch's horovodrun) that only runs "
                         "backend='horovod'. Set backend='horovod' for it, or use a PyTorchJob/torch_distributed launch")
    if options is None:
        options = options_for(target, **kw)
    elif kw or not isinstance(options, t.options):
        raise ValueError(f"launch target {target!r} takes options={t.options.__name__}(…) or the keywords "
                         f"{t.option_names()}, not both; got options={type(options).__name__}"
                         f"{' and keywords ' + str(sorted(kw)) if kw else ''}")
    t0 = time.perf_counter()
    res = t.launcher(spec, dry_run, options)
    res.wall_s = time.perf_counter() - t0
    return res
