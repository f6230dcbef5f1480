"""Least-privilege IAM for the pipeline: one policy per IRSA role, the data scientist's
role, the data bucket's policy (TLS only, SSE-KMS only) and the KMS key policy.

Each role touches only the S3 prefixes its stage reads, writes or deletes (the layout is
:data:`hpcml.aws.account.S3_PREFIXES`, one data bucket):

| role | reads | writes | deletes |
| --- | --- | --- | --- |
| ``spark`` | ``raw/``, ``processed/`` (a re-run reads its own manifest) | ``processed/``, ``logs/emr/`` | - |
| ``trainer`` | ``processed/``, ``checkpoints/`` | ``checkpoints/``, ``models/`` | ``checkpoints/`` (rotation) |
| ``tuner`` | ``processed/`` | ``tuning/`` | - |
| ``inference`` | ``models/`` | - | - |
| ``sagemaker`` (execution role) | ``processed/``, ``checkpoints/``, ``models/`` | ``checkpoints/``, ``models/`` | ``checkpoints/`` |
| ``ingestion`` (lands the raw lake) | - | ``raw/`` | - |
| ``data-scientist`` | every prefix | ``sandbox/`` | ``sandbox/`` |

Names follow :mod:`hpcml.k8s.cluster` (policy ``<cluster>-s3-<sa>`` attached to role
``<cluster>-<sa>``); ``render()`` writes them under ``manifests/iam/``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from hpcml.aws.account import S3_PREFIXES, data_bucket, role_arn
from hpcml.cluster.spec import ClusterSpec, default_cluster
from hpcml.specbase import fail

VERSION = "2012-10-17"
PREFIXES = S3_PREFIXES
#: (reads, writes, deletes) per workload role: key prefixes under the data bucket (a prefix of
#: the layout, optionally with a sub-folder such as ``logs/emr``).
ACCESS: dict[str, tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]] = {
    "spark": (("raw", "processed"), ("processed", "logs/emr"), ()),
    "trainer": (("processed", "checkpoints"), ("checkpoints", "models"), ("checkpoints",)),
    "tuner": (("processed",), ("tuning",), ()),
    "inference": (("models",), (), ()),
}
#: Roles that are not Kubernetes ServiceAccounts, named ``<cluster>-<role>``: the SageMaker
#: execution role (training job and hosted model), and ``ingestion``, the only writer of
#: ``raw/`` (notebook 01's :func:`hpcml.data.staging.upload_dir` of the raw lake): it puts
#: ``raw/*`` SSE-KMS encrypted with the data key, lists only ``raw/`` (the staging's
#: prefix-scoped existence check) and reads nothing. Its ``kms:Decrypt`` is what S3 needs to
#: complete an SSE-KMS multipart upload, not a read grant.
OTHER_ACCESS: dict[str, tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]] = {
    "sagemaker": (("processed", "checkpoints", "models"), ("checkpoints", "models"), ("checkpoints",)),
    "ingestion": ((), ("raw",), ()),
}
WRITE_ACTIONS = ["s3:PutObject", "s3:AbortMultipartUpload", "s3:ListMultipartUploadParts"]
DELETE_ACTIONS = ["s3:DeleteObject"]


@dataclass(frozen=True)
class IamSpec:
    """Where the data lives: the cluster (account, region, name) and the bucket.

    The account and region are the cluster's (:class:`~hpcml.cluster.spec.ClusterSpec`, whose
    default account is :data:`hpcml.aws.account.ACCOUNT_ID`); nothing here names another.
    """

    cluster: ClusterSpec = field(default_factory=default_cluster)
    bucket: str = ""
    key_alias: str = ""
    key_id: str = "1234abcd-12ab-34cd-56ef-1234567890ab"  # AWS's documentation placeholder: set yours

    def __post_init__(self) -> None:
        if not self.bucket:
            object.__setattr__(self, "bucket", data_bucket(self.cluster.account_id, self.cluster.name))
        if not self.key_alias:
            object.__setattr__(self, "key_alias", f"alias/{self.cluster.name}-data")
        if not (3 <= len(self.bucket) <= 63) or not self.bucket.replace("-", "").isalnum() or self.bucket != self.bucket.lower():
            raise fail(self, "bucket", "a lower-case S3 bucket name (3-63 chars)", self.bucket)
        if not re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|mrk-[0-9a-f]{32}", self.key_id):
            raise fail(self, "key_id", "a KMS key id (uuid or mrk-...)", self.key_id)
        if not self.key_alias.startswith("alias/"):
            raise fail(self, "key_alias", "a name starting with 'alias/'", self.key_alias)

    @property
    def bucket_arn(self) -> str:
        return f"arn:aws:s3:::{self.bucket}"

    def objects(self, prefix: str) -> str:
        """``arn:aws:s3:::<bucket>/<prefix>/*``; ``prefix`` is a layout prefix, optionally with sub-folders."""
        if prefix.split("/", 1)[0] not in PREFIXES:
            raise ValueError(f"unknown S3 prefix {prefix!r} (known: {', '.join(PREFIXES)})")
        return f"{self.bucket_arn}/{prefix.strip('/')}/*"

    @property
    def key_arn(self) -> str:
        c = self.cluster
        return f"arn:aws:kms:{c.region}:{c.account_id}:key/{self.key_id}"

    def role_arn(self, name: str) -> str:
        return role_arn(f"{self.cluster.name}-{name}", self.cluster.account_id)


def _list(spec: IamSpec, prefixes: tuple[str, ...], sid: str) -> dict:
    return {"Sid": sid, "Effect": "Allow", "Action": "s3:ListBucket", "Resource": spec.bucket_arn,
            "Condition": {"StringLike": {"s3:prefix": [f"{p}/*" for p in prefixes]}}}


def _kms(spec: IamSpec, encrypt: bool) -> dict:
    actions = ["kms:Decrypt"] + (["kms:GenerateDataKey"] if encrypt else [])
    return {"Sid": "UseDataKeyThroughS3", "Effect": "Allow", "Action": actions, "Resource": spec.key_arn,
            "Condition": {"StringEquals": {"kms:ViaService": f"s3.{spec.cluster.region}.amazonaws.com"}}}


def workload_policy(spec: IamSpec, sa: str) -> dict:
    """Identity policy of the IRSA role of ServiceAccount ``sa`` (or of a role in :data:`OTHER_ACCESS`)."""
    table = {**ACCESS, **OTHER_ACCESS}
    if sa not in table:
        raise ValueError(f"no S3 access defined for ServiceAccount {sa!r} (known: {', '.join(table)})")
    reads, writes, deletes = table[sa]
    stmts = [_list(spec, tuple(dict.fromkeys(reads + writes + deletes)), "ListOwnPrefixes")]
    if reads:
        stmts.append({"Sid": "ReadInputs", "Effect": "Allow", "Action": "s3:GetObject",
                      "Resource": [spec.objects(p) for p in reads]})
    if writes:
        stmts.append({"Sid": "WriteOutputs", "Effect": "Allow", "Action": WRITE_ACTIONS,
                      "Resource": [spec.objects(p) for p in writes]})
    if deletes:
        stmts.append({"Sid": "DeleteRotated", "Effect": "Allow", "Action": DELETE_ACTIONS,
                      "Resource": [spec.objects(p) for p in deletes]})
    stmts.append(_kms(spec, encrypt=bool(writes)))
    return {"Version": VERSION, "Statement": stmts}


def data_scientist_policy(spec: IamSpec) -> dict:
    """Read every prefix, write only ``sandbox/``, and get a kubeconfig for the cluster."""
    c = spec.cluster
    return {"Version": VERSION, "Statement": [
        _list(spec, PREFIXES, "ListData"),
        {"Sid": "ReadData", "Effect": "Allow", "Action": "s3:GetObject",
         "Resource": [spec.objects(p) for p in PREFIXES]},
        {"Sid": "WriteSandbox", "Effect": "Allow", "Action": WRITE_ACTIONS + ["s3:DeleteObject"],
         "Resource": spec.objects("sandbox")},
        {"Sid": "DescribeCluster", "Effect": "Allow", "Action": "eks:DescribeCluster",
         "Resource": f"arn:aws:eks:{c.region}:{c.account_id}:cluster/{c.name}"},
        _kms(spec, encrypt=True),
    ]}


def bucket_policy(spec: IamSpec) -> dict:
    """Encryption in transit and at rest, enforced by the bucket itself."""
    return {"Version": VERSION, "Statement": [
        {"Sid": "DenyInsecureTransport", "Effect": "Deny", "Principal": "*", "Action": "s3:*",
         "Resource": [spec.bucket_arn, f"{spec.bucket_arn}/*"],
         "Condition": {"Bool": {"aws:SecureTransport": "false"}}},
        {"Sid": "DenyUnencryptedUploads", "Effect": "Deny", "Principal": "*", "Action": "s3:PutObject",
         "Resource": f"{spec.bucket_arn}/*",
         "Condition": {"StringNotEquals": {"s3:x-amz-server-side-encryption": "aws:kms"}}},
    ]}


def key_policy(spec: IamSpec) -> dict:
    """KMS key policy for the data key: account admins manage it; pipeline roles use it via S3 only."""
    c = spec.cluster
    users = [spec.role_arn(sa) for sa in (*ACCESS, *OTHER_ACCESS)] + [spec.role_arn("data-scientist")]
    return {"Version": VERSION, "Statement": [
        {"Sid": "AccountAdministersKey", "Effect": "Allow",
         "Principal": {"AWS": f"arn:aws:iam::{c.account_id}:root"},
         "Action": ["kms:Describe*", "kms:List*", "kms:Get*", "kms:Create*", "kms:Enable*", "kms:Put*",
                    "kms:Update*", "kms:Revoke*", "kms:Disable*", "kms:TagResource", "kms:UntagResource",
                    "kms:ScheduleKeyDeletion", "kms:CancelKeyDeletion"],
         "Resource": "*"},
        {"Sid": "PipelineRolesUseKeyThroughS3", "Effect": "Allow", "Principal": {"AWS": users},
         "Action": ["kms:Decrypt", "kms:GenerateDataKey"], "Resource": "*",
         "Condition": {"StringEquals": {"kms:ViaService": f"s3.{c.region}.amazonaws.com"}}},
    ]}


def policies(spec: IamSpec | None = None) -> dict[str, dict]:
    """``{policy name: document}`` for every identity policy (what the IRSA roles attach)."""
    spec = spec or IamSpec()
    name = spec.cluster.name
    out = {f"{name}-s3-{sa}": workload_policy(spec, sa) for sa in spec.cluster.service_accounts}
    out.update({f"{name}-{role}": workload_policy(spec, role) for role in OTHER_ACCESS})
    out[f"{name}-data-scientist"] = data_scientist_policy(spec)
    return out


def role_policies(spec: IamSpec | None = None) -> dict[str, str]:
    """``{role ARN: the name of the identity policy it attaches}`` for every pipeline role."""
    spec = spec or IamSpec()
    name = spec.cluster.name
    out = {spec.role_arn(sa): f"{name}-s3-{sa}" for sa in spec.cluster.service_accounts}
    out.update({spec.role_arn(role): f"{name}-{role}" for role in OTHER_ACCESS})
    out[spec.role_arn("data-scientist")] = f"{name}-data-scientist"
    return out


def render(spec: IamSpec | None = None) -> dict[str, dict]:
    """Rendered under ``manifests/iam/``: identity, bucket and key policies as JSON."""
    spec = spec or IamSpec()
    out = {f"iam/{n}.json": doc for n, doc in policies(spec).items()}
    out[f"iam/resource/{spec.cluster.name}-data-bucket-policy.json"] = bucket_policy(spec)
    out[f"iam/resource/{spec.cluster.name}-data-key-policy.json"] = key_policy(spec)
    return out
