"""The daemon's own Prometheus instruments: faults by stage, readiness, arming, the wait for a
stream, and the supervisor's failed steps (served at ``/metrics`` beside each stage's own)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

FAULT_STAGES = ("stream", "ingest", "predictor", "waves", "bridge")
"""Where the supervisor finds faults (the ``stage`` label of ``corticast_daemon_faults``)."""
SUPERVISOR_STEPS = ("stream", "ingest", "predictor", "waves", "bridge", "gauges")
"""The supervisor's steps, each tried on its own every round (the ``step`` label of
``corticast_daemon_supervisor_step_failures``)."""


class DaemonMetrics:
    """Registered once per daemon; every labelled series exists from the start, so
    ``increase()`` sees the first fault."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.faults = Counter(
            "corticast_daemon_faults", "Faults by stage (each disarms first)", ["stage"],
            registry=registry,
        )  # fmt: skip
        for stage in FAULT_STAGES:  # every series from the start, so increase() sees the first
            self.faults.labels(stage)
        self.ready = Gauge("corticast_daemon_ready", "1 when ready", registry=registry)
        self.armed = Gauge("corticast_daemon_armed", "1 while armed", registry=registry)
        self.waiting = Gauge(
            "corticast_daemon_waiting_for_stream", "1 while no stream has been found",
            registry=registry,
        )  # fmt: skip
        self.step_failures = Counter(
            "corticast_daemon_supervisor_step_failures",
            "Supervisor steps that raised (each is retried on its own)", ["step"],
            registry=registry,
        )  # fmt: skip
        for step in SUPERVISOR_STEPS:
            self.step_failures.labels(step)

    def fault_counts(self) -> dict[str, float]:
        """Stage -> faults counted so far, for the stages that have had any."""
        return {
            sample.labels["stage"]: sample.value
            for metric in self.faults.collect()
            for sample in metric.samples
            if sample.name.endswith("_total") and sample.value > 0
        }
