"""The Spark configuration for a master URL: a pure function of the master and a few sizes.

:func:`session_conf` builds the ``spark.*`` settings (no JVM is started); the session factory
(:func:`hpcml.data.spark.get_session`) applies them, and :mod:`hpcml.k8s.data` copies the SQL
settings into the SparkApplication.

Masters:
    * ``local[*]`` (default): the driver is the only JVM; UI off, bound to loopback,
      200 shuffle partitions (Spark's default), which AQE may merge after the map side, spill
      under ``build/spark-tmp``.
    * ``spark://host:7077``: a standalone cluster; executor cores/memory from the args.
    * ``k8s://https://<api-server>``: Spark on Kubernetes — namespace ``hpcml``,
      service account ``spark`` (IRSA for S3), the ``hpcml-spark`` image, executor
      instances/resources, S3A credentials from the pod's web identity token.
"""

from __future__ import annotations

import os

from hpcml import paths
from hpcml.data.spec import IMAGE, PARQUET_CODEC, SERVICE_ACCOUNT
from hpcml.k8s.common import NAMESPACE


def default_driver_memory(total_bytes: int | None = None) -> str:
    """A quarter of this machine's memory, clamped to 1-8 GiB (the machine is shared)."""
    if total_bytes is None:
        import psutil

        total_bytes = psutil.virtual_memory().total
    gib = max(1, min(8, int(total_bytes / 4 / 2**30)))
    return f"{gib}g"


def session_conf(master: str = "local[*]", cores: int | None = None, driver_memory: str | None = None,
                 executor_instances: int = 2, executor_cores: int = 2, executor_memory: str = "4g",
                 image: str = IMAGE, namespace: str = NAMESPACE, local_dir: str | None = None) -> dict[str, str]:
    """The Spark configuration for ``master`` (pure; no JVM is started).

    Args:
        master: ``local[*]``/``local[N]``, ``spark://host:port`` or ``k8s://https://host:port``.
        cores: cores of this machine (local mode sizes shuffle partitions from it).
        driver_memory: e.g. ``"2g"``; default :func:`default_driver_memory`.
        executor_instances / executor_cores / executor_memory: cluster executors.
        image: container image for Kubernetes driver and executors.
        namespace: Kubernetes namespace.
        local_dir: spill/shuffle folder (local mode).

    Raises:
        ValueError: unknown master scheme or a non-positive size.
    """
    if executor_instances < 1 or executor_cores < 1:
        raise ValueError(f"executor_instances and executor_cores must be >= 1, got "
                         f"{executor_instances}, {executor_cores}")
    cores = cores or os.cpu_count() or 1
    conf = {
        "spark.master": master,
        "spark.app.name": "hpcml-preprocess",
        "spark.ui.enabled": "false",
        "spark.ui.showConsoleProgress": "false",
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        "spark.sql.adaptive.enabled": "true",
        "spark.sql.session.timeZone": "UTC",
        "spark.driver.memory": driver_memory or default_driver_memory(),
        # Parquet written identically on every run: no per-run metadata beyond the schema.
        "spark.sql.parquet.compression.codec": PARQUET_CODEC,
        "spark.sql.sources.partitionOverwriteMode": "static",
    }
    if master.startswith("local"):
        conf.update({
            "spark.driver.host": "127.0.0.1",
            "spark.driver.bindAddress": "127.0.0.1",
            # An upper bound for ad-hoc queries. AQE merges small shuffle partitions after the map
            # side: with parallelismFirst (the default) toward total size / default parallelism,
            # at most the 64 MB advisory size and at least 1 MB each. It never splits an
            # aggregation's partitions, and it leaves a cached query's partitions as planned
            # (spark.sql.optimizer.canChangeCachedPlanOutputPartitioning is false). A fixed
            # 2 x cores (4 here) made each cached partition ~8 GB at 10M rows and ran the 6 GB
            # driver heap out of memory. The preprocessing job sets its own count from its
            # input size (job.sized_shuffle, transforms.shuffle_partitions).
            "spark.sql.shuffle.partitions": str(max(200, 2 * cores)),
            "spark.sql.adaptive.coalescePartitions.enabled": "true",
            "spark.default.parallelism": str(max(2, cores)),
            "spark.local.dir": local_dir or str(paths.build_dir() / "spark-tmp"),
        })
    elif master.startswith("spark://"):
        conf.update({
            "spark.executor.cores": str(executor_cores),
            "spark.executor.memory": executor_memory,
            "spark.cores.max": str(executor_cores * executor_instances),
            "spark.sql.shuffle.partitions": str(2 * executor_cores * executor_instances),
        })
    elif master.startswith("k8s://"):
        conf.update({
            "spark.submit.deployMode": "cluster",
            "spark.kubernetes.namespace": namespace,
            "spark.kubernetes.authenticate.driver.serviceAccountName": SERVICE_ACCOUNT,
            "spark.kubernetes.container.image": image,
            "spark.kubernetes.container.image.pullPolicy": "IfNotPresent",
            "spark.executor.instances": str(executor_instances),
            "spark.executor.cores": str(executor_cores),
            "spark.executor.memory": executor_memory,
            "spark.kubernetes.executor.request.cores": str(executor_cores),
            "spark.kubernetes.executor.limit.cores": str(executor_cores),
            "spark.kubernetes.driver.label.hpcml.io/stage": "data",
            "spark.kubernetes.executor.label.hpcml.io/stage": "data",
            "spark.kubernetes.driver.label.app.kubernetes.io/part-of": "hpcml",
            "spark.kubernetes.executor.label.app.kubernetes.io/part-of": "hpcml",
            "spark.dynamicAllocation.enabled": "false",
            "spark.sql.shuffle.partitions": str(2 * executor_cores * executor_instances),
            # S3 through IRSA: the pod's projected web identity token, no static keys.
            "spark.hadoop.fs.s3a.aws.credentials.provider":
                "software.amazon.awssdk.auth.credentials.WebIdentityTokenFileCredentialsProvider",
            "spark.hadoop.fs.s3a.impl": "org.apache.hadoop.fs.s3a.S3AFileSystem",
        })
    else:
        raise ValueError(f"Spark master must be local[*]/local[N], spark://host:port or "
                         f"k8s://https://host:port, got {master!r}")
    return conf
