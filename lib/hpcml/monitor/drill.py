"""The notebook's monitoring session: a local Prometheus watching node_exporter on every node,
a Horovod training job and the inference server, Alertmanager delivering to the project's
webhook receiver, plus the drills run against them.

* :class:`Stack` — node_exporter per node (:mod:`hpcml.monitor.nodes`) + the GPU sampler +
  Prometheus (drill rules, 1 s scrapes) + Alertmanager (local timers) + webhook + a JSON logger.
* :func:`train_watched` — run a TrainSpec under horovodrun; its per-rank exporters are
  registered as scrape targets once their ports answer, and removed when the job ends
  (what Kubernetes service discovery does for a finished pod).
* :func:`exporter_overhead` — the exporter switched off and on in blocks of steps inside one
  run (ABBA), per-step time side by side; then an ordinary watched run, long enough to be
  scraped many times while it trains.
* :func:`training_rate` — the watched run's per-rank rate, measured inside its training
  window, beside the trainer's own throughput.
* :class:`BackgroundLoad` — open-loop load on the server from a thread.
* :func:`latency_drill` — inject latency through ``POST /admin/latency`` and time the
  alert going inactive -> pending -> firing (and back after clearing).

The drills of the alert path (link cut, silence) are in :mod:`hpcml.monitor.alertdrills`.
"""

from __future__ import annotations

import atexit
import json
import shutil
import threading
import time
import urllib.request
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from hpcml import paths
from hpcml.proc import free_port, port_open
from hpcml.monitor import alerting, logs, nodes, rules, signals
from hpcml.monitor.alertmanager import Alertmanager
from hpcml.monitor.node import NodeSampler
from hpcml.monitor.prom import Prometheus
from hpcml.monitor.webhook import Receiver

JOBS = ("prometheus", "node", "gpu", "train", "serve")
#: node label of what runs on the head (Prometheus, the trainer's ranks, the server)
HEAD = "head"


@dataclass
class Stack:
    """The local monitoring stack; ``stop()`` stops everything it started."""

    prom: Prometheus
    node: NodeSampler  # the GPU sampler (job gpu): node_exporter has no GPU collector
    log: Any
    nodes: nodes.NodeExporters | None = None
    am: Alertmanager | None = None
    hook: Receiver | None = None
    timers: alerting.Timers = alerting.LOCAL_TIMERS
    started_at: float = field(default_factory=time.time)
    #: Prometheus' scrape and rule-evaluation interval (one value for both here).
    scrape_interval: str = "1s"

    @classmethod
    def start(cls, thresholds: rules.Thresholds = rules.DRILL, run_id: str | None = None,
              scrape_interval: str = "1s", cl=None, timers: alerting.Timers = alerting.LOCAL_TIMERS) -> "Stack":
        """node_exporter on every node of ``cl`` (or one on loopback when ``cl`` is ``None`` or the
        single-node fallback), the GPU sampler, the webhook receiver, Alertmanager and Prometheus
        scraping them all (and itself); train/serve jobs start empty."""
        rule_file = rules.write_rules(paths.build_dir() / "prometheus" / "hpcml-alerts.rules.yml", thresholds)
        started: list[Any] = []
        try:
            ne = nodes.start_all(cl)
            started.append(ne)
            node = NodeSampler.start(disk_path=paths.ensure(paths.build_dir()), gpus_only=True)
            started.append(node)
            hook = Receiver()
            started.append(hook)
            am = Alertmanager.start(alerting.config(hook.url, timers), name="notebook")
            started.append(am)
            port = free_port()
            prom = Prometheus.start({"prometheus": [f"127.0.0.1:{port}"], "node": [], "gpu": [node.target],
                                     "train": [], "serve": []}, rule_files=[rule_file], name="notebook", port=port,
                                    scrape_interval=scrape_interval, evaluation_interval=scrape_interval,
                                    alertmanagers=[am.target])
            prom.set_target_groups("node", [([e.target], {"node": e.node}) for e in ne.exporters])
        except BaseException:
            for s in reversed(started):
                s.stop()
            raise
        log = logs.get_logger("monitor", run_id=run_id)
        log.info("prometheus started", extra={"url": prom.url, "node_exporters": [e.target for e in ne.exporters],
                                              "alertmanager": am.url, "webhook": hook.url, "rules": str(rule_file)})
        stack = cls(prom, node, log, ne, am, hook, timers, scrape_interval=scrape_interval)
        # Both run in their own session, so they outlive a kernel that dies on a failed cell
        # before the notebook's stop cell: stop them when the interpreter exits, whatever happened.
        atexit.register(stack.stop)
        return stack

    @property
    def client(self):
        return self.prom.client

    def stop(self) -> dict[str, Any]:
        """Stop everything by pid; returns the exit codes (again on a second call)."""
        first = self.prom.proc.poll() is None or self.node.proc.poll() is None
        codes = {"prometheus": self.prom.stop(), "gpu_sampler": self.node.stop()}
        if self.am is not None:
            codes["alertmanager"] = self.am.stop()
        if self.nodes is not None:
            codes["node_exporter"] = self.nodes.stop()
        if self.hook is not None and first:
            self.hook.stop()
        if first:
            self.log.info("monitoring stack stopped", extra={"exit_codes": codes})
        return codes


