"""Slurm: the configuration and batch scripts, job records, the local cluster's daemons, a benchmark.

Modules:

* :mod:`~hpcml.cluster.slurm.conf` (pure): ``slurm.conf`` text from ``slurmd -C``, ``sbatch`` scripts.
* :mod:`~hpcml.cluster.slurm.jobs` (pure): ``scontrol`` records, job states, :class:`JobResult`.
* :mod:`~hpcml.cluster.slurm.daemons`: starts, watches and stops munged/slurmctld/slurmd; submits and waits.
* :mod:`~hpcml.cluster.slurm.bench`: submit-to-start latency and throughput of a burst of jobs.
"""
