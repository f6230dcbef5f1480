"""Launch targets from one TrainSpec: registry and typed options, node layout, MPIJob, Slurm
script, AWS requests, and one real job through sbatch on the local Slurm cluster."""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import subprocess

import pytest

from hpcml import paths
from hpcml.aws.requests import AWSRequestError, validate_request
from hpcml.k8s import train as kt
from hpcml.k8s.common import restricted_container
from hpcml.k8s.validate import validate_doc
from hpcml.train.spec import TARGETS, TRAIN_CUDA_IMAGE, TrainSpec
from hpcml.train.targets import layout, sagemaker
from hpcml.train.targets.registry import LAUNCHERS, launch
from hpcml.train.targets.slurm import SlurmOptions

PROD = kt.PRODUCTION_SPEC
CPU = TrainSpec()  # the notebook's CI spec: 2 CPU workers x 1 thread
# (id, spec, nodes, slots, gpus per node)
LAYOUTS = [
    ("prod-2x-g4dn12", PROD, 2, 4, 4),
    ("one-gpu-node-g5", dataclasses.replace(PROD, world_size=3, threads_per_worker=3, instance_type="g5.xlarge"), 3, 1, 1),
    ("2gpu-workers-p3.8x", dataclasses.replace(PROD, world_size=4, gpus_per_worker=2, instance_type="p3.8xlarge"),
     2, 2, 4),
    ("cpu-ci-spec", CPU, 1, 2, 0),
]


@pytest.mark.unit
@pytest.mark.parametrize("target", [t for t in TARGETS if t != "sagemaker"])
def test_every_target_renders_from_the_same_spec(target, monkeypatch, tmp_path):
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "none"))
    res = launch(PROD, target=target, dry_run=True)
    assert res.target == target and not res.submitted and res.request and res.reason == "dry run"


@pytest.mark.unit
def test_registry_covers_every_spec_target():
    assert sorted(LAUNCHERS) == sorted(TARGETS)


@pytest.mark.unit
@pytest.mark.parametrize("bad", ["ec2", "Local", ""], ids=["unknown", "case", "empty"])
def test_bad_target_lists_the_registry(bad):
    with pytest.raises(ValueError, match=r"registered targets: \['batch', 'kubernetes', 'local', 'sagemaker', 'slurm'\]"):
        launch(CPU, target=bad, dry_run=True)


@pytest.mark.unit
def test_unknown_option_names_the_target_and_its_options():
    with pytest.raises(ValueError, match=r"launch target 'slurm' takes no option\(s\) \['context'\]; its options "
                                         r"\(SlurmOptions\) are \['cluster', 'timeout_s', 'time_limit_min', 'fresh', 'env'\]"):
        launch(CPU, target="slurm", dry_run=True, context="prod")


@pytest.mark.unit
def test_typed_options_and_keywords_are_the_same_launch():
    by_kw = launch(CPU, target="slurm", dry_run=True, timeout_s=60)
    typed = launch(CPU, target="slurm", dry_run=True, options=SlurmOptions(timeout_s=60))
    assert by_kw.request == typed.request and by_kw.reason == typed.reason == "dry run"
    with pytest.raises(ValueError, match="takes options=KubernetesOptions"):
        launch(CPU, target="kubernetes", dry_run=True, options=SlurmOptions())
    with pytest.raises(ValueError, match="not both"):
        launch(CPU, target="slurm", dry_run=True, options=SlurmOptions(), fresh=False)


@pytest.mark.unit
def test_launch_rejects_a_non_spec():
    with pytest.raises(ValueError, match="expects a TrainSpec"):
        launch({"name": "x"}, target="local")