def train_watched(stack: Stack | None, spec, timeout_s: float = 600, take_snapshot: bool = True) -> dict[str, Any]:
    """Run ``spec`` with horovodrun; scrape its ranks while it runs (if ``stack`` and a metrics port).

    ``take_snapshot``: wait (up to 30 s) until every rank is up and keep Prometheus' target table.

    Returns:
        ``{"metrics": the job's final metrics, "start": t0, "end": t1, "targets": snapshot
        of Prometheus's targets while the ranks were scraped (DataFrame or None), "spec": spec}``.
    """
    from hpcml.train.targets.local import start_local

    tlog = logs.get_logger("train", rank=0)
    if stack is not None and spec.metrics_port:
        # keep the ranks' exporters up a few scrapes after training so a fast run is still seen
        spec = replace(spec, extra={**spec.extra, "exporter_linger_s": 5.0})
    job = start_local(spec, on_progress=lambda ev: tlog.info(ev.get("event", "progress"), extra=ev))
    t0, snapshot = time.time(), None
    ports = [spec.metrics_port + r for r in range(spec.world_size)] if spec.metrics_port else []
    try:
        if stack is not None and ports:
            deadline = time.monotonic() + min(timeout_s, 180)
            while not all(port_open(p) for p in ports):
                if job.proc.poll() is not None or time.monotonic() > deadline:
                    break
                time.sleep(0.2)
            stack.prom.set_targets("train", [f"127.0.0.1:{p}" for p in ports], labels={"run": spec.name, "node": HEAD})
            stack.log.info("training targets registered", extra={"ports": ports})
            if take_snapshot:
                try:
                    stack.client.wait_for('count(up{job="train"} == 1)', lambda v: v == len(ports), timeout_s=30)
                    snapshot = stack.client.targets()
                except TimeoutError as exc:
                    stack.log.warning("training ranks not scraped", extra={"error": str(exc)})
        metrics = job.wait(timeout_s)
    except Exception as exc:
        tlog.error("training job failed", extra={"error": str(exc)[:500]})
        raise
    finally:
        job.kill()
        if stack is not None and ports:
            stack.prom.set_targets("train", [])
    return {"metrics": metrics, "start": t0, "end": time.time(), "targets": snapshot, "spec": spec}


