"""What a launch returns, whatever the target: :class:`LaunchResult`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Union

if TYPE_CHECKING:
    from hpcml.cluster.slurm.jobs import JobResult

#: What a target submits (or would): an argv (local), script text (slurm), manifests
#: (kubernetes) or AWS request bodies by operation (sagemaker, batch).
Request = Union[str, list[str], list[dict[str, Any]], dict[str, Any]]


@dataclass
class LaunchResult:
    """What a launcher did.

    Attributes:
        target: the registry key.
        submitted: True when the job was really run/sent (False: rendered/validated only).
        request: what was (or would be) submitted: argv, script text, manifests, request dicts.
        job: the Slurm job's record (slurm target).
        metrics: training metrics parsed from the run's output (when it ran here).
        response: the API's answer when sent (Kubernetes apply results, AWS responses).
        reason: why it was not submitted (no cluster, no credentials, dry run).
        wall_s: seconds from launch to result.
    """

    target: str
    submitted: bool
    request: Request | None = None
    job: JobResult | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    response: Any = None
    reason: str = ""
    wall_s: float = 0.0
