"""The alert path's drills, against a running :class:`hpcml.monitor.drill.Stack`.

* :func:`node_down_drill` — cut a node's link: ``HpcmlNodeDown`` pending, firing (Prometheus),
  delivered (the webhook), and after the link is back, the resolved notification, timed.
* :func:`grouped_notifications` — how a drill's alert arrived: notifications and series in each.
* :func:`target_down_drill` — kill one node's exporter under a silence of its ``HpcmlNodeDown``:
  the target shows down (Prometheus carries on), ``HpcmlTargetDown`` is delivered, the silenced
  alert is not, and Alertmanager holds it as silenced.
"""

from __future__ import annotations

import os
import signal
import time
from typing import Any

from hpcml.monitor import rules, signals
from hpcml.monitor.drill import Stack


def _freeze(stack: Stack, node: str, cl):
    """The fault of the node-down drill: cut ``node``'s link (multi), or, on the loopback
    fallback, SIGSTOP its exporter (it stops answering, like a vanished host: scrapes time out)."""
    from contextlib import contextmanager

    @contextmanager
    def frozen():
        pid = stack.nodes.by_node(node).pid
        os.kill(pid, signal.SIGSTOP)
        try:
            yield time.time()
        finally:
            os.kill(pid, signal.SIGCONT)

    return cl.link_cut(node) if cl is not None and stack.nodes.mode == "multi" else frozen()


def node_down_drill(stack: Stack, node: str, cl=None, timeout_s: float = 60.0) -> dict[str, Any]:
    """Cut ``node``'s link; time HpcmlNodeDown pending, firing (Prometheus), delivered (the webhook)
    from the cut; restore it and time the resolved notification from the restore.

    Returns:
        ``{"node", "fault", "pending_s", "firing_s", "delivered_s", "resolved_s", "receiver",
        "notification": the firing Notification, "targets": the target table during the cut}``.
    """
    c, hook, name = stack.client, stack.hook, rules.ALERT_NODE_DOWN
    mine = lambda a: a["alertname"] == name and a["labels"].get("node") == node  # noqa: E731
    out: dict[str, Any] = {"node": node, "fault": "link cut" if stack.nodes.mode == "multi" else "exporter SIGSTOP"}
    with _freeze(stack, node, cl) as t_cut:
        stack.log.warning(f"node {node}: {out['fault']} (drill)", extra={"node": node})
        deadline = time.time() + timeout_s
        while "firing_s" not in out:
            states = {a["state"] for a in c.alerts() if mine(a)}
            now = time.time() - t_cut
            if "pending" in states or "firing" in states:
                out.setdefault("pending_s", round(now, 3))
            if "firing" in states:
                out["firing_s"] = round(now, 3)
            if time.time() > deadline:
                raise TimeoutError(f"{name} for {node} not firing within {timeout_s}s: {out}")
            time.sleep(0.1)
        n = hook.wait_for(lambda n: n.alertname == name and n.status == "firing" and node in n.labels("node")
                          and n.at >= t_cut, timeout_s)
        out.update(delivered_s=round(n.at - t_cut, 3), receiver=n.receiver, notification=n, targets=c.targets())
        stack.log.error(f"{name} delivered", extra={"node": node, "after_s": out["delivered_s"]})
    t_back = time.time()
    r = hook.wait_for(lambda n: n.alertname == name and n.status == "resolved" and node in n.labels("node")
                      and n.at >= t_back, timeout_s)
    out["resolved_s"] = round(r.at - t_back, 3)
    stack.log.info(f"{name} resolved", extra={"node": node, "after_s": out["resolved_s"]})
    return out


def grouped_notifications(stack: Stack, alertname: str, since: float, until: float) -> dict[str, Any]:
    """How the webhook received ``alertname`` between ``since`` and ``until``: firing notifications
    and the alerts (series) in each."""
    got = [n for n in stack.hook.notifications(alertname, "firing", since) if n.at <= until]
    return {"notifications": len(got), "series": [len(n.alerts) for n in got],
            "receivers": sorted({n.receiver for n in got})}


def target_down_drill(stack: Stack, node: str | None = None, timeout_s: float = 60.0) -> dict[str, Any]:
    """Kill ``node``'s node_exporter (default: the last node) under a silence of that node's
    HpcmlNodeDown; time HpcmlTargetDown to firing; check the silenced alert is not delivered.

    Returns:
        ``{"timeline", "to_firing_s", "firing_jobs", "targets", "node", "silence_id",
        "target_down_delivered", "node_down_delivered", "node_down_silenced"}``.
    """
    c, hook, am = stack.client, stack.hook, stack.am
    ex = stack.nodes.exporters[-1] if node is None else stack.nodes.by_node(node)
    t0 = time.time()
    sid = am.silence({"alertname": rules.ALERT_NODE_DOWN, "node": ex.node}, t0 - 1, t0 + 3600,
                     "drill: the node's exporter is killed on purpose")
    ex.proc.kill()
    ex.proc.wait()
    stack.log.error("node_exporter killed (drill)", extra={"pid": ex.pid, "node": ex.node, "silence": sid})
    timeline = c.watch_alert("HpcmlTargetDown", "firing", timeout_s=timeout_s)
    firing = sorted({a["labels"].get("job") for a in c.alerts()
                     if a["alertname"] == "HpcmlTargetDown" and a["state"] == "firing"})
    hook.wait_for(lambda n: n.alertname == "HpcmlTargetDown" and n.status == "firing" and n.at >= t0
                  and ex.node in n.labels("node"), timeout_s)
    # HpcmlNodeDown has the same for: and group_wait; give it one more group_interval to show up
    time.sleep(signals.duration_s(stack.timers.group_interval) + 1)
    held = [a for a in am.alerts() if a["labels"].get("alertname") == rules.ALERT_NODE_DOWN
            and a["labels"].get("node") == ex.node]
    return {"timeline": timeline, "to_firing_s": timeline[-1][0], "firing_jobs": firing, "targets": c.targets(),
            "node": ex.node, "silence_id": sid,
            "target_down_delivered": len(hook.notifications("HpcmlTargetDown", "firing", t0)),
            "node_down_delivered": len([n for n in hook.notifications(rules.ALERT_NODE_DOWN, "firing", t0)
                                        if ex.node in n.labels("node")]),
            "node_down_silenced": bool(held) and all(sid in a.get("silencedBy", []) for a in held)}
