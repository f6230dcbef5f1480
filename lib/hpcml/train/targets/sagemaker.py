"""The ``sagemaker`` target: the CreateTrainingJob request built by the sagemaker SDK's
``ModelTrainer`` with ``MPI`` distribution (spot capacity, checkpoints to S3); sent only with
AWS credentials.

Without credentials the SDK still builds the request itself, offline: it stages the code
and its MPI driver config into the local object store (SeaweedFS,
:class:`hpcml.aws.local_s3.ObjectStore`: the build tree's running store, or a throwaway one
for the call), signed as the store's launcher identity, which may write the SDK's staging
bucket and nothing else (:data:`hpcml.aws.identities.LAUNCHER`), through a session whose
every client is pointed at the store (:func:`offline_session`). The process environment is
left alone.
"""

from __future__ import annotations

import copy
import json
import shutil
import signal
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

from hpcml.aws import account, identities
from hpcml.aws import requests as aws_requests
from hpcml.aws import send as aws_send
from hpcml.train.spec import TrainSpec
from hpcml.train.targets.layout import check_image_for, container_spec, ecr_image_for, node_layout
from hpcml.train.targets.result import LaunchResult

SAGEMAKER_ROLE = account.role_arn("hpcml-sagemaker")
SAGEMAKER_BUCKET = identities.STAGING_BUCKET
#: Where SageMaker mounts the ``train`` input channel and syncs checkpoints in the container.
SM_DATA, SM_CHECKPOINTS = "/opt/ml/input/data/train", "/opt/ml/checkpoints"
#: The entry script shipped in the ``code`` channel: runs the worker on the spec beside it.
ENTRY_SCRIPT = '''"""SageMaker entry point: run the hpcml worker on the spec shipped beside this file."""
import os
import runpy
import sys

sys.argv = ["hpcml.train.worker", "--spec", os.path.join(os.path.dirname(os.path.abspath(__file__)), "spec.json")]
runpy.run_module("hpcml.train.worker", run_name="__main__")
'''
#: The trust policy the offline IAM answer gives the placeholder role: SageMaker may assume it.
_SAGEMAKER_TRUST = {"Version": "2012-10-17", "Statement": [
    {"Effect": "Allow", "Principal": {"Service": "sagemaker.amazonaws.com"}, "Action": "sts:AssumeRole"}]}


@dataclass(frozen=True)
class SageMakerOptions:
    """Options of the ``sagemaker`` target.

    Attributes:
        bucket: the data bucket of the dataset channel (``processed/``), the checkpoints
            (``checkpoints/<job>/``) and the model output (``models/<job>/``, :func:`output_s3_uri`),
            the layout of :data:`hpcml.aws.account.S3_PREFIXES` that the execution role's policy
            (manifests/iam/hpcml-sagemaker.json) grants; the SDK stages its code in the session's own bucket.
        role: the execution role ARN.
        image: the training image (``None``: the ECR CUDA image for a GPU spec, the CPU one otherwise).
        spot: managed spot training (checkpoints make a reclaimed job resume).
        max_runtime_s: the job's run-time limit (spot: the wait limit is twice this).
    """

    bucket: str = account.data_bucket()
    role: str = SAGEMAKER_ROLE
    image: str | None = None
    spot: bool = True
    max_runtime_s: int = 4 * 3600


def output_s3_uri(spec: TrainSpec, bucket: str = account.data_bucket()) -> str:
    """The job's model output path (``OutputDataConfig.S3OutputPath``): the data bucket's
    ``models/<job>/`` prefix, where the execution role may write. SageMaker puts
    ``<job name>/output/model.tar.gz`` under it; without it the SDK would write to its session's
    default bucket, which the role is not granted."""
    return f"s3://{bucket}/models/{spec.name}/"


