"""The compute the pipeline runs on: this node, a local Slurm cluster, a Kubernetes cluster.

Modules: ``spec`` (ClusterSpec and its parts), ``node`` (this node's inventory and matmul
peak), ``slurm`` (a package: config, job records, the local cluster's daemons, a benchmark),
``kube`` (a configured Kubernetes cluster through the kubernetes client), ``security_lint``
(checkov over the rendered manifests).
"""
