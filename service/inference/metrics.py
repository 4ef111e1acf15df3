"""Prometheus instruments of the scheduler and inference stage (`corticast_inference_*`,
`corticast_scheduler_*`, `corticast_prediction_*`)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_LATENCY_BUCKETS = (
    0.25e-3, 0.5e-3, 1e-3, 1.5e-3, 2e-3, 2.5e-3, 3e-3, 3.6e-3, 5e-3, 7.5e-3, 10e-3, 20e-3,
    50e-3, 0.1,
)  # fmt: skip
"""Dense around the 3.6 ms frame period, the budget that matters."""


class InferenceMetrics:
    """Instruments one scheduler updates; registered on the registry given (tests and the
    replay bench pass their own)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.latency = Histogram(
            "corticast_inference_latency_seconds",
            "Time inside the predictor for one prediction (normalise, run, denormalise)",
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.age = Histogram(
            "corticast_prediction_age_seconds",
            "From the newest input frame's arrival to the prediction being handed on",
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.predictions = Counter(
            "corticast_scheduler_predictions", "Predictions made", registry=registry
        )
        self.skipped = Counter(
            "corticast_scheduler_skipped_windows",
            "Windows due by the stride but never run: a newer one was there when the scheduler "
            "looked (inference still busy, or several frames arrived in one chunk)",
            registry=registry,
        )
        self.refused = Counter(
            "corticast_scheduler_refused_windows",
            "Windows not run because of missing frames",
            registry=registry,
        )
        self.non_finite = Counter(
            "corticast_scheduler_non_finite_predictions",
            "Predictions holding NaN or inf, never handed on: each a predictor fault",
            registry=registry,
        )
        self.interpolated = Counter(
            "corticast_scheduler_repaired_windows",
            "Windows run with missing frames held, interpolated or left out (irregular)",
            registry=registry,
        )
        self.rested = Counter(
            "corticast_scheduler_rested_seconds",
            "Time the scheduler thread, running under a real-time policy, left its CPU idle "
            "after windows run back to back ([realtime] idle_share)",
            registry=registry,
        )
        self.newest_input_seq = Gauge(
            "corticast_prediction_input_seq",
            "Sequence number of the newest frame behind the latest prediction",
            registry=registry,
        )
