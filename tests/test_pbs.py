"""hpcml.cluster.pbs: the PBS Pro script of a TrainSpec says what its Slurm twin says, passes
``bash -n``, and its ``#PBS`` directives parse and check; each check fails on a broken script."""

from __future__ import annotations

import dataclasses
import re
import subprocess

import pytest

from hpcml.cluster import pbs
from hpcml.k8s import gpu
from hpcml.k8s.train import PRODUCTION_SPEC
from hpcml.specbase import SpecError
from hpcml.train.targets.layout import node_layout

pytestmark = pytest.mark.unit


def _bash_n(text: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-n"], input=text, text=True, capture_output=True, timeout=30)


@pytest.fixture(scope="module")
def scripts():
    return gpu.pbs_scripts()


def test_rendered_scripts_parse_and_check(scripts):
    for name, text in scripts.items():
        assert _bash_n(text).returncode == 0, (name, _bash_n(text).stderr)
        assert pbs.check_directives(text) == [], name


def test_directives_come_from_the_layout():
    lay = node_layout(PRODUCTION_SPEC)
    read = pbs.parse_directives(pbs.qsub_script(PRODUCTION_SPEC))
    d = dict(read)
    select = next(v for o, v in read if o == "-l" and v.startswith("select="))
    sel = dict(kv.split("=") for kv in select.split(":")[1:])
    assert select.startswith(f"select={lay.nodes}:")
    assert int(sel["mpiprocs"]) * lay.nodes == PRODUCTION_SPEC.world_size
    assert (int(sel["ncpus"]), int(sel["ngpus"]), sel["mem"]) == (lay.cpus_per_node, lay.gpus_per_node,
                                                                    f"{lay.memory_gib_per_node}gb")
    assert int(sel["ompthreads"]) == PRODUCTION_SPEC.threads_per_worker
    assert d["-N"] == PRODUCTION_SPEC.name


def test_pbs_and_slurm_twins_agree():
    """Same nodes, tasks per node, cores, GPUs, memory, time and launcher command."""
    q = pbs.qsub_script(PRODUCTION_SPEC, walltime_min=90)
    s = pbs.sbatch_script(PRODUCTION_SPEC, time_limit_min=90)
    sb = dict(re.findall(r"^#SBATCH --([\w-]+)=?(\S*)$", s, re.M))
    chunk = pbs.chunk_for(PRODUCTION_SPEC)
    assert (int(sb["nodes"]), int(sb["ntasks-per-node"])) == (chunk.count, chunk.mpiprocs)
    assert int(sb["ntasks-per-node"]) * int(sb["cpus-per-task"]) == chunk.ncpus
    assert sb["gres"] == f"gpu:{chunk.ngpus}" and int(sb["mem"]) == chunk.mem_gb * 1024
    assert int(sb["time"]) == 90 and "walltime=01:30:00" in q and "exclusive" in sb
    launch = [ln for ln in q.splitlines() if ln.startswith("horovodrun")]
    assert launch and launch == [ln for ln in s.splitlines() if ln.startswith("horovodrun")]


def test_host_list_from_pbs_nodefile(tmp_path):
    """The body's host list: each host of $PBS_NODEFILE with its count of MPI processes."""
    nodefile = tmp_path / "nodefile"
    nodefile.write_text("n2\nn1\nn1\nn2\nn1\nn2\nn1\nn2\n")
    body = pbs.pbs_body(PRODUCTION_SPEC, "spec.json", horovodrun="echo")
    p = subprocess.run(["bash", "-c", body], env={"PBS_NODEFILE": str(nodefile), "PBS_O_WORKDIR": str(tmp_path),
                                                  "PBS_JOBID": "7.pbs", "PATH": "/usr/bin:/bin"},
                       capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, p.stderr
    assert "--gloo -np 8 -H n1:4,n2:4 python -m hpcml.train.worker --spec spec.json" in p.stdout


@pytest.mark.parametrize("edit, needle", [
    (lambda t: t.replace("#!/bin/bash\n", "", 1), "#! line"),
    (lambda t: t.replace("mem=", "memory=", 1), "unknown chunk resource 'memory'"),
    (lambda t: re.sub(r":mem=\d+gb", "", t), "chunk has no mem"),
    (lambda t: re.sub(r"walltime=\S+", "walltime=4h", t), "walltime '4h'"),
    (lambda t: re.sub(r"select=\d+", "select=0", t), "chunk count"),
    (lambda t: re.sub(r"#PBS -N \S+\n", "", t), "no job name"),
    (lambda t: t.replace("#PBS -j oe\n", "") + "#PBS -j oe\n", "after the first command"),
    (lambda t: t.replace("#PBS -j oe", "#PBS -x oe"), "unknown option -x"),
    (lambda t: re.sub(r"mpiprocs=\d+", "mpiprocs=99", t), "exceeds ncpus"),
    (lambda t: t.replace("#PBS -j oe", "#PBS -W max_run_subjobs=4"), "without a job array"),
    (lambda t: t.replace("#PBS -j oe", "#PBS -J 3-3"), "at least two indices"),
    (lambda t: t.replace("place=scatter:excl", "place=spread"), "place 'spread'"),
], ids=["no-shebang", "unknown-resource", "no-mem", "bad-walltime", "zero-chunks", "no-name", "directive-after-command",
        "unknown-option", "mpiprocs-over-ncpus", "cap-without-array", "one-index-array", "bad-place"])
def test_directive_check_fails_when_broken(edit, needle):
    text = edit(pbs.qsub_script(PRODUCTION_SPEC))
    probs = pbs.check_directives(text)
    assert any(needle in p for p in probs), probs


def test_bash_n_fails_on_a_broken_body():
    broken = pbs.qsub_script(PRODUCTION_SPEC, body='if true; then echo "no fi"')
    assert _bash_n(broken).returncode != 0


def test_parse_stops_at_the_first_command():
    text = "#!/bin/bash\n#PBS -N a\n\n# comment\n#PBS -q gpu\necho hi\n#PBS -j oe\n"
    assert pbs.parse_directives(text) == [("-N", "a"), ("-q", "gpu")]


@pytest.mark.parametrize("kw, err", [
    ({"walltime_min": 0}, "walltime"),
    ({"array": (5, 2)}, "array"),
    ({"max_running": 4}, "max_running"),
], ids=["zero-walltime", "backwards-array", "cap-without-array"])
def test_qsub_script_rejects(kw, err):
    with pytest.raises(ValueError, match=err):
        pbs.qsub_script(PRODUCTION_SPEC, **kw)


def test_spec_that_does_not_pack_is_refused_naming_the_field():
    with pytest.raises(SpecError, match="world_size"):
        pbs.qsub_script(dataclasses.replace(PRODUCTION_SPEC, world_size=6))


def test_comparison_table_names_both_schedulers():
    rows = pbs.slurm_equivalents()
    assert {"job array", "resources", "submit / queue / cancel"} <= {r["concept"] for r in rows}
    joined = " ".join(r["PBS Pro"] + r["Slurm"] for r in rows)
    for word in ("qsub", "qstat", "-J 0-15", "sbatch", "squeue", "--array=0-15%4", "select=", "--ntasks-per-node"):
        assert word in joined
    table = pbs.slurm_equivalents_markdown().splitlines()
    assert table[0] == "| concept | PBS Pro | Slurm |" and len(table) == len(rows) + 2
