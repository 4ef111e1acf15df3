"""The daemon's own Prometheus instruments: its start time, faults by stage, readiness, arming,
the model's health (what the bridge's ``model`` interlock is told), the wait for a stream, the
supervisor's failed steps, the log records dropped, and the configured limits the alert rules
compare with (served at ``/metrics`` beside each stage's own)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import get_args

from prometheus_client import CollectorRegistry, Counter, Enum, Gauge, Info
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from service.config import Settings
from service.core.log_queue import records_dropped
from service.inference.serving_choice import ServingChoice
from service.loop.model_health import HealthState

FAULT_STAGES = (
    "stream", "ingest", "predictor", "waves", "bridge", "control", "ar", "scale", "markers",
    "query",
)  # fmt: skip
"""Where faults are found (the ``stage`` label of ``corticast_daemon_faults``): the
supervisor's stages (``markers``: a stimulation marker inlet's thread failing), ``control``,
the control process (``[api] own_process``) ending on its own, ``ar``, the live AR baseline's
thread failing a round (``service.loop.ar_baseline``), and ``scale``, a robust-online model's
input statistics updater failing (``service.inference.scale_updater``), and ``query``, the
ZeroMQ query server's thread ending (``service.zmq_api.query``)."""
SUPERVISOR_STEPS = (
    "stream", "ingest", "predictor", "waves", "ar", "scale", "query", "bridge", "gauges",
    "status",
)  # fmt: skip
"""The supervisor's steps, each tried on its own every round (the ``step`` label of
``corticast_daemon_supervisor_step_failures``); ``status`` publishes the ZeroMQ status topic.
Each stimulation marker inlet is a step of its own besides, ``markers <stream>``
(:func:`marker_step`)."""


def marker_step(stream: object) -> str:
    """The supervisor step that repairs the marker inlet of ``stream`` (a configured
    ``[ingest] stimulation_marker_streams`` entry, as its inlet labels it)."""
    return f"markers {stream}"


class DaemonMetrics:
    """Registered once per daemon; every labelled series exists from the start, so
    ``increase()`` sees the first fault.

    The ``corticast_config_*`` gauges export the limits of ``settings`` that deploy/prometheus's
    rules compare with, so a rig configured otherwise alerts on its own limits.
    """

    def __init__(self, registry: CollectorRegistry, settings: Settings) -> None:
        self.faults = Counter(
            "corticast_daemon_faults", "Faults by stage (each disarms first)", ["stage"],
            registry=registry,
        )  # fmt: skip
        for stage in FAULT_STAGES:  # every series from the start, so increase() sees the first
            self.faults.labels(stage)
        started = Gauge(
            "corticast_daemon_start_time_seconds",
            "When this daemon started (Unix time): a change is a restart, which starts disarmed",
            registry=registry,
        )
        started.set_to_current_time()
        self.ready = Gauge("corticast_daemon_ready", "1 when ready", registry=registry)
        self.armed = Gauge("corticast_daemon_armed", "1 while armed", registry=registry)
        self.model_health = Enum(
            "corticast_model_health",
            "The running model's health on its live scores (1 for the state it is in): only "
            "healthy passes the bridge's model interlock; unproven until [loop] "
            "health_min_scored predictions are scored, after a start, hot swap or reload",
            states=list(get_args(HealthState)),
            registry=registry,
        )  # starts in its first state, "not running"
        self.waiting = Gauge(
            "corticast_daemon_waiting_for_stream", "1 while no stream has been found",
            registry=registry,
        )  # fmt: skip
        self.step_failures = Counter(
            "corticast_daemon_supervisor_step_failures",
            "Supervisor steps that raised (each is retried on its own)", ["step"],
            registry=registry,
        )  # fmt: skip
        markers = settings.ingest.stimulation_marker_streams
        for step in (*SUPERVISOR_STEPS, *map(marker_step, markers)):
            self.step_failures.labels(step)
        self.serving = Info(
            "corticast_serving",
            "How the model is served: [model] serving (fixed or auto), mode, backend (the one "
            "that runs), threads, precision (fp32, int8 for an int8 copy; tf32/fp16 on "
            "TensorRT), [scheduler] "
            "stride, and under auto whether the probe found a fit",
            registry=registry,
        )
        self.serving_p99 = Gauge(
            "corticast_serving_probe_p99_seconds",
            "The serving probe's p99 of the way chosen, at start and then at each hot swap "
            "([model] serving = auto; NaN otherwise)",
            registry=registry,
        )
        self.serving_p99.set(float("nan"))
        self.prediction_budget = Gauge(
            "corticast_config_prediction_budget_seconds",
            "[scheduler] stride in force x the frame period: the time between two due windows, "
            "the prediction-age budget (an inference handed on later delays the next window)",
            registry=registry,
        )
        self.prediction_budget.set(_prediction_budget_s(settings))
        _export_limits(registry, settings)
        registry.register(_LogRecordsDropped())

    def set_serving(
        self, settings: Settings, choice: ServingChoice | None, *, backend: str, precision: str
    ) -> None:
        """Say how the model is served (``settings`` as applied; ``backend`` and ``precision``
        what the loaded predictor runs on and computes in: ``[model] backend = "auto"`` names
        none) and, under ``auto``, what the probe chose."""
        model = settings.model
        fits = "n/a" if choice is None else str(choice.chosen is not None).lower()
        self.serving.info(
            {
                "serving": model.serving,
                "mode": model.mode,
                "backend": backend,
                "threads": str(model.threads),
                "precision": precision,
                "stride": str(settings.scheduler.stride),
                "fits": fits,
            }
        )
        self.prediction_budget.set(_prediction_budget_s(settings))
        if choice is not None and choice.chosen is not None:
            self.serving_p99.set(choice.chosen.measurement.p99_s)

    def fault_counts(self) -> dict[str, float]:
        """Stage -> faults counted so far, for the stages that have had any."""
        return {
            sample.labels["stage"]: sample.value
            for metric in self.faults.collect()
            for sample in metric.samples
            if sample.name.endswith("_total") and sample.value > 0
        }


