"""The compute the pipeline runs on: this node, a local Slurm cluster, a Kubernetes cluster."""
