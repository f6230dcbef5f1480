"""What the scraped series say about a training job: the window in which Prometheus saw it
train (never one that starts after training, which reads a flat counter as 0 samples/s), the
per-rank PromQL, its agreement with the trainer's own count, and the worst-case time from a
fault to an alert firing."""

from __future__ import annotations

import pytest

from hpcml.monitor import rules, signals

pytestmark = pytest.mark.unit


def _gauge(scrapes, steps_at):
    """Samples of a last-step-timestamp gauge scraped at ``scrapes`` for a job whose steps run
    at the times ``steps_at`` (value: the last step time before the scrape, 0 before any)."""
    return [(t, max([s for s in steps_at if s <= t], default=0.0)) for t in scrapes]


STEPS = [100.0 + 0.25 * i for i in range(41)]  # training from t=100 to t=110, a step every 0.25 s


def test_window_covers_only_the_scrapes_taken_while_training():
    scrapes = [99.5 + i for i in range(16)]  # 99.5 (before training) ... 114.5 (in the linger after it)
    w = signals.training_window({"0": _gauge(scrapes, STEPS), "1": _gauge([s + 0.3 for s in scrapes], STEPS)})
    assert w.begin == 100.75  # the later of the ranks' first seen steps (100.5 and 100.75)
    assert w.end == 110.0  # the last step, not the end of the linger
    assert w.scrapes == {"0": 9, "1": 10}  # rank 0 at 101.5 ... 109.5, rank 1 at 100.8 ... 109.8
    assert w.range_ms == 9250
    assert w.last_step_spread_s == 0.0


def test_the_spread_of_the_last_steps_is_reported():
    w = signals.training_window({"0": _gauge([101.0, 103.0, 105.0, 111.0], STEPS),
                                 "1": _gauge([101.0, 103.0, 105.0, 111.0], STEPS[:-1])})
    assert w.end == 109.75 and w.last_step_spread_s == 0.25


def test_a_job_that_ended_before_its_first_scrape_is_refused_not_read_as_zero():
    """The baseline bug: every scrape saw the final counter; a rate over them is 0."""
    short = [100.0 + 0.1 * i for i in range(10)]  # one second of training
    with pytest.raises(signals.TrainingNotScraped, match="scrape"):
        signals.training_window({"0": _gauge([101.5, 102.5, 103.5], short)})


def test_a_rank_never_seen_after_a_step_is_refused():
    with pytest.raises(signals.TrainingNotScraped, match="rank 1 .* never after a step"):
        signals.training_window({"0": _gauge([101.0, 102.0, 103.0], STEPS), "1": [(101.0, 0.0), (102.0, 0.0)]})
    with pytest.raises(signals.TrainingNotScraped, match="no training rank"):
        signals.training_window({})


def test_rate_query_is_per_rank_restricted_to_the_run_and_refuses_bad_input():
    q = signals.rate_query("monitor-watch", 9500)
    assert q == 'sum by (rank) (rate(hpcml_train_samples_total{job="train", run="monitor-watch"}[9500ms]))'
    with pytest.raises(ValueError, match="range"):
        signals.rate_query("r", 0)
    with pytest.raises(ValueError, match="run"):
        signals.rate_query('x"} or vector(1', 1000)


def test_agreement_is_the_ratio_per_rank():
    assert signals.agreement({"1": 90.0, "0": 100.0}, 100.0) == {"0": 1.0, "1": 0.9}
    with pytest.raises(ValueError, match="> 0"):
        signals.agreement({"0": 1.0}, 0.0)
    with pytest.raises(ValueError, match="no rank"):
        signals.agreement({}, 1.0)


@pytest.mark.parametrize("seconds,step_s,per_epoch,at_least,epochs", [
    (12.0, 0.02, 31, 2, 20),  # 12 s / (0.62 s per epoch) -> 19.4 -> 20
    (1.0, 0.02, 31, 2, 2),  # already long enough: the floor
    (0.0, 0.5, 10, 1, 1),
])
def test_epochs_for(seconds, step_s, per_epoch, at_least, epochs):
    assert signals.epochs_for(seconds, step_s, per_epoch, at_least) == epochs


def test_epochs_for_refuses_a_zero_step():
    with pytest.raises(ValueError, match="> 0"):
        signals.epochs_for(10.0, 0.0, 31)


@pytest.mark.parametrize("text,seconds", [("1s", 1), ("15s", 15), ("5m", 300), ("1m30s", 90), ("500ms", 0.5),
                                          ("2h", 7200)])
def test_duration_s(text, seconds):
    assert signals.duration_s(text) == seconds


