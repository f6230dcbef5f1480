"""Security boundaries: VPC with public/private subnets across AZs, IRSA roles scoped to S3
prefixes, KMS encryption, and default-deny network policies in the cluster.

Run: python diagrams/security.py  (or hpcml.diagrams.render_all()).
"""

from pathlib import Path

from diagrams import Cluster, Diagram, Edge
from diagrams.aws.compute import EKS
from diagrams.aws.network import ALB, NATGateway, PrivateSubnet, PublicSubnet
from diagrams.aws.security import IAMRole, KMS
from diagrams.aws.storage import S3
from diagrams.k8s.network import NetworkPolicy
from diagrams.k8s.rbac import ServiceAccount


def build(out: Path) -> Path:
    """Draw the diagram to ``out`` (a .png path) and return it."""
    with Diagram("Security boundaries: VPC, IAM/IRSA, KMS, network policies", filename=str(out.with_suffix("")),
                 outformat="png", show=False, direction="LR", graph_attr={"fontsize": "13", "pad": "0.3"}):
        with Cluster("VPC (3 AZs)"):
            with Cluster("public subnets"):
                alb = ALB("ALB (TLS)")
                nat = NATGateway("NAT (one per AZ)")
                PublicSubnet("public")
            with Cluster("private subnets"):
                PrivateSubnet("nodes")
                eks = EKS("EKS (private endpoint,\nsecrets encrypted)")
                with Cluster("namespace hpcml: default-deny"):
                    netpol = NetworkPolicy("NetworkPolicies")
                    sas = [ServiceAccount(n) for n in ("spark", "trainer", "inference")]
        roles = [IAMRole(f"hpcml-{n}\n(prefix-scoped)") for n in ("spark", "trainer", "inference")]
        kms = KMS("KMS data key")
        bucket = S3("data bucket\n(TLS + SSE-KMS only)")
        alb >> Edge(label="HTTPS") >> netpol
        for sa, role in zip(sas, roles):
            sa >> Edge(style="dashed", label="IRSA") >> role >> bucket
        bucket >> Edge(style="dotted") >> kms
        eks >> nat
    return out


if __name__ == "__main__":
    print(build(Path(__file__).with_suffix(".png")))
