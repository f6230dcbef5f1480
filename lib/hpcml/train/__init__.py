"""Training: one TrainSpec, the Horovod worker, and the targets that run it.

Modules, by layer:

* spec: ``spec`` (:class:`~hpcml.train.spec.TrainSpec`, the targets, the exporter's metric names).
* pure: ``models`` (CNN, ResNets, FLOP counts), ``loop`` (seed, optimiser, LR schedule, step,
  evaluation, :func:`~hpcml.train.loop.fit_local` in one process), ``stats`` (benchmark
  statistics), ``abtest`` (paired ABBA A/B), ``targets.layout`` (node layout, container spec,
  horovodrun argv, sbatch body, AWS Batch requests).
* backend: ``shards`` (the data stage's shards as training reads them), ``checkpoint``
  (atomic checkpoints, model artifacts), ``worker`` (one Horovod rank:
  ``python -m hpcml.train.worker --spec``), ``exporter`` (its Prometheus metrics),
  ``targets`` (``registry.launch`` and one module per target: ``local`` = horovodrun on
  this machine, ``slurm``, ``kubernetes``, ``sagemaker``, ``batch``), ``bench`` (benchmark
  drivers: ``python -m hpcml.train.bench``) and ``bench_worker`` (their in-worker code),
  ``gpu_bench`` (the GPU synthetic benchmark).
"""
