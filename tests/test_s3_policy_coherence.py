"""The S3 requests the code makes are exactly those the rendered IAM policies allow.

Every S3 call :mod:`hpcml.data.staging` makes is recorded (botocore's ``before-parameter-build``
and ``after-call`` events) against the local endpoint (moto's server), turned into the IAM
requests AWS would authorize (action, resource ARN, condition keys: ``s3:prefix``, the SSE
headers, the KMS key and ``kms:ViaService``) and evaluated against the policies
:func:`hpcml.k8s.iam.render` writes to ``manifests/iam/``: the role's identity policy, the data
bucket's policy and the data key's policy. Explicit deny wins; S3 needs an allow from the
identity (or bucket) policy; KMS needs an allow from both the key policy and the identity policy.

The evaluator covers the statement forms those policies use (``Action``/``Resource`` with ``*``
wildcards, ``Principal``, ``StringEquals``/``StringLike``/``StringNotEquals``/``Bool``); anything
else is an error, not a silent allow.
"""

from __future__ import annotations

import fnmatch
import json
from dataclasses import dataclass, field
from typing import Any

import pytest

from hpcml.k8s import iam

SPEC = iam.IamSpec()
NAME = SPEC.cluster.name
RENDERED = iam.render(SPEC)
BUCKET_POLICY = RENDERED[f"iam/resource/{NAME}-data-bucket-policy.json"]
KEY_POLICY = RENDERED[f"iam/resource/{NAME}-data-key-policy.json"]
REGION = SPEC.cluster.region


def identity_policy(role: str) -> dict:
    return RENDERED[f"iam/{iam.role_policies(SPEC)[SPEC.role_arn(role)]}.json"]


# ----------------------------------------------------------------------------------- evaluator
@dataclass(frozen=True)
class Request:
    """One IAM authorization: who, what action, on which ARN, with which condition keys."""

    principal: str
    action: str
    resource: str
    context: dict[str, str] = field(default_factory=dict)


def _as_list(v: Any) -> list:
    return v if isinstance(v, list) else [v]


def _like(pattern: str, value: str) -> bool:
    return fnmatch.fnmatchcase(value, pattern)  # IAM's * and ? (the policies use no [ ])


def _condition_holds(cond: dict, ctx: dict[str, str]) -> bool:
    for op, keys in cond.items():
        for key, wanted in keys.items():
            wanted = [str(w) for w in _as_list(wanted)]
            have = ctx.get(key)
            if op == "StringEquals":
                ok = have is not None and have in wanted
            elif op == "StringLike":
                ok = have is not None and any(_like(w, have) for w in wanted)
            elif op == "StringNotEquals":  # a negated operator matches when the key is absent
                ok = have is None or have not in wanted
            elif op == "Bool":
                ok = have is not None and have.lower() in [w.lower() for w in wanted]
            else:
                raise ValueError(f"condition operator {op!r} is not modelled by this evaluator")
            if not ok:
                return False
    return True


def _statement_matches(st: dict, req: Request, resource_policy: bool) -> bool:
    if "NotAction" in st or "NotResource" in st or "NotPrincipal" in st:
        raise ValueError(f"statement {st.get('Sid')!r}: Not* elements are not modelled by this evaluator")
    if resource_policy:
        p = st["Principal"]
        principals = ["*"] if p == "*" else _as_list(p["AWS"])
        if not any(x == "*" or x == req.principal for x in principals):
            return False
    if not any(_like(a.lower(), req.action.lower()) for a in _as_list(st["Action"])):
        return False
    if not any(_like(r, req.resource) for r in _as_list(st["Resource"])):
        return False
    return _condition_holds(st.get("Condition", {}), req.context)


def _matching(policy: dict, effect: str, req: Request, resource_policy: bool = False) -> list[str]:
    return [st.get("Sid", "?") for st in policy["Statement"]
            if st["Effect"] == effect and _statement_matches(st, req, resource_policy)]


