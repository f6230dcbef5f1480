"""The HPC variant: AWS ParallelCluster with Slurm, EFA compute nodes and FSx for Lustre
linked to the S3 data bucket.

Run: python diagrams/hpc_parallelcluster.py  (or hpcml.diagrams.render_all()).
"""

from pathlib import Path

from diagrams import Cluster, Diagram, Edge
from diagrams.aws.compute import EC2, EC2AutoScaling
from diagrams.aws.storage import S3, ElasticFileSystemEFS, FsxForLustre
from diagrams.onprem.client import User


def build(out: Path) -> Path:
    """Draw the diagram to ``out`` (a .png path) and return it."""
    with Diagram("HPC variant: ParallelCluster + Slurm + FSx for Lustre", filename=str(out.with_suffix("")),
                 outformat="png", show=False, direction="LR", graph_attr={"fontsize": "13", "pad": "0.3"}):
        user = User("user (ssh / SSM)")
        bucket = S3("s3://…/processed\n+ checkpoints")
        with Cluster("VPC, one AZ (placement group)"):
            head = EC2("head node\nslurmctld")
            with Cluster("Slurm queue gpu (p4d / g5, EFA)"):
                gpu = [EC2(f"compute {i}\nslurmd") for i in range(2)]
            with Cluster("Slurm queue cpu (hpc7a / c6i, EFA)"):
                cpu = EC2AutoScaling("dynamic nodes\n(scale to zero)")
            fsx = FsxForLustre("FSx for Lustre\n(scratch, linked to S3)")
            home = ElasticFileSystemEFS("/home (EFS)")
        user >> head >> Edge(label="sbatch / srun") >> gpu
        head >> cpu
        bucket >> Edge(label="lazy load / export") >> fsx
        fsx >> Edge(label="shards, checkpoints") >> gpu
        fsx >> cpu
        home >> head
    return out


if __name__ == "__main__":
    print(build(Path(__file__).with_suffix(".png")))
