"""hpcml.cluster.slurm: the pure modules (conf: config and scripts; jobs: parsing) table-style,
then a real single-node cluster (daemons: munged + slurmctld + slurmd) started in a temporary
state dir, and the job benchmark (bench) on it."""

from __future__ import annotations

import os
import signal
import time

import pytest

from hpcml import proc
from hpcml.cluster.slurm import bench, conf, daemons, jobs

NODE = "NodeName=vm CPUs=2 Boards=1 SocketsPerBoard=1 CoresPerSocket=2 ThreadsPerCore=1 RealMemory=24105\nUpTime=0-00:48:52"


# ---- unit: pure functions ------------------------------------------------------------------
@pytest.mark.unit
def test_parse_node_config():
    n = conf.parse_node_config(NODE)
    assert (n.name, n.cpus, n.cores_per_socket, n.real_memory_mb) == ("vm", 2, 2, 24105)


@pytest.mark.unit
@pytest.mark.parametrize("text,needle", [
    ("", "NodeName"),
    ("NodeName=vm CPUs=x SocketsPerBoard=1 CoresPerSocket=2 ThreadsPerCore=1 RealMemory=1", "invalid literal"),
    ("NodeName=vm CPUs=0 SocketsPerBoard=1 CoresPerSocket=2 ThreadsPerCore=1 RealMemory=1", "NodeSpec.cpus"),
], ids=["empty", "non-numeric", "zero-cpus"])
def test_parse_node_config_rejects(text, needle):
    with pytest.raises(ValueError, match=needle):
        conf.parse_node_config(text)


@pytest.mark.unit
def test_render_slurm_conf_uses_node_and_state_dir(tmp_path):
    text = conf.render_slurm_conf(conf.parse_node_config(NODE), run_dir=tmp_path / "run",
                                   state_dir=tmp_path, ctld_port=7001, slurmd_port=7002, partition="cpu")
    assert "SelectType=select/cons_tres" in text
    assert "PartitionName=cpu Nodes=vm Default=YES" in text
    assert f"AuthInfo=socket={tmp_path / 'run' / 'munge.socket'}" in text
    assert "SlurmctldPort=7001" in text and "SlurmdPort=7002" in text
    assert "RealMemory=21694" in text and "DefMemPerCPU=10847" in text  # 90% of RealMemory, per CPU


@pytest.mark.unit
@pytest.mark.parametrize("kw,field", [
    ({"ntasks": 0}, "ntasks"),
    ({"cpus_per_task": -1}, "cpus_per_task"),
    ({"time_limit_min": 0}, "time_limit_min"),
    ({"array": "0-3; rm -rf /"}, "array"),
    ({"ntasks": 8, "nodes": 2, "ntasks_per_node": 3}, "ntasks_per_node"),
], ids=["zero-tasks", "negative-cpus", "zero-time", "array-injection", "tasks-per-node-mismatch"])
def test_batch_script_rejects(kw, field):
    with pytest.raises(ValueError, match=field):
        conf.batch_script("true", name="x", **kw)


@pytest.mark.unit
def test_batch_script_directives():
    text = conf.batch_script("srun hostname", name="t", ntasks=2, time_limit_min=5, array="0-3%2",
                              gpus_per_node=1, stamp_dir="/s")
    lines = text.splitlines()
    assert lines[0] == "#!/bin/bash"
    for d in ("--job-name=t", "--ntasks=2", "--time=5", "--array=0-3%2", "--gres=gpu:1"):
        assert f"#SBATCH {d}" in lines
    assert lines[-1] == "srun hostname" and "/s/" in text


@pytest.mark.unit
def test_batch_script_multi_node_sets_tasks_per_node():
    """--ntasks-per-node makes Slurm set $SLURM_NTASKS_PER_NODE, which a multi-node host list needs."""
    lines = conf.batch_script("true", name="t", nodes=2, ntasks=8, ntasks_per_node=4, exclusive=True).splitlines()
    assert "#SBATCH --ntasks-per-node=4" in lines and "#SBATCH --exclusive" in lines
    assert "#SBATCH --exclusive" not in conf.batch_script("true", name="t")


