"""Radial ("target") waves: rings that spread from, or collapse onto, a source point."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from bench.data.synth._episode import FREQUENCY_RANGE_HZ, SPEED_RANGE_MPS, Episode
from bench.data.synth._waveform import check_shape, shaped
from service.core.checks import check_range, check_type
from service.core.grid import ElectrodeGrid


@dataclass(frozen=True, kw_only=True)
class RadialWave(Episode):
    """Concentric rings around ``(source_x_m, source_y_m)``, which may lie off the array.

    The truth carries the speed but no velocity: the direction differs at every electrode.

    Parameters
    ----------
    frequency_hz
        Temporal frequency, 2–40 Hz.
    speed_mps
        Radial phase speed, 0.05–1 m/s.
    source_x_m, source_y_m
        Source position in grid coordinates (metres; ``service.core.grid``).
    inward
        True for rings that collapse onto the source instead of spreading from it.
    waveform
        Cycle shape (``_waveform.WAVEFORMS``): ``"sine"``, ``"harmonic"`` or ``"sharp"``.
    burst_hz
        Bursts per second gating the wave on and off, 0–5; 0 is continuous.
    """

    kind: ClassVar[str] = "radial"

    frequency_hz: float = 10.0
    speed_mps: float = 0.3
    source_x_m: float = 4.75e-3
    source_y_m: float = 4.25e-3
    inward: bool = False
    waveform: str = "sine"
    burst_hz: float = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        check_range(self._name("frequency_hz"), self.frequency_hz, *FREQUENCY_RANGE_HZ)
        check_range(self._name("speed_mps"), self.speed_mps, *SPEED_RANGE_MPS)
        check_range(self._name("source_x_m"), self.source_x_m, -1.0, 1.0)
        check_range(self._name("source_y_m"), self.source_y_m, -1.0, 1.0)
        check_type(self._name("inward"), self.inward, bool)
        check_shape(type(self).__name__, self.waveform, self.burst_hz)

    @property
    def truth_speed_mps(self) -> float:
        return float(self.speed_mps)


def radial_wave(
    t: np.ndarray, grid: ElectrodeGrid, spec: RadialWave, rng: np.random.Generator
) -> np.ndarray:
    """``A s(2π f t ∓ k r + φ0)``, r the distance to the source, φ0 random, ``s`` the cycle
    shape (a cosine by default).

    Returns (len(t), rows, cols) float64 µV, before the episode's taper.
    """
    x, y = grid.positions_m()
    r = np.hypot(x - spec.source_x_m, y - spec.source_y_m)
    omega = 2 * np.pi * spec.frequency_hz
    sign = 1.0 if spec.inward else -1.0
    phase0 = rng.uniform(0.0, 2 * np.pi)
    k_r = sign * omega / spec.speed_mps * r
    phase = omega * t[:, None, None] + k_r + phase0
    return spec.amplitude_uv * shaped(phase, t, spec.waveform, spec.burst_hz, rng)
