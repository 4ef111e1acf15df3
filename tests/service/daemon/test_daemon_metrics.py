"""The daemon's own metrics: the limits it exports for the alert rules to compare with, and its
start time, which a restart changes."""

import time

import pytest
from prometheus_client import CollectorRegistry

from service.config import Settings
from service.daemon.metrics import DaemonMetrics


def test_the_prediction_budget_follows_the_stride_in_force():
    """At start the configured stride's frames; once the serving probe has chosen (settings as
    applied), the chosen stride's. A budget left at one frame would fire the prediction-age
    alert at every stride above 1."""
    registry = CollectorRegistry()
    settings = Settings.model_validate({"stream": {"sample_rate_hz": 250.0}})
    metrics = DaemonMetrics(registry, settings)
    budget = "corticast_config_prediction_budget_seconds"
    assert registry.get_sample_value(budget) == pytest.approx(0.004)
    applied = settings.model_copy(
        update={"scheduler": settings.scheduler.model_copy(update={"stride": 3})}
    )
    metrics.set_serving(applied, None, "fp32")
    assert registry.get_sample_value(budget) == pytest.approx(0.012)
    assert registry.get_sample_value("corticast_config_frame_period_seconds") == pytest.approx(
        0.004
    )


def test_the_start_time_is_when_the_daemon_started_so_a_restart_changes_it():
    """deploy/prometheus's CorticastRestarted watches it change: a restarted daemon is
    disarmed, and its counters start again at 0, so nothing else shows a quick restart."""
    before = time.time()
    registry = CollectorRegistry()
    DaemonMetrics(registry, Settings())
    after = time.time()
    started = registry.get_sample_value("corticast_daemon_start_time_seconds")
    assert started is not None
    assert before <= started <= after
