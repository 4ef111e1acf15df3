"""Prometheus instruments of the firmware bridge (`corticast_bridge_*`)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from firmware_bridge.errors import ErrorCode, FrameError, error_for_code
from firmware_bridge.interlocks import INTERLOCKS

OTHER_SEQUENCE = "OTHER_SEQUENCE"
"""The code a reply is counted under when its sequence number is not the pending command's (a
late reply to a command that timed out, or a device that does not echo sequence numbers)."""
_FRAMING_CODES = (
    *(code.name for code in ErrorCode if issubclass(error_for_code(code), FrameError)),
    OTHER_SEQUENCE,
)
"""Codes a bad frame from the device is counted under (the rest are a well-formed NACK's
refusals)."""
_ACK_BUCKETS = (0.5e-3, 1e-3, 2e-3, 5e-3, 10e-3, 20e-3, 50e-3, 100e-3, 200e-3, 500e-3)


class BridgeMetrics:
    """Counters and gauges one bridge updates; registered on the registry given.

    Label values are bounded sets (outcomes, interlock names, error-code names), never free
    text, so a fault storm cannot grow the number of series.
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "corticast_bridge_requests",
            "Stimulation requests by outcome (sent, blocked, dry_run, rejected, failed) and the "
            "first reason (interlock name, NACK code, or none)",
            ["outcome", "reason"],
            registry=registry,
        )
        self.interlock_blocks = Counter(
            "corticast_bridge_interlock_blocks",
            "Interlocks that blocked a request (a request may trip several)",
            ["interlock"],
            registry=registry,
        )
        self.disarms = Counter(
            "corticast_bridge_disarms",
            "Times stimulation was disarmed, by cause (operator, fault)",
            ["cause"],
            registry=registry,
        )
        self.frame_errors = Counter(
            "corticast_bridge_frame_errors",
            "Malformed or unexpected frames received from the device, by error code "
            "(OTHER_SEQUENCE: a reply to no command the host waited for)",
            ["code"],
            registry=registry,
        )
        self.heartbeat_failures = Counter(
            "corticast_bridge_heartbeat_failures",
            "Heartbeats the device did not acknowledge in time",
            registry=registry,
        )
        self.armed = Gauge(
            "corticast_bridge_armed", "1 while the host allows stimulation", registry=registry
        )
        self.connected = Gauge(
            "corticast_bridge_connected",
            "1 while the last exchange with the device was answered in time",
            registry=registry,
        )
        self.dry_run = Gauge(
            "corticast_bridge_dry_run",
            "1 when requests are evaluated but never sent",
            registry=registry,
        )
        self.minute_budget_left = Gauge(
            "corticast_bridge_minute_budget_left",
            "Trains the host would still allow within the current 60 s window",
            registry=registry,
        )
        self.day_budget_left = Gauge(
            "corticast_bridge_day_budget_left",
            "Trains the host would still allow within the current 24 h window",
            registry=registry,
        )
        self.ack_latency = Histogram(
            "corticast_bridge_ack_latency_seconds",
            "Time from sending a command to receiving its ACK or NACK",
            buckets=_ACK_BUCKETS,
            registry=registry,
        )
        # Series exist from the start (at 0), so increase() sees the first event too and the
        # dashboard shows 0 rather than "No data". Requests: the outcomes whose reason is
        # fixed; a blocked or rejected one's reason is counted per interlock and NACK code.
        for interlock in INTERLOCKS:
            self.interlock_blocks.labels(interlock)
        for cause in ("operator", "fault"):
            self.disarms.labels(cause)
        for code in _FRAMING_CODES:
            self.frame_errors.labels(code)
        for outcome, reason in (("sent", "none"), ("dry_run", "none"), ("failed", "no_ack")):
            self.requests.labels(outcome, reason)
