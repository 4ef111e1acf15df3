"""The daemon's own metrics: the limits it exports for the alert rules to compare with, its
start time, which a restart changes, and the model's health state as ``/metrics`` serves it."""

import time

import httpx
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from service.api.served import ServedDaemon
from service.config import Settings
from service.daemon.metrics import DaemonMetrics
from tests.service._loop_harness import Rig, loop_settings, wait_until


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
    metrics.set_serving(applied, None, backend="onnxruntime-cpu", precision="fp32")
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


def _health_states(http: httpx.Client) -> dict[str, float]:
    """``corticast_model_health`` as ``/metrics`` serves it: state -> 0 or 1."""
    text = http.get("/metrics").text
    families = text_string_to_metric_families(text)
    [family] = [f for f in families if f.name == "corticast_model_health"]
    return {sample.labels["corticast_model_health"]: sample.value for sample in family.samples}


@pytest.mark.slow
def test_metrics_say_the_model_is_unproven_after_a_start_and_a_swap_then_healthy(
    tmp_path, exported, source_id
):
    """The dashboard's model health panel and the interlock alerts read it: one state at 1,
    the others 0; unproven until ``health_min_scored`` predictions are scored (the model
    interlock blocks then), healthy after, and unproven again once a hot swap resets the
    scores."""
    _, window, step = exported
    copy = window.with_name(f"copy-{source_id}.onnx")  # in the model directory, as swaps must be
    copy.write_bytes(window.read_bytes())
    settings = loop_settings(
        tmp_path, window, step, source_id, loop={"health_min_scored": 100, "health_margin_db": 20.0}
    )
    seen: list[str] = []

    def state_is(wanted: str) -> bool:
        states = _health_states(http)
        assert sorted(states) == ["healthy", "not running", "unhealthy", "unproven"]
        [now] = [state for state, value in states.items() if value == 1]
        assert sum(states.values()) == 1
        if not seen or seen[-1] != now:
            seen.append(now)
        return now == wanted

    rig = Rig(source_id).start()
    try:
        with ServedDaemon(settings) as served, httpx.Client(base_url=served.url) as http:
            wait_until(lambda: state_is("healthy"), 60, "the model to be proven")
            served.daemon.swap_model(copy)
            wait_until(lambda: state_is("unproven"), 30, "the swapped model to be unproven")
            wait_until(lambda: state_is("healthy"), 60, "the swapped model to be proven")
    finally:
        rig.kill()
    assert seen[-3:] == ["healthy", "unproven", "healthy"]
    assert "unproven" in seen[: seen.index("healthy")], seen
