"""Spatially correlated 1/f ("pink") background activity, the floor every pattern sits on."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import scipy.fft

from service.core.checks import check_range
from service.core.grid import ElectrodeGrid


@dataclass(frozen=True)
class Background:
    """Ongoing activity with power falling as 1/f^exponent and a Gaussian spatial correlation.

    Parameters
    ----------
    rms_uv
        RMS over the whole session and array, in µV; 0 turns the background off.
    exponent
        Spectral exponent ``alpha`` of the power spectrum 1/f^alpha, 0–3 (0 is white).
    correlation_m
        Standard deviation of the Gaussian spatial correlation, in metres (0 gives
        independent electrodes); cortical background is coherent over a few electrodes.
    low_hz
        Below this frequency the spectrum is flat, so the session has no slow drift that
        dominates its power; the mean is always removed.
    """

    rms_uv: float = 20.0
    exponent: float = 1.0
    correlation_m: float = 1.0e-3
    low_hz: float = 1.0

    def __post_init__(self) -> None:
        check_range("Background.rms_uv", self.rms_uv, 0.0)
        check_range("Background.exponent", self.exponent, 0.0, 3.0)
        check_range("Background.correlation_m", self.correlation_m, 0.0, 5.0e-3)
        check_range("Background.low_hz", self.low_hz, 0.0)


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
    sd = settings.correlation_m / grid.pitch_m
    pad = math.ceil(3 * sd)
    # A fast FFT length: n itself may hold a large prime factor (16,667 = 7 x 2,381).
    n_fft = scipy.fft.next_fast_len(n, real=True)
    white = rng.standard_normal((n_fft, grid.rows + 2 * pad, grid.cols + 2 * pad), np.float32)
    smooth = _smoother(grid.rows, pad, sd) @ white @ _smoother(grid.cols, pad, sd).T

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