@pytest.mark.unit
def test_wave_medians_group_in_submit_order():
    assert bench.wave_medians([0.7, 0.72, 1.7, 1.68, 2.67, 2.66], 2) == pytest.approx([0.71, 1.69, 2.665])
    assert bench.wave_medians([0.5, 0.6, 0.7], 4) == [0.6]
    with pytest.raises(ValueError, match="per_wave"):
        bench.wave_medians([1.0], 0)
    with pytest.raises(ValueError, match="latencies"):
        bench.wave_medians([], 2)


@pytest.mark.unit
def test_parse_scontrol_records_and_summary(tmp_path):
    out = tmp_path / "o.out"
    out.write_text("\n".join(f"line {i}" for i in range(30)) + "\n")
    text = (f"JobId=7 JobName=x JobState=FAILED Reason=NonZeroExitCode ExitCode=3:0 RunTime=00:01:05 "
            f"AllocNode:Sid=vm:1 TRES=cpu=1,mem=10M Command=/a b StdOut={out} StdErr={out}\n")
    recs = jobs.parse_scontrol_records(text)
    assert recs[0]["TRES"] == "cpu=1,mem=10M" and recs[0]["AllocNode:Sid"] == "vm:1"
    res = jobs.summarize_job("7", recs, {"submitted_at": 1.0}, daemons.read_task_outputs(recs, tmp_path))
    assert (res.state, res.exit_code, res.elapsed_s, res.reason) == ("FAILED", 3, 65.0, "NonZeroExitCode")
    assert res.output_tail.splitlines() == [f"line {i}" for i in range(10, 30)]
    assert not res.ok and res.submit_to_start_s is None


@pytest.mark.unit
def test_summarize_array_job_from_task_outputs():
    """The pure fold: worst state, max exit code, elapsed from the tasks' stamps, tails per task."""
    recs = [{"JobId": f"9{i}", "ArrayJobId": "9", "ArrayTaskId": str(i), "JobState": st, "ExitCode": ec,
             "RunTime": "00:00:09", "Reason": "None"} for i, st, ec in ((1, "FAILED", "2:0"), (0, "COMPLETED", "0:0"))]
    outputs = {"9_0": jobs.TaskOutput(100.0, 103.0, "zero"), "9_1": jobs.TaskOutput(101.0, 105.5, "one")}
    res = jobs.summarize_job("9", recs, {"submitted_at": 99.0}, outputs)
    assert (res.state, res.exit_code, res.tasks, res.reason) == ("FAILED", 2, 2, "")
    assert (res.started_at, res.ended_at, res.elapsed_s, res.submit_to_start_s) == (100.0, 105.5, 5.5, 1.0)
    assert res.output_tail == "[task 0]\nzero\n[task 1]\none"
    missing = jobs.summarize_job("9", recs, {}, {})  # no stamps: Slurm's RunTime
    assert missing.elapsed_s == 9.0 and missing.started_at is None


@pytest.mark.unit
def test_available_names_the_debian_packages(tmp_path):
    msg = daemons.available(search_path=str(tmp_path))
    assert msg and "munge" in msg and "slurm-wlm" in msg and "apt-get install" in msg


# ---- integration: a real cluster -----------------------------------------------------------
needs_slurm = pytest.mark.skipif(daemons.available() is not None, reason=str(daemons.available()))


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    if daemons.available() is not None:
        pytest.skip(daemons.available())
    cl = daemons.ensure_cluster(tmp_path_factory.mktemp("slurm"))
    yield cl
    cl.stop()
    assert not any(cl.daemon_pids().values()) and not cl.leftover_pids()


@needs_slurm
@pytest.mark.integration
def test_start_shows_idle_node(cluster):
    assert cluster.started_here and cluster.start_s is not None
    assert all(cluster.daemon_pids().values())
    assert cluster.node_state() == "idle"
    assert "batch*" in cluster.cmd(["sinfo"])


@needs_slurm
@pytest.mark.integration
def test_job_succeeds_with_output(cluster, tmp_path):
    res = cluster.run_batch('echo "hello $GREETING from $SLURM_JOB_ID"; srun -n 2 hostname', name="ok",
                            ntasks=2, env={"GREETING": "world"}, workdir=tmp_path, timeout_s=120)
    assert res.ok, res
    lines = res.output_tail.splitlines()
    assert lines[0] == f"hello world from {res.job_id}"
    assert len(lines) == 3  # one hostname per srun task
    assert res.stdout_path.read_text().startswith("hello world")
    assert res.started_at >= res.submitted_at and res.elapsed_s >= 0


