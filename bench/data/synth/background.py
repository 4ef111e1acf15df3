"""Spatially correlated background activity, the floor every pattern sits on.

Two families: 1/f ("pink", power falling as 1/f^alpha, the classic cortical spectrum) and
Ornstein-Uhlenbeck ("ou": each point relaxes toward zero with time constant ``tau_s``, a
Lorentzian spectrum, flat below ``1 / (2 pi tau_s)`` and 1/f^2 above), both spatially smoothed
by the same Gaussian. Real backgrounds lie between and around the two; a model that has only
seen one spectral shape learns that shape's habits (``bench.data.synth.mixture``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import scipy.fft
import scipy.signal

from service.core.checks import check_choice, check_range
from service.core.grid import ElectrodeGrid


@dataclass(frozen=True)
class Background:
    """Ongoing activity with a 1/f^exponent or OU spectrum and a Gaussian spatial correlation.

    Parameters
    ----------
    family
        ``"pink"`` (1/f^``exponent``) or ``"ou"`` (Ornstein-Uhlenbeck with ``tau_s``).
    rms_uv
        RMS over the whole session and array, in µV; 0 turns the background off.
    exponent
        Spectral exponent ``alpha`` of the power spectrum 1/f^alpha, 0–3 (0 is white).
    correlation_m
        Standard deviation of the Gaussian spatial correlation, in metres (0 gives
        independent electrodes); cortical background is coherent over a few electrodes.
    low_hz
        Below this frequency the pink spectrum is flat, so the session has no slow drift that
        dominates its power; the mean is always removed.
    tau_s
        Relaxation time constant of the OU family, 1 ms–1 s (unused by ``"pink"``).
    """

    rms_uv: float = 20.0
    exponent: float = 1.0
    correlation_m: float = 1.0e-3
    low_hz: float = 1.0
    family: str = "pink"
    tau_s: float = 0.02

    def __post_init__(self) -> None:
        check_choice("Background.family", self.family, BACKGROUND_FAMILIES)
        check_range("Background.tau_s", self.tau_s, 1e-3, 1.0)
        check_range("Background.rms_uv", self.rms_uv, 0.0)
        check_range("Background.exponent", self.exponent, 0.0, 3.0)
        check_range("Background.correlation_m", self.correlation_m, 0.0, 5.0e-3)
        check_range("Background.low_hz", self.low_hz, 0.0)


BACKGROUND_FAMILIES = ("pink", "ou")
"""Spectral shapes :class:`Background` can draw."""


def background(
    t: np.ndarray, grid: ElectrodeGrid, settings: Background, rng: np.random.Generator
) -> np.ndarray:
    """The background ``settings`` describes at times ``t``: (len(t), rows, cols) float64 µV."""
    if settings.rms_uv == 0 or t.size < 2:
        return np.zeros((t.size, grid.rows, grid.cols))
    if settings.family == "ou":
        return _ou_background(t, grid, settings, rng)
    return pink_background(t, grid, settings, rng)


def _ou_background(
    t: np.ndarray, grid: ElectrodeGrid, settings: Background, rng: np.random.Generator
) -> np.ndarray:
    """Spatially smoothed white noise through the exact AR(1) discretisation of an OU process,
    ``x[k] = a x[k-1] + e[k]`` with ``a = exp(-dt / tau_s)``, scaled to ``rms_uv``.

    The first ``5 tau_s`` are integrated and discarded so the session opens stationary.
    """
    n = t.size
    dt = float(t[1] - t[0])
    a = math.exp(-dt / settings.tau_s)
    warmup = min(math.ceil(5 * settings.tau_s / dt), 10 * n)
    white = _smoothed_white(n + warmup, grid, settings.correlation_m, rng)
    shaped = scipy.signal.lfilter([1.0], [1.0, -a], white, axis=0)[warmup:].astype(np.float64)
    shaped -= shaped.mean()
    return shaped * (settings.rms_uv / np.sqrt(np.mean(shaped**2)))


def _smoothed_white(
    n: int, grid: ElectrodeGrid, correlation_m: float, rng: np.random.Generator
) -> np.ndarray:
    """(n, rows, cols) float32 white noise smoothed by a Gaussian of ``correlation_m``."""
    sd = correlation_m / grid.pitch_m
    pad = math.ceil(3 * sd)
    white = rng.standard_normal((n, grid.rows + 2 * pad, grid.cols + 2 * pad), np.float32)
    return _smoother(grid.rows, pad, sd) @ white @ _smoother(grid.cols, pad, sd).T


def pink_background(
    t: np.ndarray, grid: ElectrodeGrid, settings: Background, rng: np.random.Generator
) -> np.ndarray:
    """White noise smoothed in space, then shaped to 1/f^alpha in time, scaled to ``rms_uv``.

    Smoothing happens on an array padded by three correlation lengths, so edge electrodes are as
    correlated with their neighbours as central ones. Returns (len(t), rows, cols) float64 µV.
    """
    n = t.size
    if settings.rms_uv == 0 or n < 2:
        return np.zeros((n, grid.rows, grid.cols))
    # A fast FFT length: n itself may hold a large prime factor (16,667 = 7 x 2,381).
    n_fft = scipy.fft.next_fast_len(n, real=True)
    smooth = _smoothed_white(n_fft, grid, settings.correlation_m, rng)

    spectrum = scipy.fft.rfft(smooth.reshape(n_fft, -1), axis=0)
    freqs = scipy.fft.rfftfreq(n_fft, d=float(t[1] - t[0]))
    floor = max(settings.low_hz, freqs[1])
    spectrum *= (np.maximum(freqs, floor) ** (-settings.exponent / 2)).astype(np.float32)[:, None]
    spectrum[0] = 0.0
    shaped = scipy.fft.irfft(spectrum, n=n_fft, axis=0)[:n].reshape(n, grid.rows, grid.cols)
    shaped = shaped.astype(np.float64)
    return shaped * (settings.rms_uv / np.sqrt(np.mean(shaped**2)))


def _smoother(n: int, pad: int, sd: float) -> np.ndarray:
    """(n, n + 2 pad) Gaussian smoothing matrix from the padded axis to the array's axis."""
    if pad == 0:
        return np.eye(n, dtype=np.float32)
    offset = np.arange(n)[:, None] + pad - np.arange(n + 2 * pad)[None, :]
    return np.exp(-0.5 * (offset / sd) ** 2).astype(np.float32)
