"""The AWS account and region the rendered definitions name until a user sets their own."""

from __future__ import annotations

#: AWS's documented example account: every ARN the project renders names it until a user sets theirs.
ACCOUNT_ID = "111122223333"
#: The region the production specs assume.
REGION = "us-east-1"


def ecr_image(repo: str, tag: str = "0.1.0", account_id: str = ACCOUNT_ID, region: str = REGION) -> str:
    """An ECR image reference, e.g. ``111122223333.dkr.ecr.us-east-1.amazonaws.com/hpcml-train:0.1.0``."""
    return f"{account_id}.dkr.ecr.{region}.amazonaws.com/{repo}:{tag}"


def role_arn(name: str, account_id: str = ACCOUNT_ID) -> str:
    """An IAM role ARN in ``account_id``."""
    return f"arn:aws:iam::{account_id}:role/{name}"
