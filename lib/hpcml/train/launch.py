"""Launchers: one :class:`~hpcml.train.spec.TrainSpec`, many targets.

A registry maps each target name in :data:`hpcml.train.spec.TARGETS` to a launcher
function (the shape papermill uses for its I/O handlers), so adding a target is one
decorated function, never another ``elif``::

    >>> from hpcml.train.launch import launch
    >>> res = launch(spec, target="slurm")        # sbatch on the local Slurm cluster
    >>> res.job.state, res.metrics["test_accuracy"]
    >>> launch(spec, target="kubernetes").request  # the MPIJob (submitted if a cluster is set)
    >>> launch(spec, target="batch").request       # validated AWS Batch requests

Targets and what they do here (no cloud account) versus with one:

* ``local``: ``horovodrun -np N`` on this machine (:mod:`hpcml.train.local`).
* ``slurm``: an ``sbatch`` script that runs ``horovodrun`` over the allocation's hosts,
  submitted to the real local Slurm cluster (:mod:`hpcml.cluster.slurm`); the same
  script runs on AWS ParallelCluster.
* ``kubernetes``: an MPIJob + checkpoint PVC + spec ConfigMap (:mod:`hpcml.k8s.train`),
  applied (server dry-run first) when a cluster is configured, else returned.
* ``sagemaker``: the CreateTrainingJob request built by the sagemaker SDK's
  ``ModelTrainer`` with ``MPI`` distribution; sent only with AWS credentials.
* ``batch``: an AWS Batch multi-node parallel job definition and the SubmitJob
  request; sent only with AWS credentials.

Every cluster target runs the same worker (``python -m hpcml.train.worker --spec``) on a
copy of the spec whose paths point into the container (:func:`container_spec`), laid out
over nodes by :func:`node_layout`.
"""

from __future__ import annotations

import dataclasses
import json
import shlex
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from hpcml.train.spec import TARGETS, TrainSpec

#: Where the shared (EFS/FSx) volume is mounted in cluster containers, and the SSH port
#: the non-root sshd of the worker containers listens on.
SHARED_MOUNT = "/mnt/hpcml"
SSH_PORT = 2222
WORKER_MODULE = "hpcml.train.worker"
#: Placeholder AWS account (see the brief) and the ECR copy of the training image.
ACCOUNT_ID = "111122223333"
REGION = "us-east-1"
ECR_IMAGE = f"{ACCOUNT_ID}.dkr.ecr.{REGION}.amazonaws.com/hpcml-train:0.1.0"


# ---- pure helpers shared by the cluster targets ------------------------------------------
@dataclass(frozen=True)
class NodeLayout:
    """How ``world_size`` workers are packed onto nodes of ``spec.instance_type``.

    Attributes:
        nodes: nodes (MPIJob worker pods, SageMaker instances, Batch nodes).
        slots: Horovod processes per node (``slotsPerWorker``, processes per host).
        gpus_per_node: GPUs requested per node (slots x gpus_per_worker).
        cpus_per_node: CPU cores requested per node (slots x threads_per_worker).
        memory_gib_per_node: memory requested per node.
        shm_gib: size of the /dev/shm tmpfs per node (counted in the memory).
    """

    nodes: int
    slots: int
    gpus_per_node: int
    cpus_per_node: int
    memory_gib_per_node: int
    shm_gib: int