@pytest.mark.parametrize("bad", ["", "5", "5 m", "m5", "1.5s", "5min"])
def test_duration_s_refuses(bad):
    with pytest.raises(ValueError, match="Prometheus duration"):
        signals.duration_s(bad)


def test_detection_bounds_at_drill_and_production_settings():
    # drill: 1 s scrape (timeout = interval), 1 s evaluation, for: 3s / stall 15 s for: 5s
    assert signals.detection_bound_s(rules.DRILL, "HpcmlTargetDown", "1s", "1s") == 1 + 1 + 1 + 3
    assert signals.detection_bound_s(rules.DRILL, "HpcmlTrainingStalled", "1s", "1s") == 15 + 1 + 5
    # production: 15 s scrapes with a 10 s timeout, 30 s evaluation; for: 2m; stall 300 s
    assert signals.detection_bound_s(rules.PRODUCTION, "HpcmlTargetDown", "15s", "30s", "10s") == 15 + 10 + 30 + 120
    assert signals.detection_bound_s(rules.PRODUCTION, "HpcmlTrainingStalled", "15s", "30s") == 300 + 30 + 120


def test_node_down_bound_and_the_delivery_target():
    # NodeDown is modelled like a target down, with its own for: (3s in the drill, 1m in production)
    assert signals.detection_bound_s(rules.DRILL, "HpcmlNodeDown", "1s", "1s") == 1 + 1 + 1 + 3
    assert signals.detection_bound_s(rules.PRODUCTION, "HpcmlNodeDown", "15s", "30s", "10s") == 15 + 10 + 30 + 60
    # the target: scrape + evaluation + for + group_wait + 5 s
    assert signals.delivery_target_s(rules.DRILL, "1s", "1s", "1s") == 1 + 1 + 3 + 1 + 5
    assert signals.delivery_target_s(rules.PRODUCTION, "15s", "30s", "30s", slack_s=0) == 15 + 30 + 60 + 30


def test_node_queries_select_the_cpuset_and_the_exporter_cost():
    from hpcml.monitor import nodes

    q = nodes.cpu_busy_query("n2", (2, 3), "30s")
    assert q == '1 - avg(rate(node_cpu_seconds_total{node="n2",mode="idle",cpu=~"2|3"}[30s]))'
    assert 'cpu=~' not in nodes.cpu_busy_query("n2", None, "30s")
    cost = nodes.scrape_cost_queries("node", "30s")
    assert "process_cpu_seconds_total" in cost["cpu_s_per_scrape"] and "count_over_time(up" in cost["cpu_s_per_scrape"]
    assert cost["scrape_duration_s"].startswith("avg_over_time(scrape_duration_seconds")


def test_for_is_rounded_up_to_whole_evaluations():
    t = rules.DRILL.with_(target_down_for="45s")
    assert signals.detection_bound_s(t, "HpcmlTargetDown", "15s", "30s", "10s") == 15 + 10 + 30 + 60


def test_detection_bound_refuses_an_alert_it_does_not_model():
    with pytest.raises(ValueError, match="no model for 'HpcmlServingLatencyP99High'"):
        signals.detection_bound_s(rules.DRILL, "HpcmlServingLatencyP99High", "1s", "1s")


def test_detection_metrics_use_the_monitor_spec_for_the_cluster():
    from hpcml.monitor.spec import MonitorSpec

    got = {m.name: m.value for m in signals.detection_metrics(rules.DRILL, "1s", rules.PRODUCTION, MonitorSpec())}
    assert got == {"detect_target_down_drill_s": 6.0, "detect_target_down_cluster_s": 175.0,
                   "detect_stall_drill_s": 21.0, "detect_stall_cluster_s": 450.0}
    slow = MonitorSpec(scrape_interval="30s", evaluation_interval="1m")
    got = {m.name: m.value for m in signals.detection_metrics(rules.DRILL, "1s", rules.PRODUCTION, slow)}
    assert got["detect_target_down_cluster_s"] == 30 + 10 + 60 + 120


def test_lag1_autocorrelation_tells_drift_from_noise():
    drift = [{"step_s": [0.01 * (1 + i // 10) for i in range(100)]}]  # steps in runs of ten
    alternating = [{"step_s": [0.01, 0.02] * 50}]
    assert signals.lag1_autocorrelation(drift) > 0.8
    assert signals.lag1_autocorrelation(alternating) == pytest.approx(-1.0)
    with pytest.raises(ValueError, match="three step times"):
        signals.lag1_autocorrelation([{"step_s": [0.01, 0.01, 0.01]}])
