"""Scale-out definitions of the preprocessing job (:mod:`hpcml.data`), from one
:class:`~hpcml.data.spec.DataJobSpec`:

* a ``SparkApplication`` (kubeflow spark-operator, ``sparkoperator.k8s.io/v1beta2``) in the
  ``hpcml`` namespace, run as the IRSA service account ``spark``, PSA-restricted pods;
* an EMR on EKS ``StartJobRun`` request (``emr-containers``), validated against botocore's
  service model and sent only with credentials (:func:`hpcml.aws.send.submit`);
* an ``sbatch`` script for a Slurm cluster (:func:`hpcml.data.slurm.run_batch_job` runs its
  body on the local cluster).

All three run the same entry point, ``hpcml/data/cli.py`` (``--input``/``--output`` may be
``s3://`` URIs: the raw prefix is downloaded to the node's local disk, the shards uploaded).
The S3 paths follow the layout of :data:`hpcml.aws.account.S3_PREFIXES`: ``raw/`` in,
``processed/`` out (shards, ``_manifest.json`` and ``_quarantine/``), EMR's logs under
``logs/emr/`` — exactly what the ``spark`` role's policy (:mod:`hpcml.k8s.iam`) grants.
"""

from __future__ import annotations

from hpcml import paths
from hpcml.cluster.slurm.conf import batch_script
from hpcml.data.spark_conf import session_conf
from hpcml.data.spec import SERVICE_ACCOUNT, DataJobSpec
from hpcml.k8s.common import NAMESPACE, PART_OF, labels, restricted_container, restricted_pod

#: The job's entry point inside the Spark image (:data:`hpcml.data.spec.IMAGE`): a copy of
#: lib/hpcml/data/cli.py. This repository does not build that image (docker/ holds only the
#: training and serving Dockerfiles); whoever builds it puts the file at this path.
ENTRY_POINT = "local:///opt/hpcml/bin/preprocess.py"

CRD_REQUIRED = {
    ("sparkoperator.k8s.io/v1beta2", "SparkApplication"): [
        "spec.type", "spec.mode", "spec.image", "spec.mainApplicationFile", "spec.sparkVersion",
        "spec.driver.serviceAccount", "spec.driver.cores", "spec.driver.memory",
        "spec.executor.instances", "spec.executor.cores", "spec.executor.memory",
    ],
}

#: The job's name on every cluster (SparkApplication, EMR job run, Slurm job).
JOB_NAME = "hpcml-preprocess"


def job_labels_of(spec: DataJobSpec) -> dict[str, str]:
    """The job's labels: the project's own (name, part-of, stage ``data``), then the spec's extras."""
    return {**labels(JOB_NAME, "data"), **spec.labels}


def job_arguments(spec: DataJobSpec) -> list[str]:
    """The job's command line (:mod:`hpcml.data.cli`): ``raw/<dataset>/`` in, ``processed/<dataset>/`` out."""
    return ["--input", f"{spec.lake}/raw/{paths.DATASET}/", "--output", f"{spec.lake}/processed/{paths.DATASET}/",
            "--n-shards", str(spec.n_shards)]


def _k8s_memory(spark_mem: str) -> str:
    return spark_mem[:-1] + ("Mi" if spark_mem.endswith("m") else "Gi")


def spark_application(spec: DataJobSpec) -> dict:
    """The SparkApplication: driver + executors as restricted pods, S3 through IRSA."""
    conf = session_conf(f"k8s://https://kubernetes.default.svc", executor_instances=spec.executor_instances,
                        executor_cores=spec.executor_cores, executor_memory=spec.executor_memory, image=spec.image)
    spark_conf = {k: v for k, v in conf.items() if k.startswith("spark.sql.") or k.startswith("spark.ui.")}
    spark_conf["spark.kubernetes.local.dirs.tmpfs"] = "false"
    job_labels = job_labels_of(spec)
    pod = lambda cores, mem: {  # noqa: E731
        "cores": cores, "memory": mem, "serviceAccount": SERVICE_ACCOUNT, "labels": dict(job_labels),
        "securityContext": restricted_container(), "podSecurityContext": restricted_pod(),
        "env": [{"name": "AWS_REGION", "value": spec.region}, {"name": "HOME", "value": "/tmp"}],
    }
    driver = dict(pod(spec.driver_cores, spec.driver_memory), coreLimit=str(spec.driver_cores))
    executor = dict(pod(spec.executor_cores, spec.executor_memory), instances=spec.executor_instances,
                    coreLimit=str(spec.executor_cores))
    return {
        "apiVersion": "sparkoperator.k8s.io/v1beta2",
        "kind": "SparkApplication",
        "metadata": {"name": JOB_NAME, "namespace": NAMESPACE, "labels": dict(job_labels)},
        "spec": {
            "type": "Python", "pythonVersion": "3", "mode": "cluster",
            "image": spec.image, "imagePullPolicy": "Always",
            "mainApplicationFile": ENTRY_POINT, "arguments": job_arguments(spec),
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
        "name": JOB_NAME,
        "virtualClusterId": spec.virtual_cluster_id,
        "executionRoleArn": spec.role_arn,
        "releaseLabel": spec.emr_release,
        "jobDriver": {"sparkSubmitJobDriver": {"entryPoint": ENTRY_POINT, "entryPointArguments": job_arguments(spec),
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
        "tags": {**PART_OF, "hpcml.io/stage": "data"},
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
    """The job as an ``sbatch`` script (``manifests/data/preprocess.sbatch``)."""
    return batch_script(sbatch_body(), name=JOB_NAME, cpus_per_task=cpus_per_task,
                        time_limit_min=time_limit_min)


def render() -> dict:
    spec = DataJobSpec()
    return {
        "data/spark-application.yaml": [spark_application(spec)],
        "data/emr-on-eks-start-job-run.json": emr_start_job_run(spec),
        "data/preprocess.sbatch": sbatch_script(),
    }
