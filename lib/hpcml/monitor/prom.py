"""A real Prometheus server on loopback, and a small PromQL client over its HTTP API.

:meth:`Prometheus.start` writes a config under ``build/prometheus/<name>/`` (short
scrape and evaluation intervals for a notebook; the alert rule files; one
``file_sd_configs`` file per job so targets can be added or removed while it runs —
Prometheus watches those files), starts Debian's ``/usr/bin/prometheus`` bound to
127.0.0.1 with its own TSDB folder, waits for ``/-/ready`` and stops it by pid.

:class:`PromClient` wraps ``/api/v1/query``, ``query_range``, ``targets``, ``alerts``
and ``rules`` and returns pandas / plain Python structures.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from hpcml import paths
from hpcml import proc as _proc

DEBIAN_PACKAGE = "prometheus"


class PrometheusMissing(RuntimeError):
    """The prometheus (or promtool) binary is not installed."""


def find_binary(name: str = "prometheus", path: str | Path | None = None) -> Path:
    """The ``prometheus``/``promtool`` binary.

    Args:
        name: ``prometheus`` or ``promtool``.
        path: explicit path; default ``$HPCML_PROMETHEUS`` (resp. ``$HPCML_PROMTOOL``),
            then ``PATH``, then ``/usr/bin``.

    Raises:
        PrometheusMissing: naming the Debian package that provides it.
    """
    cand = path or os.environ.get(f"HPCML_{name.upper()}") or shutil.which(name) or f"/usr/bin/{name}"
    p = Path(cand)
    if not (p.is_file() and os.access(p, os.X_OK)):
        raise PrometheusMissing(
            f"{name} not found (looked for {p}): install the Debian package '{DEBIAN_PACKAGE}' "
            f"(sudo apt-get install {DEBIAN_PACKAGE}), which provides /usr/bin/prometheus and /usr/bin/promtool")
    return p


def scrape_config(job: str, sd_file: Path, scrape_interval: str, scrape_timeout: str) -> dict:
    """One scrape job whose targets come from a JSON file_sd file."""
    return {"job_name": job, "scrape_interval": scrape_interval, "scrape_timeout": scrape_timeout,
            "file_sd_configs": [{"files": [str(sd_file)], "refresh_interval": "5s"}]}


def build_config(jobs: list[str], sd_dir: Path, rule_files: list[Path], scrape_interval: str = "1s",
                 evaluation_interval: str = "1s", scrape_timeout: str | None = None,
                 alertmanagers: list[str] | None = None) -> dict:
    """The prometheus.yml content (pure); ``alertmanagers``: ``host:port`` of each Alertmanager."""
    if not jobs:
        raise ValueError("Prometheus config: need at least one scrape job name")
    for j in jobs:
        if not j.replace("_", "").replace("-", "").isalnum():
            raise ValueError(f"Prometheus config: job name {j!r} must be letters/digits/'-'/'_'")
    timeout = scrape_timeout or scrape_interval
    for a in alertmanagers or []:
        host, _, port = a.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"Prometheus config: alertmanager must be 'host:port', got {a!r}")
    alerting = {"alerting": {"alertmanagers": [{"static_configs": [{"targets": list(alertmanagers)}]}]}} \
        if alertmanagers else {}
    return {
        "global": {"scrape_interval": scrape_interval, "evaluation_interval": evaluation_interval,
                   "scrape_timeout": timeout, "external_labels": {"env": "local"}},
        "rule_files": [str(p) for p in rule_files],
        "scrape_configs": [scrape_config(j, sd_dir / f"{j}.json", scrape_interval, timeout) for j in jobs],
        **alerting,
    }


@dataclass
class Prometheus:
    """A running Prometheus: ``url``, ``client``, ``set_targets()``, ``stop()``."""

    port: int
    workdir: Path
    proc: subprocess.Popen = field(repr=False)
    jobs: list[str]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def client(self) -> "PromClient":
        return PromClient(self.url)

    @property
    def log_path(self) -> Path:
        return self.workdir / "prometheus.log"

    @classmethod
    def start(cls, targets: dict[str, list[str]], rule_files: list[Path] | None = None, name: str = "local",
              port: int | None = None, scrape_interval: str = "1s", evaluation_interval: str = "1s",
              binary: str | Path | None = None, timeout_s: float = 60.0, fresh: bool = True,
              alertmanagers: list[str] | None = None) -> "Prometheus":
        """Write the config and start Prometheus on 127.0.0.1; returns once ``/-/ready`` is 200.

        Args:
            targets: ``{job: ["127.0.0.1:port", ...]}``; a job may start with no targets
                and get them later through :meth:`set_targets`.
            rule_files: alert/recording rule YAML files (checked by Prometheus at load).
            name: folder under ``build/prometheus/``.
            port: listen port; default a free one.
            scrape_interval / evaluation_interval: e.g. ``"1s"`` for a notebook.
            binary: the prometheus binary (default: :func:`find_binary`).
            timeout_s: how long to wait for readiness.
            fresh: delete the previous TSDB of this ``name`` first.
            alertmanagers: ``host:port`` of the Alertmanagers to send alerts to.

        Raises:
            PrometheusMissing: the binary is not installed (names the Debian package).
            RuntimeError: it exited or did not become ready (with its log tail).
        """
        exe = find_binary("prometheus", binary)
        workdir = paths.ensure(paths.build_dir() / "prometheus" / name)
        data = workdir / "data"
        if fresh and data.exists():
            shutil.rmtree(data)
        sd_dir = paths.ensure(workdir / "targets")
        rules = [Path(r).resolve() for r in (rule_files or [])]
        for r in rules:
            if not r.is_file():
                raise FileNotFoundError(f"Prometheus rule file not found: {r}")
        cfg = build_config(list(targets), sd_dir, rules, scrape_interval, evaluation_interval,
                           alertmanagers=alertmanagers)
        port = port or _proc.free_port()
        for job, tg in targets.items():
            _write_sd(sd_dir / f"{job}.json", tg)
        paths.atomic_write_text(workdir / "prometheus.yml", yaml.safe_dump(cfg, sort_keys=False))
        cmd = [str(exe), f"--config.file={workdir / 'prometheus.yml'}", f"--storage.tsdb.path={data}",
               f"--web.listen-address=127.0.0.1:{port}", "--web.enable-lifecycle",
               "--storage.tsdb.retention.time=1d", "--log.level=info", "--web.console.templates=/nonexistent",
               "--web.console.libraries=/nonexistent"]
        prom = cls(port, workdir, _proc.spawn(cmd, workdir / "prometheus.log", cwd=workdir, die_with_parent=True), list(targets))
        try:
            prom.wait_ready(timeout_s)
        except BaseException:
            prom.stop()
            raise
        return prom

    def wait_ready(self, timeout_s: float = 60.0) -> float:
        """Poll ``/-/ready`` until 200; returns the seconds waited."""
        def ready() -> bool:
            try:
                with urllib.request.urlopen(self.url + "/-/ready", timeout=2) as r:
                    return r.status == 200
            except OSError:
                return False

        return _proc.wait_until(ready, timeout_s, "prometheus", self.proc, self.log_path)

    def set_targets(self, job: str, targets: list[str], labels: dict[str, str] | None = None) -> None:
        """Replace a job's targets (Prometheus picks the file change up within seconds)."""
        if job not in self.jobs:
            raise ValueError(f"unknown scrape job {job!r}: this Prometheus has {self.jobs}")
        _write_sd(self.workdir / "targets" / f"{job}.json", targets, labels)

    def set_target_groups(self, job: str, groups: list[tuple[list[str], dict[str, str]]]) -> None:
        """Replace a job's targets with several groups, each with its own labels (e.g. ``node``)."""
        if job not in self.jobs:
            raise ValueError(f"unknown scrape job {job!r}: this Prometheus has {self.jobs}")
        for targets, _ in groups:
            _write_sd(self.workdir / "targets" / f"{job}.json", targets)  # validates host:port
        paths.atomic_write_text(self.workdir / "targets" / f"{job}.json",
                                json.dumps([{"targets": list(t), "labels": dict(l)} for t, l in groups if t]))

    def reload(self) -> tuple[bool, str]:
        """``POST /-/reload`` (re-reads the config and rule files); ``(ok, Prometheus' answer)``.

        A rule file that does not parse is refused with Prometheus' own message, and the
        rules loaded before keep being evaluated.
        """
        req = urllib.request.Request(self.url + "/-/reload", method="POST")
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return r.status == 200, r.read().decode(errors="replace")
        except urllib.error.HTTPError as exc:
            return False, exc.read().decode(errors="replace")

    def log_tail(self, n: int = 30) -> str:
        return _proc.tail(self.log_path, n, missing="(no log)")

    def stop(self, timeout_s: float = 20.0) -> int | None:
        """SIGTERM (Prometheus flushes its head block), SIGKILL after ``timeout_s``."""
        return _proc.stop(self.proc, timeout_s)

    def __enter__(self) -> "Prometheus":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def _write_sd(path: Path, targets: list[str], labels: dict[str, str] | None = None) -> None:
    for t in targets:
        host, _, port = t.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"scrape target must be 'host:port', got {t!r}")
    groups = [{"targets": list(targets), "labels": dict(labels or {})}] if targets else []
    paths.atomic_write_text(path, json.dumps(groups))