def exporter_overhead(stack: Stack, spec, block_steps: int = 20, ab_epochs: int | None = None,
                      timeout_s: float = 600, watch_min_train_s: float = 0.0) -> dict[str, Any]:
    """The exporter's cost on training throughput, A/B **inside one run**, then a watched run.

    Separate runs with and without the exporter differ by more than the exporter costs (process
    placement, the other tenants of a shared machine), so the A/B is interleaved within one
    job: after a warm-up block, every ``block_steps`` steps each rank switches its exporter off
    (no updates, socket closed: Prometheus' scrape is refused) or on (scraped every second),
    in ABBA order; the per-step times of the two arms are compared (ratio of means). A second,
    ordinary run with the exporter always on is the one the rest of the notebook queries.

    ``watch_min_train_s``: the watched run gets as many epochs as keep it training that long
    at the A/B run's step time (at least ``spec.epochs``), so Prometheus scrapes it many times
    while it trains (:func:`training_rate` needs two scrapes per rank inside training).

    Returns:
        The A/B summary (``blocks``, ``mean_step_on_s``, ``mean_step_off_s``, ``overhead_pct``,
        ``steps_on``, ``steps_off``) plus ``"last_on"``: :func:`train_watched` of the watched run,
        and ``"watch_epochs"``: its epochs.
    """
    if block_steps < 1:
        raise ValueError(f"block_steps must be >= 1, got {block_steps}")
    if not spec.metrics_port:
        raise ValueError("exporter_overhead: spec.metrics_port must be set (the exporter serves on it)")
    ab_spec = replace(spec, name=f"{spec.name}-ab", epochs=ab_epochs or spec.epochs,
                      extra={**spec.extra, "exporter_ab_block": int(block_steps)})
    for s in (ab_spec, spec):
        if s.resolved_out_dir().exists():  # fresh runs, never resumed ones
            shutil.rmtree(s.resolved_out_dir())
    res = train_watched(stack, ab_spec, timeout_s, take_snapshot=False)
    ab = res["metrics"].get("exporter_ab")
    if not ab or "error" in ab:
        raise RuntimeError(f"exporter A/B run gave no result: {(ab or {}).get('error', 'no exporter_ab in metrics')}")
    m = res["metrics"]
    epochs = signals.epochs_for(watch_min_train_s, ab["mean_step_on_s"], m["steps"] / max(m["epochs_run"], 1),
                                at_least=spec.epochs)
    watch = replace(spec, epochs=epochs)
    return {**ab, "ab_run": res, "watch_epochs": epochs, "last_on": train_watched(stack, watch, timeout_s)}


def training_rate(stack: Stack, watched: dict[str, Any]) -> dict[str, Any]:
    """Per-rank samples/s of a watched run as Prometheus measured it *while it trained*, beside
    the trainer's own throughput, and the step-time p99 and allreduce share over the same window.

    The interval comes from the exporter's last-step-timestamp gauge
    (:func:`hpcml.monitor.signals.training_window`); every query is evaluated at the run's last
    step over a range that reaches back to its first scraped step, restricted to this run's
    series (``run`` label), so neither the A/B run nor the idle linger after training enters.

    Returns:
        ``{"window": TrainingWindow, "queries": {name: PromQL}, "per_rank": {rank: samples/s},
        "own_per_rank": samples/s, "ratio": {rank: Prometheus / own}, "allreduce_share",
        "step_p99_s"}``.

    Raises:
        hpcml.monitor.signals.TrainingNotScraped: Prometheus did not see the run train.
    """
    from hpcml.train.spec import METRIC_ALLREDUCE_SECONDS, METRIC_LAST_STEP_TS, METRIC_STEP_SECONDS

    c, spec = stack.client, watched["spec"]
    sel = f'{{job="train", run="{spec.name}"}}'
    raw = c.samples(METRIC_LAST_STEP_TS + sel, at=watched["end"], range_s=watched["end"] - watched["start"] + 5)
    w = signals.training_window(raw)
    r = f"[{w.range_ms}ms]"
    q = {"rate": signals.rate_query(spec.name, w.range_ms),
         "allreduce_share": f"sum(increase({METRIC_ALLREDUCE_SECONDS}_sum{sel}{r})) / "
                            f"sum(increase({METRIC_STEP_SECONDS}_sum{sel}{r}))",
         "step_p99": f"histogram_quantile(0.99, sum by (le) (increase({METRIC_STEP_SECONDS}_bucket{sel}{r})))"}
    per_rank = {x["metric"].get("rank", "?"): x["value"] for x in c.query(q["rate"], at=w.end)}
    own = watched["metrics"]["train_samples_per_s"] / spec.world_size
    return {"window": w, "queries": q, "per_rank": per_rank, "own_per_rank": own,
            "ratio": signals.agreement(per_rank, own),
            "allreduce_share": c.scalar_at(q["allreduce_share"], w.end),
            "step_p99_s": c.scalar_at(q["step_p99"], w.end)}


