"""Start and stop the inference server as a subprocess (no orphans, stopped by pid)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from hpcml import proc as _proc


@dataclass
class ServerProcess:
    """A running server: ``url``, ``stop()``; a context manager.

    Example:
        >>> srv = ServerProcess.start("build/models/cnn/model.pt", workers=2)
        >>> srv.url
        'http://127.0.0.1:41234'
        >>> srv.stop()
    """

    url: str
    port: int
    proc: subprocess.Popen = field(repr=False)
    state_dir: Path
    workers: int
    log_path: Path
    _tmp: tempfile.TemporaryDirectory | None = field(default=None, repr=False)

    @classmethod
    def start(cls, model_path: str | Path, port: int | None = None, workers: int = 2, max_batch_size: int = 32,
              max_wait_ms: float = 0.0, runtime: str = "auto", frontend: str = "asgi", threads: int = 1,
              state_dir: str | Path | None = None, timeout_s: float = 90.0, cpus: str | None = None,
              **config) -> "ServerProcess":
        """Start the server and wait until every worker has loaded the model.

        Args:
            model_path: ``model.pt`` artifact, ``.onnx`` or ``.ts`` file.
            port: TCP port on 127.0.0.1 (a free one when ``None``).
            workers: worker processes sharing the socket.
            max_batch_size: rows per model call (1 = no batching).
            max_wait_ms: 0 = adaptive batching (default); > 0 = fixed batching window (ms).
            runtime: ``auto``, ``onnx``, ``torchscript`` or ``eager``.
            frontend: ``asgi`` or ``fastapi``.
            threads: intra-op threads per worker.
            state_dir: folder for the server's state (a temporary one when ``None``).
            timeout_s: readiness deadline.
            cpus: ``taskset -c`` list the server's processes may run on (``None``: all), so a
                benchmark can keep its load generator on other cores.
            **config: further :class:`~hpcml.serve.spec.ServeConfig` fields.

        Raises:
            RuntimeError: the server exited or was not ready in time (with its log tail).
        """
        from hpcml.serve.spec import ServeConfig

        if not Path(model_path).exists():
            raise FileNotFoundError(f"model {model_path} does not exist: run notebooks/02_horovod_training.ipynb first")
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        cfg = dict(config, max_batch_size=max_batch_size, max_wait_ms=max_wait_ms, frontend=frontend, threads=threads)
        ServeConfig(model_file=str(model_path), **{k: v for k, v in cfg.items()})  # validate early, in the caller
        tmp = None
        if state_dir is None:
            tmp = tempfile.TemporaryDirectory(prefix="hpcml-serve-")
            state_dir = tmp.name
        state = Path(state_dir)
        state.mkdir(parents=True, exist_ok=True)
        for f in state.glob("ready-*"):
            f.unlink()
        (state / "latency_ms").unlink(missing_ok=True)
        port = port or _proc.free_port()
        log = state / "server.log"
        env = dict(os.environ, OMP_NUM_THREADS=str(threads), PYTHONUNBUFFERED="1")
        cmd = [sys.executable, "-m", "hpcml.serve.server", "--model", str(model_path), "--port", str(port),
               "--workers", str(workers), "--state-dir", str(state), "--config", json.dumps(dict(cfg, runtime=runtime))]
        if cpus:
            cmd = ["taskset", "-c", cpus, *cmd]
        with open(log, "ab") as fh:
            proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        srv = cls(f"http://127.0.0.1:{port}", port, proc, state, workers, log, tmp)
        try:
            srv.wait_ready(timeout_s)
        except BaseException:
            srv.stop()
            raise
        return srv

    def worker_pids(self) -> list[int]:
        """Pids of workers that have loaded the model and are alive."""
        pids = [int(f.name.split("-", 1)[1]) for f in self.state_dir.glob("ready-*")]
        return sorted(p for p in pids if _proc.pid_alive(p))

    def wait_ready(self, timeout_s: float = 90.0, workers: int | None = None) -> None:
        """Block until ``workers`` (default: all) workers are ready and /v2/health/ready answers 200."""
        want = workers or self.workers

        def ready() -> bool:
            if len(self.worker_pids()) < want:
                return False
            try:
                with urllib.request.urlopen(self.url + "/v2/health/ready", timeout=2) as r:
                    return r.status == 200
            except OSError:
                return False

        _proc.wait_until(ready, timeout_s, "inference server", self.proc, self.log_path)

    def log_tail(self, n: int = 30) -> str:
        return _proc.tail(self.log_path, n, missing="(no log)")

    def stop(self, timeout_s: float = 30.0) -> int | None:
        """SIGTERM (graceful: in-flight requests finish), then SIGKILL the process group if needed.

        Returns:
            The supervisor's exit code.
        """
        pgid = self.proc.pid
        _proc.stop(self.proc, timeout_s)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:  # workers/helpers of this session must be gone too
            try:
                os.killpg(pgid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.1)
        else:
            try:
                os.killpg(pgid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None
        return self.proc.returncode

    def __enter__(self) -> "ServerProcess":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