@needs_slurm
@pytest.mark.integration
def test_failing_job_reports_state_code_and_tail(cluster):
    res = cluster.run_batch("echo working; echo boom >&2; exit 3", name="fail", timeout_s=120)
    assert (res.state, res.exit_code) == ("FAILED", 3)
    assert "working" in res.output_tail and "boom" in res.output_tail
    assert cluster.run_batch("true", name="after-fail", timeout_s=120).ok  # still up


@needs_slurm
@pytest.mark.integration
def test_wait_timeout_cancels_and_cluster_stays_up(cluster):
    res = cluster.run_batch("echo started; sleep 120", name="slow", timeout_s=4)
    assert res.state == "TIMEOUT" and "timed out after 4s" in res.reason and "cancelled" in res.reason
    assert not cluster.cmd(["squeue", "-h", "-j", res.job_id], check=False).strip()
    assert cluster.run_batch("true", name="after-timeout", timeout_s=120).ok


@needs_slurm
@pytest.mark.integration
def test_array_job(cluster):
    res = cluster.run_batch("echo task=$SLURM_ARRAY_TASK_ID", name="arr", array="0-2", timeout_s=120)
    assert res.ok and res.tasks == 3
    assert all(f"task={i}" in res.output_tail for i in range(3))


@needs_slurm
@pytest.mark.integration
@pytest.mark.parametrize("daemon", ["slurmd", "munged", "slurmctld"])
def test_killed_daemon_is_restarted(cluster, daemon):
    pid = cluster.daemon_pids()[daemon]
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while cluster.daemon_pids()[daemon] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert cluster.daemon_pids()[daemon] is None
    res = cluster.run_batch("echo back", name=f"after-kill-{daemon}", timeout_s=120)
    assert res.ok and res.output_tail == "back", res
    assert daemon in cluster.restarts
    assert cluster.daemon_pids()[daemon] not in (None, pid)


@needs_slurm
@pytest.mark.integration
def test_second_start_reuses(cluster):
    before = cluster.daemon_pids()
    again = daemons.ensure_cluster(cluster.state_dir)
    assert not again.started_here and again.daemon_pids() == before
    assert again.stop() == []  # not its cluster: stop() leaves it running
    assert cluster.daemon_pids() == before


@needs_slurm
@pytest.mark.integration
def test_stop_leaves_no_process(tmp_path_factory):
    cl = daemons.ensure_cluster(tmp_path_factory.mktemp("slurm-stop"))
    pids = [p for p in cl.daemon_pids().values() if p]
    job = cl.submit("sleep 300", name="running-at-stop")
    deadline = time.monotonic() + 60
    while cl.job_records(job)[0].get("JobState") != "RUNNING" and time.monotonic() < deadline:
        time.sleep(0.2)
    assert sorted(cl.stop()) == ["munged", "slurmctld", "slurmd"]
    assert not any(cl.daemon_pids().values())
    assert not [p for p in pids if proc.pid_alive(p)]  # gone (a zombie awaiting init counts as gone)
    assert not cl.leftover_pids()


@pytest.mark.unit
def test_scheduler_parameters_are_checked(tmp_path):
    with pytest.raises(ValueError, match="scheduler parameters"):
        daemons.SlurmCluster(tmp_path).set_scheduler_parameters("x; rm -rf /")


@needs_slurm
@pytest.mark.integration
def test_scheduler_parameters_and_measurement(cluster):
    cluster.set_scheduler_parameters("")
    try:
        assert "(null)" in next(ln for ln in cluster.cmd(["scontrol", "show", "config"]).splitlines()
                                if ln.startswith("SchedulerParameters"))
    finally:
        cluster.set_scheduler_parameters(conf.FAST_SCHEDULING)
    assert "batch_sched_delay=0" in cluster.cmd(["scontrol", "show", "config"])
    m = bench.measure_jobs(cluster, 3)
    assert m["states"] == ["COMPLETED"] * 3 and len(m["latencies_s"]) == 3
    assert all(x >= 0 for x in m["latencies_s"]) and m["jobs_per_minute"] > 0
