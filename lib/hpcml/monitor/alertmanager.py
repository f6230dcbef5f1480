"""Debian's Alertmanager on loopback, checked with ``amtool``, and a client for its API.

:meth:`Alertmanager.start` writes ``alertmanager.yml`` (from :func:`hpcml.monitor.alerting.config`)
under ``build/alertmanager/<name>/``, checks it with ``amtool check-config`` (a config it refuses
is never started: :class:`ConfigRefused` carries amtool's own message), starts
``prometheus-alertmanager`` on 127.0.0.1 with clustering off, waits for ``/-/ready`` and
stops it by pid. :meth:`Alertmanager.apply` checks and loads a new config into the running one;
a refused config leaves the running one as it was. Silences go through the v2 API.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from hpcml import paths
from hpcml import proc as _proc

DEBIAN_PACKAGE = "prometheus-alertmanager"


class ConfigRefused(ValueError):
    """amtool (or Alertmanager) refused a config; the message is the tool's own."""


def find_binary(name: str = "prometheus-alertmanager") -> Path:
    """``prometheus-alertmanager`` or ``amtool``: ``$HPCML_ALERTMANAGER``/``$HPCML_AMTOOL``, PATH, /usr/bin.

    Raises:
        FileNotFoundError: naming the Debian package that provides both.
    """
    env = "HPCML_AMTOOL" if name == "amtool" else "HPCML_ALERTMANAGER"
    p = Path(os.environ.get(env) or shutil.which(name) or f"/usr/bin/{name}")
    if not (p.is_file() and os.access(p, os.X_OK)):
        raise FileNotFoundError(f"{name} not found (looked for {p}): install the Debian package "
                                f"'{DEBIAN_PACKAGE}' (sudo apt-get install {DEBIAN_PACKAGE})")
    return p


def check_config(path: Path) -> tuple[int, str]:
    """``amtool check-config <path>``: (exit code, its output)."""
    res = subprocess.run([str(find_binary("amtool")), "check-config", str(path)], capture_output=True, text=True,
                         timeout=60)
    return res.returncode, (res.stdout + res.stderr).strip()


def _iso(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.timezone.utc).isoformat().replace("+00:00", "Z")


@dataclass
class Alertmanager:
    """A running Alertmanager: ``url``, ``target``, ``apply()``, ``silence()``, ``alerts()``, ``stop()``."""

    port: int
    workdir: Path
    proc: subprocess.Popen = field(repr=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def config_path(self) -> Path:
        return self.workdir / "alertmanager.yml"

    @property
    def log_path(self) -> Path:
        return self.workdir / "alertmanager.log"

    @classmethod
    def start(cls, config: dict | str, name: str = "local", timeout_s: float = 30.0) -> "Alertmanager":
        """Check ``config`` with amtool, then start Alertmanager on a free loopback port.

        Raises:
            ConfigRefused: amtool refused it (nothing is started).
            RuntimeError: it exited or did not become ready (with its log tail).
        """
        exe = find_binary()
        workdir = paths.ensure(paths.build_dir() / "alertmanager" / name)
        data = workdir / "data"
        if data.exists():
            shutil.rmtree(data)
        _checked_write(workdir / "alertmanager.yml", config)
        port = _proc.free_port()
        cmd = [str(exe), f"--config.file={workdir / 'alertmanager.yml'}", f"--storage.path={data}",
               f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address=", "--log.level=info"]
        am = cls(port, workdir, _proc.spawn(cmd, workdir / "alertmanager.log", cwd=workdir, die_with_parent=True))
        try:
            _proc.wait_until(lambda: am._ready(), timeout_s, "alertmanager", am.proc, am.log_path)
        except BaseException:
            am.stop()
            raise
        return am

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(self.url + "/-/ready", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as r:
            text = r.read()
        return json.loads(text) if text.strip() else None

    def apply(self, config: dict | str) -> None:
        """Check ``config`` with amtool and load it (``POST /-/reload``).

        Raises:
            ConfigRefused: amtool's or Alertmanager's message; the running config is unchanged.
        """
        _checked_write(self.config_path, config)
        try:
            self._call("POST", "/-/reload")
        except urllib.error.HTTPError as exc:
            raise ConfigRefused(exc.read().decode(errors="replace").strip()) from None

    def reload(self) -> tuple[bool, str]:
        """``POST /-/reload`` of whatever the config file holds now: ``(ok, Alertmanager's answer)``."""
        try:
            self._call("POST", "/-/reload")
            return True, ""
        except urllib.error.HTTPError as exc:
            return False, exc.read().decode(errors="replace").strip()

    def silence(self, matchers: dict[str, str], start: float, end: float, comment: str) -> str:
        """Create a silence (equality matchers) from ``start`` to ``end`` (unix s); returns its id."""
        if not matchers or end <= start:
            raise ValueError(f"a silence needs matchers and end > start, got {matchers!r}, {start}..{end}")
        body = {"matchers": [{"name": k, "value": v, "isRegex": False, "isEqual": True} for k, v in matchers.items()],
                "startsAt": _iso(start), "endsAt": _iso(end), "createdBy": "hpcml", "comment": comment}
        return self._call("POST", "/api/v2/silences", body)["silenceID"]

    def expire(self, silence_id: str) -> None:
        self._call("DELETE", f"/api/v2/silence/{silence_id}")

    def alerts(self) -> list[dict]:
        """Alerts Alertmanager holds: labels, state (active/suppressed), silencedBy, inhibitedBy."""
        return [{"labels": a["labels"], **a["status"]} for a in self._call("GET", "/api/v2/alerts")]

    def stop(self, timeout_s: float = 10.0) -> int | None:
        return _proc.stop(self.proc, timeout_s)

    def __enter__(self) -> "Alertmanager":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def _checked_write(path: Path, config: dict | str) -> None:
    """Write ``config`` to ``path`` only if amtool accepts it (a candidate file first)."""
    text = config if isinstance(config, str) else yaml.safe_dump(config, sort_keys=False)
    cand = path.with_name(path.name + ".candidate")
    cand.write_text(text, encoding="utf-8")
    rc, out = check_config(cand)
    if rc != 0:
        cand.unlink()
        raise ConfigRefused(f"amtool check-config refused the Alertmanager config:\n{out}")
    os.replace(cand, path)
