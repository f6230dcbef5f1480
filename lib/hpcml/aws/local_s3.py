"""A local S3-compatible endpoint on loopback, for running the pipeline with no AWS account."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass, field

from hpcml import proc as _proc
from hpcml.aws.account import REGION


@dataclass
class LocalS3:
    """A local S3-compatible endpoint (moto's server) on loopback, stopped by pid.

    Example:
        >>> with LocalS3.start() as s3:
        ...     client = s3.client()
    """

    endpoint: str
    proc: subprocess.Popen | None = field(default=None, repr=False)

    @classmethod
    def start(cls, port: int | None = None, timeout: float = 30.0) -> "LocalS3":
        port = port or _proc.free_port()
        proc = _proc.spawn([sys.executable, "-m", "moto.server", "-H", _proc.LOOPBACK, "-p", str(port)])
        try:
            _proc.wait_until(lambda: _proc.port_open(port, timeout_s=0.5), timeout, "local S3 endpoint (moto server)",
                             proc, interval_s=0.2)
        except _proc.NotReady:
            _proc.stop(proc, timeout_s=0)
            raise TimeoutError(f"local S3 endpoint did not listen on {_proc.LOOPBACK}:{port} within {timeout}s") from None
        except RuntimeError:  # it exited: the message says with what code
            _proc.stop(proc, timeout_s=0)
            raise
        return cls(f"http://{_proc.LOOPBACK}:{port}", proc)

    def client(self):
        import boto3

        return boto3.client(
            "s3", endpoint_url=self.endpoint, region_name=REGION,
            aws_access_key_id="local", aws_secret_access_key="local",
        )

    def stop(self) -> None:
        _proc.stop(self.proc, timeout_s=10)

    def __enter__(self) -> "LocalS3":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
