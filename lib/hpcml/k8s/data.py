"""Scale-out definitions of the preprocessing job (:mod:`hpcml.data`), from one :class:`DataJobSpec`:

* a ``SparkApplication`` (kubeflow spark-operator, ``sparkoperator.k8s.io/v1beta2``) in the
  ``hpcml`` namespace, run as the IRSA service account ``spark``, PSA-restricted pods;
* an EMR on EKS ``StartJobRun`` request (``emr-containers``), validated against botocore's
  service model and sent only with credentials (:func:`hpcml.aws.send.submit`);
* an ``sbatch`` script for a Slurm cluster, and :func:`submit_local` which runs it on the
  local cluster (:mod:`hpcml.cluster.slurm`).

All three run the same entry point, ``hpcml/data/cli.py`` (``--input``/``--output`` may be
``s3://`` URIs: the raw prefix is downloaded to the node's local disk, the shards uploaded).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from hpcml.data.spark import IMAGE, NAMESPACE, SERVICE_ACCOUNT, session_conf

#: where the Spark image (docker/Dockerfile.spark) puts a copy of lib/hpcml/data/cli.py
ENTRY_POINT = "local:///opt/hpcml/bin/preprocess.py"

CRD_REQUIRED = {
    ("sparkoperator.k8s.io/v1beta2", "SparkApplication"): [
        "spec.type", "spec.mode", "spec.image", "spec.mainApplicationFile", "spec.sparkVersion",
        "spec.driver.serviceAccount", "spec.driver.cores", "spec.driver.memory",
        "spec.executor.instances", "spec.executor.cores", "spec.executor.memory",
    ],
}

_RESTRICTED_CONTAINER = {
    "runAsNonRoot": True, "runAsUser": 1000, "runAsGroup": 1000, "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True, "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"},
}
_RESTRICTED_POD = {"runAsNonRoot": True, "runAsUser": 1000, "runAsGroup": 1000, "fsGroup": 1000,
                   "seccompProfile": {"type": "RuntimeDefault"}}


@dataclass(frozen=True)
class DataJobSpec:
    """The preprocessing job as the clusters see it.

    Args:
        n_shards: shards per split (= training workers).
        account_id: AWS account (111122223333 is a documented placeholder).
        region: AWS region.
        bucket: the data lake bucket; default ``hpcml-data-<account_id>``.
        image: Spark image (pinned tag).
        spark_version: Spark version inside the image.
        driver_cores / driver_memory / executor_cores / executor_memory / executor_instances:
            Spark resources.
        emr_release: EMR on EKS release label.
        virtual_cluster_id: the EMR virtual cluster (placeholder until ``create_virtual_cluster``).
    """

    n_shards: int = 8
    account_id: str = "111122223333"
    region: str = "us-east-1"
    bucket: str = ""
    image: str = IMAGE
    spark_version: str = "4.0.1"
    driver_cores: int = 1
    driver_memory: str = "2g"
    executor_cores: int = 2
    executor_memory: str = "4g"
    executor_instances: int = 4
    emr_release: str = "emr-7.9.0-latest"
    virtual_cluster_id: str = "hpcmlvirtualcluster00000001"
    labels: dict = field(default_factory=lambda: {"app.kubernetes.io/name": "hpcml-preprocess",
                                                  "app.kubernetes.io/part-of": "hpcml", "hpcml.io/stage": "data"})

    def __post_init__(self) -> None:
        for f in ("n_shards", "driver_cores", "executor_cores", "executor_instances"):
            if not isinstance(getattr(self, f), int) or getattr(self, f) < 1:
                raise ValueError(f"DataJobSpec.{f} must be an int >= 1, got {getattr(self, f)!r}")
        if not (self.account_id.isdigit() and len(self.account_id) == 12):
            raise ValueError(f"DataJobSpec.account_id must be 12 digits, got {self.account_id!r}")
        if ":latest" in self.image or ":" not in self.image.rsplit("/", 1)[-1]:
            raise ValueError(f"DataJobSpec.image must be pinned to a tag other than latest, got {self.image!r}")
        for f in ("driver_memory", "executor_memory"):
            v = getattr(self, f)
            if not (v[:-1].isdigit() and v[-1] in "mg"):
                raise ValueError(f"DataJobSpec.{f} must look like '512m' or '4g', got {v!r}")

    @property
    def lake(self) -> str:
        return f"s3://{self.bucket or f'hpcml-data-{self.account_id}'}"

    @property
    def role_arn(self) -> str:
        return f"arn:aws:iam::{self.account_id}:role/hpcml-{SERVICE_ACCOUNT}"

    def arguments(self) -> list[str]:
        return ["--input", f"{self.lake}/raw/mnist/", "--output", f"{self.lake}/curated/mnist/",
                "--n-shards", str(self.n_shards)]


def _k8s_memory(spark_mem: str) -> str:
    return spark_mem[:-1] + ("Mi" if spark_mem.endswith("m") else "Gi")


def spark_application(spec: DataJobSpec) -> dict:
    """The SparkApplication: driver + executors as restricted pods, S3 through IRSA."""
    conf = session_conf(f"k8s://https://kubernetes.default.svc", executor_instances=spec.executor_instances,
                        executor_cores=spec.executor_cores, executor_memory=spec.executor_memory, image=spec.image)
    spark_conf = {k: v for k, v in conf.items() if k.startswith("spark.sql.") or k.startswith("spark.ui.")}
    spark_conf["spark.kubernetes.local.dirs.tmpfs"] = "false"
    pod = lambda cores, mem: {  # noqa: E731
        "cores": cores, "memory": mem, "serviceAccount": SERVICE_ACCOUNT, "labels": dict(spec.labels),
        "securityContext": dict(_RESTRICTED_CONTAINER), "podSecurityContext": dict(_RESTRICTED_POD),
        "env": [{"name": "AWS_REGION", "value": spec.region}, {"name": "HOME", "value": "/tmp"}],
    }
    driver = dict(pod(spec.driver_cores, spec.driver_memory), coreLimit=str(spec.driver_cores))
    executor = dict(pod(spec.executor_cores, spec.executor_memory), instances=spec.executor_instances,
                    coreLimit=str(spec.executor_cores))
    return {
        "apiVersion": "sparkoperator.k8s.io/v1beta2",
        "kind": "SparkApplication",
        "metadata": {"name": "hpcml-preprocess", "namespace": NAMESPACE, "labels": dict(spec.labels)},
        "spec": {
            "type": "Python", "pythonVersion": "3", "mode": "cluster",
            "image": spec.image, "imagePullPolicy": "Always",
            "mainApplicationFile": ENTRY_POINT, "arguments": spec.arguments(),
            "sparkVersion": spec.spark_version,
            "restartPolicy": {"type": "OnFailure", "onFailureRetries": 2, "onFailureRetryInterval": 30,
                              "onSubmissionFailureRetries": 2, "onSubmissionFailureRetryInterval": 30},
            "timeToLiveSeconds": 86400,
            "sparkConf": spark_conf,
            "hadoopConf": {"fs.s3a.aws.credentials.provider": conf["spark.hadoop.fs.s3a.aws.credentials.provider"],
                           "fs.s3a.endpoint.region": spec.region},
            "driver": driver,
            "executor": executor,
        },
    }


def emr_start_job_run(spec: DataJobSpec) -> dict:
    """The EMR on EKS ``start_job_run`` request (validate with :func:`hpcml.aws.requests.validate_request`)."""
    submit = " ".join([
        f"--conf spark.executor.instances={spec.executor_instances}",
        f"--conf spark.executor.cores={spec.executor_cores}",
        f"--conf spark.executor.memory={spec.executor_memory}",
        f"--conf spark.driver.cores={spec.driver_cores}",
        f"--conf spark.driver.memory={spec.driver_memory}",
    ])
    return {
        "name": "hpcml-preprocess",
        "virtualClusterId": spec.virtual_cluster_id,
        "executionRoleArn": spec.role_arn,
        "releaseLabel": spec.emr_release,
        "jobDriver": {"sparkSubmitJobDriver": {"entryPoint": ENTRY_POINT, "entryPointArguments": spec.arguments(),
                                               "sparkSubmitParameters": submit}},
        "configurationOverrides": {
            "applicationConfiguration": [{
                "classification": "spark-defaults",
                "properties": {"spark.kubernetes.container.image": spec.image,
                               "spark.sql.adaptive.enabled": "true",
                               "spark.sql.execution.arrow.pyspark.enabled": "true"},
            }],
            "monitoringConfiguration": {
                "persistentAppUI": "ENABLED",
                "cloudWatchMonitoringConfiguration": {"logGroupName": "/hpcml/emr-containers",
                                                      "logStreamNamePrefix": "preprocess"},
                "s3MonitoringConfiguration": {"logUri": f"{spec.lake}/logs/emr/"},
            },
        },
        "tags": {"app.kubernetes.io/part-of": "hpcml", "hpcml.io/stage": "data"},
    }


def sbatch_body(n_shards_default: int = 2) -> str:
    """The job's shell body: Spark in local mode on the allocated cores, paths from the environment."""
    return "\n".join([
        "# the data stage on one Slurm node: Spark local[cores of this allocation]",
        'export HPCML_SPARK_MASTER="local[${SLURM_CPUS_PER_TASK:-1}]"',
        'cd "${HPCML_ROOT:?set HPCML_ROOT to the hpcml checkout}"',
        '"${HPCML_PYTHON:-.venv/bin/python}" -m hpcml.data.cli --mnist-lake \\',
        '  --input "${HPCML_RAW:-${HPCML_BUILD:-build}/data/lake/mnist/raw}" \\',
        '  --output "${HPCML_DATASET:-${HPCML_BUILD:-build}/data/mnist}" \\',
        f'  --n-shards "${{N_SHARDS:-{n_shards_default}}}"',
    ])