def sagemaker_trainer(spec: TrainSpec, session: Any, source_dir: Path,
                      options: SageMakerOptions = SageMakerOptions()) -> Any:
    """A ``sagemaker.train.ModelTrainer`` for ``spec``: MPI distribution, spot + checkpoints.

    Args:
        spec: the job.
        session: the ``sagemaker`` Session the trainer builds (and would send) with.
        source_dir: receives the entry script and the container spec (SageMaker uploads it
            as the ``code`` channel).
        options: bucket, role, image, spot and run-time limit.

    Imports the SDK lazily (it is heavy).
    """
    from sagemaker.train import ModelTrainer
    from sagemaker.train.configs import (CheckpointConfig, Compute, InputData, OutputDataConfig, SourceCode,
                                         StoppingCondition)
    from sagemaker.train.distributed import MPI

    lay = node_layout(spec)
    (source_dir / "hpcml_entry.py").write_text(ENTRY_SCRIPT)
    container_spec(spec, data_dir=SM_DATA, out_dir=SM_CHECKPOINTS).to_json(source_dir / "spec.json")
    o = options
    image = check_image_for(spec, o.image or ecr_image_for(spec), "SageMakerOptions.image")
    return ModelTrainer(
        sagemaker_session=session, role=o.role, training_image=image, base_job_name=spec.name,
        source_code=SourceCode(source_dir=str(source_dir), entry_script="hpcml_entry.py"),
        distributed=MPI(process_count_per_node=lay.slots,
                        mpi_additional_options=["-x", f"OMP_NUM_THREADS={spec.threads_per_worker}"]),
        compute=Compute(instance_type=f"ml.{spec.instance_type}", instance_count=lay.nodes, volume_size_in_gb=100,
                        enable_managed_spot_training=o.spot),
        stopping_condition=StoppingCondition(max_runtime_in_seconds=o.max_runtime_s,
                                             **({"max_wait_time_in_seconds": 2 * o.max_runtime_s} if o.spot else {})),
        checkpoint_config=CheckpointConfig(s3_uri=f"s3://{o.bucket}/checkpoints/{spec.name}/",
                                           local_path=SM_CHECKPOINTS),
        input_data_config=[InputData(channel_name="train", data_source=f"s3://{o.bucket}/processed/mnist/")],
        output_data_config=OutputDataConfig(s3_output_path=output_s3_uri(spec, o.bucket)),
        environment={"OMP_NUM_THREADS": str(spec.threads_per_worker), "HPCML_SPEC": "spec.json"},
        tags=[{"key": "hpcml.io/stage", "value": "train"}],
    )


def _offline_iam(role: str) -> Any:
    """A botocore ``before-call.iam`` handler answering the SDK's role check in-process.

    Before it builds a request the SDK checks its execution role (``SimulatePrincipalPolicy``,
    then ``GetRole`` for the trust policy). Offline there is no account to ask: the
    placeholder role is answered as existing, denied nothing and trusted by SageMaker.
    Every other IAM call goes on to the endpoint.
    """
    from botocore.awsrequest import AWSResponse

    answers = {
        "SimulatePrincipalPolicy": {"EvaluationResults": [], "IsTruncated": False},
        "GetRole": {"Role": {"Path": "/", "RoleName": role.rpartition("/")[2], "RoleId": "AROAPLACEHOLDERROLE01",
                             "Arn": role, "CreateDate": datetime(2024, 1, 1, tzinfo=timezone.utc),
                             "AssumeRolePolicyDocument": json.dumps(_SAGEMAKER_TRUST)}},
    }

    def answer(model: Any, **_: Any) -> tuple[Any, dict] | None:
        parsed = answers.get(model.name)  # botocore's after-call handlers may edit it: hand out a copy
        return None if parsed is None else (AWSResponse(None, 200, {}, None), copy.deepcopy(parsed))

    return answer


def offline_session(endpoint: str, credentials: tuple[str, str], role: str = SAGEMAKER_ROLE,
                    default_bucket: str = SAGEMAKER_BUCKET) -> Any:
    """A ``sagemaker`` Session that builds requests with no AWS account.

    Every boto3 client and resource it creates talks to ``endpoint`` (unless the SDK names
    another endpoint itself), with ``credentials`` and :data:`hpcml.aws.account.REGION`, all
    passed to the session explicitly; IAM's role check is answered in-process
    (:func:`_offline_iam`).

    Args:
        endpoint: the local object store's endpoint (``ObjectStore.endpoint``).
        credentials: (access key, secret key) of the store's launcher identity.
        role: the execution role the SDK will check.
        default_bucket: the bucket the SDK stages code into (the store provisions it).
    """
    import boto3
    from sagemaker.core.helper.session_helper import Session

    class _EndpointSession(boto3.Session):
        def client(self, service_name: str, *args: Any, **kw: Any) -> Any:
            if kw.get("endpoint_url") is None:
                kw["endpoint_url"] = endpoint
            return super().client(service_name, *args, **kw)

        def resource(self, service_name: str, *args: Any, **kw: Any) -> Any:
            if kw.get("endpoint_url") is None:
                kw["endpoint_url"] = endpoint
            return super().resource(service_name, *args, **kw)

    boto = _EndpointSession(aws_access_key_id=credentials[0], aws_secret_access_key=credentials[1],
                            region_name=account.REGION)
    boto.events.register("before-call.iam", _offline_iam(role))
    return Session(boto_session=boto, default_bucket=default_bucket)