def training_rate_metrics(tr: dict[str, Any]) -> list:
    """The metrics of :func:`training_rate`, to record (``report.record_all``)."""
    from hpcml.report import Metric

    w, per_rank, ratio = tr["window"], tr["per_rank"], tr["ratio"]
    return [
        Metric("train_samples_per_s_prom", round(sum(per_rank.values()), 1), "samples/s",
               f"sum over ranks of {tr['queries']['rate']} evaluated at the last step (range: the scraped "
               "training interval)"),
        Metric("train_samples_per_s_prom_min_rank", round(min(per_rank.values()), 1), "samples/s",
               "the slowest rank's rate over the same window"),
        Metric("train_samples_per_s_own", round(tr["own_per_rank"] * len(per_rank), 1), "samples/s",
               "the trainer's own count: samples over the time spent inside steps (train_samples_per_s)"),
        Metric("train_rate_prom_over_own_min", round(min(ratio.values()), 3), "",
               "lowest per-rank ratio of Prometheus' rate to the trainer's own per-rank throughput"),
        Metric("train_rate_prom_over_own_max", round(max(ratio.values()), 3), "",
               "highest per-rank ratio of Prometheus' rate to the trainer's own per-rank throughput"),
        Metric("train_rate_window_s", round(w.seconds, 2), "s", "first scraped step to last step, all ranks"),
        Metric("train_rate_window_scrapes_min", min(w.scrapes.values()), "", "scrapes of the least-seen rank inside it"),
        Metric("train_allreduce_share", round(tr["allreduce_share"], 4), "",
               "time blocked in the allreduce over step time, same window"),
        Metric("train_step_p99_ms", round(tr["step_p99_s"] * 1000, 1), "ms",
               "histogram_quantile(0.99) of the step-time buckets, same window"),
        Metric("train_last_step_spread_ms", round(w.last_step_spread_s * 1000, 1), "ms",
               "how far apart the ranks' last steps were (hpcml_train_last_step_timestamp_seconds)"),
    ]


class BackgroundLoad:
    """Open-loop load (``hpcml.serve.loadgen.open_loop``) from a thread, in short chunks until ``stop()``.

    ``stop()`` returns the summaries of every chunk (one per ``chunk_s``).
    """

    def __init__(self, url: str, bodies: list[bytes], rate: float, chunk_s: float = 3.0, max_s: float = 600.0):
        from hpcml.serve import loadgen

        if rate <= 0:
            raise ValueError(f"rate must be > 0 requests/s, got {rate}")
        self.results: list = []
        self.error: BaseException | None = None
        self._stop = threading.Event()
        t_end = time.monotonic() + max_s

        def run():
            try:
                while not self._stop.is_set() and time.monotonic() < t_end:
                    self.results.append(loadgen.open_loop(url, bodies, rate, n_requests=int(rate * chunk_s) + 1,
                                                          duration_s=chunk_s))
            except BaseException as exc:  # noqa: BLE001 - surfaced by stop()
                self.error = exc
        self.thread = threading.Thread(target=run, name="monitor-load", daemon=True)
        self.thread.start()

    def stop(self, timeout_s: float = 60.0) -> list[dict]:
        self._stop.set()
        self.thread.join(timeout_s)
        if self.error is not None:
            raise self.error
        return [r.summary() for r in self.results]


