"""The pipeline on EKS: S3 -> Spark -> shards -> MPIJob on GPU nodes -> model registry ->
serving behind an ALB with an HPA -> Prometheus/Grafana and logs.

Run: python diagrams/pipeline_eks.py  (or hpcml.diagrams.render_all()).
"""

from pathlib import Path

from diagrams import Cluster, Diagram, Edge
from diagrams.aws.compute import EC2ContainerRegistry
from diagrams.aws.management import CloudwatchLogs
from diagrams.aws.network import ALB
from diagrams.aws.storage import S3
from diagrams.k8s.clusterconfig import HPA
from diagrams.k8s.compute import Deployment, Job, Pod
from diagrams.onprem.analytics import Spark
from diagrams.onprem.monitoring import Grafana, Prometheus


def build(out: Path) -> Path:
    """Draw the diagram to ``out`` (a .png path) and return it."""
    graph = {"fontsize": "13", "pad": "0.3", "nodesep": "0.5", "ranksep": "0.7"}
    with Diagram("hpcml on EKS: data -> training -> serving -> monitoring", filename=str(out.with_suffix("")),
                 outformat="png", show=False, direction="LR", graph_attr=graph):
        raw = S3("s3://…/raw")
        with Cluster("EKS cluster (namespace hpcml, PSA restricted)"):
            with Cluster("CPU nodes (Spot)"):
                spark = Spark("SparkApplication\n(spark SA, IRSA)")
            shards = S3("s3://…/processed\nParquet shards")
            with Cluster("GPU nodes (taint nvidia.com/gpu)"):
                launcher = Job("MPIJob launcher")
                workers = [Pod(f"worker {i}\n1 GPU") for i in range(2)]
            registry = S3("s3://…/models\nmodel registry")
            with Cluster("serving"):
                hpa = HPA("HPA")
                serve = Deployment("inference server\n(Open Inference v2)")
            with Cluster("namespace monitoring"):
                prom = Prometheus("Prometheus")
                graf = Grafana("Grafana")
        alb = ALB("ALB (Ingress)")
        logs = CloudwatchLogs("logs")
        ecr = EC2ContainerRegistry("images")

        raw >> Edge(label="ingest, validate") >> spark >> Edge(label="shard") >> shards
        shards >> workers
        launcher >> Edge(style="dashed", label="horovodrun") >> workers
        workers >> Edge(label="checkpoints, model") >> registry >> serve
        alb >> serve
        hpa >> Edge(style="dashed") >> serve
        [serve, workers[0]] >> Edge(style="dotted", label="/metrics") >> prom >> graf
        serve >> Edge(style="dotted") >> logs
        ecr >> Edge(style="dashed", color="gray") >> launcher
    return out


if __name__ == "__main__":
    print(build(Path(__file__).with_suffix(".png")))
