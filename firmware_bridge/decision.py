"""The bridge's answer to one stimulation request: what happened, and why."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, Literal

from firmware_bridge.errors import describe_code
from firmware_bridge.interlocks import Violation
from firmware_bridge.loop_health import LoopHealth
from firmware_bridge.stimulation_request import StimulationRequest

Outcome = Literal["sent", "blocked", "dry_run", "rejected", "failed"]
"""``sent``: ACKed by the device. ``blocked``: stopped by a host interlock, nothing sent. That
includes a train *withdrawn* after admission: its transmit record was written, then its data
aged past ``stale_data`` during that record's fsync, or a disarm came before its STIMULATE could
leave; it carries that interlock and the sequence number it had been given, and no longer
counts against refractory and budgets (nothing left the host, so no train can follow from
it; a restart that reads the log withdraws it too). ``dry_run``: passed every interlock,
deliberately not sent. ``rejected``: NACKed by the device. ``failed``: sent, but no valid ACK
within the deadline (or the link failed)."""


@dataclass(frozen=True)
class Decision:
    """One request's fate, as returned to the caller and written to the audit log.

    Parameters
    ----------
    request_id
        Position of the request in this bridge's life (1, 2, ...); every one gets a decision.
    outcome
        See :data:`Outcome`.
    clock
        Injected-clock reading at which the interlocks judged the request.
    request, health
        What was asked, and the loop's state when it was asked.
    violations
        The interlocks that blocked it (empty unless blocked).
    reason
        One line for a human: the violations, the NACK, or the failure.
    sequence
        Wire sequence number of the STIMULATE frame, if one was sent, or reserved for it in a
        ``transmit`` record (a train withdrawn after admission).
    error_code
        The device's NACK code, if it refused.
    """

    request_id: int
    outcome: Outcome
    clock: float
    request: StimulationRequest
    health: LoopHealth
    violations: tuple[Violation, ...] = ()
    reason: str = ""
    sequence: int | None = None
    error_code: int | None = None

    @property
    def sent(self) -> bool:
        """The device acknowledged delivering the train."""
        return self.outcome == "sent"

    @property
    def admitted(self) -> bool:
        """Passed every host interlock when judged (withdrawn ones included: their transmit
        record was written, so their decision is written in full and made durable)."""
        return self.outcome != "blocked" or self.sequence is not None

    @property
    def withdrawn(self) -> bool:
        """Admitted, then stopped before its STIMULATE left the host: nothing was sent, so it
        no longer counts against refractory and budgets."""
        return self.outcome == "blocked" and self.sequence is not None

    @property
    def transmitted(self) -> bool:
        """A STIMULATE frame left (or may have left) the host: the device may have acted."""
        return self.outcome in ("sent", "rejected", "failed")

    @property
    def interlocks(self) -> tuple[str, ...]:
        """Names of the interlocks that blocked the request."""
        return tuple(v.interlock for v in self.violations)

    def to_record(self) -> dict[str, Any]:
        """The audit-log form: plain JSON, every field named."""
        return {
            "event": "decision",
            "request_id": self.request_id,
            "outcome": self.outcome,
            "clock": self.clock if math.isfinite(self.clock) else None,
            "interlocks": list(self.interlocks),
            "reasons": [v.reason for v in self.violations],
            "reason": self.reason,
            "sequence": self.sequence,
            "error_code": None if self.error_code is None else describe_code(self.error_code),
            "request": _plain(self.request),
            "health": _plain(self.health),
        }


def _plain(value: StimulationRequest | LoopHealth) -> dict[str, Any]:
    """The record of a request or health snapshot; one mangled past its own checks (fields
    overwritten after construction) is still recorded, as text, rather than lost."""
    try:
        record = value.to_record()
        json.dumps(record, allow_nan=False)
    except (TypeError, ValueError) as err:
        return {"unrecordable": repr(value), "error": str(err)}
    return record
