"""A Wilson–Cowan neural field: nonlinear excitatory/inhibitory dynamics that make their own waves.

The other patterns are closed-form; this one gives models dynamics to learn. Each point of a
sheet finer than the electrode array holds an excitatory (E) and an inhibitory (I) population
with the classic Wilson & Cowan (1972) limit-cycle weights, coupled to its neighbours by
Gaussian lateral connections. A smooth random drive makes some regions oscillate faster than
others; the fast regions lead and their activity spreads as travelling waves, kept irregular by
a smooth noise input. The electrodes record the E activity averaged over the sheet under them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from bench.data.synth._episode import Episode
from service.core.checks import check_range
from service.core.grid import ElectrodeGrid

_REFINE = 2
"""Sheet points per electrode pitch, per axis."""
_MARGIN = 6
"""Sheet points beyond the array on each side, so the sheet's edge is not under an electrode."""
_W_EE, _W_EI, _W_IE, _W_II = 16.0, 12.0, 15.0, 3.0
"""Coupling weights E->E, I->E, E->I, I->I (Wilson & Cowan 1972, limit-cycle set)."""
_GAIN_E, _THRESHOLD_E, _GAIN_I, _THRESHOLD_I = 1.3, 4.0, 2.0, 3.7
"""Sigmoid slopes and thresholds of the two populations (same source)."""
_DRIVE_RANGE = (1.2, 2.0)
"""External drive to E: below ~1.25 a point is quiescent, above it oscillates faster the more
it gets, so a spread of drives makes pacemakers."""
_DRIVE_CORRELATION_M = 2.0e-3
"""Spatial scale of the random drive landscape."""
_TAU_RATIO = 2.0
"""Inhibitory time constant relative to the excitatory one."""
_STEP_FRACTION = 0.25
"""Largest Euler step as a fraction of the excitatory time constant (stable and accurate)."""
_WARMUP_S = 0.25
"""Integration before the episode starts, so it opens on developed dynamics, not transients."""
_MIX = (-np.array([[_GAIN_E], [_GAIN_I]]) * [[_W_EE, -_W_EI], [_W_IE, -_W_II]]).astype(np.float32)
"""Maps lateral (E, I) input to each population's sigmoid exponent, gain folded in."""
_OFFSET = np.array(
    [[1 / (1 + math.exp(_GAIN_E * _THRESHOLD_E))], [1 / (1 + math.exp(_GAIN_I * _THRESHOLD_I))]],
    np.float32,
)
"""Sigmoid value at zero input, subtracted so that silence stays silent."""


@dataclass(frozen=True, kw_only=True)
class NeuralField(Episode):
    """An episode of neural-field activity; its truth has no velocity (waves vary in time).

    Parameters
    ----------
    amplitude_uv
        The field is scaled so its RMS equals that of a sinusoid with this peak, which makes
        it as strong as a wave episode of the same amplitude.
    tau_s
        Excitatory time constant in seconds (inhibitory: twice it), 4–40 ms; sets the rhythm
        (about 14 Hz at 8 ms).
    coupling_m
        Standard deviation of the lateral connections in metres, 0.1–2 mm; wider coupling
        means faster, smoother waves.
    noise
        Standard deviation of the smooth noise input, 0–10 (drive units); more noise, less
        regular waves.
    """

    kind: ClassVar[str] = "neural_field"

    tau_s: float = 0.008
    coupling_m: float = 0.5e-3
    noise: float = 2.0

    def __post_init__(self) -> None:
        super().__post_init__()
        check_range(self._name("tau_s"), self.tau_s, 0.004, 0.04)
        check_range(self._name("coupling_m"), self.coupling_m, 0.1e-3, 2.0e-3)
        check_range(self._name("noise"), self.noise, 0.0, 10.0)


def neural_field(
    t: np.ndarray, grid: ElectrodeGrid, spec: NeuralField, rng: np.random.Generator
) -> np.ndarray:
    """Integrate the field over ``t`` (uniform, >= 2 samples) and read it at the electrodes.

    Scaled so its RMS is that of a sinusoid of peak ``amplitude_uv``. Returns
    (len(t), rows, cols) float64 µV, before the episode's taper.
    """
    if t.size < 2:
        raise ValueError(f"'t' must hold at least 2 samples to integrate a field, got {t.size}")
    sheets = _simulate(t.size, float(t[1] - t[0]), grid, spec, rng)
    blocks = sheets.reshape(t.size, grid.rows, _REFINE, grid.cols, _REFINE)
    out = blocks.mean(axis=(2, 4), dtype=np.float64)
    out -= out.mean()
    rms = float(np.sqrt(np.mean(out**2)))
    if rms == 0.0:
        return out
    return out * (spec.amplitude_uv / math.sqrt(2) / rms)


