"""Spark session factory: one ``SparkSession`` per process, built from :mod:`hpcml.data.spark_conf`.

:func:`get_session` builds the session from :func:`hpcml.data.spark_conf.session_conf` for
the master (``local[*]`` on this machine, a standalone master, or Kubernetes) and hands the
same one back on every later call (the JVM start costs ~10 s, so a notebook pays it once).
"""

from __future__ import annotations

import os
from typing import Any

from hpcml import paths
from hpcml.data.spark_conf import session_conf

_session: Any = None


def get_session(master: str | None = None, **kw: Any):
    """The process's SparkSession: built once from :func:`session_conf`, then reused.

    Args:
        master: default ``$HPCML_SPARK_MASTER`` or ``local[*]``.
        **kw: passed to :func:`session_conf` (only used when the session is first built).

    Raises:
        RuntimeError: Java is missing (pyspark 4 needs Java 17+).
    """
    global _session
    if _session is not None and not _session.sparkContext._jsc.sc().isStopped():
        return _session
    import shutil

    if not os.environ.get("JAVA_HOME") and shutil.which("java") is None:
        raise RuntimeError("Spark needs Java 17+: install a JRE (Debian: apt-get install openjdk-17-jre-headless)")
    from pyspark.sql import SparkSession

    conf = session_conf(master or os.environ.get("HPCML_SPARK_MASTER", "local[*]"), **kw)
    if conf.get("spark.driver.bindAddress") == "127.0.0.1":
        # The JVM picks its own address before reading the conf; keep it on loopback too.
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    if conf.get("spark.local.dir"):
        paths.ensure(paths.build_dir() / "spark-tmp")
    builder = SparkSession.builder
    for k, v in conf.items():
        builder = builder.config(k, v)
    _session = builder.getOrCreate()
    _session.sparkContext.setLogLevel("ERROR")
    return _session


def stop_session() -> None:
    """Stop the process's session (and its JVM's Spark context) if one was built here."""
    global _session
    if _session is not None:
        _session.stop()
        _session = None
