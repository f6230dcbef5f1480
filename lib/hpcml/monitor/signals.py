"""What the scraped series say about a training job: when it trained, its rate, how fast an alert fires.

Pure functions over samples the notebook fetched (:mod:`hpcml.monitor.drill` does the
querying):

* :func:`training_window` — the interval in which every rank was scraped *while training*,
  read from the exporter's own ``hpcml_train_last_step_timestamp_seconds`` gauge (its value is
  the unix time of the rank's last step, so it says when training happened whatever the
  scrape phase). A ``rate()`` evaluated at the end of that interval over a range that covers
  it sees only samples taken during training; evaluated after the job (a window that starts
  when training is over) it sees a flat counter and says 0.
* :func:`rate_query` — that PromQL, per rank and restricted to one run.
* :func:`agreement` — Prometheus' per-rank rate beside the trainer's own throughput.
* :func:`lag1_autocorrelation` — how much step times drift (why the A/B uses short blocks).
* :func:`epochs_for` — how many epochs keep a watched run training long enough to be measured.
* :func:`detection_bound_s` — the worst-case time from a fault to an alert *firing* for the
  two rules a node or job failure trips (``HpcmlTargetDown``, ``HpcmlTrainingStalled``), at
  given scrape and evaluation intervals.
* :func:`duration_s` — a Prometheus duration (``"1m30s"``) in seconds.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from hpcml.monitor.rules import Thresholds
from hpcml.monitor.spec import MonitorSpec
from hpcml.train.spec import METRIC_SAMPLES

_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0, "y": 31536000.0}
_PART = re.compile(r"([0-9]+)(ms|s|m|h|d|w|y)")


def duration_s(text: str) -> float:
    """Seconds in a Prometheus duration such as ``"15s"``, ``"5m"`` or ``"1m30s"``.

    Raises:
        ValueError: not a Prometheus duration.
    """
    parts = _PART.findall(text or "")
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"{text!r} is not a Prometheus duration like '15s', '5m' or '1m30s'")
    return sum(int(n) * _UNIT_S[u] for n, u in parts)


class TrainingNotScraped(ValueError):
    """Prometheus did not see enough of the job while it trained to measure a rate."""


@dataclass(frozen=True)
class TrainingWindow:
    """Where every rank was scraped while training.

    Attributes:
        begin: the earliest step time every rank's first training scrape had seen (unix s).
        end: the last step every rank completed (unix s): the evaluation time of the rate.
        scrapes: per rank, the scrapes taken inside ``(begin, end]``.
        last_step: per rank, the unix time of its last step.
    """

    begin: float
    end: float
    scrapes: dict[str, int]
    last_step: dict[str, float]

    @property
    def seconds(self) -> float:
        return self.end - self.begin

    @property
    def range_ms(self) -> int:
        """The ``rate()`` range in whole milliseconds: from ``begin`` (exclusive) to ``end``."""
        return int(math.floor(self.seconds * 1000))

    @property
    def last_step_spread_s(self) -> float:
        """How far apart the ranks finished: the allreduce keeps them within about a step."""
        return max(self.last_step.values()) - min(self.last_step.values())


def training_window(last_step_samples: dict[str, list[tuple[float, float]]], min_scrapes: int = 2) -> TrainingWindow:
    """The interval in which Prometheus saw every rank train.

    Args:
        last_step_samples: per rank, the raw scraped samples ``(scrape time, value)`` of
            ``hpcml_train_last_step_timestamp_seconds`` (value 0 before the first step).
        min_scrapes: scrapes every rank must have inside the window (a rate needs two).

    Returns:
        :class:`TrainingWindow`: ``begin`` is the latest, over ranks, of the step time the
        first training scrape saw (so the window holds no scrape from before training on any
        rank), ``end`` the earliest, over ranks, of the last step (so it holds none from after).

    Raises:
        TrainingNotScraped: no rank, a rank that never reported a step, or fewer than
            ``min_scrapes`` scrapes of some rank inside the window; the message says how long
            training was seen and what to change.
    """
    if not last_step_samples:
        raise TrainingNotScraped("no training rank was scraped at all: were the targets registered "
                                 "before the job ended?")
    firsts, lasts = {}, {}
    for rank, samples in last_step_samples.items():
        steps = [v for _, v in samples if v > 0]
        if not steps:
            raise TrainingNotScraped(f"rank {rank} was scraped {len(samples)} times but never after a step: "
                                     "the job ended before Prometheus saw it train; train longer")
        firsts[rank], lasts[rank] = min(steps), max(steps)
    begin, end = max(firsts.values()), min(lasts.values())
    scrapes = {r: sum(1 for t, _ in s if begin < t <= end) for r, s in last_step_samples.items()}
    if end <= begin or min(scrapes.values()) < min_scrapes:
        raise TrainingNotScraped(
            f"Prometheus saw {max(end - begin, 0.0):.1f} s of training with {min(scrapes.values())} scrape(s) of the "
            f"least-seen rank inside it (need {min_scrapes}): train longer than a few scrape intervals, or scrape "
            "more often")
    return TrainingWindow(begin, end, scrapes, lasts)


def epochs_for(seconds: float, step_s: float, steps_per_epoch: float, at_least: int = 1) -> int:
    """Epochs that keep a job training for ``seconds`` at ``step_s`` per step (at least
    ``at_least``): a watched run must outlast several scrape intervals to be measured.

    Raises:
        ValueError: a step time or steps per epoch that is not > 0.
    """
    if not (step_s > 0 and steps_per_epoch > 0):
        raise ValueError(f"epochs_for: step_s and steps_per_epoch must be > 0, got {step_s!r}, {steps_per_epoch!r}")
    return max(int(at_least), math.ceil(seconds / (step_s * steps_per_epoch)))


def lag1_autocorrelation(blocks: list[dict]) -> float:
    """Lag-1 autocorrelation of the per-step times of an in-run A/B (each block's ``step_s``,
    in order): near 0, step times are independent; near 1, they drift in long runs, and only
    short alternating blocks cancel the drift.

    Raises:
        ValueError: fewer than three step times, or all equal.
    """
    import numpy as np

    x = np.array([t for b in blocks for t in b.get("step_s", [])], dtype=float)
    if len(x) < 3 or float(np.std(x)) == 0.0:
        raise ValueError(f"lag1_autocorrelation: need at least three step times that vary, got {len(x)}")
    return float(np.corrcoef(x[:-1], x[1:])[0, 1])


def rate_query(run: str, range_ms: int, job: str = "train") -> str:
    """Per-rank samples/s of one run over ``range_ms``: evaluate it at the end of training."""
    if range_ms <= 0:
        raise ValueError(f"rate_query: the range must be > 0 ms, got {range_ms}")
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", run):
        raise ValueError(f"rate_query: run {run!r} must be letters, digits, '.', '_' or '-'")
    return f'sum by (rank) (rate({METRIC_SAMPLES}_total{{job="{job}", run="{run}"}}[{range_ms}ms]))'


def agreement(prom_per_rank: dict[str, float], own_per_rank: float) -> dict[str, float]:
    """Per rank, Prometheus' rate over the trainer's own per-rank throughput (1.0 = agree).

    The trainer divides its samples by the time spent inside steps; Prometheus by wall time,
    which also holds the end-of-epoch validation, so a ratio a little under 1 is expected.

    Raises:
        ValueError: the trainer's own throughput is not > 0, or no rank was measured.
    """
    if not own_per_rank > 0:
        raise ValueError(f"agreement: the trainer's own throughput must be > 0, got {own_per_rank!r}")
    if not prom_per_rank:
        raise ValueError("agreement: Prometheus returned no rank")
    return {r: v / own_per_rank for r, v in sorted(prom_per_rank.items())}


#: The alerts :func:`detection_bound_s` knows, and what trips them.
DETECTABLE = {
    "HpcmlTargetDown": "a scrape target stops answering (a dead node, a killed exporter)",
    "HpcmlTrainingStalled": "a rank's last-step timestamp stops advancing (a hang, a dead peer)",
    "HpcmlNodeDown": "a node's node_exporter stops answering (the node or its link is gone)",
}


def detection_bound_s(t: Thresholds, alert: str, scrape_interval: str, evaluation_interval: str,
                      scrape_timeout: str | None = None) -> float:
    """Worst-case seconds from a fault to ``alert`` **firing** in Prometheus.

    * ``HpcmlTargetDown``: the next scrape starts within one scrape interval and fails within
      the scrape timeout (a vanished host does not refuse, it times out); the next rule
      evaluation sees ``up == 0`` (pending); it fires at the first evaluation at least
      ``for:`` later.
    * ``HpcmlTrainingStalled``: the condition ``time() - last step > train_stall_s`` holds
      ``train_stall_s`` after the last step; then one evaluation to see it, and ``for:``
      rounded up to whole evaluations. The scrape interval does not add: the gauge's *value* is
      the step time. It fires for ranks that are still scraped: a dead rank's series go stale.

    Alertmanager's ``group_wait`` comes on top before anyone is notified.

    Raises:
        ValueError: an alert this function does not model, or a bad duration.
    """
    si, ei = duration_s(scrape_interval), duration_s(evaluation_interval)
    st = duration_s(scrape_timeout) if scrape_timeout else si
    if alert in ("HpcmlTargetDown", "HpcmlNodeDown"):
        for_ = t.target_down_for if alert == "HpcmlTargetDown" else t.node_down_for
        return si + st + ei + math.ceil(duration_s(for_) / ei) * ei
    if alert == "HpcmlTrainingStalled":
        return t.train_stall_s + ei + math.ceil(duration_s(t.train_stall_for) / ei) * ei
    raise ValueError(f"detection_bound_s: no model for {alert!r}; known: {', '.join(DETECTABLE)}")


def delivery_target_s(t: Thresholds, scrape_interval: str, evaluation_interval: str, group_wait: str,
                      slack_s: float = 5.0) -> float:
    """The issue's target for a cut link to reach the receiver: ``scrape interval + evaluation
    interval + for (HpcmlNodeDown) + group_wait + slack_s`` seconds."""
    return (duration_s(scrape_interval) + duration_s(evaluation_interval) + duration_s(t.node_down_for)
            + duration_s(group_wait) + slack_s)


def detection_metrics(drill: Thresholds, drill_interval: str, production: Thresholds, spec: MonitorSpec) -> list:
    """:func:`detection_bound_s` of both modelled alerts at the notebook's settings (scrape and
    evaluation every ``drill_interval``, scrape timeout = interval) and at the cluster's
    (``spec``'s scrape interval, timeout and evaluation interval), as metrics to record."""
    from hpcml.report import Metric

    local = (drill_interval, drill_interval, drill_interval)
    cluster = (spec.scrape_interval, spec.evaluation_interval, spec.scrape_timeout)
    rows = [("target_down", "HpcmlTargetDown"), ("stall", "HpcmlTrainingStalled")]
    return [Metric(f"detect_{key}_{where}_s", detection_bound_s(t, alert, si, ei, st), "s",
                   f"worst case, fault to {alert} firing: scrape {si} (timeout {st}), evaluation {ei}")
            for key, alert in rows
            for where, t, (si, ei, st) in (("drill", drill, local), ("cluster", production, cluster))]
