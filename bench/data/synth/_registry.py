"""The one place where episode kinds are looked up: kind name -> (spec class, renderer)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from bench.data.synth._episode import Episode
from bench.data.synth.neural_field import NeuralField, neural_field
from bench.data.synth.plane_wave import PlaneWave, plane_wave
from bench.data.synth.radial_wave import RadialWave, radial_wave
from bench.data.synth.seizure import Seizure, seizure
from bench.data.synth.spiral_wave import SpiralWave, spiral_wave
from service.core.grid import ElectrodeGrid

Renderer = Callable[[np.ndarray, ElectrodeGrid, Any, np.random.Generator], np.ndarray]
"""``render(t, grid, spec, rng)`` -> (len(t), rows, cols) µV, before the episode's taper."""

EPISODE_KINDS: dict[str, tuple[type[Episode], Renderer]] = {
    cls.kind: (cls, render)
    for cls, render in (
        (PlaneWave, plane_wave),
        (RadialWave, radial_wave),
        (SpiralWave, spiral_wave),
        (Seizure, seizure),
        (NeuralField, neural_field),
    )
}
"""Every episode kind, keyed by its ``PATTERN_LABELS`` name."""


def lookup(kind: str) -> tuple[type[Episode], Renderer]:
    """Spec class and renderer of ``kind``; ValueError listing the valid kinds otherwise."""
    if kind not in EPISODE_KINDS:
        raise ValueError(f"episode 'kind' must be one of {sorted(EPISODE_KINDS)}, got {kind!r}")
    return EPISODE_KINDS[kind]
