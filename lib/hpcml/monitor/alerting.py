"""Alertmanager's configuration as code: one route tree for production and for the notebook.

:func:`config` builds ``alertmanager.yml`` from a receiver address and :class:`Timers`. The
production config (rendered by :mod:`hpcml.k8s.monitor` into ``manifests/monitoring``) uses
:data:`PRODUCTION_TIMERS`; the notebook's local Alertmanager uses :data:`LOCAL_TIMERS` (seconds,
so a drill is delivered while you watch). Everything else is the same tree: a test diffs the two.

* Routes by severity: ``severity="page"`` goes to the ``page`` receiver, ``severity="warning"``
  to ``ticket``; anything else to ``default``. Each is a webhook (``<base>/<receiver>``).
* Grouping: by ``alertname`` and ``node`` — every series of one alert on one node arrives in
  one notification (the latency drill's series share one), not one per series.
* Inhibition: a firing ``HpcmlNodeDown`` mutes the alerts in :data:`INHIBITED` that carry the
  same ``node`` label (``equal: [node]``): a dead node's latency and throughput alerts are
  consequences, not news. Those rules aggregate ``by (..., node)`` so the label survives.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from hpcml.monitor.rules import ALERT_NODE_DOWN, INHIBITED

RECEIVERS = ("default", "page", "ticket")
_DURATION = re.compile(r"^([0-9]+(ms|s|m|h|d))+$")


@dataclass(frozen=True)
class Timers:
    """Alertmanager's notification timers.

    Args:
        group_wait: wait before the first notification of a new group (collects its series).
        group_interval: wait before notifying a group again about new or resolved alerts.
        repeat_interval: resend a still-firing group after this.
    """

    group_wait: str
    group_interval: str
    repeat_interval: str

    def __post_init__(self) -> None:
        for name in ("group_wait", "group_interval", "repeat_interval"):
            v = getattr(self, name)
            if not isinstance(v, str) or not _DURATION.match(v):
                raise ValueError(f"Timers.{name}={v!r}: expected a duration like '30s' or '5m'")


#: Alertmanager's own defaults for group_wait / group_interval, and a 4 h repeat.
PRODUCTION_TIMERS = Timers("30s", "5m", "4h")
#: The notebook's: a drill's notification arrives within seconds.
LOCAL_TIMERS = Timers("1s", "2s", "1h")
TIMER_KEYS = ("group_wait", "group_interval", "repeat_interval")


def config(webhook_base: str, timers: Timers = PRODUCTION_TIMERS) -> dict:
    """``alertmanager.yml`` (pure).

    Args:
        webhook_base: the receiver's base URL (``http://host:port``); each receiver posts to
            ``<base>/<receiver name>``.
        timers: :data:`PRODUCTION_TIMERS` or :data:`LOCAL_TIMERS`.
    """
    if not re.match(r"^https?://[^/\s]+$", webhook_base or ""):
        raise ValueError(f"webhook_base must be 'http(s)://host:port' without a path, got {webhook_base!r}")
    return {
        "route": {"receiver": "default", "group_by": ["alertname", "node"],
                  **{k: getattr(timers, k) for k in TIMER_KEYS},
                  "routes": [{"receiver": "page", "matchers": ['severity="page"']},
                             {"receiver": "ticket", "matchers": ['severity="warning"']}]},
        "inhibit_rules": [{"source_matchers": [f'alertname="{ALERT_NODE_DOWN}"'],
                           "target_matchers": [f'alertname=~"{"|".join(INHIBITED)}"'],
                           "equal": ["node"]}],
        "receivers": [{"name": r, "webhook_configs": [{"url": f"{webhook_base}/{r}", "send_resolved": True}]}
                      for r in RECEIVERS],
    }


def diff(a: dict, b: dict, path: str = "") -> list[str]:
    """The paths (``route.group_wait``, ``receivers[0].webhook_configs[0].url``) where two configs differ."""
    if isinstance(a, dict) and isinstance(b, dict):
        return [p for k in sorted(set(a) | set(b)) for p in diff(a.get(k), b.get(k), f"{path}.{k}" if path else k)]
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [p for i, (x, y) in enumerate(zip(a, b)) for p in diff(x, y, f"{path}[{i}]")]
    return [] if a == b else [path]
