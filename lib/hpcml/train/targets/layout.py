"""What every cluster target builds from one TrainSpec, as pure functions (spec -> data).

* :func:`node_layout` packs ``world_size`` workers onto whole nodes of ``spec.instance_type``
  (MPIJob worker pods, SageMaker instances, Batch nodes);
* :func:`container_spec` is the copy of the spec whose paths point into the container
  (the shared volume at :data:`hpcml.paths.SHARED_MOUNT`);
* :func:`horovodrun_argv` is the launcher command over a host list or hostfile;
* :func:`slurm_body` is the sbatch script of the ``slurm`` target;
* :func:`batch_requests` are the AWS Batch multi-node requests of the ``batch`` target,
  validated offline against botocore's model (sending them is :mod:`hpcml.train.targets.batch`).

Every cluster target runs the same worker (``python -m hpcml.train.worker --spec``). Nothing
here starts a process or talks to a service; :mod:`hpcml.k8s.train` renders the checked-in
manifests from these.
"""

from __future__ import annotations

import dataclasses
import re
import shlex
from dataclasses import dataclass

from hpcml import paths, specbase
from hpcml.aws import account
from hpcml.aws.requests import validate_request
from hpcml.cluster.spec import INSTANCE_TYPES
from hpcml.k8s.common import APP_UID, PART_OF
from hpcml.train.spec import TRAIN_CUDA_REPO, TRAIN_REPO, TRAIN_TAG, TrainSpec

