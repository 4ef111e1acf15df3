"""Random episode schedules: varied sessions for training and benchmarks from a single seed."""

from __future__ import annotations

import math

import numpy as np

from bench.data.synth._episode import Episode
from bench.data.synth._registry import EPISODE_KINDS
from bench.data.synth.neural_field import NeuralField
from bench.data.synth.plane_wave import PlaneWave
from bench.data.synth.radial_wave import RadialWave
from bench.data.synth.seizure import Seizure
from bench.data.synth.spiral_wave import SpiralWave
from service.core.checks import check_above, check_int
from service.core.grid import DEFAULT_GRID, ElectrodeGrid

_GAP_S = (0.3, 1.5)
"""Background-only gap before each episode."""
_DURATION_S = {
    PlaneWave.kind: (1.0, 3.0),
    RadialWave.kind: (1.0, 3.0),
    SpiralWave.kind: (1.0, 3.0),
    Seizure.kind: (3.0, 6.0),
    NeuralField.kind: (1.5, 3.0),
}
"""Episode length range per kind; seizures run longer so their chirp and growth unfold."""
_MIN_EPISODE_S = 1.0
"""An episode shorter than this is not worth scheduling (taper plus a few cycles)."""


def random_schedule(
    duration_s: float, seed: int, grid: ElectrodeGrid = DEFAULT_GRID
) -> tuple[Episode, ...]:
    """Non-overlapping episodes of every kind, separated by background-only gaps.

    Kinds are drawn as successive shuffles of all kinds, so any session long enough holds
    each of them; parameters are drawn over realistic ranges (sources and centres may lie
    off the array). The last episode is shortened to fit, or left out if too short.
    """
    check_above("duration_s", duration_s, 0.0)
    check_int("seed", seed, 0)
    rng = np.random.default_rng(seed)
    kinds: list[str] = []
    episodes: list[Episode] = []
    now = 0.0
    while True:
        start = now + rng.uniform(*_GAP_S)
        if not kinds:
            kinds = list(rng.permutation(list(EPISODE_KINDS)))
        kind = str(kinds.pop())
        length = min(rng.uniform(*_DURATION_S[kind]), duration_s - start)
        if length < _MIN_EPISODE_S:
            return tuple(episodes)
        episodes.append(_DRAW[kind](rng, grid, start, length))
        now = start + length


def _log_uniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))


def _point(rng: np.random.Generator, grid: ElectrodeGrid, overhang: float) -> tuple[float, float]:
    """A point over the array, extended by ``overhang`` of its size on each side."""
    width, height = (grid.cols - 1) * grid.pitch_m, (grid.rows - 1) * grid.pitch_m
    x = rng.uniform(-overhang * width, (1 + overhang) * width)
    y = rng.uniform(-overhang * height, (1 + overhang) * height)
    return float(x), float(y)


def _plane(rng: np.random.Generator, grid: ElectrodeGrid, start: float, length: float) -> Episode:
    return PlaneWave(
        start_s=start,
        duration_s=length,
        amplitude_uv=float(rng.uniform(20.0, 60.0)),
        frequency_hz=float(rng.uniform(3.0, 30.0)),
        speed_mps=_log_uniform(rng, 0.08, 0.8),
        direction_deg=float(rng.uniform(-180.0, 180.0)),
    )


def _radial(rng: np.random.Generator, grid: ElectrodeGrid, start: float, length: float) -> Episode:
    x, y = _point(rng, grid, 0.25)
    return RadialWave(
        start_s=start,
        duration_s=length,
        amplitude_uv=float(rng.uniform(20.0, 60.0)),
        frequency_hz=float(rng.uniform(3.0, 25.0)),
        speed_mps=_log_uniform(rng, 0.08, 0.8),
        source_x_m=x,
        source_y_m=y,
        inward=bool(rng.random() < 0.25),
    )


def _spiral(rng: np.random.Generator, grid: ElectrodeGrid, start: float, length: float) -> Episode:
    x, y = _point(rng, grid, -0.2)
    return SpiralWave(
        start_s=start,
        duration_s=length,
        amplitude_uv=float(rng.uniform(20.0, 60.0)),
        frequency_hz=float(rng.uniform(3.0, 15.0)),
        speed_mps=_log_uniform(rng, 0.1, 0.6),
        centre_x_m=x,
        centre_y_m=y,
        handedness=int(rng.choice([-1, 1])),
        arms=int(rng.integers(1, 3)),
    )


def _seizure(rng: np.random.Generator, grid: ElectrodeGrid, start: float, length: float) -> Episode:
    return Seizure(
        start_s=start,
        duration_s=length,
        amplitude_uv=float(rng.uniform(80.0, 200.0)),
        start_freq_hz=float(rng.uniform(8.0, 14.0)),
        end_freq_hz=float(rng.uniform(2.5, 4.0)),
        speed_mps=_log_uniform(rng, 0.08, 0.6),
        direction_deg=float(rng.uniform(-180.0, 180.0)),
        onset_fraction=float(rng.uniform(0.1, 0.4)),
    )


def _field(rng: np.random.Generator, grid: ElectrodeGrid, start: float, length: float) -> Episode:
    return NeuralField(
        start_s=start,
        duration_s=length,
        amplitude_uv=float(rng.uniform(20.0, 60.0)),
        tau_s=float(rng.uniform(0.006, 0.015)),
        coupling_m=float(rng.uniform(0.35e-3, 0.7e-3)),
        noise=float(rng.uniform(1.0, 3.0)),
    )


_DRAW = {
    PlaneWave.kind: _plane,
    RadialWave.kind: _radial,
    SpiralWave.kind: _spiral,
    Seizure.kind: _seizure,
    NeuralField.kind: _field,
}
"""How each kind's parameters are drawn."""