def sbatch_script(cpus_per_task: int = 2, time_limit_min: int = 30) -> str:
    from hpcml.cluster.slurm.conf import batch_script

    return batch_script(sbatch_body(), name="hpcml-preprocess", cpus_per_task=cpus_per_task,
                        time_limit_min=time_limit_min)


def submit_local(n_shards: int, dataset_dir: Path | None = None, cluster=None, cpus_per_task: int = 1,
                 timeout_s: float = 600):
    """Run the job as a batch job on the local Slurm cluster; its ``JobResult``.

    Args:
        n_shards: shards per split.
        dataset_dir: output folder (default ``data_dir()/"mnist-slurm"``).
        cluster: a running :class:`hpcml.cluster.slurm.daemons.SlurmCluster` (default ``ensure_cluster()``).
        cpus_per_task: cores Spark gets (``local[N]``).
        timeout_s: how long to wait for the job.
    """
    from hpcml import paths
    from hpcml.cluster.slurm import daemons as slurm

    cl = cluster or slurm.ensure_cluster()
    import sys

    env = {"HPCML_ROOT": str(paths.repo_root()), "HPCML_BUILD": str(paths.build_dir()),
           "HPCML_PYTHON": sys.executable, "N_SHARDS": str(n_shards),
           "HPCML_DATASET": str(dataset_dir or paths.data_dir() / "mnist-slurm"),
           "PATH": os.environ.get("PATH", ""), "JAVA_HOME": os.environ.get("JAVA_HOME", "")}
    return cl.run_batch(sbatch_body(n_shards), name="hpcml-preprocess", cpus_per_task=cpus_per_task,
                        time_limit_min=max(1, int(timeout_s // 60) + 1), timeout_s=timeout_s,
                        env={k: v for k, v in env.items() if v})


def render() -> dict:
    spec = DataJobSpec()
    return {
        "data/spark-application.yaml": [spark_application(spec)],
        "data/emr-on-eks-start-job-run.json": emr_start_job_run(spec),
        "data/preprocess.sbatch": sbatch_script(),
    }