#: The SSH port the non-root sshd of the worker containers listens on.
SSH_PORT = 2222
#: The module every rank runs: ``python -m hpcml.train.worker --spec spec.json``.
WORKER_MODULE = "hpcml.train.worker"
#: The training images' repositories and tag (``TRAIN_REPO``, ``TRAIN_CUDA_REPO``,
#: ``TRAIN_TAG``) are named once, in :mod:`hpcml.train.spec`, and re-exported here. A spec whose
#: workers have GPUs runs the CUDA image on every target (:func:`ecr_image_for`, :mod:`hpcml.k8s.train`).
#: The ECR copies of the training images, in the placeholder account.
ECR_IMAGE = account.ecr_image(TRAIN_REPO, TRAIN_TAG)
ECR_CUDA_IMAGE = account.ecr_image(TRAIN_CUDA_REPO, TRAIN_TAG)
#: The port the rank-0 exporter serves on in a container when the spec sets none.
CONTAINER_METRICS_PORT = 9100


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

    Args:
        spec: the job.
        memory_fraction: the share of a node's memory the pods request.

    Raises:
        hpcml.specbase.SpecError: naming the TrainSpec field when the instance type is unknown,
            a worker needs more GPUs/cores than one node has, or world_size does not fill
            whole nodes.
    """
    it = INSTANCE_TYPES.get(spec.instance_type)
    if it is None:
        raise specbase.fail(spec, "instance_type", f"one of {sorted(INSTANCE_TYPES)}", spec.instance_type)
    if spec.gpus_per_worker:
        if it["gpus"] < spec.gpus_per_worker:
            raise specbase.fail(spec, "gpus_per_worker", f"at most the {it['gpus']} GPU(s) of instance_type "
                                f"{spec.instance_type}", spec.gpus_per_worker)
        fit = it["gpus"] // spec.gpus_per_worker
    else:
        fit = (it["vcpus"] - 2) // spec.threads_per_worker  # leave 2 vCPUs to the kubelet/OS
    if fit * spec.threads_per_worker > it["vcpus"] or fit < 1:
        raise specbase.fail(spec, "threads_per_worker", f"a thread count that fits {spec.instance_type} "
                            f"({it['vcpus']} vCPUs) with {max(fit, 1)} worker(s) per node", spec.threads_per_worker)
    slots = min(fit, spec.world_size)
    if spec.world_size % slots:
        raise specbase.fail(spec, "world_size", f"a multiple of {slots} (whole {spec.instance_type} nodes of "
                            f"{slots} workers)", spec.world_size)
    mem = int(it["memory_gib"] * memory_fraction) // slots * slots
    return NodeLayout(nodes=spec.world_size // slots, slots=slots, gpus_per_node=slots * spec.gpus_per_worker,
                      cpus_per_node=slots * spec.threads_per_worker, memory_gib_per_node=mem,
                      shm_gib=max(1, min(mem // 4, 64)))


def container_spec(spec: TrainSpec, data_dir: str | None = None, out_dir: str | None = None) -> TrainSpec:
    """A copy of ``spec`` whose dataset and output paths are the container's.

    Args:
        spec: the job.
        data_dir: the Parquet shards inside the container (default: the shared volume's
            dataset, :func:`hpcml.paths.shared_dataset_dir`; or an input channel).
        out_dir: checkpoints and model (default ``/mnt/hpcml/runs/<name>`` on the shared volume).
    """
    return dataclasses.replace(spec, dataset_dir=data_dir or paths.shared_dataset_dir(),
                               out_dir=out_dir or f"{paths.SHARED_MOUNT}/runs/{spec.name}",
                               metrics_port=spec.metrics_port or CONTAINER_METRICS_PORT)


def horovodrun_argv(spec: TrainSpec, spec_path: str, hosts: str | None = None, hostfile: str | None = None,
                    ssh_port: int | None = None, python: str = "python", horovodrun: str = "horovodrun",
                    ssh_identity_file: str | None = None) -> list[str]:
    """``horovodrun --gloo`` over a host list or an OpenMPI-style hostfile (``host slots=N``).

    Args:
        spec: the job (``world_size`` processes).
        spec_path: the spec JSON as the workers see it.
        hosts: ``host:slots,…`` (default: all slots on localhost).
        hostfile: a hostfile path instead of ``hosts``.
        ssh_port: the port of the workers' sshd (omitted: Horovod's default).
        ssh_identity_file: the key Horovod's SSH launches use (omitted: the user's default key).
        python: the interpreter the workers run.
        horovodrun: the launcher executable.
    """
    argv = [horovodrun, "--gloo", "-np", str(spec.world_size)]
    if hostfile:
        argv += ["--hostfile", hostfile]
    else:
        argv += ["-H", hosts or f"localhost:{spec.world_size}"]
    if ssh_port:
        argv += ["-p", str(ssh_port)]
    if ssh_identity_file:
        argv += ["--ssh-identity-file", ssh_identity_file]
    return argv + [python, "-m", WORKER_MODULE, "--spec", spec_path]


#: What :func:`slurm_body` writes in place of an exported value when asked to redact it.
REDACTED = "<redacted>"


def env_exports(env: dict[str, str] | None, redact: bool = False) -> list[str]:
    """``export NAME=value`` lines (values shell-quoted; :data:`REDACTED` when ``redact``).

    Raises:
        ValueError: a name that is not a shell variable name, or a value that is not a string.
    """
    lines = []
    for k, v in sorted((env or {}).items()):
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", str(k)):
            raise ValueError(f"env: {k!r} is not a shell variable name (letters, digits, '_', not first a digit)")
        if not isinstance(v, str):
            raise ValueError(f"env[{k!r}] must be a string, got {type(v).__name__}")
        lines.append(f"export {k}={REDACTED if redact else shlex.quote(v)}")
    return lines


#: torchrun's c10d rendezvous port on the first node of a Slurm job: this base + job id mod 500.
SLURM_RDZV_PORT_BASE = 29400
#: Seconds a torchrun agent of a Slurm job waits for the others (join and read timeouts).
SLURM_RDZV_TIMEOUT_S = 60
# Run by each node's srun task: its own address (Slurm's NodeAddr), whether it hosts the
# rendezvous, then torchrun. $HEAD, $RDZV and $SLOTS come from the batch script.
_TORCHRUN_TASK = ('ME=$(scontrol show node "$SLURMD_NODENAME" | grep -o "NodeAddr=[^ ]*" | cut -d= -f2); '
                  'IS_HOST=false; [ "$SLURMD_NODENAME" = "$HEAD" ] && IS_HOST=true; exec {cmd}')


def torchrun_slurm_argv(spec: TrainSpec, spec_path: str, torchrun: str = "torchrun") -> list[str]:
    """One node's ``torchrun`` in a Slurm job (shell words: ``$SLURM_NNODES``, ``$SLOTS``, ``$RDZV``,
    ``$IS_HOST``, ``$ME`` and ``$SLURM_JOB_ID`` are expanded on the node)."""
    t = SLURM_RDZV_TIMEOUT_S
    return [torchrun, "--nnodes=$SLURM_NNODES", "--nproc-per-node=$SLOTS", "--rdzv-backend=c10d",
            "--rdzv-endpoint=$RDZV", "--rdzv-id=$SLURM_JOB_ID",
            f"--rdzv-conf=join_timeout={t},read_timeout={t},is_host=$IS_HOST", "--local-addr=$ME",
            "-m", WORKER_MODULE, "--spec", shlex.quote(spec_path)]


def slurm_body(spec: TrainSpec, spec_path: str, python: str = "python", horovodrun: str = "horovodrun",
               ssh_identity_file: str | None = None, env: dict[str, str] | None = None,
               redact_env: bool = False, torchrun: str = "torchrun", gloo_iface: str | None = None) -> str:
    """Body of the sbatch script, for ``spec.backend``.

    ``horovod``: ``horovodrun`` over the allocation's hosts, one slot per task. The host list
    comes from ``$SLURM_JOB_NODELIST`` with ``$SLURM_NTASKS_PER_NODE`` slots each (all
    ``$SLURM_NTASKS`` on a one-node allocation); Horovod starts the ranks on the local node
    directly and on the other nodes over SSH, so the same script runs on the one-node
    cluster here and on a ParallelCluster queue.

    ``ddp``: ``srun`` starts one ``torchrun`` agent per node (``--nproc-per-node`` = the
    node's slots); they meet at a c10d rendezvous on the first node's address (Slurm's
    ``NodeAddr``, port :data:`SLURM_RDZV_PORT_BASE` + job id mod 500), each advertising its
    own address, and time out after :data:`SLURM_RDZV_TIMEOUT_S` s. No SSH.

    ``env`` is exported at the top (values shell-quoted; the script never echoes them, it
    runs without ``set -x``); ``redact_env`` writes :data:`REDACTED` instead of each value,
    for a request that is shown rather than submitted. ``gloo_iface`` sets
    ``GLOO_SOCKET_IFNAME`` (the nodes' interface: Gloo otherwise binds to what the
    hostname resolves to).
    """
    head = ["set -euo pipefail", *env_exports(env, redact_env),
            *([f"export GLOO_SOCKET_IFNAME={shlex.quote(gloo_iface)}"] if gloo_iface else []),
            f"export OMP_NUM_THREADS={spec.threads_per_worker}",
            'SLOTS="${SLURM_NTASKS_PER_NODE:-$SLURM_NTASKS}"']
    if spec.backend == "ddp":
        task = _TORCHRUN_TASK.format(cmd=" ".join(torchrun_slurm_argv(spec, spec_path, torchrun)))
        return "\n".join([
            *head,
            'export SLOTS HEAD=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n1)',
            'HEAD_ADDR=$(scontrol show node "$HEAD" | grep -o "NodeAddr=[^ ]*" | cut -d= -f2)',
            f'export RDZV="$HEAD_ADDR:$(({SLURM_RDZV_PORT_BASE} + SLURM_JOB_ID % 500))"',
            'echo "hpcml: job $SLURM_JOB_ID runs ' + f'{spec.name} (ddp) with {spec.world_size} workers: '
            '$SLURM_NNODES torchrun agents x $SLOTS, rendezvous at $RDZV"',
            f'srun --ntasks="$SLURM_NNODES" --ntasks-per-node=1 --cpus-per-task=$((SLOTS * {spec.threads_per_worker})) '
            f'--kill-on-bad-exit=1 bash -c {shlex.quote(task)}',
            "",
        ])
    cmd = " ".join(shlex.quote(a) for a in horovodrun_argv(spec, spec_path, hosts="HOSTS", python=python,
                                                           horovodrun=horovodrun,
                                                           ssh_identity_file=ssh_identity_file))
    cmd = cmd.replace(" -H HOSTS ", ' -H "$HOSTS" ')
    return "\n".join([
        *head,
        'HOSTS=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | sed "s/\\$/:${SLOTS}/" | paste -sd, -)',
        'echo "hpcml: job $SLURM_JOB_ID runs ' + f'{spec.name} with {spec.world_size} workers on $HOSTS"',
        cmd,
        "",
    ])


# ---- AWS Batch multi-node parallel ------------------------------------------------------------
BATCH_QUEUE = "hpcml-gpu"
BATCH_ROLE = account.role_arn("hpcml-trainer")
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


def ecr_image_for(spec: TrainSpec) -> str:
    """The ECR training image ``spec`` runs: :data:`ECR_CUDA_IMAGE` when its workers have GPUs
    (the CPU image's Horovod has Gloo only, no CUDA or NCCL), else :data:`ECR_IMAGE`."""
    return ECR_CUDA_IMAGE if spec.gpus_per_worker > 0 else ECR_IMAGE


def check_image_for(spec: TrainSpec, image: str, field: str = "image") -> str:
    """``image``, unless ``spec`` has GPUs and ``image`` is the project's CPU training image."""
    if spec.gpus_per_worker > 0 and image.split("@")[0].rsplit(":", 1)[0].rsplit("/", 1)[-1] == TRAIN_REPO:
        raise ValueError(f"{field}: a spec with gpus_per_worker={spec.gpus_per_worker} needs the CUDA training "
                         f"image ({ECR_CUDA_IMAGE}), got the CPU one {image!r}")
    return image


def batch_requests(spec: TrainSpec, queue: str = BATCH_QUEUE, role: str = BATCH_ROLE, image: str | None = None,
                   efs_id: str = EFS_ID) -> dict[str, dict]:
    """``register_job_definition`` (multinode) and ``submit_job`` requests for AWS Batch.

    Args:
        spec: the job.
        queue: the Batch job queue.
        role: the job role ARN.
        image: the training image (default :func:`ecr_image_for`: the CUDA image for a GPU spec);
            the CPU image with a GPU spec is an error.
        efs_id: the EFS file system mounted as the shared volume.

    Returns:
        ``{"register_job_definition": …, "submit_job": …}``, both validated offline against
        botocore's batch model.
    """
    image = check_image_for(spec, image or ecr_image_for(spec), "batch_requests.image")
    lay = node_layout(spec)
    cspec = container_spec(spec)
    run = " ".join(horovodrun_argv(spec, "/tmp/spec.json", hostfile="/tmp/hostfile", ssh_port=SSH_PORT))
    res = [{"type": "VCPU", "value": str(lay.cpus_per_node)},
           {"type": "MEMORY", "value": str(lay.memory_gib_per_node * 1024)}]
    if lay.gpus_per_node:
        res.insert(0, {"type": "GPU", "value": str(lay.gpus_per_node)})
    container = {
        "image": image,
        "command": ["bash", "-c", BATCH_ENTRY.format(shared=paths.SHARED_MOUNT, slots=lay.slots, run=run)],
        "jobRoleArn": role,
        "resourceRequirements": res,
        "environment": [{"name": "HPCML_SPEC_JSON", "value": cspec.to_json()},
                        {"name": "OMP_NUM_THREADS", "value": str(spec.threads_per_worker)}],
        "linuxParameters": {"sharedMemorySize": lay.shm_gib * 1024},
        "ulimits": [{"name": "memlock", "softLimit": -1, "hardLimit": -1}],
        "volumes": [{"name": "shared", "efsVolumeConfiguration": {"fileSystemId": efs_id,
                                                                  "transitEncryption": "ENABLED"}}],
        "mountPoints": [{"sourceVolume": "shared", "containerPath": paths.SHARED_MOUNT, "readOnly": False}],
        "user": str(APP_UID),
        "instanceType": spec.instance_type,
    }
    tags = {"hpcml.io/stage": "train", **PART_OF}
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
    return {"register_job_definition": validate_request("batch", "register_job_definition", register_req),
            "submit_job": validate_request("batch", "submit_job", submit_req)}
