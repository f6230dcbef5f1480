"""The project's alert receiver: a small webhook server that records what Alertmanager delivers.

:class:`Receiver` listens on one address (loopback, or the head's bridge address) in a
thread of the calling process. Every ``POST /<receiver name>`` with Alertmanager's webhook
payload (version 4) is kept with its arrival time; :meth:`Receiver.notifications` returns
them, one row per notification, and :meth:`Receiver.wait_for` blocks until one matches.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

from hpcml.proc import LOOPBACK


@dataclass
class Notification:
    """One delivered webhook call."""

    at: float  # arrival, unix seconds
    receiver: str  # the path it was posted to (the Alertmanager receiver's name)
    status: str  # firing | resolved (the group's)
    alertname: str
    alerts: list[dict] = field(default_factory=list)  # each: labels, status, startsAt, endsAt
    payload: dict = field(default_factory=dict, repr=False)

    def labels(self, key: str) -> list[str]:
        return sorted({a.get("labels", {}).get(key, "") for a in self.alerts})


class Receiver:
    """A running webhook receiver: ``url``, ``notifications()``, ``wait_for()``, ``stop()``."""

    def __init__(self, host: str = LOOPBACK, port: int = 0):
        if host in ("", "0.0.0.0", "::"):
            raise ValueError(f"the webhook receiver binds one address (loopback or the head's), got {host!r}")
        self._got: list[Notification] = []
        self._lock = threading.Condition()
        self.bad_requests = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                try:
                    p = json.loads(body)
                    n = Notification(time.time(), self.path.strip("/"), p["status"],
                                     p.get("groupLabels", {}).get("alertname") or p["commonLabels"].get("alertname", ""),
                                     [{k: a.get(k) for k in ("labels", "status", "startsAt", "endsAt")}
                                      for a in p["alerts"]], p)
                except (ValueError, KeyError, TypeError):
                    with outer._lock:
                        outer.bad_requests += 1
                    self.send_response(400)
                    self.end_headers()
                    return
                with outer._lock:
                    outer._got.append(n)
                    outer._lock.notify_all()
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, name="hpcml-webhook", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def notifications(self, alertname: str | None = None, status: str | None = None,
                      since: float = 0.0) -> list[Notification]:
        with self._lock:
            return [n for n in self._got if (alertname is None or n.alertname == alertname)
                    and (status is None or n.status == status) and n.at >= since]

    def wait_for(self, match: Callable[[Notification], bool], timeout_s: float) -> Notification:
        """The first notification (already received or arriving) that ``match``es.

        Raises:
            TimeoutError: none within ``timeout_s``, listing what did arrive.
        """
        deadline = time.monotonic() + timeout_s
        with self._lock:
            while True:
                hit = next((n for n in self._got if match(n)), None)
                if hit is not None:
                    return hit
                left = deadline - time.monotonic()
                if left <= 0:
                    got = [(n.receiver, n.alertname, n.status) for n in self._got]
                    raise TimeoutError(f"no matching notification within {timeout_s}s; received: {got}")
                self._lock.wait(left)

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> "Receiver":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()
