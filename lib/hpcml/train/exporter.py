"""The training worker's per-rank Prometheus exporter, and its in-run A/B.

:class:`Exporter` serves ``/metrics`` on loopback (``metrics_port + local rank``) with the
metric names :mod:`hpcml.train.spec` exports (``METRIC_*``), so rules, dashboards, plots and
the cost review read the same names. :class:`ExporterAB` switches the exporter off and on
between steps in ABBA blocks (:func:`ab_state`) to measure what it costs a step inside one
run (:mod:`hpcml.train.abtest`).
"""

from __future__ import annotations

import os
import time
from typing import Any

from hpcml.train import abtest
from hpcml.train.spec import (METRIC_ALLREDUCE_SECONDS, METRIC_LAST_STEP_TS, METRIC_LOSS, METRIC_SAMPLES,
                              METRIC_STEP, METRIC_STEP_SECONDS)

class Exporter:
    """Per-rank Prometheus metrics (the names are :mod:`hpcml.train.spec`'s ``METRIC_*``).

    Args:
        port: the loopback port ``/metrics`` is served on.
        rank: the Horovod rank (the ``rank`` label of every series).
    """

    def __init__(self, port: int, rank: int):
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        reg = CollectorRegistry()
        lab = ["rank"]
        buckets = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
        self.step_s = Histogram(METRIC_STEP_SECONDS, "training step wall time", lab,
                                registry=reg, buckets=buckets).labels(str(rank))
        self.samples = Counter(METRIC_SAMPLES, "training samples processed", lab,
                               registry=reg).labels(str(rank))
        self.loss = Gauge(METRIC_LOSS, "rank-averaged training loss of the last step", lab,
                          registry=reg).labels(str(rank))
        self.allreduce_s = Histogram(METRIC_ALLREDUCE_SECONDS,
                                     "time blocked in optimizer.synchronize() (gradient allreduce)", lab,
                                     registry=reg, buckets=buckets).labels(str(rank))
        self.step = Gauge(METRIC_STEP, "last completed global step", lab, registry=reg).labels(str(rank))
        self.last_ts = Gauge(METRIC_LAST_STEP_TS, "unix time of the last step", lab,
                             registry=reg).labels(str(rank))
        self.port, self.registry, self.enabled = port, reg, True
        self.server, self.thread, self.wake = self._serve()

    def _serve(self) -> tuple[Any, Any, tuple[int, int]]:
        """``/metrics`` on loopback in a daemon thread: prometheus_client's WSGI app and server
        class, driven by a blocking ``select`` on the listening socket and a wake-up pipe instead
        of ``serve_forever``'s poll (0.5 s in ``start_http_server``). An idle exporter then never
        wakes up (no GIL grabs between scrapes), and switching it off in the in-run A/B returns
        at once instead of after the next poll."""
        import selectors
        import threading
        from wsgiref.simple_server import WSGIRequestHandler, make_server

        from prometheus_client import make_wsgi_app
        from prometheus_client.exposition import ThreadingWSGIServer

        class Quiet(WSGIRequestHandler):
            def log_message(self, *args: Any) -> None:  # a line per scrape on stderr is noise
                pass

        server = make_server("127.0.0.1", self.port, make_wsgi_app(self.registry), ThreadingWSGIServer,
                             handler_class=Quiet)
        wake_r, wake_w = os.pipe()

        def loop() -> None:
            with selectors.DefaultSelector() as sel:
                sel.register(server.socket, selectors.EVENT_READ)
                sel.register(wake_r, selectors.EVENT_READ)
                while True:
                    for key, _ in sel.select():  # no timeout: sleeps until a scrape or the stop
                        if key.fileobj == wake_r:
                            return
                        server._handle_request_noblock()  # what serve_forever calls per ready socket

        thread = threading.Thread(target=loop, name=f"exporter-{self.port}", daemon=True)
        thread.start()
        return server, thread, (wake_r, wake_w)

    def _stop(self) -> None:
        wake_r, wake_w = self.wake
        os.write(wake_w, b"x")
        self.thread.join(5.0)
        self.server.server_close()
        os.close(wake_r)
        os.close(wake_w)

    def set_enabled(self, on: bool) -> None:
        """Switch the whole exporter: off means no metric updates and no listening socket
        (a scrape is refused by the kernel and costs this process nothing)."""
        if on == self.enabled:
            return
        if on:
            self.server, self.thread, self.wake = self._serve()
        else:
            self._stop()
        self.enabled = on

    def observe(self, step: int, dt: float, ar: float, n: int, loss: float) -> None:
        self.step_s.observe(dt)
        self.allreduce_s.observe(ar)
        self.samples.inc(n)
        self.loss.set(loss)
        self.step.set(step)
        self.last_ts.set(time.time())

    def close(self) -> None:
        if self.enabled:
            self._stop()
            self.enabled = False


def ab_state(step: int, block: int) -> bool | None:
    """Exporter state for 0-based ``step`` in an in-run A/B: None for the warm-up block
    (exporter on, not counted), then blocks of ``block`` steps in ABBA order: off, on, on,
    off, off, on, … — so a linear drift in step time hits both arms equally."""
    b = step // block
    return None if b == 0 else abtest.abba_on(b - 1)


def ab_summary(blocks: list[dict[str, Any]], block: int) -> dict[str, Any]:
    """:func:`hpcml.train.abtest.summarize` of the exporter's on and off blocks."""
    return abtest.summarize(blocks, block, "the exporter")


class ExporterAB:
    """In-run exporter A/B: toggles the exporter between steps (:func:`ab_state`) and sums
    each block's step times, all but its first (the switch's transient). Every rank toggles
    at the same step (steps are in lockstep)."""

    def __init__(self, exporter: Exporter, block: int):
        if block < 1:
            raise ValueError(f"exporter_ab_block must be >= 1, got {block}")
        self.exporter, self.block, self.blocks = exporter, block, []
        self._cur: tuple[int, bool | None] = (0, None)

    def before_step(self, step: int) -> None:
        st = ab_state(step, self.block)
        self.exporter.set_enabled(True if st is None else st)
        self._cur = (step // self.block, st)

    def record(self, dt: float) -> None:
        b, st = self._cur
        if st is None:
            return
        if not self.blocks or self.blocks[-1]["block"] != b:
            # The first step of a block is not counted: a switch closes or opens a socket and
            # stops or starts a thread between steps, each rank at its own moment, and the
            # next allreduce absorbs the difference.
            self.blocks.append({"block": b, "on": st, "steps": 0, "sum_s": 0.0, "first_step_s": dt, "step_s": []})
            return
        self.blocks[-1]["steps"] += 1
        self.blocks[-1]["sum_s"] += dt
        self.blocks[-1]["step_s"].append(round(dt, 6))

    def summary(self) -> dict[str, Any]:
        return ab_summary(self.blocks, self.block)
