"""Plane waves: one direction, one speed, one frequency across the whole array."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from bench.data.synth._episode import FREQUENCY_RANGE_HZ, SPEED_RANGE_MPS, Episode
from bench.data.synth._waveform import check_shape, shaped
from service.core.checks import check_range
from service.core.grid import ElectrodeGrid


@dataclass(frozen=True, kw_only=True)
class PlaneWave(Episode):
    """A plane wave, the case the wave estimator must get right (sinusoidal by default).

    Parameters
    ----------
    frequency_hz
        Temporal frequency, 2–40 Hz.
    speed_mps
        Phase speed, 0.05–1 m/s.
    direction_deg
        Direction of travel, from +x (columns) toward +y (rows), as in ``service.core.grid``,
        at the episode's start.
    drift_deg_s
        Rotation of the direction of travel, degrees per second (-90–90); a drifting wave
        has no single velocity, so its truth carries the speed only.
    waveform
        Cycle shape (``_waveform.WAVEFORMS``): ``"sine"``, ``"harmonic"`` or ``"sharp"``.
    burst_hz
        Bursts per second gating the wave on and off, 0–5; 0 is continuous.
    """

    kind: ClassVar[str] = "plane"

    frequency_hz: float = 10.0
    speed_mps: float = 0.3
    direction_deg: float = 0.0
    drift_deg_s: float = 0.0
    waveform: str = "sine"
    burst_hz: float = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        check_range(self._name("frequency_hz"), self.frequency_hz, *FREQUENCY_RANGE_HZ)
        check_range(self._name("speed_mps"), self.speed_mps, *SPEED_RANGE_MPS)
        check_range(self._name("direction_deg"), self.direction_deg, -360.0, 360.0)
        check_range(self._name("drift_deg_s"), self.drift_deg_s, -90.0, 90.0)
        check_shape(type(self).__name__, self.waveform, self.burst_hz)

    @property
    def truth_velocity_mps(self) -> tuple[float, float]:
        if self.drift_deg_s != 0:
            return (math.nan, math.nan)
        theta = math.radians(self.direction_deg)
        return (self.speed_mps * math.cos(theta), self.speed_mps * math.sin(theta))

    @property
    def truth_speed_mps(self) -> float:
        return float(self.speed_mps)


def plane_wave(
    t: np.ndarray, grid: ElectrodeGrid, spec: PlaneWave, rng: np.random.Generator
) -> np.ndarray:
    """``A s(2π f t - k·r + φ0)`` with ``k`` along the direction of travel, φ0 random, ``s``
    the cycle shape (a cosine by default); the direction turns at ``drift_deg_s``.

    The wave turns about the array's centre: a turning ``k`` shifts each electrode's frequency
    by its distance from the centre of the turn, so only there is the frequency (and the
    phase speed) the one stated, and about the centre the shifts cancel over the array.

    Returns (len(t), rows, cols) float64 µV, before the episode's taper.
    """
    x, y = grid.positions_m()
    # k = ω v / |v|²: phase is constant along fronts that move with velocity v.
    omega = 2 * np.pi * spec.frequency_hz
    theta = np.radians(spec.direction_deg + spec.drift_deg_s * (t - spec.start_s))
    along = np.cos(theta)[:, None, None] * x + np.sin(theta)[:, None, None] * y
    # Less the turn's phase at the centre, (cos θ - cos θ0, sin θ - sin θ0)·centre written
    # with half the turn so that it is exactly zero without drift (same frames as ever).
    half = np.radians(spec.drift_deg_s * (t - spec.start_s)) / 2
    mid = np.radians(spec.direction_deg) + half
    shift = 2 * np.sin(half) * (np.cos(mid) * y.mean() - np.sin(mid) * x.mean())
    along -= shift[:, None, None]
    k_dot_r = omega * along / spec.speed_mps
    phase0 = rng.uniform(0.0, 2 * np.pi)
    phase = omega * t[:, None, None] - k_dot_r + phase0
    return spec.amplitude_uv * shaped(phase, t, spec.waveform, spec.burst_hz, rng)
