"""The emulated firmware's own interlocks, written apart from the host's on purpose.

Real firmware cannot trust the host: it re-checks every STIMULATE against its own limits and
its own clock. Nothing here imports the host's interlocks, so a bug in one is not silently
shared by the other.
"""

from __future__ import annotations

import math
from collections import deque

from firmware_bridge.config import EmulatorSettings
from firmware_bridge.errors import ErrorCode
from firmware_bridge.messages import Stimulate

_DENSITY_CEILING_UC_CM2 = 25.0
"""The firmware's own copy of the clinical limit: its settings can lower it, never raise it."""

_ELECTRODES = 360
_MINUTE_S = 60.0
_DAY_S = 86_400.0


def parameter_refusal(stimulate: Stimulate, settings: EmulatorSettings) -> ErrorCode | None:
    """The first rule a train's parameters break (channels, bounds, area, density), or None."""
    channels = stimulate.channels
    if not (
        1 <= len(channels) <= settings.max_channels
        and all(0 <= c < _ELECTRODES for c in channels)
        and len(set(channels)) == len(channels)
    ):
        return ErrorCode.BAD_CHANNELS
    in_bounds = (
        settings.min_amplitude_ua <= stimulate.amplitude_ua <= settings.max_amplitude_ua
        and settings.min_phase_width_us <= stimulate.phase_width_us <= settings.max_phase_width_us
        and settings.min_frequency_hz <= stimulate.frequency_hz <= settings.max_frequency_hz
        and settings.min_train_duration_ms
        <= stimulate.train_duration_ms
        <= settings.max_train_duration_ms
        and 2 * stimulate.phase_width_us * stimulate.frequency_hz < 1_000_000
    )
    if not in_bounds:
        return ErrorCode.OUT_OF_BOUNDS
    area = stimulate.electrode_area_cm2
    if not (math.isfinite(area) and 0 < area <= settings.electrode_area_cm2):
        return ErrorCode.ELECTRODE_AREA
    limit = min(settings.charge_density_limit_uc_cm2, _DENSITY_CEILING_UC_CM2)
    if not (density_uc_cm2(stimulate) <= limit):
        return ErrorCode.CHARGE_DENSITY
    return None


def density_uc_cm2(stimulate: Stimulate) -> float:
    """µC/cm² per phase: µA × µs is pC, so 1e-6 µC per unit, over the contact's area."""
    return stimulate.amplitude_ua * stimulate.phase_width_us * 1e-6 / stimulate.electrode_area_cm2


class TrainHistory:
    """Onsets of delivered trains: refractory and per-minute / per-day budgets, on the
    device's clock (arrival times)."""

    def __init__(self, settings: EmulatorSettings) -> None:
        self._settings = settings
        self._onsets: deque[float] = deque()

    def refusal(self, now: float) -> ErrorCode | None:
        """Why a train may not start at ``now``, or None."""
        s = self._settings
        self._forget_before(now - _DAY_S)
        if self._onsets and not (now - self._onsets[-1] >= s.refractory_s):
            return ErrorCode.REFRACTORY
        if self.in_window(now, _MINUTE_S) >= s.max_trains_per_minute:
            return ErrorCode.BUDGET_MINUTE
        if len(self._onsets) >= s.max_trains_per_day:
            return ErrorCode.BUDGET_DAY
        return None

    def add(self, now: float) -> None:
        self._onsets.append(now)

    def left(self, now: float) -> tuple[int, int]:
        """Trains still allowed in the minute and the day ending at ``now``."""
        self._forget_before(now - _DAY_S)
        s = self._settings
        return (
            max(0, s.max_trains_per_minute - self.in_window(now, _MINUTE_S)),
            max(0, s.max_trains_per_day - len(self._onsets)),
        )

    def in_window(self, now: float, length: float) -> int:
        return sum(1 for t in self._onsets if t > now - length)

    def _forget_before(self, cutoff: float) -> None:
        while self._onsets and self._onsets[0] <= cutoff:
            self._onsets.popleft()
