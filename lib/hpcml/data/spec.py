"""The data stage's typed spec and the constants the stage shares with its readers.

* the published dataset's contract: :data:`FORMAT`, :data:`MANIFEST`, :data:`SPLITS`,
  :data:`PARQUET_CODEC` (what :mod:`hpcml.data.job` writes and :mod:`hpcml.data.dataset` reads);
* the Spark job on a cluster: :data:`IMAGE`, :data:`SERVICE_ACCOUNT`, and :class:`DataJobSpec`,
  the preprocessing job as the clusters see it (rendered by :mod:`hpcml.k8s.data`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from hpcml.aws.account import ACCOUNT_ID, REGION, role_arn
from hpcml.specbase import fail

#: The format tag every published dataset's manifest carries.
FORMAT = "hpcml-dataset/1"
#: The manifest file of a published dataset, written last: a folder without it is never read.
MANIFEST = "_manifest.json"
#: The splits of every dataset, in the order the manifest lists them.
SPLITS = ("train", "val", "test")
#: The Parquet codec of every dataset the job writes (the benchmark's other engines use it too).
PARQUET_CODEC = "zstd"
#: The Kubernetes ServiceAccount the Spark driver and executors run as (IRSA role ``hpcml-spark``).
SERVICE_ACCOUNT = "spark"
#: The Spark image (pinned tag) the SparkApplication and EMR on EKS run.
IMAGE = "ghcr.io/example/hpcml-spark:0.1.0"
#: The Spark the job is tested with here: the ``pyspark`` ``requirements.txt`` pins (the venv's,
#: checked by ``tests/test_data_specs.py``). The image's Spark (:attr:`DataJobSpec.spark_version`)
#: is this one by default.
TESTED_SPARK = "4.3.0"
#: The Spark each EMR on EKS release runs, by release label without its ``-latest`` /
#: ``-YYYYMMDD`` suffix. Every ``emr-7.x`` release ships Spark 3.5 (EMR Release Guide, "Spark
#: release history": https://docs.aws.amazon.com/emr/latest/ReleaseGuide/Spark-release-history.html).
#: Spark 4 comes with the "AWS runtime for Apache Spark" 8.0.0, release label ``emr-spark-8.0.0``:
#: Spark 4.0.2-amzn-0, GA on EMR Serverless, EMR on EC2 and EMR on EKS
#: (https://docs.aws.amazon.com/emr/latest/EMR-Serverless-UserGuide/release-version-emr-spark-8.0.0.html),
#: ``emr-spark-8.0.0-latest`` in StartJobRun, image ``spark/emr-spark-8.0.0``
#: (https://docs.aws.amazon.com/emr/latest/EMR-on-EKS-DevelopmentGuide/emr-eks-spark-8.0.0-latest.html).
EMR_SPARK = {"emr-spark-8.0.0": "4.0.2", "emr-7.13.0": "3.5.6", "emr-7.12.0": "3.5.6", "emr-7.11.0": "3.5.6",
             "emr-7.10.0": "3.5.5", "emr-7.9.0": "3.5.5", "emr-7.8.0": "3.5.4"}
#: The EMR on EKS release the job runs on: the first with Spark 4 (the job uses pyspark 4 APIs).
#: Its Spark (4.0.2) is an older minor than :data:`TESTED_SPARK`: recorded by
#: :attr:`DataJobSpec.emr_spark_mismatch`, not refused.
EMR_RELEASE = "emr-spark-8.0.0-latest"


@dataclass(frozen=True)
class DataJobSpec:
    """The preprocessing job as the clusters see it.

    Args:
        n_shards: shards per split (= training workers).
        account_id: AWS account (default :data:`hpcml.aws.account.ACCOUNT_ID`, a documented placeholder).
        region: AWS region.
        bucket: the data lake bucket; default ``hpcml-data-<account_id>``.
        image: Spark image (pinned tag).
        spark_version: Spark version inside the image; default :data:`TESTED_SPARK`, the one the
            job is tested with here.
        driver_cores / driver_memory / executor_cores / executor_memory / executor_instances:
            Spark resources.
        emr_release: EMR on EKS release label (``<release>-latest`` or ``<release>-YYYYMMDD``); its
            Spark (:data:`EMR_SPARK`) must have the major version of ``spark_version``. The job is
            written against Spark 4, which no ``emr-7.x`` release ships (they run Spark 3.5), so
            the default is :data:`EMR_RELEASE`, ``emr-spark-8.0.0-latest`` (Spark 4.0.2); sources
            at :data:`EMR_SPARK`. A release whose Spark is another minor than
            :data:`TESTED_SPARK` is allowed and named by :attr:`emr_spark_mismatch`.
        virtual_cluster_id: the EMR virtual cluster (placeholder until ``create_virtual_cluster``).
        labels: labels added to the project's own (``app.kubernetes.io/name``, ``part-of``,
            ``hpcml.io/stage``) on the SparkApplication and its pods.
    """

    n_shards: int = 8
    account_id: str = ACCOUNT_ID
    region: str = REGION
    bucket: str = ""
    image: str = IMAGE
    spark_version: str = TESTED_SPARK
    driver_cores: int = 1
    driver_memory: str = "2g"
    executor_cores: int = 2
    executor_memory: str = "4g"
    executor_instances: int = 4
    emr_release: str = EMR_RELEASE
    virtual_cluster_id: str = "hpcmlvirtualcluster00000001"
    labels: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        for f in ("n_shards", "driver_cores", "executor_cores", "executor_instances"):
            if not isinstance(getattr(self, f), int) or getattr(self, f) < 1:
                raise fail(self, f, "an integer >= 1", getattr(self, f))
        if not (self.account_id.isdigit() and len(self.account_id) == 12):
            raise fail(self, "account_id", "12 digits", self.account_id)
        if ":latest" in self.image or ":" not in self.image.rsplit("/", 1)[-1]:
            raise fail(self, "image", "an image pinned to a tag other than latest", self.image)
        for f in ("driver_memory", "executor_memory"):
            v = getattr(self, f)
            if not (v[:-1].isdigit() and v[-1] in "mg"):
                raise fail(self, f, "a size such as '512m' or '4g'", v)
        if not re.fullmatch(r"\d+\.\d+\.\d+", self.spark_version):
            raise fail(self, "spark_version", "a Spark version 'X.Y.Z'", self.spark_version)
        self.emr_spark()  # the EMR release runs the Spark major the job is written for

    def emr_spark(self) -> str:
        """The Spark version of ``emr_release`` (:data:`EMR_SPARK`), checked against ``spark_version``.

        Another minor is not refused; :attr:`emr_spark_mismatch` names it.

        Raises:
            ValueError: the label is malformed or unknown, or its Spark is another major version
                than ``spark_version`` (an ``emr-7.x`` release runs Spark 3.5 under a Spark 4 job).
        """
        m = re.fullmatch(r"(emr-(?:spark-)?\d+\.\d+\.\d+)-(?:latest|\d{8})", self.emr_release)
        if not m or m.group(1) not in EMR_SPARK:
            raise fail(self, "emr_release", f"an EMR on EKS release label '<release>-latest' or '<release>-YYYYMMDD' "
                       f"of a release in EMR_SPARK ({', '.join(EMR_SPARK)})", self.emr_release)
        have = EMR_SPARK[m.group(1)]
        major = self.spark_version.split(".")[0]
        if have.split(".")[0] != major:
            want = [r for r, v in EMR_SPARK.items() if v.split(".")[0] == major]
            raise fail(self, "emr_release", f"a release running Spark {major} "
                       f"like spark_version {self.spark_version} ({', '.join(want) or 'none known'}); "
                       f"{m.group(1)} runs Spark {have}", self.emr_release)
        return have

    @property
    def emr_spark_mismatch(self) -> str | None:
        """One line naming how ``emr_release``'s Spark differs in minor version from
        :data:`TESTED_SPARK` (the Spark the job is tested with here, and the image's by
        default), or ``None`` when the minors agree."""
        have = self.emr_spark()
        tested = ".".join(TESTED_SPARK.split(".")[:2])
        if have.split(".")[:2] == tested.split("."):
            return None
        release = self.emr_release.rsplit("-", 1)[0]
        return (f"{release} runs Spark {have}, not the Spark {tested} the job is tested with here "
                f"(pyspark {TESTED_SPARK}): test the job on Spark {'.'.join(have.split('.')[:2])} before relying on EMR")

    @property
    def lake(self) -> str:
        return f"s3://{self.bucket or f'hpcml-data-{self.account_id}'}"

    @property
    def role_arn(self) -> str:
        return role_arn(f"hpcml-{SERVICE_ACCOUNT}", self.account_id)

