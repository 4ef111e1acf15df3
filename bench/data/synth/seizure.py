"""Seizure-like episodes: growing, slowing spike-and-wave discharges that sweep the array."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from bench.data.synth._episode import FREQUENCY_RANGE_HZ, SPEED_RANGE_MPS, Episode
from service.core.checks import check_range
from service.core.grid import ElectrodeGrid

_SPIKE_AT = 0.12
"""Position of the spike within a cycle (fraction of a period)."""
_SPIKE_SD_S = 0.006
"""Spike width in seconds: fixed in time, not in phase, so it stays sharp as the rhythm slows."""
_SPIKE_SD_MAX = 0.08
"""Cap on the spike width in cycles, so fast rhythms keep a spike narrower than the cycle."""
_WAVE_FROM = 0.3
"""The slow wave fills the cycle from this fraction to its end."""
_WAVE_GAIN = 0.6
"""Slow-wave height relative to the spike."""


@dataclass(frozen=True, kw_only=True)
class Seizure(Episode):
    """Spike-and-wave discharges whose amplitude grows while their rate falls.

    The discharge travels across the array as a non-dispersive wave: every electrode sees the
    same waveform delayed by its distance along ``direction_deg`` divided by ``speed_mps``, so
    onset, chirp and growth all sweep the array at that velocity.

    Parameters
    ----------
    start_freq_hz, end_freq_hz
        Discharge rate at onset and at the end (linear chirp), each 2–40 Hz.
    speed_mps
        Propagation speed, 0.05–1 m/s.
    direction_deg
        Direction of propagation, from +x toward +y (``service.core.grid``).
    onset_fraction
        Amplitude at onset relative to ``amplitude_uv`` (reached at the end), in [0, 1].
    """

    kind: ClassVar[str] = "seizure"
    is_seizure: ClassVar[bool] = True

    amplitude_uv: float = 150.0
    ramp_s: float = 0.05
    start_freq_hz: float = 12.0
    end_freq_hz: float = 3.0
    speed_mps: float = 0.2
    direction_deg: float = 0.0
    onset_fraction: float = 0.2

    def __post_init__(self) -> None:
        super().__post_init__()
        check_range(self._name("start_freq_hz"), self.start_freq_hz, *FREQUENCY_RANGE_HZ)
        check_range(self._name("end_freq_hz"), self.end_freq_hz, *FREQUENCY_RANGE_HZ)
        check_range(self._name("speed_mps"), self.speed_mps, *SPEED_RANGE_MPS)
        check_range(self._name("direction_deg"), self.direction_deg, -360.0, 360.0)
        check_range(self._name("onset_fraction"), self.onset_fraction, 0.0, 1.0)

    @property
    def truth_velocity_mps(self) -> tuple[float, float]:
        theta = math.radians(self.direction_deg)
        return (self.speed_mps * math.cos(theta), self.speed_mps * math.sin(theta))

    @property
    def truth_speed_mps(self) -> float:
        return float(self.speed_mps)

    def growth(self, tau: np.ndarray) -> np.ndarray:
        """Amplitude factor at local time ``tau`` after onset (zero before the wave arrives)."""
        ramp = self.onset_fraction + (1 - self.onset_fraction) * np.clip(
            tau / self.duration_s, 0, 1
        )
        return np.where(tau >= 0, ramp, 0.0)

    def strength(self, t: np.ndarray) -> np.ndarray:
        return super().strength(t) * self.growth(t - self.start_s)


def seizure(
    t: np.ndarray, grid: ElectrodeGrid, spec: Seizure, rng: np.random.Generator
) -> np.ndarray:
    """The discharge at each electrode, delayed by its travel time from the leading edge.

    Returns (len(t), rows, cols) float64 µV, before the episode's taper.
    """
    x, y = grid.positions_m()
    theta = math.radians(spec.direction_deg)
    along = x * math.cos(theta) + y * math.sin(theta)
    delay = (along - along.min()) / spec.speed_mps
    tau = t[:, None, None] - spec.start_s - delay
    cycles, rate = _chirp(tau, spec)
    offset = rng.uniform(0.0, 1.0)
    wave = _spike_and_wave(np.mod(cycles + offset, 1.0), rate)
    return spec.amplitude_uv * spec.growth(tau) * wave


def _chirp(tau: np.ndarray, spec: Seizure) -> tuple[np.ndarray, np.ndarray]:
    """Cycles elapsed and instantaneous rate (Hz) of a linear chirp at local time ``tau``."""
    slope = (spec.end_freq_hz - spec.start_freq_hz) / spec.duration_s
    tau = np.maximum(tau, 0.0)
    return spec.start_freq_hz * tau + 0.5 * slope * tau**2, spec.start_freq_hz + slope * tau


def _spike_and_wave(u: np.ndarray, rate: np.ndarray) -> np.ndarray:
    """One spike-and-wave cycle at cycle fraction ``u``, peak about 1, mean about 0 per cycle.

    The spike is a Gaussian of fixed duration (its width in cycles is ``sd * rate``, capped),
    followed by a smooth slow wave of opposite sign; the cycle mean of both is subtracted so the
    discharge adds no drifting offset.
    """
    spike_sd = np.minimum(_SPIKE_SD_S * rate, _SPIKE_SD_MAX)
    wrapped = np.mod(u - _SPIKE_AT + 0.5, 1.0) - 0.5
    spike = np.exp(-0.5 * (wrapped / spike_sd) ** 2)
    span = 1.0 - _WAVE_FROM
    inside = u >= _WAVE_FROM
    wave = np.where(inside, 0.5 - 0.5 * np.cos(2 * np.pi * (u - _WAVE_FROM) / span), 0.0)
    mean = np.sqrt(2 * np.pi) * spike_sd - _WAVE_GAIN * 0.5 * span
    return -spike + _WAVE_GAIN * wave + mean
