"""Launch targets: one :class:`~hpcml.train.spec.TrainSpec`, many places to run it.

Modules: ``layout`` (pure: node layout, container spec, horovodrun argv, the sbatch body, the
AWS Batch requests), ``result`` (:class:`LaunchResult`), one module per target (``local``:
horovodrun on this machine; ``slurm``; ``kubernetes``; ``sagemaker``; ``batch``), each with its
typed options, and ``registry`` (target name -> launcher, :func:`launch`).
"""
