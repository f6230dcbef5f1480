"""The AWS account and region the rendered definitions name until a user sets their own."""

from __future__ import annotations

#: AWS's documented example account: every ARN the project renders names it until a user sets theirs.
ACCOUNT_ID = "111122223333"
#: The one region every rendered definition names: the EKS cluster and its availability zones
#: (:class:`hpcml.cluster.spec.ClusterSpec`), ECR images, the S3/KMS conditions of the IAM
#: policies, SageMaker, EMR on EKS, the log shipping, and the price snapshot the cost models use
#: (``hpcml/cost/data/prices_snapshot.json``). Specs take it as their default; nothing retypes it.
REGION = "us-east-1"


def availability_zones(region: str = REGION, letters: str = "abc") -> tuple[str, ...]:
    """``region``'s zones named by ``letters``: ``("us-east-1a", "us-east-1b", "us-east-1c")``."""
    return tuple(f"{region}{x}" for x in letters)


def ecr_image(repo: str, tag: str = "0.1.0", account_id: str = ACCOUNT_ID, region: str = REGION) -> str:
    """An ECR image reference, e.g. ``111122223333.dkr.ecr.us-east-1.amazonaws.com/hpcml-train:0.1.0``."""
    return f"{account_id}.dkr.ecr.{region}.amazonaws.com/{repo}:{tag}"


def role_arn(name: str, account_id: str = ACCOUNT_ID) -> str:
    """An IAM role ARN in ``account_id``."""
    return f"arn:aws:iam::{account_id}:role/{name}"


#: The S3 layout: one data bucket per account (``hpcml-data-<account>``), one prefix per kind of
#: object. Every rendered URI and every IAM grant names these prefixes and nothing else
#: (``tests/test_manifest_coherence.py`` checks both directions).
#:
#: | prefix | holds | written by | read by |
#: | --- | --- | --- | --- |
#: | ``raw/`` | CSV files as they land | ingestion (the ``<cluster>-ingestion`` role) | Spark |
#: | ``processed/`` | Parquet shards, ``_manifest.json``, ``_quarantine/`` | Spark | Spark (its manifest), trainers, tuners |
#: | ``checkpoints/`` | training checkpoints (rotated) | trainers | trainers |
#: | ``models/`` | model artifacts / SageMaker ``model.tar.gz`` | trainers | inference, SageMaker hosting |
#: | ``logs/`` | job logs (EMR's ``logs/emr/``) | Spark on EMR | people |
#: | ``tuning/`` | study exports | tuners | people |
#: | ``sandbox/`` | scratch | data scientists | data scientists |
S3_PREFIXES = ("raw", "processed", "checkpoints", "models", "logs", "tuning", "sandbox")


def data_bucket(account_id: str = ACCOUNT_ID, cluster: str = "hpcml") -> str:
    """The data bucket's name: ``<cluster>-data-<account>``."""
    return f"{cluster}-data-{account_id}"


def s3_uri(prefix: str, *parts: str, account_id: str = ACCOUNT_ID, cluster: str = "hpcml", folder: bool = True) -> str:
    """``s3://<data bucket>/<prefix>/<parts…>`` (a trailing ``/`` when ``folder``).

    Raises:
        ValueError: ``prefix`` is not one of :data:`S3_PREFIXES`.
    """
    if prefix not in S3_PREFIXES:
        raise ValueError(f"unknown S3 prefix {prefix!r} (the layout has: {', '.join(S3_PREFIXES)})")
    key = "/".join([prefix, *(p.strip("/") for p in parts)])
    return f"s3://{data_bucket(account_id, cluster)}/{key}" + ("/" if folder else "")