def _simulate(
    n_frames: int,
    period: float,
    grid: ElectrodeGrid,
    spec: NeuralField,
    rng: np.random.Generator,
) -> np.ndarray:
    """E activity of the sheet under the array, (n_frames, 2 rows, 2 cols) float32 in [0, 1].

    The noise input is redrawn once per frame and held over the frame's Euler substeps.
    """
    spacing = grid.pitch_m / _REFINE
    rows, cols = grid.rows * _REFINE + 2 * _MARGIN, grid.cols * _REFINE + 2 * _MARGIN
    row_kernel = _gaussian_matrix(rows, spec.coupling_m / spacing)
    col_kernel = _gaussian_matrix(cols, spec.coupling_m / spacing).T.copy()
    drive = _drive_landscape(rng, rows, cols, _DRIVE_CORRELATION_M / spacing)

    substeps = math.ceil(period / (_STEP_FRACTION * spec.tau_s))
    dt = period / substeps
    rate = np.array([dt / spec.tau_s, dt / (_TAU_RATIO * spec.tau_s)], np.float32)[:, None]
    state = rng.uniform(0.0, 0.3, (rows, 2, cols)).astype(np.float32)
    bias = np.empty_like(state)
    bias[:, 1] = _GAIN_I * _THRESHOLD_I
    n_warmup = math.ceil(_WARMUP_S / period)
    under = (slice(_MARGIN, rows - _MARGIN), 0, slice(_MARGIN, cols - _MARGIN))
    sheets = np.empty((n_frames, rows - 2 * _MARGIN, cols - 2 * _MARGIN), np.float32)
    for k in range(n_warmup + n_frames):
        noise = row_kernel @ rng.standard_normal((rows, cols), dtype=np.float32) @ col_kernel
        bias[:, 0] = -_GAIN_E * (drive + np.float32(spec.noise) * noise - _THRESHOLD_E)
        for _ in range(substeps):
            _euler_step(state, bias, row_kernel, col_kernel, rate)
        if k >= n_warmup:
            sheets[k - n_warmup] = state[under]
    return sheets


def _euler_step(
    state: np.ndarray,
    bias: np.ndarray,
    row_kernel: np.ndarray,
    col_kernel: np.ndarray,
    rate: np.ndarray,
) -> None:
    """One Euler step, in place, of ``tau dX/dt = -X + (1 - X) S(input)`` for X = (E, I).

    ``state`` is (rows, 2, cols) so that both populations are convolved by two matrix
    products: the row kernel acts on the (rows, 2*cols) view, the column kernel on the
    (2*rows, cols) view. ``bias`` holds each population's external input as a sigmoid
    exponent. In-place operations keep the step at a few dozen microseconds.
    """
    rows, _, cols = state.shape
    spread = (row_kernel @ state.reshape(rows, 2 * cols)).reshape(2 * rows, cols) @ col_kernel
    response = np.matmul(_MIX, spread.reshape(rows, 2, cols))
    response += bias
    np.clip(response, -60.0, 60.0, out=response)
    np.exp(response, out=response)
    response += 1
    np.reciprocal(response, out=response)
    response -= _OFFSET
    # X += rate * (S (1 - X) - X), written as S - X (S + 1) to reuse buffers.
    growth = response + 1
    growth *= state
    response -= growth
    response *= rate
    state += response


def _gaussian_matrix(n: int, sd: float) -> np.ndarray:
    """(n, n) float32 matrix that smooths a vector with a Gaussian of ``sd`` samples.

    Rows are normalised, so points near the sheet's edge get the same total input as
    points in the middle (a reflecting rather than an absorbing edge).
    """
    idx = np.arange(n)
    kernel = np.exp(-0.5 * ((idx[:, None] - idx[None, :]) / sd) ** 2)
    return (kernel / kernel.sum(axis=1, keepdims=True)).astype(np.float32)


def _drive_landscape(rng: np.random.Generator, rows: int, cols: int, sd: float) -> np.ndarray:
    """Smooth random drive spanning ``_DRIVE_RANGE``: its peaks become the pacemakers."""
    white = rng.standard_normal((rows, cols))
    field = _gaussian_matrix(rows, sd) @ white @ _gaussian_matrix(cols, sd).T
    lo, hi = _DRIVE_RANGE
    return (lo + (hi - lo) * (field - field.min()) / np.ptp(field)).astype(np.float32)
