"""What the policy asks the stimulator for: one pulse train, in the units the device uses."""

from __future__ import annotations

import math
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from firmware_bridge.config import N_ELECTRODES
from service.core.checks import check_int, check_number

_U16 = 0xFFFF
_FLOAT32 = struct.Struct("<f")


@dataclass(frozen=True)
class StimulationRequest:
    """One biphasic pulse train on one or more electrodes.

    Construction checks only that the request can be encoded (integers in their wire ranges,
    electrode indices that exist, a finite positive area); whether it is *allowed* is for the
    interlocks to decide, so a request outside the configured limits is a blocked decision,
    not an exception.

    Parameters
    ----------
    channels
        Electrode indices, row-major on the 18x20 array (0..359), each at most once.
    amplitude_ua
        Current per electrode and phase, µA.
    phase_width_us
        Duration of each phase, µs.
    frequency_hz
        Pulses per second within the train.
    train_duration_ms
        Length of the train, ms.
    electrode_area_cm2
        Geometric area of one contact, cm², for the charge density. Stored rounded *down* to
        float32, the precision it travels with: the host checks exactly the value the device
        sees, and rounding can only make the computed density higher, never lower.
    """

    channels: tuple[int, ...]
    amplitude_ua: int
    phase_width_us: int
    frequency_hz: int
    train_duration_ms: int
    electrode_area_cm2: float

    def __post_init__(self) -> None:
        object.__setattr__(self, "channels", _channels(self.channels))
        for name in ("amplitude_ua", "phase_width_us", "frequency_hz", "train_duration_ms"):
            value = getattr(self, name)
            check_int(name, value, 1, _U16)
            object.__setattr__(self, name, int(value))
        object.__setattr__(self, "electrode_area_cm2", _area(self.electrode_area_cm2))

    @property
    def charge_per_phase_uc(self) -> float:
        """µC per phase per electrode (µA × µs = pC = 1e-6 µC)."""
        return self.amplitude_ua * self.phase_width_us * 1e-6

    @property
    def charge_density_uc_cm2(self) -> float:
        """µC/cm² per phase: the quantity the 25 µC/cm² limit applies to."""
        return self.charge_per_phase_uc / self.electrode_area_cm2

    def to_record(self) -> dict[str, Any]:
        """Plain JSON-able fields, as written to the audit log (non-finite numbers as null)."""
        density = self.charge_density_uc_cm2
        return {
            "channels": list(self.channels),
            "amplitude_ua": self.amplitude_ua,
            "phase_width_us": self.phase_width_us,
            "frequency_hz": self.frequency_hz,
            "train_duration_ms": self.train_duration_ms,
            "electrode_area_cm2": _finite_or_none(self.electrode_area_cm2),
            "charge_density_uc_cm2": _finite_or_none(density),
        }


def _channels(value: Any) -> tuple[int, ...]:
    if isinstance(value, str | bytes) or not isinstance(value, Iterable):
        raise TypeError(
            f"'channels' must be a sequence of electrode indices, got {type(value).__name__}: "
            f"{value!r}"
        )
    channels = tuple(value)
    if not channels:
        raise ValueError("'channels' must list at least one electrode, got ()")
    for i, channel in enumerate(channels):
        check_int(f"channels[{i}]", channel, 0, N_ELECTRODES - 1)
    channels = tuple(int(c) for c in channels)
    if len(set(channels)) != len(channels):
        repeated = sorted({c for c in channels if channels.count(c) > 1})
        raise ValueError(f"'channels' must list each electrode once, got {repeated} repeated")
    return channels


def _area(value: Any) -> float:
    check_number("electrode_area_cm2", value)
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"'electrode_area_cm2' must be a finite number > 0, got {value!r}")
    try:
        (rounded,) = _FLOAT32.unpack(_FLOAT32.pack(value))
    except OverflowError:
        rounded = math.inf
    if math.isfinite(rounded) and rounded > value:
        rounded = float(np.nextafter(np.float32(rounded), np.float32(0)))
    if not (math.isfinite(rounded) and rounded > 0):
        raise ValueError(
            f"'electrode_area_cm2' must be representable as float32 (1.4e-45 to 3.4e38 cm²), "
            f"got {value!r}"
        )
    return rounded


def _finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None
