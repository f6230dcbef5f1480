"""PBS Pro batch scripts from the same TrainSpec as Slurm's, and a parser for their ``#PBS`` directives.

PBS Pro (and OpenPBS) is the other batch scheduler HPC sites run beside Slurm. The job is the
same; how it is asked for differs:

* resources come as *chunks*: ``-l select=2:ncpus=40:mpiprocs=4:ngpus=4:mem=144gb`` asks for two
  chunks of that shape (Slurm: ``--nodes=2 --ntasks-per-node=4 --cpus-per-task=10
  --gres=gpu:4 --mem=…``), and ``-l place=scatter:excl`` puts each chunk on its own host, alone;
* ``$PBS_NODEFILE`` lists each host once per ``mpiprocs`` (Slurm: ``$SLURM_JOB_NODELIST`` plus
  ``$SLURM_NTASKS_PER_NODE``), so the host list ``horovodrun`` needs is built from it;
* arrays are ``-J 0-15`` with ``$PBS_ARRAY_INDEX`` and a concurrency cap ``-W max_run_subjobs=4``
  (Slurm: ``--array=0-15%4``, ``$SLURM_ARRAY_TASK_ID``).

:func:`qsub_script` renders the PBS script of a :class:`~hpcml.train.spec.TrainSpec` from the
node layout every cluster target shares (:func:`hpcml.train.targets.layout.node_layout`) and
the same ``horovodrun`` command as the Slurm target; :func:`sbatch_script` renders the Slurm
twin from the same spec, so the two can be read side by side. :func:`parse_directives` and
:func:`check_directives` read a script back the way ``qsub`` does (directives end at the first
command) and check each option, for the tests and the notebook. Nothing here runs ``qsub``.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass

from hpcml.cluster.slurm.conf import batch_script
from hpcml.train.spec import TrainSpec
from hpcml.train.targets.layout import horovodrun_argv, node_layout, slurm_body

#: The prefix ``qsub`` reads directives from (lines before the first command).
PREFIX = "#PBS"
#: qsub options the scripts use, with what each value must look like.
_OPTION_VALUE = {
    "-N": re.compile(r"[A-Za-z][\w.-]{0,235}"),
    "-q": re.compile(r"[A-Za-z][\w.-]*"),
    "-j": re.compile(r"oe|eo|n"),
    "-J": re.compile(r"\d+-\d+(?::\d+)?"),
    "-W": re.compile(r"max_run_subjobs=[1-9]\d*|depend=\w+:[\w.:\[\]-]+"),
    "-r": re.compile(r"[yn]"),
    "-k": re.compile(r"[oedn]+"),
    "-l": re.compile(r".+"),  # checked by resource below
}
_CHUNK_RESOURCES = {"ncpus": r"[1-9]\d*", "mpiprocs": r"[1-9]\d*", "ompthreads": r"[1-9]\d*",
                    "ngpus": r"\d+", "mem": r"[1-9]\d*(?:b|kb|mb|gb|tb)"}
_WALLTIME = re.compile(r"(\d+):([0-5]\d):([0-5]\d)")
_PLACE = re.compile(r"(?:free|pack|scatter|vscatter)(?::(?:excl|shared|exclhost))?")


@dataclass(frozen=True)
class Chunk:
    """One ``select`` chunk: what each of ``count`` hosts (or vnodes) gives the job."""

    count: int
    ncpus: int
    mpiprocs: int
    ngpus: int
    mem_gb: int
    ompthreads: int = 1

    def select(self) -> str:
        """``select=N:ncpus=…:mpiprocs=…:ompthreads=…[:ngpus=…]:mem=…gb``."""
        parts = [f"select={self.count}", f"ncpus={self.ncpus}", f"mpiprocs={self.mpiprocs}",
                 f"ompthreads={self.ompthreads}"]
        if self.ngpus:
            parts.append(f"ngpus={self.ngpus}")
        return ":".join(parts + [f"mem={self.mem_gb}gb"])


def walltime(minutes: int) -> str:
    """``HH:MM:SS`` for a limit in minutes (Slurm takes ``--time=<minutes>``)."""
    if not isinstance(minutes, int) or minutes < 1:
        raise ValueError(f"walltime minutes must be a positive integer, got {minutes!r}")
    return f"{minutes // 60:02d}:{minutes % 60:02d}:00"


def chunk_for(spec: TrainSpec) -> Chunk:
    """The ``select`` chunk of ``spec``: one chunk per node of :func:`~hpcml.train.targets.layout.node_layout`."""
    lay = node_layout(spec)
    return Chunk(count=lay.nodes, ncpus=lay.cpus_per_node, mpiprocs=lay.slots, ngpus=lay.gpus_per_node,
                 mem_gb=lay.memory_gib_per_node, ompthreads=spec.threads_per_worker)


def pbs_body(spec: TrainSpec, spec_path: str, python: str = "python", horovodrun: str = "horovodrun") -> str:
    """The script body: ``horovodrun`` over the hosts of ``$PBS_NODEFILE``, ``host:mpiprocs`` each.

    The launcher command is the Slurm target's (:func:`~hpcml.train.targets.layout.horovodrun_argv`);
    only the host list differs: PBS writes each host once per MPI process of its chunk.
    """
    cmd = " ".join(shlex.quote(a) for a in horovodrun_argv(spec, spec_path, hosts="HOSTS", python=python,
                                                           horovodrun=horovodrun))
    cmd = cmd.replace(" -H HOSTS ", ' -H "$HOSTS" ')
    return "\n".join([
        "set -euo pipefail",
        'cd "$PBS_O_WORKDIR"',
        f"export OMP_NUM_THREADS={spec.threads_per_worker}",
        "HOSTS=$(sort \"$PBS_NODEFILE\" | uniq -c | awk '{print $2\":\"$1}' | paste -sd, -)",
        'echo "hpcml: job $PBS_JOBID runs ' + f'{spec.name} with {spec.world_size} workers on $HOSTS"',
        cmd,
        "",
    ])


def qsub_script(spec: TrainSpec, spec_path: str = "spec.json", queue: str = "gpu", walltime_min: int = 240,
                array: tuple[int, int] | None = None, max_running: int | None = None,
                body: str | None = None) -> str:
    """A PBS Pro ``qsub`` script for ``spec``: directives from its node layout, then the body.

    Args:
        spec: the job (``world_size`` workers packed by ``node_layout``).
        spec_path: the spec JSON as the job sees it.
        queue: the PBS queue (Slurm: partition).
        walltime_min: the time limit in minutes.
        array: ``(first, last)`` indices for a job array (``-J first-last``).
        max_running: at most this many array subjobs at once (``-W max_run_subjobs``).
        body: the commands (default :func:`pbs_body`).

    Raises:
        hpcml.specbase.SpecError: the spec does not pack onto whole nodes (from ``node_layout``).
        ValueError: a bad walltime, array range or cap.
    """
    if array is not None and not (0 <= array[0] < array[1]):
        raise ValueError(f"array must be (first, last) with 0 <= first < last, got {array!r}")
    if max_running is not None and (array is None or max_running < 1):
        raise ValueError("max_running needs an array and must be >= 1")
    directives = [("-N", spec.name), ("-q", queue), ("-l", chunk_for(spec).select()),
                  ("-l", "place=scatter:excl"), ("-l", f"walltime={walltime(walltime_min)}"), ("-j", "oe")]
    if array is not None:
        directives.append(("-J", f"{array[0]}-{array[1]}"))
    if max_running is not None:
        directives.append(("-W", f"max_run_subjobs={max_running}"))
    lines = ["#!/bin/bash", *(f"{PREFIX} {opt} {val}" for opt, val in directives), ""]
    return "\n".join(lines + [(body or pbs_body(spec, spec_path)).rstrip("\n"), ""])


def sbatch_script(spec: TrainSpec, spec_path: str = "spec.json", partition: str = "gpu",
                  time_limit_min: int = 240) -> str:
    """The Slurm twin of :func:`qsub_script`: the same layout as ``#SBATCH`` directives, the Slurm target's body."""
    lay = node_layout(spec)
    return batch_script(slurm_body(spec, spec_path), name=spec.name, partition=partition, nodes=lay.nodes,
                        ntasks=spec.world_size, ntasks_per_node=lay.slots, cpus_per_task=spec.threads_per_worker,
                        gpus_per_node=lay.gpus_per_node, mem_mb=lay.memory_gib_per_node * 1024,
                        time_limit_min=time_limit_min, exclusive=True)