@contextmanager
def offline_store() -> Iterator[Any]:
    """The object store the offline SDK stages into: the build tree's, when it is running and
    answering, else a throwaway one in a temporary folder, SIGKILLed after the call (its data
    is discarded, so the ~15 s orderly shutdown buys nothing) and removed."""
    from hpcml import proc
    from hpcml.aws.local_s3 import ObjectStore

    running = ObjectStore.attach()
    if running is not None and identities.LAUNCHER in running.credentials \
            and proc.port_open(running.ports["s3"], running.address):
        yield running
        return
    tmp = tempfile.mkdtemp(prefix="hpcml-sagemaker-store-")
    store = None
    try:
        store = ObjectStore.start(Path(tmp), address=proc.LOOPBACK)
        yield store
    finally:
        if store is not None:
            store.stop(sig=signal.SIGKILL)
        shutil.rmtree(tmp, ignore_errors=True)


def sagemaker_request(spec: TrainSpec, options: SageMakerOptions = SageMakerOptions(),
                      session: Any = None) -> tuple[dict, dict[str, str]]:
    """The CreateTrainingJob request the SDK would send, and the staged MPI driver config.

    Args:
        spec: the job.
        options: bucket, role, image, spot and run-time limit.
        session: a live ``sagemaker`` Session; without one the SDK runs offline against the
            local object store (:func:`offline_store`, :func:`offline_session`).

    Returns:
        ``(request, staged)``: ``request`` in boto3 form (validated against botocore's
        sagemaker model); ``staged`` maps staged driver files (``distributed.json``,
        ``sourcecode.json``) to their text, read back from S3.
    """
    def build(sess: Any, s3: Any) -> tuple[dict, dict[str, str]]:
        with tempfile.TemporaryDirectory() as tmp:
            trainer = sagemaker_trainer(spec, sess, Path(tmp), options)
            req = json.loads(json.dumps(trainer._create_training_job_args(boto3=True), default=str))
        staged: dict[str, str] = {}
        drivers = next((c["DataSource"]["S3DataSource"]["S3Uri"] for c in req.get("InputDataConfig", [])
                        if c["ChannelName"] == "sm_drivers"), "")
        bucket, _, prefix = drivers.removeprefix("s3://").partition("/")
        for name in ("distributed.json", "sourcecode.json"):
            try:
                staged[name] = s3.get_object(Bucket=bucket, Key=f"{prefix}/{name}")["Body"].read().decode()
            except Exception as exc:  # noqa: BLE001 - report what could not be read back
                staged[name] = f"<not readable: {exc}>"
        return aws_requests.validate_request("sagemaker", "create_training_job", req), staged

    if session is not None:
        return build(session, session.boto_session.client("s3"))
    with offline_store() as store:
        return build(offline_session(store.endpoint, store.credentials[identities.LAUNCHER], role=options.role),
                     store.client(identities.LAUNCHER))


def launch_sagemaker(spec: TrainSpec, dry_run: bool | None, options: SageMakerOptions) -> LaunchResult:
    """Build (offline) or build against AWS and send the SageMaker training job.

    ``dry_run=None`` sends when AWS credentials exist; ``False`` always tries to send.
    """
    live = (dry_run is False) or (dry_run is None and aws_send.has_credentials())
    if not live:
        req, staged = sagemaker_request(spec, options)
        return LaunchResult("sagemaker", False, request={"create_training_job": req, "staged": staged},
                            reason="dry run" if dry_run else "no AWS credentials")
    import boto3
    from sagemaker.core.helper.session_helper import Session

    req, staged = sagemaker_request(spec, options, session=Session(boto_session=boto3.Session()))
    resp = aws_send.submit("sagemaker", "create_training_job", req, dry_run=False)
    return LaunchResult("sagemaker", True, request={"create_training_job": req, "staged": staged}, response=resp)
