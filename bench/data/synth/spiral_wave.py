"""Rotating (spiral) waves: arms that turn around a centre and spread outward."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from bench.data.synth._episode import FREQUENCY_RANGE_HZ, SPEED_RANGE_MPS, Episode
from bench.data.synth._waveform import check_shape, shaped
from service.core.checks import check_choice, check_int, check_range
from service.core.grid import ElectrodeGrid


@dataclass(frozen=True, kw_only=True)
class SpiralWave(Episode):
    """A rotating wave around ``(centre_x_m, centre_y_m)``.

    The truth has neither velocity nor speed: both vary with the distance from the centre.

    Parameters
    ----------
    frequency_hz
        Temporal frequency at every electrode, 2–40 Hz; the pattern turns ``frequency_hz / arms``
        times a second.
    speed_mps
        Outward phase speed of the arms, 0.05–1 m/s (sets how tightly they wind).
    centre_x_m, centre_y_m
        Rotation centre in grid coordinates (metres).
    handedness
        +1 rotates from +x toward +y (the sense of ``service.core.grid`` angles), -1 the other way.
    arms
        Number of spiral arms.
    waveform
        Cycle shape (``_waveform.WAVEFORMS``): ``"sine"``, ``"harmonic"`` or ``"sharp"``.
    burst_hz
        Bursts per second gating the wave on and off, 0–5; 0 is continuous.
    """

    kind: ClassVar[str] = "spiral"

    frequency_hz: float = 8.0
    speed_mps: float = 0.3
    centre_x_m: float = 4.75e-3
    centre_y_m: float = 4.25e-3
    handedness: int = 1
    arms: int = 1
    waveform: str = "sine"
    burst_hz: float = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        check_range(self._name("frequency_hz"), self.frequency_hz, *FREQUENCY_RANGE_HZ)
        check_range(self._name("speed_mps"), self.speed_mps, *SPEED_RANGE_MPS)
        check_range(self._name("centre_x_m"), self.centre_x_m, -1.0, 1.0)
        check_range(self._name("centre_y_m"), self.centre_y_m, -1.0, 1.0)
        check_choice(self._name("handedness"), self.handedness, (1, -1))
        check_int(self._name("arms"), self.arms, 1, 4)
        check_shape(type(self).__name__, self.waveform, self.burst_hz)


def spiral_wave(
    t: np.ndarray, grid: ElectrodeGrid, spec: SpiralWave, rng: np.random.Generator
) -> np.ndarray:
    """``A cos(ω t - h m θ - k r + φ0)`` in polar coordinates about the centre, φ0 random.

    A crest sits where ``h m θ = ω t - k r + const``: its angle grows with time for h = +1, and
    at a fixed angle it moves outward at ``speed_mps``.

    Returns (len(t), rows, cols) float64 µV, before the episode's taper.
    """
    x, y = grid.positions_m()
    dx, dy = x - spec.centre_x_m, y - spec.centre_y_m
    theta = np.arctan2(dy, dx)
    omega = 2 * np.pi * spec.frequency_hz
    spatial = spec.handedness * spec.arms * theta + omega / spec.speed_mps * np.hypot(dx, dy)
    phase0 = rng.uniform(0.0, 2 * np.pi)
    phase = omega * t[:, None, None] - spatial + phase0
    return spec.amplitude_uv * shaped(phase, t, spec.waveform, spec.burst_hz, rng)
