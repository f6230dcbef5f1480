"""Training: models, the Horovod loop, checkpoints, and launchers from one TrainSpec."""