def node_layout(spec: TrainSpec, memory_fraction: float = 0.75) -> NodeLayout:
    """Pack one process per GPU (or per ``threads_per_worker`` cores) onto whole nodes.

    Raises:
        ValueError: naming the TrainSpec field when the instance type is unknown, a worker
            needs more GPUs/cores than one node has, or world_size does not fill whole nodes.
    """
    from hpcml.cluster.spec import INSTANCE_TYPES

    it = INSTANCE_TYPES.get(spec.instance_type)
    if it is None:
        raise ValueError(f"TrainSpec.instance_type={spec.instance_type!r} is unknown; "
                         f"expected one of {sorted(INSTANCE_TYPES)}")
    if spec.gpus_per_worker:
        if it["gpus"] < spec.gpus_per_worker:
            raise ValueError(f"TrainSpec.gpus_per_worker={spec.gpus_per_worker} exceeds the {it['gpus']} GPU(s) "
                             f"of instance_type {spec.instance_type}")
        fit = it["gpus"] // spec.gpus_per_worker
    else:
        fit = (it["vcpus"] - 2) // spec.threads_per_worker  # leave 2 vCPUs to the kubelet/OS
    if fit * spec.threads_per_worker > it["vcpus"] or fit < 1:
        raise ValueError(f"TrainSpec.threads_per_worker={spec.threads_per_worker} does not fit "
                         f"{spec.instance_type} ({it['vcpus']} vCPUs) with {max(fit, 1)} worker(s) per node")
    slots = min(fit, spec.world_size)
    if spec.world_size % slots:
        raise ValueError(f"TrainSpec.world_size={spec.world_size} does not fill whole {spec.instance_type} nodes "
                         f"({slots} workers per node); use a multiple of {slots}")
    mem = int(it["memory_gib"] * memory_fraction) // slots * slots
    return NodeLayout(nodes=spec.world_size // slots, slots=slots, gpus_per_node=slots * spec.gpus_per_worker,
                      cpus_per_node=slots * spec.threads_per_worker, memory_gib_per_node=mem,
                      shm_gib=max(1, min(mem // 4, 64)))


def container_spec(spec: TrainSpec, data_dir: str = f"{SHARED_MOUNT}/data/mnist",
                   out_dir: str | None = None) -> TrainSpec:
    """A copy of ``spec`` whose dataset and output paths are the container's.

    Args:
        data_dir: the Parquet shards inside the container (shared volume or input channel).
        out_dir: checkpoints and model (default ``/mnt/hpcml/runs/<name>`` on the shared volume).
    """
    return dataclasses.replace(spec, dataset_dir=data_dir, out_dir=out_dir or f"{SHARED_MOUNT}/runs/{spec.name}",
                               metrics_port=spec.metrics_port or 9100)


def horovodrun_argv(spec: TrainSpec, spec_path: str, hosts: str | None = None, hostfile: str | None = None,
                    ssh_port: int | None = None, python: str = "python", horovodrun: str = "horovodrun") -> list[str]:
    """``horovodrun --gloo`` over a host list or an OpenMPI-style hostfile (``host slots=N``)."""
    argv = [horovodrun, "--gloo", "-np", str(spec.world_size)]
    if hostfile:
        argv += ["--hostfile", hostfile]
    else:
        argv += ["-H", hosts or f"localhost:{spec.world_size}"]
    if ssh_port:
        argv += ["-p", str(ssh_port)]
    return argv + [python, "-m", WORKER_MODULE, "--spec", spec_path]


# ---- registry --------------------------------------------------------------------------------
@dataclass
class LaunchResult:
    """What a launcher did.

    Attributes:
        target: the registry key.
        submitted: True when the job was really run/sent (False: rendered/validated only).
        request: what was (or would be) submitted: script text, manifests, request dicts.
        job: the Slurm :class:`~hpcml.cluster.slurm.JobResult` (slurm target).
        metrics: training metrics parsed from the run's output (when it ran here).
        response: the API's answer when sent (Kubernetes objects, AWS responses).
        reason: why it was not submitted (no cluster, no credentials, dry run).
        wall_s: seconds from launch to result.
    """

    target: str
    submitted: bool
    request: Any = None
    job: Any = None
    metrics: dict = field(default_factory=dict)
    response: Any = None
    reason: str = ""
    wall_s: float = 0.0


Launcher = Callable[..., LaunchResult]
LAUNCHERS: dict[str, Launcher] = {}


def register(name: str) -> Callable[[Launcher], Launcher]:
    """Decorator: make ``fn(spec, dry_run=None, **kw) -> LaunchResult`` the launcher of ``name``."""
    if name not in TARGETS:
        raise ValueError(f"launcher target {name!r} is not a TrainSpec target; expected one of {TARGETS}")

    def deco(fn: Launcher) -> Launcher:
        LAUNCHERS[name] = fn
        return fn
    return deco


def launch(spec: TrainSpec, target: str = "local", dry_run: bool | None = None, **kw: Any) -> LaunchResult:
    """Run (or render) ``spec`` on ``target``.

    Args:
        spec: the job.
        target: a key of :data:`LAUNCHERS`.
        dry_run: True renders/validates only; False submits (failing loudly if it cannot);
            None submits where a cluster/credentials exist and renders otherwise (the local
            targets always run).
        **kw: target-specific options (e.g. ``cluster=``, ``timeout_s=`` for slurm).

    Raises:
        ValueError: unknown target (the message lists the registry) or not a TrainSpec.
    """
    if not isinstance(spec, TrainSpec):
        raise ValueError(f"launch(spec=…) expects a TrainSpec, got {type(spec).__name__}")
    fn = LAUNCHERS.get(target)
    if fn is None:
        raise ValueError(f"unknown launch target {target!r}; registered targets: {sorted(LAUNCHERS)}")
    t0 = time.perf_counter()
    res = fn(spec, dry_run=dry_run, **kw)
    res.wall_s = time.perf_counter() - t0
    return res


# ---- local -------------------------------------------------------------------------------------
@register("local")
def _launch_local(spec: TrainSpec, dry_run: bool | None = None, **kw: Any) -> LaunchResult:
    """``horovodrun -np N`` on this machine (:func:`hpcml.train.local.run_local`; ``**kw`` go there)."""
    from hpcml.train import local

    spec_path = spec.resolved_out_dir() / "spec.json"
    if dry_run:
        return LaunchResult("local", False, request=local.build_command(spec, spec_path), reason="dry run")
    metrics = local.run_local(spec, **kw)
    return LaunchResult("local", True, request=local.build_command(spec, spec_path), metrics=metrics)


# ---- slurm -------------------------------------------------------------------------------------
def slurm_body(spec: TrainSpec, spec_path: str, python: str = "python", horovodrun: str = "horovodrun") -> str:
    """Body of the sbatch script: ``horovodrun`` over the allocation's hosts, one slot per task.

    The host list comes from ``$SLURM_JOB_NODELIST`` with ``$SLURM_NTASKS_PER_NODE`` slots
    each (all ``$SLURM_NTASKS`` on a one-node allocation); Horovod starts the ranks on the
    local node directly and on the other nodes over SSH, so the same script runs on the
    one-node cluster here and on a ParallelCluster queue.
    """
    cmd = " ".join(shlex.quote(a) for a in horovodrun_argv(spec, spec_path, hosts="HOSTS", python=python,
                                                           horovodrun=horovodrun))
    cmd = cmd.replace(" -H HOSTS ", ' -H "$HOSTS" ')
    return "\n".join([
        "set -euo pipefail",
        f"export OMP_NUM_THREADS={spec.threads_per_worker}",
        'SLOTS="${SLURM_NTASKS_PER_NODE:-$SLURM_NTASKS}"',
        'HOSTS=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | sed "s/\\$/:${SLOTS}/" | paste -sd, -)',
        'echo "hpcml: job $SLURM_JOB_ID runs ' + f'{spec.name} with {spec.world_size} workers on $HOSTS"',
        cmd,
        "",
    ])


def read_run_metrics(out_dir: Path) -> dict:
    """The final metrics rank 0 wrote to ``out_dir/metrics.json`` (``{}`` when absent)."""
    p = Path(out_dir) / "metrics.json"
    return json.loads(p.read_text()) if p.exists() else {}


def _fresh_out_dir(out_dir: Path) -> None:
    """Empty a previous run's folder (checkpoints would make the job resume, not train)."""
    import shutil

    from hpcml import paths

    if not out_dir.exists():
        return
    if paths.build_dir().resolve() not in out_dir.resolve().parents:
        raise ValueError(f"TrainSpec.out_dir={out_dir} already exists outside the build tree; "
                         f"pass fresh=False to resume from its checkpoints, or choose an empty folder")
    shutil.rmtree(out_dir)


@register("slurm")
def _launch_slurm(spec: TrainSpec, dry_run: bool | None = None, cluster: Any = None, timeout_s: float = 900,
                  time_limit_min: int = 30, fresh: bool = True) -> LaunchResult:
    """Submit the job with ``sbatch`` to the local Slurm cluster and wait for it.

    Args:
        cluster: a :class:`~hpcml.cluster.slurm.SlurmCluster` (default: ``ensure_cluster()``).
        timeout_s: give up (and cancel) after this long.
        time_limit_min: the job's ``--time``.
        fresh: start from scratch (empty a previous run's out_dir under the build tree);
            False resumes from its last checkpoint.

    Raises:
        RuntimeError: the job did not complete (state, exit code and output tail).
    """
    if spec.elastic:
        raise ValueError("TrainSpec.elastic=True is not supported by the slurm target (a Slurm allocation is "
                         "fixed); run elastic jobs with target='local' or set elastic=False")
    out_dir = spec.resolved_out_dir()
    spec_path = out_dir / "spec.json"
    bin_dir = Path(sys.executable).parent
    body = slurm_body(spec, str(spec_path), python=sys.executable, horovodrun=str(bin_dir / "horovodrun"))
    if dry_run:
        return LaunchResult("slurm", False, request=body, reason="dry run")
    from hpcml import paths
    from hpcml.cluster import slurm

    from hpcml.train import shards

    shards.check_world_size(spec.resolved_dataset_dir(), spec.world_size)  # fail before queueing, not in the job
    cl = cluster or slurm.ensure_cluster()
    if fresh:
        _fresh_out_dir(out_dir)
    paths.ensure(out_dir)
    spec.to_json(spec_path)
    res = cl.run_batch(body, name=f"train-{spec.name}", ntasks=spec.world_size,
                       cpus_per_task=spec.threads_per_worker, time_limit_min=time_limit_min, timeout_s=timeout_s,
                       workdir=out_dir, sbatch_args=["--nodes=1"])
    if not res.ok:
        raise RuntimeError(f"Slurm job {res.job_id} ({spec.name}) ended {res.state} with exit code {res.exit_code}"
                           f"{' (' + res.reason + ')' if res.reason else ''}; output tail:\n{res.output_tail}")
    return LaunchResult("slurm", True, request=body, job=res, metrics=read_run_metrics(out_dir))


# ---- kubernetes --------------------------------------------------------------------------------
@register("kubernetes")
def _launch_kubernetes(spec: TrainSpec, dry_run: bool | None = None, context: str = "") -> LaunchResult:
    """The MPIJob, its spec ConfigMap and checkpoint PVC; applied when a cluster is configured.

    The apply is a server-side dry run first (admission, schemas, quota, the MPIJob CRD),
    then the real one (:func:`hpcml.cluster.kube.apply`).
    """
    from hpcml.cluster import kube
    from hpcml.k8s import train as k8s_train

    docs = k8s_train.documents(spec)
    if dry_run:
        return LaunchResult("kubernetes", False, request=docs, reason="dry run")
    reason = kube.no_cluster_reason(context)
    if reason is not None:
        if dry_run is False:
            raise RuntimeError(f"cannot submit the MPIJob: {reason}")
        return LaunchResult("kubernetes", False, request=docs, reason=reason)
    results = kube.apply(kube.connect(context), docs)  # server-side dry run of all, then for real
    if not all(r.applied for r in results):
        bad = "; ".join(f"{r.kind}/{r.name}: {r.message}" for r in results if not r.dry_run_ok)
        raise RuntimeError(f"the MPIJob was not applied, the server-side dry run rejected: {bad}")
    return LaunchResult("kubernetes", True, request=docs, response=results)


# ---- AWS: SageMaker ------------------------------------------------------------------------------
SAGEMAKER_ROLE = f"arn:aws:iam::{ACCOUNT_ID}:role/hpcml-sagemaker"
SAGEMAKER_BUCKET = "hpcml-sagemaker"
SM_DATA, SM_CHECKPOINTS = "/opt/ml/input/data/train", "/opt/ml/checkpoints"
_SM_ENTRY = '''"""SageMaker entry point: run the hpcml worker on the spec shipped beside this file."""
import os
import runpy
import sys

sys.argv = ["hpcml.train.worker", "--spec", os.path.join(os.path.dirname(os.path.abspath(__file__)), "spec.json")]
runpy.run_module("hpcml.train.worker", run_name="__main__")
'''


def sagemaker_trainer(spec: TrainSpec, session: Any, source_dir: Path, bucket: str = SAGEMAKER_BUCKET,
                      role: str = SAGEMAKER_ROLE, image: str = ECR_IMAGE, spot: bool = True,
                      max_runtime_s: int = 4 * 3600) -> Any:
    """A ``sagemaker.train.ModelTrainer`` for ``spec``: MPI distribution, spot + checkpoints.

    ``source_dir`` receives the entry script and the container spec (SageMaker uploads it
    as the ``code`` channel). Imports the SDK lazily (it is heavy).
    """
    from sagemaker.train import ModelTrainer
    from sagemaker.train.configs import CheckpointConfig, Compute, InputData, SourceCode, StoppingCondition
    from sagemaker.train.distributed import MPI

    lay = node_layout(spec)
    (source_dir / "hpcml_entry.py").write_text(_SM_ENTRY)
    container_spec(spec, data_dir=SM_DATA, out_dir=SM_CHECKPOINTS).to_json(source_dir / "spec.json")
    return ModelTrainer(
        sagemaker_session=session, role=role, training_image=image, base_job_name=spec.name,
        source_code=SourceCode(source_dir=str(source_dir), entry_script="hpcml_entry.py"),
        distributed=MPI(process_count_per_node=lay.slots,
                        mpi_additional_options=["-x", f"OMP_NUM_THREADS={spec.threads_per_worker}"]),
        compute=Compute(instance_type=f"ml.{spec.instance_type}", instance_count=lay.nodes, volume_size_in_gb=100,
                        enable_managed_spot_training=spot),
        stopping_condition=StoppingCondition(max_runtime_in_seconds=max_runtime_s,
                                             **({"max_wait_time_in_seconds": 2 * max_runtime_s} if spot else {})),
        checkpoint_config=CheckpointConfig(s3_uri=f"s3://{bucket}/{spec.name}/checkpoints", local_path=SM_CHECKPOINTS),
        input_data_config=[InputData(channel_name="train", data_source=f"s3://{bucket}/data/mnist/")],
        environment={"OMP_NUM_THREADS": str(spec.threads_per_worker), "HPCML_SPEC": "spec.json"},
        tags=[{"key": "hpcml.io/stage", "value": "train"}],
    )


class _OfflineAWS:
    """Env for building SageMaker requests offline: every AWS endpoint is the local S3
    (moto server on loopback), placeholder credentials, no IAM role look-up."""

    def __init__(self, endpoint: str) -> None:
        import os

        self._os = os
        self.env = {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "local", "AWS_SECRET_ACCESS_KEY": "local",
                    "AWS_DEFAULT_REGION": REGION, "SAGEMAKER_VALIDATE_ROLE": "false"}
        self.saved: dict[str, str | None] = {}

    def __enter__(self) -> "_OfflineAWS":
        for k, v in self.env.items():
            self.saved[k] = self._os.environ.get(k)
            self._os.environ[k] = v
        return self

    def __exit__(self, *exc: Any) -> None:
        for k, v in self.saved.items():
            if v is None:
                self._os.environ.pop(k, None)
            else:
                self._os.environ[k] = v


def sagemaker_request(spec: TrainSpec, session: Any = None, **kw: Any) -> tuple[dict, dict[str, str]]:
    """The CreateTrainingJob request the SDK would send, and the staged MPI driver config.

    Without ``session`` the SDK runs offline: it stages the code and its MPI driver into a
    local S3 endpoint (:class:`hpcml.aws.local_s3.LocalS3`), so the request is the SDK's own.

    Returns:
        ``(request, staged)``: ``request`` in boto3 form (validated against botocore's
        sagemaker model); ``staged`` maps staged driver files (``distributed.json``,
        ``sourcecode.json``) to their text, read back from S3.
    """
    import tempfile

    from hpcml.aws import local_s3, requests as aws_requests, send as aws_send
    def build(sess: Any, s3: Any) -> tuple[dict, dict[str, str]]:
        with tempfile.TemporaryDirectory() as tmp:
            trainer = sagemaker_trainer(spec, sess, Path(tmp), **kw)
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
    with local_s3.LocalS3.start() as local, _OfflineAWS(local.endpoint):
        import boto3
        from sagemaker.core.helper.session_helper import Session

        s3 = local.client()
        s3.create_bucket(Bucket=SAGEMAKER_BUCKET)
        sess = Session(boto_session=boto3.Session(region_name=REGION), default_bucket=SAGEMAKER_BUCKET)
        return build(sess, s3)


@register("sagemaker")
def _launch_sagemaker(spec: TrainSpec, dry_run: bool | None = None, **kw: Any) -> LaunchResult:
    """Build (offline) or build against AWS and send the SageMaker training job."""
    from hpcml.aws import local_s3, requests as aws_requests, send as aws_send
    live = (dry_run is False) or (dry_run is None and aws_send.has_credentials())
    if not live:
        req, staged = sagemaker_request(spec, **kw)
        return LaunchResult("sagemaker", False, request={"create_training_job": req, "staged": staged},
                            reason="dry run" if dry_run else "no AWS credentials")
    import boto3
    from sagemaker.core.helper.session_helper import Session

    req, staged = sagemaker_request(spec, session=Session(boto_session=boto3.Session()), **kw)
    resp = aws_send.submit("sagemaker", "create_training_job", req, dry_run=False)
    return LaunchResult("sagemaker", True, request={"create_training_job": req, "staged": staged}, response=resp)


# ---- AWS: Batch multi-node parallel --------------------------------------------------------------
BATCH_QUEUE = "hpcml-gpu"
BATCH_ROLE = f"arn:aws:iam::{ACCOUNT_ID}:role/hpcml-trainer"
EFS_ID = "fs-0123456789abcdef0"  # placeholder EFS file system (the shared volume)
#: Node entry of the multi-node job: every node registers "ip slots=N" on the shared volume;
#: the main node waits for all of them and runs horovodrun over SSH; the others serve sshd.
BATCH_ENTRY = """set -euo pipefail
printf '%s' "$HPCML_SPEC_JSON" > /tmp/spec.json
REG="{shared}/batch/$AWS_BATCH_JOB_ID"; mkdir -p "$REG"
echo "$(hostname -i | awk '{{print $1}}') slots={slots}" > "$REG/$AWS_BATCH_JOB_NODE_INDEX"
if [ "$AWS_BATCH_JOB_NODE_INDEX" = "$AWS_BATCH_JOB_MAIN_NODE_INDEX" ]; then
  until [ "$(ls "$REG" | wc -l)" -ge "$AWS_BATCH_JOB_NUM_NODES" ]; do sleep 2; done
  cat "$REG"/* > /tmp/hostfile
  exec {run}
else
  exec /usr/sbin/sshd -De -f /etc/hpcml/sshd_config
fi
"""


def batch_requests(spec: TrainSpec, queue: str = BATCH_QUEUE, role: str = BATCH_ROLE, image: str = ECR_IMAGE,
                   efs_id: str = EFS_ID) -> dict[str, dict]:
    """``register_job_definition`` (multinode) and ``submit_job`` requests for AWS Batch.

    Both are validated offline against botocore's batch model.
    """
    from hpcml.aws import local_s3, requests as aws_requests, send as aws_send
    lay = node_layout(spec)
    cspec = container_spec(spec)
    run = " ".join(horovodrun_argv(spec, "/tmp/spec.json", hostfile="/tmp/hostfile", ssh_port=SSH_PORT))
    res = [{"type": "VCPU", "value": str(lay.cpus_per_node)},
           {"type": "MEMORY", "value": str(lay.memory_gib_per_node * 1024)}]
    if lay.gpus_per_node:
        res.insert(0, {"type": "GPU", "value": str(lay.gpus_per_node)})
    container = {
        "image": image,
        "command": ["bash", "-c", BATCH_ENTRY.format(shared=SHARED_MOUNT, slots=lay.slots, run=run)],
        "jobRoleArn": role,
        "resourceRequirements": res,
        "environment": [{"name": "HPCML_SPEC_JSON", "value": cspec.to_json()},
                        {"name": "OMP_NUM_THREADS", "value": str(spec.threads_per_worker)}],
        "linuxParameters": {"sharedMemorySize": lay.shm_gib * 1024},
        "ulimits": [{"name": "memlock", "softLimit": -1, "hardLimit": -1}],
        "volumes": [{"name": "shared", "efsVolumeConfiguration": {"fileSystemId": efs_id,
                                                                  "transitEncryption": "ENABLED"}}],
        "mountPoints": [{"sourceVolume": "shared", "containerPath": SHARED_MOUNT, "readOnly": False}],
        "user": "1000",
        "instanceType": spec.instance_type,
    }
    tags = {"hpcml.io/stage": "train", "app.kubernetes.io/part-of": "hpcml"}
    register_req = {
        "jobDefinitionName": spec.name, "type": "multinode", "platformCapabilities": ["EC2"],
        "nodeProperties": {"numNodes": lay.nodes, "mainNode": 0,
                           "nodeRangeProperties": [{"targetNodes": "0:", "container": container}]},
        "retryStrategy": {"attempts": 3, "evaluateOnExit": [
            {"onStatusReason": "Host EC2*", "action": "RETRY"},  # Spot reclaim / host failure: resume
            {"onReason": "*", "action": "EXIT"}]},
        "timeout": {"attemptDurationSeconds": 4 * 3600},
        "propagateTags": True, "tags": tags,
    }
    submit_req = {"jobName": spec.name, "jobQueue": queue, "jobDefinition": spec.name,
                  "nodeOverrides": {"numNodes": lay.nodes}, "propagateTags": True, "tags": tags}
    return {"register_job_definition": aws_requests.validate_request("batch", "register_job_definition", register_req),
            "submit_job": aws_requests.validate_request("batch", "submit_job", submit_req)}


@register("batch")
def _launch_batch(spec: TrainSpec, dry_run: bool | None = None, **kw: Any) -> LaunchResult:
    """Validate the Batch requests; register + submit only with credentials."""
    from hpcml.aws import local_s3, requests as aws_requests, send as aws_send
    reqs = batch_requests(spec, **kw)
    if dry_run or (dry_run is None and not aws_send.has_credentials()):
        return LaunchResult("batch", False, request=reqs, reason="dry run" if dry_run else "no AWS credentials")
    reg = aws_send.submit("batch", "register_job_definition", reqs["register_job_definition"], dry_run=False)
    sub = aws_send.submit("batch", "submit_job", reqs["submit_job"], dry_run=False)
    return LaunchResult("batch", True, request=reqs, response={"register": reg, "submit": sub})