def parse_directives(script: str) -> list[tuple[str, str]]:
    """``[(option, value), …]`` of the ``#PBS`` lines ``qsub`` reads: those before the first command.

    Like ``qsub``, reading stops at the first line that is neither blank nor a comment, so a
    directive below a command is silently ignored by PBS; :func:`check_directives` reports it.
    """
    out = []
    for line in script.splitlines()[1:] if script.startswith("#!") else script.splitlines():
        s = line.strip()
        if s and not s.startswith("#"):
            break
        if s.startswith(PREFIX + " "):
            opt, _, val = s[len(PREFIX):].strip().partition(" ")
            out.append((opt, val.strip()))
    return out


def _check_resource(val: str) -> list[str]:
    probs = []
    for item in val.split(","):
        key, _, v = item.partition("=")
        if key == "select":
            count, *res = v.split(":")
            if not re.fullmatch(r"[1-9]\d*", count):
                probs.append(f"select: chunk count {count!r} is not a positive integer")
            seen = dict(r.partition("=")[::2] for r in res)
            for name, value in seen.items():
                pat = _CHUNK_RESOURCES.get(name)
                if pat is None:
                    probs.append(f"select: unknown chunk resource {name!r}")
                elif not re.fullmatch(pat, value):
                    probs.append(f"select: {name}={value!r} is not valid")
            probs += [f"select: chunk has no {need}" for need in ("ncpus", "mem") if need not in seen]
        elif key == "walltime":
            if not _WALLTIME.fullmatch(v):
                probs.append(f"walltime {v!r} is not HH:MM:SS")
        elif key == "place":
            if not _PLACE.fullmatch(v):
                probs.append(f"place {v!r} is not arrangement[:sharing]")
        else:
            probs.append(f"unknown resource {key!r}")
    return probs


