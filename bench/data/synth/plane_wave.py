"""Plane waves: one direction, one speed, one frequency across the whole array."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from bench.data.synth._episode import FREQUENCY_RANGE_HZ, SPEED_RANGE_MPS, Episode
from service.core.checks import check_range
from service.core.grid import ElectrodeGrid


@dataclass(frozen=True, kw_only=True)
class PlaneWave(Episode):
    """A sinusoidal plane wave, the case the wave estimator must get right.

    Parameters
    ----------
    frequency_hz
        Temporal frequency, 2–40 Hz.
    speed_mps
        Phase speed, 0.05–1 m/s.
    direction_deg
        Direction of travel, from +x (columns) toward +y (rows), as in ``service.core.grid``.
    """

    kind: ClassVar[str] = "plane"

    frequency_hz: float = 10.0
    speed_mps: float = 0.3
    direction_deg: float = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        check_range(self._name("frequency_hz"), self.frequency_hz, *FREQUENCY_RANGE_HZ)
        check_range(self._name("speed_mps"), self.speed_mps, *SPEED_RANGE_MPS)
        check_range(self._name("direction_deg"), self.direction_deg, -360.0, 360.0)

    @property
    def truth_velocity_mps(self) -> tuple[float, float]:
        theta = math.radians(self.direction_deg)
        return (self.speed_mps * math.cos(theta), self.speed_mps * math.sin(theta))

    @property
    def truth_speed_mps(self) -> float:
        return float(self.speed_mps)


def plane_wave(
    t: np.ndarray, grid: ElectrodeGrid, spec: PlaneWave, rng: np.random.Generator
) -> np.ndarray:
    """``A cos(2π f t - k·r + φ0)`` with ``k`` along the direction of travel, φ0 random.

    Returns (len(t), rows, cols) float64 µV, before the episode's taper.
    """
    x, y = grid.positions_m()
    vx, vy = spec.truth_velocity_mps
    # k = ω v / |v|²: phase is constant along fronts that move with velocity v.
    omega = 2 * np.pi * spec.frequency_hz
    k_dot_r = omega * (vx * x + vy * y) / spec.speed_mps**2
    phase0 = rng.uniform(0.0, 2 * np.pi)
    return spec.amplitude_uv * np.cos(omega * t[:, None, None] - k_dot_r + phase0)
