"""Tuning: Optuna studies over the real training function, parallel workers (local
processes, a Slurm job array, a Kubernetes indexed Job), pruning, and the benchmark.

Modules: ``spec`` (``TuneSpec``, sampler/pruner names, storage URL form), ``space`` (typed search
space; both specs), ``study`` (registries, storage, objective, resume and stale-trial handling),
``workers`` (processes, Slurm array, retrain the best), ``bench`` (pruning vs none, TPE vs random,
workers P=1 vs P=2).
"""