class PromQueryError(RuntimeError):
    """Prometheus answered with an error (bad PromQL, unreachable …)."""


class PromClient:
    """PromQL over the HTTP API.

    Example:
        >>> c = PromClient("http://127.0.0.1:9090")
        >>> c.scalar('sum(up)')
        3.0
    """

    def __init__(self, url: str, timeout_s: float = 10.0):
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s

    def _get(self, path: str, **params) -> Any:
        q = urllib.parse.urlencode({k: v for k, v in params.items() if v is not None})
        try:
            with urllib.request.urlopen(f"{self.url}{path}?{q}", timeout=self.timeout_s) as r:
                body = json.loads(r.read())
        except urllib.error.HTTPError as exc:
            try:
                body = json.loads(exc.read())
            except ValueError:
                raise PromQueryError(f"{path}: HTTP {exc.code}") from None
        except OSError as exc:
            raise PromQueryError(f"cannot reach Prometheus at {self.url}: {exc}") from None
        if body.get("status") != "success":
            raise PromQueryError(f"{path} {params.get('query', '')!r}: {body.get('errorType')}: {body.get('error')}")
        return body["data"]

    def query(self, expr: str, at: float | None = None) -> list[dict]:
        """Instant vector: ``[{"metric": {labels}, "value": float, "ts": float}, ...]``."""
        data = self._get("/api/v1/query", query=expr, time=at)
        if data["resultType"] == "scalar":
            return [{"metric": {}, "ts": float(data["result"][0]), "value": float(data["result"][1])}]
        return [{"metric": r["metric"], "ts": float(r["value"][0]), "value": float(r["value"][1])}
                for r in data["result"]]

    def samples(self, selector: str, at: float, range_s: float, label: str = "rank") -> dict[str, list[tuple[float, float]]]:
        """The raw scraped samples of ``selector`` in the ``range_s`` seconds before ``at``
        (a range-vector query: real scrape timestamps, no evaluation steps, no staleness
        markers), as ``{value of label: [(time, value), ...]}``.

        Raises:
            PromQueryError: a bad selector, or two series with the same ``label`` value.
        """
        data = self._get("/api/v1/query", query=f"{selector}[{max(1, int(range_s * 1000))}ms]", time=at)
        out: dict[str, list[tuple[float, float]]] = {}
        for r in data["result"]:
            key = r["metric"].get(label, "?")
            if key in out:
                raise PromQueryError(f"{selector!r}: several series with {label}={key!r}; narrow the selector")
            out[key] = [(float(t), float(v)) for t, v in r["values"]]
        return out

    def scalar(self, expr: str, default: float = float("nan")) -> float:
        """The single value of ``expr`` (``default`` when the vector is empty)."""
        res = self.query(expr)
        if len(res) > 1:
            raise PromQueryError(f"{expr!r} returned {len(res)} series; aggregate it to one (sum/max …)")
        return res[0]["value"] if res else default

    def scalar_at(self, expr: str, at: float) -> float:
        """The single value of ``expr`` evaluated at unix time ``at``.

        Raises:
            PromQueryError: the result is empty or holds more than one series.
        """
        res = self.query(expr, at)
        if len(res) != 1:
            raise PromQueryError(f"{expr!r} at {at}: {len(res)} series, expected exactly one")
        return res[0]["value"]

    def query_range(self, expr: str, start: float, end: float, step: float = 1.0, label: str | None = None):
        """Range query as a DataFrame: index = time (UTC), one column per series.

        Args:
            label: name columns by this label's value (default: all labels as ``k=v,…``).
        """
        import pandas as pd

        data = self._get("/api/v1/query_range", query=expr, start=start, end=end, step=step)
        cols = {}
        for r in data["result"]:
            m = r["metric"]
            name = m.get(label, "?") if label else (",".join(f"{k}={v}" for k, v in sorted(m.items())) or expr)
            cols[name] = pd.Series({float(t): float(v) for t, v in r["values"]})
        df = pd.DataFrame(cols)
        df.index = pd.to_datetime(df.index, unit="s", utc=True)
        return df.sort_index()

    def targets(self):
        """Active scrape targets: job, instance, health, last_error, last_scrape_duration_s."""
        import pandas as pd

        rows = [{"job": t["labels"].get("job"), "instance": t["labels"].get("instance"), "health": t["health"],
                 "last_error": t.get("lastError", ""), "last_scrape_duration_s": t.get("lastScrapeDuration")}
                for t in self._get("/api/v1/targets", state="active")["activeTargets"]]
        return pd.DataFrame(rows, columns=["job", "instance", "health", "last_error", "last_scrape_duration_s"])

    def alerts(self) -> list[dict]:
        """Active (pending or firing) alerts: name, state, labels, active_at, value."""
        return [{"alertname": a["labels"].get("alertname"), "state": a["state"], "labels": a["labels"],
                 "active_at": a.get("activeAt"), "value": a.get("value")}
                for a in self._get("/api/v1/alerts")["alerts"]]

    def rules(self):
        """Loaded rules: group, name, type, state (alerts), health, last_error."""
        import pandas as pd

        rows = [{"group": g["name"], "name": r["name"], "type": r["type"], "state": r.get("state", ""),
                 "health": r.get("health"), "last_error": r.get("lastError", "")}
                for g in self._get("/api/v1/rules")["groups"] for r in g["rules"]]
        return pd.DataFrame(rows, columns=["group", "name", "type", "state", "health", "last_error"])

    def alert_state(self, alertname: str) -> str:
        """``firing`` > ``pending`` > ``inactive`` over all series of one alert."""
        states = {a["state"] for a in self.alerts() if a["alertname"] == alertname}
        return "firing" if "firing" in states else "pending" if "pending" in states else "inactive"

    def watch_alert(self, alertname: str, until: str = "firing", timeout_s: float = 120.0,
                    poll_s: float = 0.25) -> list[tuple[float, str]]:
        """Poll ``/api/v1/alerts`` until ``alertname`` reaches ``until``.

        Returns:
            The timeline ``[(monotonic seconds since the call, state), ...]`` — one entry
            per state change, starting with the first observed state.

        Raises:
            TimeoutError: with the timeline so far.
        """
        t0 = time.monotonic()
        timeline: list[tuple[float, str]] = []
        while True:
            state = self.alert_state(alertname)
            now = time.monotonic() - t0
            if not timeline or timeline[-1][1] != state:
                timeline.append((round(now, 3), state))
            if state == until:
                return timeline
            if now > timeout_s:
                raise TimeoutError(f"alert {alertname} did not reach {until!r} within {timeout_s}s: {timeline}")
            time.sleep(poll_s)

    def wait_for(self, expr: str, predicate=lambda v: v > 0, timeout_s: float = 60.0, poll_s: float = 0.5) -> float:
        """Poll the scalar ``expr`` until ``predicate(value)``; returns the value."""
        t0 = time.monotonic()
        while True:
            v = self.scalar(expr)
            if v == v and predicate(v):
                return v
            if time.monotonic() - t0 > timeout_s:
                raise TimeoutError(f"{expr!r} did not satisfy the condition within {timeout_s}s (last {v})")
            time.sleep(poll_s)