class _LogRecordsDropped(Collector):
    """``corticast_log_records_dropped_total``, read when scraped from where the records are
    dropped (:mod:`service.core.log_queue`, below the daemon): the process's count, whichever
    daemon's registry serves it."""

    def collect(self) -> Iterator[CounterMetricFamily]:
        yield CounterMetricFamily(
            "corticast_log_records_dropped",
            "Log records of the loop's process never written: the log's queue was full while "
            "its writer (stderr: journald or a terminal) was held up, or the write failed",
            value=records_dropped(),
        )


def _prediction_budget_s(settings: Settings) -> float:
    return settings.scheduler.stride / settings.stream.sample_rate_hz


def _export_limits(registry: CollectorRegistry, settings: Settings) -> None:
    """One gauge per configured limit an alert rule or a dashboard threshold needs."""
    period_s = 1.0 / settings.stream.sample_rate_hz
    limits = (
        (
            "corticast_config_frame_period_seconds",
            "One frame period (1 / [stream] sample_rate_hz)",
            period_s,
        ),
        (
            "corticast_config_stale_after_seconds",
            "Newest sample age past which the stream is not fresh and the daemon disarms "
            "([ingest] stale_after_frames frame periods)",
            settings.ingest.stale_after_frames * period_s,
        ),
        (
            "corticast_config_rate_tolerance",
            "Largest relative difference between the rate measured from the stream's "
            "timestamps and [stream] sample_rate_hz still accepted ([ingest] rate_tolerance)",
            settings.ingest.rate_tolerance,
        ),
        (
            "corticast_config_max_sample_age_seconds",
            "Newest input frame age past which the stale_data interlock blocks a request "
            "([interlocks] max_sample_age_s)",
            settings.interlocks.max_sample_age_s,
        ),
        (
            "corticast_config_health_margin_db",
            "How far the model's live PSNR may fall below persistence's before the model "
            "interlock blocks ([loop] health_margin_db)",
            settings.loop.health_margin_db,
        ),
    )
    for name, documentation, value in limits:
        Gauge(name, documentation, registry=registry).set(value)
