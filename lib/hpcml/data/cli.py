"""Command line for the preprocessing job — what sbatch, the SparkApplication and EMR run.

``python -m hpcml.data.cli --input <dir|s3://…> --output <dir|s3://…> --n-shards N``

S3 inputs are downloaded to local disk first, S3 outputs are uploaded after the local
atomic publish (the ``_manifest.json`` object last, so readers never see a partial set).
Unusable input (a missing path, a file that is not the record contract, ``--n-shards`` < 1)
is one ``error:`` line on stderr and exit status 2, like ``python -m hpcml.pipeline``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m hpcml.data.cli", description=__doc__.splitlines()[0])
    ap.add_argument("--input", required=True, help="raw CSV folder or file, or s3://bucket/prefix")
    ap.add_argument("--output", required=True, help="dataset folder, or s3://bucket/prefix")
    ap.add_argument("--n-shards", type=int, required=True, help="shards per split (training workers)")
    ap.add_argument("--master", default=None, help="Spark master (default $HPCML_SPARK_MASTER or local[*])")
    ap.add_argument("--s3-endpoint", default=os.environ.get("AWS_ENDPOINT_URL_S3"), help="S3-compatible endpoint")
    ap.add_argument("--mnist-lake", action="store_true", help="write the MNIST raw lake to --input first")
    a = ap.parse_args(argv)

    from hpcml.data.raw import write_mnist_lake
    from hpcml.data.transforms import DataInputError, list_inputs

    try:
        if a.mnist_lake:
            write_mnist_lake(Path(a.input))
        if not str(a.input).startswith("s3://"):
            list_inputs(a.input)  # a missing or malformed input fails here, before Spark starts
        manifest = _run(a)
    except DataInputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps({"output": a.output, "counts": manifest["counts"], "seconds": manifest["seconds"]}))
    return 0


def _run(a: argparse.Namespace) -> dict:
    """Stage S3 input to local disk, run the job, upload to S3 output; the manifest."""
    from hpcml.aws.send import s3_client
    from hpcml.data import staging
    from hpcml.data.job import run_job
    from hpcml.data.spark import get_session
    from hpcml.data.spec import MANIFEST

    work = Path(tempfile.mkdtemp(prefix="hpcml-data-"))
    try:
        src: str | Path = a.input
        if str(a.input).startswith("s3://"):
            src = work / "raw"
            staging.download_prefix(s3_client(a.s3_endpoint), a.input, src)
        out = work / "dataset" if a.output.startswith("s3://") else Path(a.output)
        manifest = run_job(src, out, a.n_shards, spark=get_session(a.master))
        if a.output.startswith("s3://"):
            client = s3_client(a.s3_endpoint)
            staging.upload_dir(client, out, a.output, pattern="*.parquet")
            staging.upload_dir(client, out, a.output, pattern=MANIFEST)
        return manifest
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