def check_directives(script: str) -> list[str]:
    """Problems with a PBS script's directives (empty when ``qsub`` would accept them as written).

    Checks: a shebang first; every ``#PBS`` line sits before the first command; each option is
    one the scripts use, with a well-formed value; ``select`` chunks name ncpus and mem and only
    known resources; ``walltime`` is ``HH:MM:SS``; ``-N`` and a ``select`` are present;
    ``max_run_subjobs`` only with ``-J``; ``mpiprocs`` is at most ``ncpus``.
    """
    probs = [] if script.startswith("#!") else ["the script does not start with a #! line"]
    read = parse_directives(script)
    all_lines = [ln.strip() for ln in script.splitlines() if ln.strip().startswith(PREFIX + " ")]
    if len(all_lines) != len(read):
        probs.append(f"{len(all_lines) - len(read)} #PBS line(s) after the first command: qsub ignores them")
    for opt, val in read:
        pat = _OPTION_VALUE.get(opt)
        if pat is None:
            probs.append(f"unknown option {opt}")
        elif not pat.fullmatch(val):
            probs.append(f"{opt} {val!r} is not valid")
        elif opt == "-l":
            probs += _check_resource(val)
        elif opt == "-J":
            lo, hi = (int(x) for x in val.split(":")[0].split("-"))
            if lo >= hi:
                probs.append(f"-J {val}: the range must hold at least two indices")
    opts = [o for o, _ in read]
    if "-N" not in opts:
        probs.append("no job name (-N)")
    selects = [v for o, v in read if o == "-l" and v.startswith("select=")]
    if not selects:
        probs.append("no select statement (-l select=…)")
    for sel in selects:
        res = dict(r.partition("=")[::2] for r in sel.split(":")[1:])
        if res.get("mpiprocs", "").isdigit() and res.get("ncpus", "").isdigit() and int(res["mpiprocs"]) > int(res["ncpus"]):
            probs.append(f"select: mpiprocs={res['mpiprocs']} exceeds ncpus={res['ncpus']}")
    if any(v.startswith("max_run_subjobs") for o, v in read if o == "-W") and "-J" not in opts:
        probs.append("max_run_subjobs without a job array (-J)")
    return probs


def slurm_equivalents() -> list[dict[str, str]]:
    """What each PBS Pro word is in Slurm (the notebook's comparison table)."""
    rows = [
        ("submit / queue / cancel", "`qsub job.pbs`, `qstat -a`, `qdel <id>`", "`sbatch job.sbatch`, `squeue`, `scancel <id>`"),
        ("job record after the end", "`qstat -x -f <id>`, `tracejob <id>`", "`sacct -j <id>`, `scontrol show job <id>`"),
        ("resources", "`-l select=N:ncpus=C:mpiprocs=P:ngpus=G:mem=Mgb` (chunks)",
         "`--nodes=N --ntasks-per-node=P --cpus-per-task=C/P --gres=gpu:G --mem=M`"),
        ("placement", "`-l place=scatter:excl`", "`--exclusive` (one task set per node by `--ntasks-per-node`)"),
        ("time limit", "`-l walltime=HH:MM:SS`", "`--time=<minutes>` or `D-HH:MM:SS`"),
        ("queue", "`-q gpu`", "`--partition=gpu`"),
        ("host list in the job", "`$PBS_NODEFILE` (a host per MPI process)", "`$SLURM_JOB_NODELIST` + `$SLURM_NTASKS_PER_NODE`"),
        ("job array", "`-J 0-15`, `-W max_run_subjobs=4`, `$PBS_ARRAY_INDEX`", "`--array=0-15%4`, `$SLURM_ARRAY_TASK_ID`"),
        ("start MPI ranks", "`mpiexec` / `pbs_tmrsh` (TM interface)", "`srun --mpi=pmix`"),
        ("GPU discovery", "a site-defined `ngpus` count per vnode", "`gres.conf` (`AutoDetect=nvml`)"),
    ]
    return [{"concept": c, "PBS Pro": p, "Slurm": s} for c, p, s in rows]


def slurm_equivalents_markdown() -> str:
    """:func:`slurm_equivalents` as a Markdown table (the notebook displays it)."""
    rows = slurm_equivalents()
    head = "| " + " | ".join(rows[0]) + " |\n| " + " | ".join("---" for _ in rows[0]) + " |\n"
    return head + "\n".join("| " + " | ".join(r.values()) + " |" for r in rows) + "\n"
