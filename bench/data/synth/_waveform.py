"""Wave shapes beyond the sinusoid, shared by the plane, radial and spiral waves.

Cortical rhythms are rarely sinusoids: mu and alpha rhythms carry harmonics, slow waves and
epileptiform discharges are sharp, and most rhythms come in bursts. A model trained only on
sinusoids learns to continue sinusoids; these shapes keep the phase geometry of each wave (so
its velocity truth is unchanged) and change only what a cycle looks like and when it is on.
"""

from __future__ import annotations

import math

import numpy as np
import scipy.special

from service.core.checks import check_choice, check_range

WAVEFORMS = ("sine", "harmonic", "sharp")
"""Cycle shapes: a cosine; a cosine with 2nd and 3rd harmonics (a mu-like arch shape); a
von Mises pulse (a sharp peak on a flat trough, like a sharp wave)."""
BURST_RANGE_HZ = (0.0, 5.0)
"""Burst rates: 0 is a continuous wave; up to 5 bursts a second (beta-burst rates)."""
_HARMONICS = ((1.0, 0.0), (0.5, 0.6), (0.3, 1.4))
"""(relative amplitude, phase) of harmonics 1, 2, 3 of the ``harmonic`` shape."""
_SHARPNESS = 4.0
"""Concentration of the ``sharp`` shape's von Mises pulse (larger: a narrower peak)."""


def check_shape(where: str, waveform: str, burst_hz: float) -> None:
    """ValueError naming ``where`` if the shape or burst rate is not one the renderers know."""
    check_choice(f"{where}.waveform", waveform, WAVEFORMS)
    check_range(f"{where}.burst_hz", burst_hz, *BURST_RANGE_HZ)


def shaped(
    phase: np.ndarray, t: np.ndarray, waveform: str, burst_hz: float, rng: np.random.Generator
) -> np.ndarray:
    """One cycle shape per ``2 pi`` of ``phase`` (peak 1 at phase 0, zero mean over a cycle),
    gated by bursts at ``burst_hz`` along ``t`` (the first axis of ``phase``).

    The burst phase is drawn from ``rng`` only when bursts are on, so a continuous wave draws
    exactly what it drew before shapes existed.
    """
    if waveform == "sine":
        cycle = np.cos(phase)
    elif waveform == "harmonic":
        total = sum(a for a, _ in _HARMONICS)
        cycle = sum(a * np.cos(k * phase + p) for k, (a, p) in enumerate(_HARMONICS, 1)) / total
    else:
        mean = scipy.special.i0e(_SHARPNESS)  # cycle mean of exp(kappa (cos - 1))
        cycle = (np.exp(_SHARPNESS * (np.cos(phase) - 1.0)) - mean) / (1.0 - mean)
    if burst_hz == 0:
        return cycle
    offset = rng.uniform(0.0, 2 * math.pi)
    gate = np.maximum(np.sin(2 * math.pi * burst_hz * t + offset), 0.0) ** 2
    return cycle * gate.reshape(-1, *([1] * (cycle.ndim - 1)))