def achieved_rps(client, start: float, end: float, job: str = "serve") -> float:
    """Requests per second the server counted between ``start`` and ``end`` (unix s): what an
    open-loop generator actually delivered, which falls short of its target when it lags."""
    from hpcml.serve.spec import METRIC_REQUESTS

    dur_ms = int((end - start) * 1000)
    if dur_ms <= 0:
        raise ValueError(f"achieved_rps: end must be after start, got {start} .. {end}")
    return client.scalar_at(f'sum(increase({METRIC_REQUESTS}{{job="{job}"}}[{dur_ms}ms])) / {dur_ms / 1000}', end)


def set_latency(server_url: str, ms: float) -> dict:
    """``POST /admin/latency {"ms": ms}`` on the inference server (0 clears)."""
    req = urllib.request.Request(server_url + "/admin/latency", data=json.dumps({"ms": ms}).encode(),
                                 headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


def latency_drill(stack: Stack, server_url: str, inject_ms: float, alert: str = "HpcmlServingLatencyP99High",
                  timeout_s: float = 120.0, wait_resolve: bool = True) -> dict[str, Any]:
    """Inject latency, time the alert to pending and firing, clear it, time the resolution.

    Returns:
        ``{"inject_at", "cleared_at", "timeline": [(s, state)], "to_pending_s", "to_firing_s",
        "to_resolved_s"}`` (seconds from the injection; resolution from the clearing).
    """
    c = stack.client
    if c.alert_state(alert) != "inactive":
        raise RuntimeError(f"{alert} is already {c.alert_state(alert)} before the drill: lower the load "
                           "or raise the threshold")
    t_inject = time.time()
    set_latency(server_url, inject_ms)
    stack.log.warning("latency injected", extra={"ms": inject_ms, "server": server_url})
    try:
        timeline = c.watch_alert(alert, "firing", timeout_s=timeout_s)
    finally:
        set_latency(server_url, 0)
        t_clear = time.time()
    out = {"inject_at": t_inject, "cleared_at": t_clear, "timeline": timeline,
           "to_pending_s": next((t for t, s in timeline if s == "pending"), None),
           "to_firing_s": timeline[-1][0], "to_resolved_s": None}
    stack.log.error(f"alert {alert} firing", extra={"after_s": out["to_firing_s"]})
    if wait_resolve:
        res = c.watch_alert(alert, "inactive", timeout_s=timeout_s)
        out["to_resolved_s"] = res[-1][0]
        stack.log.info(f"alert {alert} resolved", extra={"after_s": out["to_resolved_s"]})
    return out


def serving_model() -> Path | None:
    """02/03's model if present (``hpcml.serve.bench.find_model``), else ``None``."""
    from hpcml.serve.bench import find_model

    return find_model()


def exporter_cost(n: int = 2000, scrapes: int = 50) -> dict[str, float]:
    """The training exporter's own cost, timed in-process (precise where an A/B is noisy).

    Builds the real per-rank exporter (``hpcml.train.exporter.Exporter``) on a free loopback
    port, times ``observe()`` (one call per training step) and one full scrape of its
    ``/metrics`` (what Prometheus does every scrape interval).

    Returns:
        ``{"observe_us": per step, "scrape_ms": per scrape, "scrape_bytes": size}``.
    """
    from hpcml.proc import free_port
    from hpcml.train.exporter import Exporter

    port = free_port()
    ex = Exporter(port, rank=0)
    try:
        t = time.perf_counter()
        for i in range(n):
            ex.observe(i, 0.05, 0.01, 64, 0.5)
        observe_s = (time.perf_counter() - t) / n
        t = time.perf_counter()
        for _ in range(scrapes):
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
                size = len(r.read())
        scrape_s = (time.perf_counter() - t) / scrapes
    finally:
        ex.close()
    return {"observe_us": observe_s * 1e6, "scrape_ms": scrape_s * 1e3, "scrape_bytes": float(size)}