def authorize(req: Request, identity: dict, resource_policy: dict, needs_resource_allow: bool) -> tuple[bool, str]:
    """(allowed, why). ``needs_resource_allow``: KMS (the key policy must allow too)."""
    denied = _matching(identity, "Deny", req) + _matching(resource_policy, "Deny", req, resource_policy=True)
    if denied:
        return False, f"explicitly denied by {denied}"
    by_identity = _matching(identity, "Allow", req)
    by_resource = _matching(resource_policy, "Allow", req, resource_policy=True)
    if needs_resource_allow:
        if not by_resource:
            return False, "no key-policy statement allows it"
        if not by_identity:
            return False, "no identity-policy statement allows it"
        return True, f"allowed by {by_identity} and key policy {by_resource}"
    if by_identity or by_resource:
        return True, f"allowed by {by_identity + by_resource}"
    return False, "no statement allows it (implicit deny)"


# ------------------------------------------------------------------------ S3 call -> IAM requests
#: S3 operation -> (IAM action, on the bucket (True) or on the object (False)).
ACTIONS = {
    "ListObjectsV2": ("s3:ListBucket", True), "ListObjects": ("s3:ListBucket", True),
    "HeadBucket": ("s3:ListBucket", True), "CreateBucket": ("s3:CreateBucket", True),
    "GetObject": ("s3:GetObject", False), "HeadObject": ("s3:GetObject", False),
    "PutObject": ("s3:PutObject", False), "CreateMultipartUpload": ("s3:PutObject", False),
    "UploadPart": ("s3:PutObject", False), "CompleteMultipartUpload": ("s3:PutObject", False),
    "AbortMultipartUpload": ("s3:AbortMultipartUpload", False),
    "ListParts": ("s3:ListMultipartUploadParts", False),
}
SSE_HEADERS = {"ServerSideEncryption": "s3:x-amz-server-side-encryption",
               "SSEKMSKeyId": "s3:x-amz-server-side-encryption-aws-kms-key-id"}


@dataclass
class Call:
    op: str
    params: dict
    response: dict | None = None


def iam_requests(calls: list[Call], principal: str) -> list[tuple[Call, Request, bool]]:
    """Each call's authorizations as ``(call, request, is_kms)``.

    The parts of a multipart upload (``UploadPart``, ``CompleteMultipartUpload``) carry no SSE
    header; they are authorized under the encryption their ``CreateMultipartUpload`` chose
    (same bucket and key). Writing or reading an SSE-KMS object also asks KMS for the key
    (``GenerateDataKey`` / ``Decrypt``) via S3.
    """
    base = {"aws:SecureTransport": "true"}  # boto3's AWS endpoint is https (checked below)
    via = {"kms:ViaService": f"s3.{REGION}.amazonaws.com"}
    uploads: dict[tuple[str, str], dict] = {}
    out = []
    for c in calls:
        if c.op not in ACTIONS:
            raise AssertionError(f"S3 operation {c.op} is not mapped to an IAM action; map it before using it")
        action, on_bucket = ACTIONS[c.op]
        bucket = c.params["Bucket"]
        arn = f"arn:aws:s3:::{bucket}" if on_bucket else f"arn:aws:s3:::{bucket}/{c.params['Key']}"
        ctx = dict(base)
        if c.op in ("ListObjectsV2", "ListObjects") and "Prefix" in c.params:
            ctx["s3:prefix"] = c.params["Prefix"]
        sse = {k: c.params[k] for k in SSE_HEADERS if k in c.params}
        if c.op == "CreateMultipartUpload":
            uploads[(bucket, c.params["Key"])] = sse
        if c.op in ("UploadPart", "CompleteMultipartUpload"):
            sse = uploads.get((bucket, c.params["Key"]), {})
        ctx.update({SSE_HEADERS[k]: v for k, v in sse.items()})
        out.append((c, Request(principal, action, arn, ctx), False))
        if c.op in ("PutObject", "CreateMultipartUpload") and sse.get("ServerSideEncryption") == "aws:kms":
            # no SSEKMSKeyId: S3 uses the account's aws/s3 key, which these policies do not name
            key = sse.get("SSEKMSKeyId", f"arn:aws:kms:{REGION}:{SPEC.cluster.account_id}:alias/aws/s3")
            out.append((c, Request(principal, "kms:GenerateDataKey", key, dict(via)), True))
        if c.op in ("GetObject", "HeadObject") and (c.response or {}).get("ServerSideEncryption") == "aws:kms":
            out.append((c, Request(principal, "kms:Decrypt", c.response["SSEKMSKeyId"], dict(via)), True))
    return out