@pytest.mark.unit
@pytest.mark.parametrize("sid,spec,nodes,slots,gpus", LAYOUTS, ids=[c[0] for c in LAYOUTS])
def test_mpijob_layout_resources_and_scheduling(sid, spec, nodes, slots, gpus):
    job = kt.mpijob(spec)
    rs = job["spec"]["mpiReplicaSpecs"]
    worker = rs["Worker"]["template"]["spec"]
    res = worker["containers"][0]["resources"]
    assert job["spec"]["slotsPerWorker"] == slots and rs["Worker"]["replicas"] == nodes
    assert nodes * slots == spec.world_size
    assert res["requests"] == res["limits"]  # Guaranteed QoS; nvidia.com/gpu requests = limits
    assert int(res["requests"]["cpu"]) == slots * spec.threads_per_worker
    if gpus:
        assert res["limits"]["nvidia.com/gpu"] == str(gpus) == str(slots * spec.gpus_per_worker)
        assert {"key": "nvidia.com/gpu", "operator": "Equal", "value": "present",
                "effect": "NoSchedule"} in worker["tolerations"]
        assert worker["nodeSelector"]["node.kubernetes.io/instance-type"] == spec.instance_type
    else:
        assert "nvidia.com/gpu" not in res["limits"] and "tolerations" not in worker
    assert "nvidia.com/gpu" not in rs["Launcher"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert job["spec"]["launcherCreationPolicy"] == "WaitForWorkersReady"
    assert {"cleanPodPolicy", "backoffLimit"} <= set(job["spec"]["runPolicy"])


@pytest.mark.unit
@pytest.mark.parametrize("version", ["1.36", "1.37"])
@pytest.mark.parametrize("sid,spec", [(c[0], c[1]) for c in LAYOUTS], ids=[c[0] for c in LAYOUTS])
def test_documents_and_pod_templates_validate(sid, spec, version):
    docs = kt.documents(spec) + kt.pod_templates(spec)  # pod templates against the core schema, strict
    problems = [p for d in docs for p in validate_doc(d, version)]
    assert not problems, problems


@pytest.mark.unit
@pytest.mark.parametrize("role", ["Launcher", "Worker"])
def test_pods_are_restricted_and_mount_volumes(role):
    pod = kt.mpijob(PROD)["spec"]["mpiReplicaSpecs"][role]["template"]["spec"]
    c = pod["containers"][0]
    assert pod["securityContext"]["runAsNonRoot"] and pod["securityContext"]["runAsUser"] == 1000
    assert c["securityContext"] == restricted_container(uid=None)
    assert pod["serviceAccountName"] == "trainer" and pod["priorityClassName"] == "hpcml-training"
    vols = {v["name"]: v for v in pod["volumes"]}
    assert vols["shared"]["persistentVolumeClaim"]["claimName"] == kt.checkpoint_pvc(PROD)["metadata"]["name"]
    if role == "Worker":
        assert vols["dshm"]["emptyDir"]["medium"] == "Memory"
        assert {"name": "dshm", "mountPath": "/dev/shm"} in c["volumeMounts"]


@pytest.mark.unit
def test_mpijob_missing_field_is_caught():
    job = kt.mpijob(PROD)
    del job["spec"]["slotsPerWorker"]
    assert any("spec.slotsPerWorker" in p for p in validate_doc(job, "1.36"))


@pytest.mark.unit
@pytest.mark.parametrize("change,field", [
    (dict(world_size=6), "world_size"),
    (dict(gpus_per_worker=8), "gpus_per_worker"),
    (dict(instance_type="x9.huge"), "instance_type"),
    (dict(gpus_per_worker=0, threads_per_worker=64), "threads_per_worker"),
], ids=["not-whole-nodes", "too-many-gpus", "unknown-instance", "too-many-threads"])
def test_bad_layout_names_the_field(change, field):
    with pytest.raises(ValueError, match=f"TrainSpec.{field}"):
        layout.node_layout(dataclasses.replace(PROD, **change))


@pytest.mark.unit
def test_container_spec_points_into_the_shared_volume():
    c = json.loads(kt.spec_configmap(PROD)["data"]["spec.json"])
    assert c["dataset_dir"].startswith(paths.SHARED_MOUNT) and c["out_dir"] == f"{paths.SHARED_MOUNT}/runs/{PROD.name}"
    assert TrainSpec.from_dict(c).world_size == PROD.world_size


@pytest.mark.unit
@pytest.mark.parametrize("spec", [CPU, PROD], ids=["cpu", "prod"])
def test_slurm_script_is_valid_bash_and_runs_horovodrun(spec):
    body = layout.slurm_body(spec, "/tmp/spec.json")
    subprocess.run(["bash", "-n"], input=body, text=True, check=True)
    assert f"--gloo -np {spec.world_size} -H \"$HOSTS\"" in body
    assert f"OMP_NUM_THREADS={spec.threads_per_worker}" in body


@pytest.mark.unit
def test_batch_requests_validate_and_match_the_layout():
    reqs = layout.batch_requests(PROD)
    node = reqs["register_job_definition"]["nodeProperties"]
    cont = node["nodeRangeProperties"][0]["container"]
    lay = layout.node_layout(PROD)
    assert node["numNodes"] == lay.nodes == reqs["submit_job"]["nodeOverrides"]["numNodes"]
    assert {"type": "GPU", "value": str(lay.gpus_per_node)} in cont["resourceRequirements"]
    subprocess.run(["bash", "-n"], input=cont["command"][2], text=True, check=True)
    assert TrainSpec.from_json(next(e["value"] for e in cont["environment"] if e["name"] == "HPCML_SPEC_JSON"))


@pytest.mark.unit
@pytest.mark.parametrize("spec,image", [
    (PROD, layout.ECR_CUDA_IMAGE),  # 8 T4s: the CUDA image (NCCL), never the Gloo-only CPU one
    (dataclasses.replace(PROD, world_size=4, gpus_per_worker=2, instance_type="p3.8xlarge"), layout.ECR_CUDA_IMAGE),
    (CPU, layout.ECR_IMAGE),
], ids=["prod-gpu", "p3-2gpu-workers", "cpu-ci-spec"])
def test_batch_job_definition_runs_the_image_of_its_hardware(spec, image):
    cont = layout.batch_requests(spec)["register_job_definition"]["nodeProperties"]["nodeRangeProperties"][0]["container"]
    assert cont["image"] == image == layout.ecr_image_for(spec)
    assert image.rsplit("/", 1)[1] == (f"{layout.TRAIN_CUDA_REPO}:{layout.TRAIN_TAG}" if spec.gpus_per_worker
                                       else f"{layout.TRAIN_REPO}:{layout.TRAIN_TAG}")


@pytest.mark.unit
def test_batch_gpu_job_with_the_cpu_image_is_refused():
    with pytest.raises(ValueError, match="batch_requests.image: a spec with gpus_per_worker=1 needs the CUDA"):
        layout.batch_requests(PROD, image=layout.ECR_IMAGE)


@pytest.mark.unit
def test_checked_in_batch_definition_runs_the_cuda_image_the_dockerfile_builds():
    defn = json.loads((paths.manifests_dir() / "train/batch-register-job-definition.json").read_text())
    image = defn["nodeProperties"]["nodeRangeProperties"][0]["container"]["image"]
    assert image == layout.ECR_CUDA_IMAGE
    dockerfile = (paths.repo_root() / "docker/Dockerfile.train-cuda").read_text()
    assert f"-t {TRAIN_CUDA_IMAGE}" in dockerfile
    assert kt.CUDA_IMAGE == TRAIN_CUDA_IMAGE


@pytest.mark.unit
def test_the_training_images_are_named_once():
    """The training images' registry, repositories and tag live in :mod:`hpcml.train.spec` (the
    spec layer); TrainSpec's default, the tuning manifests and the cluster targets use them, and
    no other module of the package spells a training image or repository out."""
    import ast

    from hpcml.k8s import tune as ktune
    from hpcml.train import spec as tspec

    assert TrainSpec().image == ktune.IMAGE == tspec.TRAIN_IMAGE == kt.CPU_IMAGE
    assert tspec.TRAIN_IMAGE == f"{tspec.TRAIN_REGISTRY}/{tspec.TRAIN_REPO}:{tspec.TRAIN_TAG}"
    assert tspec.TRAIN_CUDA_IMAGE == kt.CUDA_IMAGE
    assert (layout.TRAIN_REPO, layout.TRAIN_CUDA_REPO, layout.TRAIN_TAG) == \
        (tspec.TRAIN_REPO, tspec.TRAIN_CUDA_REPO, tspec.TRAIN_TAG)
    home = paths.repo_root() / "lib/hpcml/train/spec.py"
    spelled = []
    for f in sorted((paths.repo_root() / "lib/hpcml").rglob("*.py")):
        tree = ast.parse(f.read_text())
        docs = {id(n.body[0].value) for n in ast.walk(tree)
                if isinstance(n, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                and n.body and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}
        for n in ast.walk(tree):
            if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docs:
                image = any(f"{r}:" in n.value for r in (tspec.TRAIN_REPO, tspec.TRAIN_CUDA_REPO))
                if image or (n.value == tspec.TRAIN_CUDA_REPO and f != home):
                    spelled.append(f"{f.relative_to(paths.repo_root())}:{n.lineno}: {n.value!r}")
    assert spelled == [], spelled


def _drop(path):
    def f(req):
        cur = req
        for k in path[:-1]:
            cur = cur[k]
        del cur[path[-1]]
    return f


def _set(path, value):
    def f(req):
        cur = req
        for k in path[:-1]:
            cur = cur[k]
        cur[path[-1]] = value
    return f


@pytest.mark.unit
@pytest.mark.parametrize("op,mutate,needle", [
    ("register_job_definition", _drop(["nodeProperties", "numNodes"]), "numNodes"),
    ("register_job_definition", _set(["nodeProperties", "nodeRangeProperties", 0, "container",
                                      "resourceRequirements", 0, "value"], 4), "value"),
    ("register_job_definition", _set(["type"], 7), "type"),
    ("submit_job", _drop(["jobQueue"]), "jobQueue"),
], ids=["no-numNodes", "gpu-value-int", "type-int", "no-queue"])
def test_broken_batch_request_fails_naming_the_field(op, mutate, needle):
    req = copy.deepcopy(layout.batch_requests(PROD)[op])
    mutate(req)
    with pytest.raises(AWSRequestError, match=needle):
        validate_request("batch", op, req)


@pytest.mark.unit
def test_kubernetes_without_cluster_returns_manifests(monkeypatch, tmp_path):
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing-kubeconfig"))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    res = launch(PROD, target="kubernetes")
    assert not res.submitted and "no Kubernetes cluster configured" in res.reason
    assert [d["kind"] for d in res.request] == ["PersistentVolumeClaim", "ConfigMap", "MPIJob"]
    with pytest.raises(RuntimeError, match="cannot submit the MPIJob"):
        launch(PROD, target="kubernetes", dry_run=False)


@pytest.mark.unit
def test_rendered_manifests_are_the_production_spec():
    out = kt.render()
    assert out["train/mpijob.yaml"][1] == kt.mpijob(PROD)
    assert out["train/batch-register-job-definition.json"] == layout.batch_requests(PROD)["register_job_definition"]


@pytest.mark.integration
def test_pod_templates_pass_security_lint(tmp_path):
    """checkov over the launcher/worker pods (it does not parse the MPIJob CRD itself)."""
    import yaml

    from hpcml.cluster import security_lint

    if not security_lint.checkov_path().exists():
        pytest.skip(f"checkov not installed at {security_lint.checkov_path()}")
    pods = [{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": t["metadata"]["name"], "namespace": "hpcml"},
             "spec": t["template"]["spec"]} for t in kt.pod_templates(PROD)]
    (tmp_path / "pods.yaml").write_text(yaml.safe_dump_all(pods))
    failed = security_lint.lint_manifests(tmp_path)["failed"]
    accepted = {
        ("CKV_K8S_8", "launcher"), ("CKV_K8S_9", "launcher"),  # a batch process: no endpoint to probe
        ("CKV2_K8S_6", "launcher"), ("CKV2_K8S_6", "worker"),  # NetworkPolicies live in manifests/cluster
    }
    left = [f for f in failed if (f.split()[0], f.split()[1].rsplit("-", 1)[-1].split()[0]) not in accepted]
    assert not left, left


@pytest.mark.integration
@pytest.mark.slow
def test_sagemaker_request_built_by_the_sdk_validates(monkeypatch):
    """The SDK's ModelTrainer (MPI) stages code into a local S3 and yields CreateTrainingJob,
    with the process environment left alone (no fake AWS variables, not even while it builds)."""
    env = dict(os.environ)
    build = sagemaker.sagemaker_trainer

    def trainer_seeing_the_environment(*args, **kw):
        assert dict(os.environ) == env
        return build(*args, **kw)

    monkeypatch.setattr(sagemaker, "sagemaker_trainer", trainer_seeing_the_environment)
    res = launch(PROD, target="sagemaker", dry_run=True)
    assert dict(os.environ) == env
    req, staged = res.request["create_training_job"], res.request["staged"]
    lay = layout.node_layout(PROD)
    assert req["ResourceConfig"] == {"InstanceType": f"ml.{PROD.instance_type}", "InstanceCount": lay.nodes,
                                     "VolumeSizeInGB": 100}
    assert json.loads(staged["distributed.json"])["process_count_per_node"] == lay.slots
    assert json.loads(staged["sourcecode.json"])["entry_script"] == "hpcml_entry.py"
    assert req["EnableManagedSpotTraining"] and req["CheckpointConfig"]["LocalPath"] == sagemaker.SM_CHECKPOINTS
    assert req["OutputDataConfig"]["S3OutputPath"] == sagemaker.output_s3_uri(PROD)
    assert req["AlgorithmSpecification"]["TrainingImage"] == layout.ECR_CUDA_IMAGE
    broken = {k: v for k, v in req.items() if k != "RoleArn"}
    with pytest.raises(AWSRequestError, match="RoleArn"):
        validate_request("sagemaker", "create_training_job", broken)


@pytest.mark.unit
@pytest.mark.parametrize("spec", [PROD, CPU], ids=["prod", "cpu-ci-spec"])
def test_sagemaker_model_output_is_where_the_execution_role_may_write(spec):
    """The output path is the data bucket's models/<job>/, a prefix the rendered policy of the
    SageMaker role grants s3:PutObject on, and a use the S3 coherence check declares."""
    from hpcml.aws import account
    from hpcml.k8s import coherence as co

    uri = sagemaker.output_s3_uri(spec)
    assert uri == f"s3://{account.data_bucket()}/models/{spec.name}/"
    policy = json.loads((paths.manifests_dir() / "iam/hpcml-sagemaker.json").read_text())
    key = uri.removeprefix("s3://") + "job/output/model.tar.gz"
    assert any(co._covers(g, key) for g in co._grants(policy, "s3:PutObject")), (uri, co._grants(policy, "s3:PutObject"))
    if spec is PROD:
        assert ("sagemaker", "write", f"models/{spec.name}/") in [u[:3] for u in co.DECLARED_USES]


@pytest.mark.unit
def test_sagemaker_default_bucket_of_the_sdk_is_not_granted():
    """What the SDK writes to without an output path (its session's bucket) the role may not write."""
    from hpcml.k8s import coherence as co

    policy = json.loads((paths.manifests_dir() / "iam/hpcml-sagemaker.json").read_text())
    key = f"{sagemaker.SAGEMAKER_BUCKET}/{PROD.name}/output/model.tar.gz"
    assert not any(co._covers(g, key) for g in co._grants(policy, "s3:PutObject"))


def _missing_for_slurm_run() -> str | None:
    from hpcml.cluster.slurm import daemons as slurm

    return slurm.available()


@pytest.mark.integration
@pytest.mark.slow
def test_sbatch_runs_the_spec_end_to_end(build_tmp, tmp_path):
    """A tiny job through sbatch on the real local Slurm cluster: horovodrun, 2 Gloo ranks."""
    missing = _missing_for_slurm_run()
    if missing:
        pytest.skip(missing)
    from hpcml.cluster.slurm import daemons as slurm

    from hpcml.data.dataset import ensure_dataset

    data = ensure_dataset(n_shards=2, dataset_dir=tmp_path / "mnist")  # the real data stage (Spark)
    spec = TrainSpec(name="slurm-tiny", world_size=2, threads_per_worker=1, epochs=2, batch_size=32, lr=0.02,
                     dataset_dir=str(data), pin_cpus=False)
    cl = slurm.ensure_cluster(tmp_path / "slurm")
    try:
        res = launch(spec, target="slurm", cluster=cl, timeout_s=600)
    finally:
        cl.stop()
        from hpcml.data.spark import stop_session

        stop_session()
    assert res.submitted and res.job.ok, res.job
    assert res.metrics["world_size"] == 2 and res.metrics["epochs_run"] == 2
    assert res.metrics["test_accuracy"] > 0.5  # 10 classes: chance is 0.1
    assert (spec.resolved_out_dir() / "model.pt").exists()


@pytest.mark.unit
def test_slurm_refuses_elastic_and_wrong_shard_count(build_tmp, tmp_path):
    with pytest.raises(ValueError, match="TrainSpec.elastic"):
        launch(dataclasses.replace(CPU, elastic=True), target="slurm")
    with pytest.raises(FileNotFoundError, match="no train shards"):
        launch(dataclasses.replace(CPU, dataset_dir=str(tmp_path / "empty")), target="slurm")


@pytest.mark.unit
def test_slurm_env_is_exported_quoted_and_redacted_in_the_shown_request():
    env = {"HPCML_CKPT_S3": "http://127.0.0.1:1/b", "AWS_SECRET_ACCESS_KEY": "s3cr'et $x"}
    body = layout.slurm_body(CPU, "/tmp/spec.json", env=env)
    out = subprocess.run(["bash", "-c", body.split("\nexport OMP")[0] + '\nprintf %s "$AWS_SECRET_ACCESS_KEY"'],
                         capture_output=True, text=True, check=True).stdout
    assert out == "s3cr'et $x"  # quoted: no expansion, no broken quote
    shown = launch(CPU, target="slurm", dry_run=True, env=env).request
    assert "s3cr" not in shown and "export AWS_SECRET_ACCESS_KEY=<redacted>" in shown
    with pytest.raises(ValueError, match="'1BAD' is not a shell variable name"):
        launch(CPU, target="slurm", dry_run=True, env={"1BAD": "x"})


@pytest.mark.unit
def test_slurm_script_for_ddp_starts_one_torchrun_agent_per_node():
    spec = dataclasses.replace(CPU, backend="ddp", world_size=4, threads_per_worker=2)
    body = layout.slurm_body(spec, "/tmp/my spec.json", torchrun="/venv/bin/torchrun", gloo_iface="eth1")
    subprocess.run(["bash", "-n"], input=body, text=True, check=True)
    assert "horovodrun" not in body and "export GLOO_SOCKET_IFNAME=eth1" in body
    srun = next(ln for ln in body.splitlines() if ln.startswith("srun "))
    assert '--ntasks="$SLURM_NNODES" --ntasks-per-node=1 --cpus-per-task=$((SLOTS * 2))' in srun
    for arg in ("--nnodes=$SLURM_NNODES", "--nproc-per-node=$SLOTS", "--rdzv-backend=c10d", "--rdzv-endpoint=$RDZV",
                "--rdzv-id=$SLURM_JOB_ID", "join_timeout=60", "-m hpcml.train.worker --spec"):
        assert arg in srun
    shown = launch(spec, target="slurm", dry_run=True).request  # the dry run shows the ddp script too
    assert "torchrun" in shown and "--rdzv-backend=c10d" in shown


@pytest.mark.unit
def test_a_failed_slurm_job_names_the_rank_its_node_and_the_tail(tmp_path):
    from hpcml.cluster.slurm.jobs import JobResult
    from hpcml.train.targets.slurm import failure_message

    out = tmp_path / "job.out"
    out.write_text('noise\n[1]<stderr>:HPCML-ERROR {"error": "nan_loss", "message": "loss is nan at step 3", '
                   '"host": "hpcmln2", "rank": 1}\n' + "x\n" * 50)
    res = JobResult(job_id="7", state="FAILED", exit_code=3, stdout_path=out, stderr_path=None, elapsed_s=1.0,
                    output_tail="last lines here")
    msg = failure_message(CPU, res)
    assert msg.startswith("Slurm job 7 (mnist-cnn) ended FAILED with exit code 3; rank 1 on node hpcmln2: "
                          "loss is nan at step 3; output tail:\nlast lines here")


@pytest.mark.unit
@pytest.mark.parametrize("target", ["kubernetes", "sagemaker", "batch"])
def test_a_ddp_spec_is_refused_by_the_mpi_targets(target):
    from hpcml.train.spec import TrainSpec
    from hpcml.train.targets import registry

    with pytest.raises(ValueError, match=rf"backend='ddp'.*'{target}' target"):
        registry.launch(TrainSpec(backend="ddp"), target=target, dry_run=True)
