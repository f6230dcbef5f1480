"""The ``batch`` target: an AWS Batch multi-node parallel job definition and its SubmitJob
request (:func:`hpcml.train.targets.layout.batch_requests`), sent only with AWS credentials."""

from __future__ import annotations

from dataclasses import dataclass

from hpcml.aws import send as aws_send
from hpcml.train.spec import TrainSpec
from hpcml.train.targets.layout import BATCH_QUEUE, BATCH_ROLE, EFS_ID, batch_requests
from hpcml.train.targets.result import LaunchResult


@dataclass(frozen=True)
class BatchOptions:
    """Options of the ``batch`` target (:func:`~hpcml.train.targets.layout.batch_requests`'s).

    Attributes:
        queue: the Batch job queue.
        role: the job role ARN.
        image: the training image (``None``: the ECR CUDA image for a GPU spec, the CPU one otherwise).
        efs_id: the EFS file system mounted as the shared volume.
    """

    queue: str = BATCH_QUEUE
    role: str = BATCH_ROLE
    image: str | None = None
    efs_id: str = EFS_ID


def launch_batch(spec: TrainSpec, dry_run: bool | None, options: BatchOptions) -> LaunchResult:
    """Validate the Batch requests; register + submit only with credentials (or ``dry_run=False``)."""
    reqs = batch_requests(spec, queue=options.queue, role=options.role, image=options.image,
                          efs_id=options.efs_id)
    if dry_run or (dry_run is None and not aws_send.has_credentials()):
        return LaunchResult("batch", False, request=reqs, reason="dry run" if dry_run else "no AWS credentials")
    reg = aws_send.submit("batch", "register_job_definition", reqs["register_job_definition"], dry_run=False)
    sub = aws_send.submit("batch", "submit_job", reqs["submit_job"], dry_run=False)
    return LaunchResult("batch", True, request=reqs, response={"register": reg, "submit": sub})
