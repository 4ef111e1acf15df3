"""What the bridge reports of itself without asking the device, for the daemon's status."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["BridgeStatus"]


@dataclass(frozen=True)
class BridgeStatus:
    """The host's view, without asking the device (see
    :meth:`~firmware_bridge.stimulation_bridge.StimulationBridge.query_device`).

    ``device_armed`` is what the device said in its latest reply (None before any).
    ``last_disarm_reason`` and ``last_disarm_cause`` (one of
    :data:`~firmware_bridge.stimulation_bridge.DISARM_CAUSES`, or ``"start"`` before the first
    arm) say why it is disarmed; both are None while armed. ``arming_refused`` says why the
    host refuses every arm until the audit log is repaired (its refractory and budget history
    could not be read back at start); None when it may be armed.
    """

    running: bool
    armed: bool
    dry_run: bool
    connected: bool
    device_armed: bool | None
    last_disarm_reason: str | None
    last_disarm_cause: str | None
    minute_budget_left: int
    day_budget_left: int
    requests: int
    outcomes: dict[str, int]
    error: str | None
    arming_refused: str | None
