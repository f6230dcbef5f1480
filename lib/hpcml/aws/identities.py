"""The local object store's identities, rendered from the IAM policies themselves.

Each pipeline role's identity policy (:func:`hpcml.k8s.iam.workload_policy`, the documents
under ``manifests/iam/``) is translated statement by statement into SeaweedFS's
``-s3.config`` actions, so the store enforces the same per-prefix rights as AWS would:

| IAM statement | SeaweedFS action |
| --- | --- |
| ``s3:GetObject`` on ``arn:aws:s3:::<bucket>/<prefix>/*`` | ``Read:<bucket>/<prefix>/*`` |
| ``s3:PutObject`` (+ multipart) on the same | ``Write:<bucket>/<prefix>/*`` |
| ``s3:DeleteObject`` on the same | ``Write:<bucket>/<prefix>/*`` |
| ``s3:ListBucket`` under ``s3:prefix`` ``<prefix>/*`` | ``List:<bucket>/<prefix>/*`` |
| ``kms:*`` | (none: the local store has no KMS) |

SeaweedFS scopes an action to a key prefix only with a wildcard (``Write:bucket/prefix/*``;
``Write:bucket/prefix`` without it matches the bucket name exactly and so denies every key:
``Identity.CanDo`` in ``weed/s3api/auth_credentials.go``). One bucket holds every prefix, as
on AWS. What the store cannot express: its ``Write`` covers ``DeleteObject`` too, so a role
that may write a prefix may also delete there (on AWS only ``checkpoints/`` rotation and the
data scientist's sandbox may delete). Reads and writes outside a role's prefixes are refused
with ``AccessDenied`` by the store itself (``tests/test_object_store.py``).

One identity is not a pipeline role: :data:`LAUNCHER`, who builds a SageMaker training job and
whose SDK stages the job's code into its session bucket (:data:`STAGING_BUCKET`, not the data
lake). On AWS that is the person's or CI's own credentials, whose policy is not among
``manifests/iam/``; on the store it may read, write and list that bucket only (``List`` on the
bucket itself answers the SDK's ``HeadBucket``).
"""

from __future__ import annotations

from typing import Mapping

from hpcml.k8s import iam

#: The store's own administrator: it provisions the bucket (no pipeline role may create one,
#: as on AWS) and aborts multipart uploads left behind by a crash. No stage uses it.
ADMIN = "store-admin"
#: Pipeline roles given an identity on the local store (each stage uses its own).
ROLES = (*iam.ACCESS, *iam.OTHER_ACCESS)
#: Who builds a SageMaker job: its SDK stages code into :data:`STAGING_BUCKET`, and nothing else.
LAUNCHER = "sagemaker-launcher"
#: The SageMaker SDK session's default bucket, where it stages a job's code and driver config.
STAGING_BUCKET = "hpcml-sagemaker"
#: Every identity on the store.
IDENTITIES = (*ROLES, LAUNCHER, ADMIN)

_READ = {"s3:GetObject"}
_WRITE = set(iam.WRITE_ACTIONS) | set(iam.DELETE_ACTIONS)


def _actions(stmt: dict) -> list[str]:
    acts = stmt["Action"]
    return [acts] if isinstance(acts, str) else list(acts)


def _resources(stmt: dict) -> list[str]:
    res = stmt["Resource"]
    return [res] if isinstance(res, str) else list(res)


def store_actions(policy: Mapping, bucket: str) -> list[str]:
    """SeaweedFS actions granting what the IAM identity ``policy`` allows on ``bucket``.

    Raises:
        ValueError: a statement is not an ``Allow``, or names an S3 action this mapping does
            not know (a new right must be mapped here, never silently dropped).
    """
    arn = f"arn:aws:s3:::{bucket}"
    out: list[str] = []
    for stmt in policy["Statement"]:
        if stmt.get("Effect") != "Allow":
            raise ValueError(f"statement {stmt.get('Sid')!r}: expected Effect 'Allow', got {stmt.get('Effect')!r}")
        acts = _actions(stmt)
        if all(a.startswith(("kms:", "eks:")) for a in acts):
            continue
        if acts == ["s3:ListBucket"]:
            prefixes = stmt["Condition"]["StringLike"]["s3:prefix"]
            out += [f"List:{bucket}/{p}" for p in prefixes]
            continue
        unknown = [a for a in acts if a not in _READ | _WRITE]
        if unknown:
            raise ValueError(f"statement {stmt.get('Sid')!r}: no store action for {unknown} "
                             f"(known: {sorted(_READ | _WRITE)} and s3:ListBucket)")
        verb = "Read" if set(acts) <= _READ else "Write"
        for res in _resources(stmt):
            if not res.startswith(f"{arn}/") or not res.endswith("/*"):
                raise ValueError(f"statement {stmt.get('Sid')!r}: expected a resource {arn}/<prefix>/*, got {res!r}")
            out.append(f"{verb}:{bucket}/{res[len(arn) + 1:]}")
    return list(dict.fromkeys(out))


def identities_config(spec: iam.IamSpec, credentials: Mapping[str, tuple[str, str]]) -> dict:
    """SeaweedFS's ``-s3.config`` document: one identity per role, the launcher and the admin.

    Args:
        spec: where the data lives (the bucket the policies name).
        credentials: ``{identity: (access key, secret key)}`` for exactly :data:`IDENTITIES`.

    Raises:
        ValueError: a role or the admin has no credentials, or an unknown role is given.
    """
    missing = [r for r in IDENTITIES if r not in credentials]
    unknown = [r for r in credentials if r not in IDENTITIES]
    if missing or unknown:
        raise ValueError(f"credentials: expected exactly {', '.join(IDENTITIES)}; "
                         f"missing {missing}, unknown {unknown}")
    out = []
    for role in ROLES:
        ak, sk = credentials[role]
        out.append({"name": role, "credentials": [{"accessKey": ak, "secretKey": sk}],
                    "actions": store_actions(iam.workload_policy(spec, role), spec.bucket)})
    ak, sk = credentials[LAUNCHER]
    out.append({"name": LAUNCHER, "credentials": [{"accessKey": ak, "secretKey": sk}],
                "actions": [f"Read:{STAGING_BUCKET}/*", f"Write:{STAGING_BUCKET}/*", f"List:{STAGING_BUCKET}/*",
                            f"List:{STAGING_BUCKET}"]})
    ak, sk = credentials[ADMIN]
    out.append({"name": ADMIN, "credentials": [{"accessKey": ak, "secretKey": sk}],
                "actions": ["Admin", "Read", "Write", "List", "Tagging"]})
    return {"identities": out}