def denials(calls: list[Call], role: str) -> list[str]:
    """Every authorization the calls need that ``role``'s policies refuse, with why."""
    principal = SPEC.role_arn(role)
    ident = identity_policy(role)
    bad = []
    for c, req, is_kms in iam_requests(calls, principal):
        ok, why = authorize(req, ident, KEY_POLICY if is_kms else BUCKET_POLICY, needs_resource_allow=is_kms)
        if not ok:
            bad.append(f"{c.op} {json.dumps({k: v for k, v in c.params.items() if k != 'Body'}, default=str)}: "
                       f"{req.action} on {req.resource} {why}")
    return bad


def record(client) -> list[Call]:
    """Start recording every API call ``client`` makes (the parameters as sent, then the response)."""
    calls: list[Call] = []

    def before(params, model, context, **_):
        call = Call(model.name, {k: v for k, v in params.items() if k != "Body"})
        context["hpcml_call"] = call
        calls.append(call)

    def after(parsed, context, **_):
        if "hpcml_call" in context:
            context["hpcml_call"].response = {k: v for k, v in parsed.items() if k != "Body"}

    client.meta.events.register("before-parameter-build.s3", before)
    client.meta.events.register("after-call.s3", after)
    return calls


# ------------------------------------------------------------------------ the evaluator, by table
KEY = SPEC.key_arn
SSE = {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": KEY}
B = SPEC.bucket


@pytest.mark.unit
@pytest.mark.parametrize("role, calls, refused", [
    ("spark", [Call("ListObjectsV2", {"Bucket": B, "Prefix": "processed/mnist/", "MaxKeys": 1})], []),
    ("spark", [Call("HeadBucket", {"Bucket": B})], ["s3:ListBucket"]),
    ("spark", [Call("ListObjectsV2", {"Bucket": B, "Prefix": "models/"})], ["s3:ListBucket"]),
    ("spark", [Call("ListObjectsV2", {"Bucket": B})], ["s3:ListBucket"]),
    ("spark", [Call("PutObject", {"Bucket": B, "Key": "processed/mnist/x.parquet", **SSE})], []),
    ("spark", [Call("PutObject", {"Bucket": B, "Key": "processed/mnist/x.parquet"})],
     ["s3:PutObject"]),
    ("spark", [Call("PutObject", {"Bucket": B, "Key": "processed/x", "ServerSideEncryption": "AES256"})],
     ["s3:PutObject"]),
    ("spark", [Call("PutObject", {"Bucket": B, "Key": "processed/x", "ServerSideEncryption": "aws:kms"})],
     ["kms:GenerateDataKey"]),
    ("spark", [Call("PutObject", {"Bucket": B, "Key": "processed/x", "ServerSideEncryption": "aws:kms",
                                  "SSEKMSKeyId": KEY.replace(SPEC.key_id, "0" * 8 + SPEC.key_id[8:])})],
     ["kms:GenerateDataKey"]),
    ("spark", [Call("PutObject", {"Bucket": B, "Key": "raw/mnist/a.csv", **SSE})], ["s3:PutObject"]),
    ("spark", [Call("CreateBucket", {"Bucket": B})], ["s3:CreateBucket"]),
    ("spark", [Call("CreateMultipartUpload", {"Bucket": B, "Key": "processed/big", **SSE}),
               Call("UploadPart", {"Bucket": B, "Key": "processed/big", "UploadId": "u", "PartNumber": 1})], []),
    ("spark", [Call("CreateMultipartUpload", {"Bucket": B, "Key": "processed/big"}),
               Call("UploadPart", {"Bucket": B, "Key": "processed/big", "UploadId": "u", "PartNumber": 1})],
     ["s3:PutObject", "s3:PutObject"]),
    ("spark", [Call("GetObject", {"Bucket": B, "Key": "raw/mnist/a.csv"}, {"ServerSideEncryption": "aws:kms",
                                                                          "SSEKMSKeyId": KEY})], []),
    ("inference", [Call("GetObject", {"Bucket": B, "Key": "raw/mnist/a.csv"})], ["s3:GetObject"]),
    ("inference", [Call("GetObject", {"Bucket": B, "Key": "models/m.pt"}, {"ServerSideEncryption": "aws:kms",
                                                                          "SSEKMSKeyId": KEY})], []),
    ("ingestion", [Call("ListObjectsV2", {"Bucket": B, "Prefix": "raw/mnist/", "MaxKeys": 1})], []),
    ("ingestion", [Call("PutObject", {"Bucket": B, "Key": "raw/mnist/a.csv", **SSE})], []),
    ("ingestion", [Call("PutObject", {"Bucket": B, "Key": "processed/mnist/x.parquet", **SSE})], ["s3:PutObject"]),
    ("ingestion", [Call("GetObject", {"Bucket": B, "Key": "raw/mnist/a.csv"})], ["s3:GetObject"]),
    ("data-scientist", [Call("PutObject", {"Bucket": B, "Key": "sandbox/x", **SSE})], []),
    ("data-scientist", [Call("PutObject", {"Bucket": B, "Key": "processed/x", **SSE})], ["s3:PutObject"]),
], ids=["spark-list-scoped", "spark-head-bucket", "spark-list-other-prefix", "spark-list-unscoped",
        "spark-put-kms", "spark-put-plain", "spark-put-aes256", "spark-put-default-key", "spark-put-other-key",
        "spark-put-raw", "spark-create-bucket", "spark-multipart-kms", "spark-multipart-plain", "spark-get-raw",
        "inference-get-raw", "inference-get-model", "ingestion-list-raw", "ingestion-put-raw",
        "ingestion-put-processed", "ingestion-get-raw", "scientist-put-sandbox", "scientist-put-processed"])
def test_evaluator_table(role, calls, refused):
    got = denials(calls, role)
    assert [d.split(" on ")[0].rsplit(": ", 1)[-1] for d in got] == refused, got


@pytest.mark.unit
def test_evaluator_refuses_what_it_does_not_model():
    with pytest.raises(AssertionError, match="DeleteBucket"):
        denials([Call("DeleteBucket", {"Bucket": B})], "spark")
    with pytest.raises(ValueError, match="IpAddress"):
        _condition_holds({"IpAddress": {"aws:SourceIp": "10.0.0.0/8"}}, {})


@pytest.mark.unit
def test_aws_client_is_https_and_the_key_is_the_policies_key():
    from hpcml.aws.send import s3_client
    from hpcml.data import staging

    assert s3_client().meta.endpoint_url.startswith("https://")
    assert staging.sse_kms_args() == {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": SPEC.key_arn}
    assert all(SPEC.key_arn in json.dumps(identity_policy(r)) for r in ("spark", "trainer", "data-scientist"))
    with pytest.raises(ValueError, match="kms_key_id"):
        staging.sse_kms_args("1234abcd")


# ----------------------------------------------------------------- the staging code, recorded live
@pytest.fixture(scope="module")
def s3():
    from hpcml.aws.local_s3 import LocalS3

    with LocalS3.start() as srv:
        admin = srv.client()
        admin.create_bucket(Bucket=B)  # provisioned with the policies; the roles cannot create it
        yield srv


@pytest.mark.integration
def test_spark_job_staging_requests_are_allowed(s3, tmp_path):
    """What ``python -m hpcml.data.cli`` does as the Spark role: download raw/, upload processed/
    (shards, one over the multipart threshold, then the manifest)."""
    from hpcml.data import staging

    admin = s3.client()
    for i in range(2):  # landed by ingestion, encrypted as the bucket policy demands
        admin.put_object(Bucket=B, Key=f"raw/mnist/part-0000{i}.csv", Body=b"1,2\n", **SSE)
    out = tmp_path / "dataset"
    (out / "train").mkdir(parents=True)
    (out / "train" / "part-0.parquet").write_bytes(b"p" * 1024)
    (out / "train" / "part-1.parquet").write_bytes(b"q" * (9 * 1024 * 1024))  # > 8 MiB: multipart
    (out / "_manifest.json").write_text("{}")

    client = s3.client()
    calls = record(client)
    back = staging.download_prefix(client, f"s3://{B}/raw/mnist/", tmp_path / "raw")
    staging.upload_dir(client, out, f"s3://{B}/processed/mnist/", pattern="*.parquet")
    staging.upload_dir(client, out, f"s3://{B}/processed/mnist/", pattern="_manifest.json")

    assert len(back) == 2
    ops = {c.op for c in calls}
    assert {"ListObjectsV2", "GetObject", "PutObject", "CreateMultipartUpload", "UploadPart",
            "CompleteMultipartUpload"} <= ops, ops
    assert denials(calls, "spark") == []
    for key in ("processed/mnist/train/part-0.parquet", "processed/mnist/train/part-1.parquet",
                "processed/mnist/_manifest.json"):
        head = admin.head_object(Bucket=B, Key=key)
        assert (head["ServerSideEncryption"], head["SSEKMSKeyId"]) == ("aws:kms", SPEC.key_arn), key


@pytest.mark.integration
def test_raw_lake_staging_is_ingestions_not_sparks(s3, tmp_path):
    """Notebook 01 lands the raw lake: ``upload_dir`` of the CSVs under ``raw/`` (one over the
    multipart threshold) is allowed for the ingestion role and denied for the Spark role."""
    from hpcml.data import staging
    from hpcml.data.spec import DataJobSpec

    lake = tmp_path / "lake"
    lake.mkdir()
    (lake / "part-00000.csv").write_text("label,p0\n1,0\n")
    (lake / "part-00001.csv").write_bytes(b"1,0\n" * (9 * 1024 * 1024 // 4))  # > 8 MiB: multipart
    raw_uri = f"{DataJobSpec().lake}/raw/mnist/"
    assert raw_uri.startswith(f"s3://{B}/")
    client = s3.client()
    calls = record(client)
    keys = staging.upload_dir(client, lake, raw_uri, "*.csv")

    assert keys == ["raw/mnist/part-00000.csv", "raw/mnist/part-00001.csv"]
    assert {"ListObjectsV2", "PutObject", "CreateMultipartUpload", "UploadPart"} <= {c.op for c in calls}
    assert denials(calls, "ingestion") == []
    refused = denials(calls, "spark")
    assert refused and all("s3:PutObject" in d or "s3:ListBucket" in d for d in refused), refused
    assert any(d.startswith("PutObject") for d in refused), refused


@pytest.mark.integration
def test_scientist_sandbox_upload_is_allowed_and_processed_is_not(s3, tmp_path):
    from hpcml.data import staging

    (tmp_path / "a.csv").write_text("1,2\n")
    client = s3.client()
    calls = record(client)
    staging.upload_dir(client, tmp_path, f"s3://{B}/sandbox/me/", pattern="*.csv")
    assert denials(calls, "data-scientist") == []
    # the same upload under processed/ is the Spark role's, not the scientist's
    calls.clear()
    staging.upload_dir(client, tmp_path, f"s3://{B}/processed/scratch/", pattern="*.csv")
    assert [d.split(": ", 1)[0].split(" ")[0] for d in denials(calls, "data-scientist")] == ["PutObject"]


@pytest.mark.integration
def test_local_endpoint_still_creates_a_missing_bucket(s3, tmp_path):
    from hpcml.data import staging

    (tmp_path / "a.csv").write_text("1,2\n")
    client = s3.client()
    calls = record(client)
    keys = staging.upload_dir(client, tmp_path, "s3://hpcml-fresh-bucket/raw/x/", pattern="*.csv")
    assert keys == ["raw/x/a.csv"]
    assert [c.op for c in calls] == ["ListObjectsV2", "CreateBucket", "PutObject"]


@pytest.mark.unit
def test_on_aws_a_missing_bucket_is_an_error_not_a_create_bucket(tmp_path):
    import boto3
    from botocore.stub import Stubber

    from hpcml.data import staging

    (tmp_path / "a.parquet").write_bytes(b"x")
    client = boto3.client("s3", region_name=REGION, aws_access_key_id="x", aws_secret_access_key="x")
    with Stubber(client) as stub:  # no create_bucket stubbed: calling it would fail the test
        stub.add_client_error("list_objects_v2", service_error_code="NoSuchBucket", http_status_code=404,
                              expected_params={"Bucket": B, "Prefix": "processed/mnist/", "MaxKeys": 1})
        with pytest.raises(FileNotFoundError, match=B):
            staging.upload_dir(client, tmp_path, f"s3://{B}/processed/mnist", pattern="*.parquet")
        stub.assert_no_pending_responses()
