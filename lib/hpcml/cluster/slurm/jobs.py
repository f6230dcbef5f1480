"""How Slurm describes jobs, and how a job ended: pure functions of Slurm's output.

:func:`parse_scontrol_records` reads ``scontrol show … -o`` lines into dicts;
:func:`summarize_job` folds one job's records (one per array task) and what each task left
behind (its start/end stamps and log tail, a :class:`TaskOutput` read from disk by
:func:`hpcml.cluster.slurm.daemons.read_task_outputs`) into a :class:`JobResult`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

#: Slurm job states after which a job never runs again.
TERMINAL_STATES = frozenset({
    "COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "PREEMPTED", "OUT_OF_MEMORY",
    "BOOT_FAIL", "DEADLINE", "SPECIAL_EXIT", "REVOKED",
})
_SEVERITY = ("NODE_FAIL", "BOOT_FAIL", "OUT_OF_MEMORY", "TIMEOUT", "DEADLINE", "FAILED", "CANCELLED",
             "PREEMPTED", "REVOKED", "SPECIAL_EXIT", "COMPLETED")


_KEY = re.compile(r"(?:^|\s)([A-Za-z][\w:/]*)=")


def parse_scontrol_records(text: str) -> list[dict[str, str]]:
    """Parse ``scontrol show … -o`` output (one ``Key=value …`` record per line)."""
    recs = []
    for line in text.splitlines():
        keys = list(_KEY.finditer(line))
        if not keys:
            continue
        rec = {}
        for i, m in enumerate(keys):
            end = keys[i + 1].start() if i + 1 < len(keys) else len(line)
            rec[m.group(1)] = line[m.end():end].strip()
        recs.append(rec)
    return recs


def _exit_code(rec: dict[str, str]) -> int:
    code, _, sig = rec.get("ExitCode", "0:0").partition(":")
    code, sig = int(code or 0), int(sig or 0)
    return code if code else (128 + sig if sig else 0)


def _runtime_s(text: str) -> float:
    days, _, hms = text.rpartition("-")
    parts = [int(p) for p in hms.split(":") if p.isdigit()]
    while len(parts) < 3:
        parts.insert(0, 0)
    return (int(days) if days else 0) * 86400 + parts[0] * 3600 + parts[1] * 60 + parts[2]


@dataclass
class JobResult:
    """How a batch job ended.

    Attributes:
        job_id: Slurm job id (the array job id for arrays).
        state: Slurm state (COMPLETED, FAILED, CANCELLED, TIMEOUT, …); the worst over array tasks.
            ``TIMEOUT`` also when :meth:`~hpcml.cluster.slurm.daemons.SlurmCluster.wait` gave up (see ``reason``).
        exit_code: the script's exit code (128+signal when killed; max over array tasks).
        stdout_path, stderr_path: output files (of the first task for arrays).
        elapsed_s: run time (from the job's own start/end stamps, else Slurm's RunTime).
        output_tail: last lines of stdout and stderr (per task for arrays).
        submitted_at, started_at, ended_at: epoch seconds (None when unknown).
        tasks: number of array tasks (1 for a plain job).
        reason: Slurm's Reason, or why the wait gave up.
    """

    job_id: str
    state: str
    exit_code: int
    stdout_path: Path | None
    stderr_path: Path | None
    elapsed_s: float
    output_tail: str
    submitted_at: float | None = None
    started_at: float | None = None
    ended_at: float | None = None
    tasks: int = 1
    reason: str = ""

    @property
    def ok(self) -> bool:
        return self.state == "COMPLETED" and self.exit_code == 0

    @property
    def submit_to_start_s(self) -> float | None:
        if self.submitted_at is None or self.started_at is None:
            return None
        return self.started_at - self.submitted_at


@dataclass(frozen=True)
class TaskOutput:
    """What one task (a plain job, or one array task) left behind.

    Attributes:
        started_at, ended_at: epoch seconds from the task's own start/end stamps (None when missing).
        tail: the last lines of its stdout, then ``[stderr]`` and those of its stderr.
    """

    started_at: float | None = None
    ended_at: float | None = None
    tail: str = ""


def task_tag(rec: dict[str, str]) -> str:
    """The name a task's stamp files carry: ``<array job id>_<task id>`` for an array task, else the job id."""
    return f"{rec['ArrayJobId']}_{rec['ArrayTaskId']}" if rec.get("ArrayTaskId", "").isdigit() else rec.get("JobId", "")


def _task_index(rec: dict[str, str]) -> int:
    return int(rec.get("ArrayTaskId", "0")) if rec.get("ArrayTaskId", "0").isdigit() else 0


def summarize_job(job_id: str, recs: list[dict[str, str]], meta: dict,
                  outputs: Mapping[str, TaskOutput]) -> JobResult:
    """Fold ``scontrol`` records (one per array task) and the tasks' outputs into a :class:`JobResult`.

    Args:
        job_id: the job id (the array job id for arrays).
        recs: the job's records from :func:`parse_scontrol_records`.
        meta: what was recorded at submit time (``submitted_at``).
        outputs: per :func:`task_tag`, what the task left behind (a missing entry counts as nothing).
    """
    if not recs:
        return JobResult(str(job_id), "UNKNOWN", -1, None, None, 0.0, "",
                         submitted_at=meta.get("submitted_at"), reason="job unknown to slurmctld")
    states = [r.get("JobState", "UNKNOWN") for r in recs]
    state = next((s for s in _SEVERITY if s in states), states[0])
    starts, ends, tails = [], [], []
    for r in sorted(recs, key=_task_index):
        out = outputs.get(task_tag(r), TaskOutput())
        starts.append(out.started_at)
        ends.append(out.ended_at)
        tails.append(f"[task {r['ArrayTaskId']}]\n{out.tail}" if len(recs) > 1 else out.tail)
    ok_s, ok_e = [s for s in starts if s], [e for e in ends if e]
    started = min(ok_s) if ok_s else None
    ended = max(ok_e) if ok_e else None
    elapsed = (ended - started) if (started and ended and len(ok_e) == len(recs)) else \
        max(_runtime_s(r.get("RunTime", "0:0:0")) for r in recs)
    first = recs[0]
    return JobResult(
        job_id=str(job_id), state=state, exit_code=max(_exit_code(r) for r in recs),
        stdout_path=Path(first["StdOut"]) if first.get("StdOut") else None,
        stderr_path=Path(first["StdErr"]) if first.get("StdErr") else None,
        elapsed_s=float(elapsed), output_tail="\n".join(tails).strip("\n"),
        submitted_at=meta.get("submitted_at"), started_at=started, ended_at=ended, tasks=len(recs),
        reason="" if first.get("Reason") in (None, "None") else first["Reason"],
    )
