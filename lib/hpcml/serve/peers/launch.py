"""Build a peer's virtual environment on demand and run the peer as a subprocess, by pid.

A peer is one of :data:`PEERS`. :func:`venv` runs ``ci/setup_peers <peer>`` (idempotent: a
cached environment answers in a fraction of a second) and returns the environment's folder;
:meth:`PeerProcess.start` starts the peer's standalone script on 127.0.0.1 with the same
knobs the project's server has (workers, intra-op threads, max batch, max queue delay, the
CPUs it may use) and waits until its model is ready. A peer that cannot be built or does not
start raises :class:`PeerUnavailable` with one line naming the peer and why, plus its log tail.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from hpcml import paths
from hpcml import proc as _proc

#: The peers, by the name ``ci/setup_peers`` and the bake-off use.
PEERS = ("triton", "kserve")
#: What each peer runs: its script here, and whether it has a dynamic batcher.
SCRIPTS = {"triton": "triton_server.py", "kserve": "kserve_server.py"}
HAS_BATCHER = {"triton": True, "kserve": False}
#: Peers whose own process is signalled first, so it shuts its server down itself: PyTriton stops
#: tritonserver, which unloads the model and removes the ``/tmp/folderXXXXXX`` copy it made of it
#: (signalled with the rest of the group, it left one behind per start).
LEADER_STOPS = frozenset({"triton"})
#: Time allowed to build one peer's environment from nothing (a cached one takes ~0.1 s).
BUILD_TIMEOUT_S = 900


class PeerUnavailable(RuntimeError):
    """A peer could not be installed or did not start (the message says which and why)."""


def _check(peer: str) -> None:
    if peer not in PEERS:
        raise ValueError(f"unknown peer {peer!r}: expected one of {PEERS}")


def venv(peer: str, timeout_s: float = BUILD_TIMEOUT_S) -> Path:
    """The peer's virtual environment, built by ``ci/setup_peers`` when it is not cached yet.

    Raises:
        PeerUnavailable: the environment could not be built (setup_peers' last line says why).
    """
    _check(peer)
    script = paths.repo_root() / "ci" / "setup_peers"
    try:
        r = subprocess.run([str(script), peer], capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        raise PeerUnavailable(f"{peer}: building its environment took over {timeout_s:.0f}s") from None
    for line in r.stdout.splitlines():
        if line.startswith(f"setup_peers: {peer} ready ("):
            return Path(line.rsplit("(", 1)[1].rstrip(")"))
    why = (r.stderr.strip().splitlines() or r.stdout.strip().splitlines() or ["no output"])[-1]
    raise PeerUnavailable(f"{peer}: could not be installed: {why}")


def peer_args(peer: str, model_file: Path, port: int, workers: int, threads: int, max_batch_size: int,
              max_wait_ms: float, batching: bool, name: str = "mnist") -> list[str]:
    """The peer script's command-line arguments for these settings.

    Raises:
        ValueError: ``batching`` asked of a peer without a dynamic batcher (KServe).
    """
    _check(peer)
    if batching and not HAS_BATCHER[peer]:
        raise ValueError(f"{peer} has no dynamic batcher in its in-process server: start it with batching=False")
    args = ["--model", str(model_file), "--port", str(port), "--name", name, "--threads", str(threads)]
    if peer == "kserve":
        return args + ["--workers", str(workers)]
    args += ["--instances", str(workers), "--max-batch", str(max_batch_size), "--max-delay-ms", str(max_wait_ms)]
    return args + ([] if batching else ["--no-batching"])


@dataclass
class PeerProcess:
    """A running peer: ``url``, ``stop()``; a context manager."""

    peer: str
    url: str
    port: int
    proc: subprocess.Popen = field(repr=False)
    log_path: Path
    _tmp: tempfile.TemporaryDirectory = field(repr=False)

    @classmethod
    def start(cls, peer: str, model_file: Path, workers: int = 2, threads: int = 1, max_batch_size: int = 32,
              max_wait_ms: float = 0.0, batching: bool = True, cpus: str | None = None, port: int | None = None,
              name: str = "mnist", timeout_s: float = 120.0) -> "PeerProcess":
        """Start ``peer`` serving ``model_file`` (ONNX) on 127.0.0.1 and wait until the model is ready.

        Args:
            peer: one of :data:`PEERS`.
            model_file: the exported ONNX file.
            workers: Triton model instances / KServe uvicorn workers.
            threads: ONNX Runtime intra-op threads per worker.
            max_batch_size, max_wait_ms: Triton's dynamic batcher (max queue delay in ms).
            batching: False for one request per model call (required for KServe).
            cpus: ``taskset -c`` list the peer's processes may run on (``None``: all).
            port: TCP port (a free one when ``None``).
            name: the model's name in the URL.
            timeout_s: readiness deadline.

        Raises:
            PeerUnavailable: it could not be installed, exited, or was not ready in time (with its log tail).
        """
        if not Path(model_file).exists():
            raise FileNotFoundError(f"model {model_file} does not exist: export it to ONNX first")
        port = port or _proc.free_port()
        args = peer_args(peer, Path(model_file), port, workers, threads, max_batch_size, max_wait_ms, batching, name)
        env_dir = venv(peer)
        tmp = tempfile.TemporaryDirectory(prefix=f"hpcml-peer-{peer}-")
        log = Path(tmp.name) / "peer.log"
        script = Path(__file__).with_name(SCRIPTS[peer])
        argv = [str(env_dir / "bin" / "python"), str(script), *args]
        if cpus:
            argv = ["taskset", "-c", cpus, *argv]
        env = dict(os.environ, OMP_NUM_THREADS=str(threads), PYTHONUNBUFFERED="1", PYTRITON_HOME=tmp.name)
        env.pop("PYTHONPATH", None)
        p = cls(peer, f"http://127.0.0.1:{port}", port, _proc.spawn(argv, log, env=env), log, tmp)
        try:
            _proc.wait_until(p.ready, timeout_s, f"{peer} peer", p.proc, log, interval_s=0.25)
        except RuntimeError as exc:
            p.stop()
            first, _, rest = str(exc).partition("\n")
            raise PeerUnavailable(f"{peer}: did not start ({first})\n{rest}") from None
        return p

    def ready(self, name: str = "mnist") -> bool:
        """True when ``/v2/models/<name>/ready`` answers 200."""
        import urllib.request

        try:
            with urllib.request.urlopen(f"{self.url}/v2/models/{name}/ready", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    def log_tail(self, n: int = 30) -> str:
        return _proc.tail(self.log_path, n, missing="(no log)")

    def stop(self, timeout_s: float = 20.0) -> int | None:
        """SIGTERM to the peer's process group (tritonserver and its stubs too), or to its own process
        alone for :data:`LEADER_STOPS`; SIGKILL after ``timeout_s``, and to the whole group after that."""
        rc = _proc.stop(self.proc, timeout_s, group=self.peer not in LEADER_STOPS)
        try:
            os.killpg(self.proc.pid, 9)  # anything of the group that outlived its parent
        except ProcessLookupError:
            pass
        self._tmp.cleanup()
        return rc

    def __enter__(self) -> "PeerProcess":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
