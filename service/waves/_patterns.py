"""Phase-correlation measures that tell radial from rotating waves, searched over centres.

A radial (target) wave has phase linear in the distance from its source: the circular-linear
correlation between phase and distance is high (the phase-distance correlation of Rubino et
al. 2006 and Muller et al. 2014). A rotating wave has phase that turns once with the polar angle
around its centre: the circular-circular correlation between phase and polar angle is high
(Muller et al. 2016). The centre is unknown, so both are computed for a grid of candidate
centres and each frame keeps its best; everything is a few matrix products over
(frames x electrodes) and (centres x electrodes).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from service.core.grid import ElectrodeGrid

PATTERNS: tuple[str, ...] = ("planar", "radial", "rotating", "disorganised")
"""Pattern names; ``WaveEstimate.pattern`` holds indices into this tuple. Here, beside the
measures that tell them apart and not in the estimator, so that the wave summary
(``service.waves.summary``, which ``corticast listen`` uses) loads no signal processing."""

_EPS = 1e-12
"""Below this a distance spread is treated as zero."""
_PHASE_SPREAD_EPS = 1e-3
"""Below this an s.d. of cos or sin of phase (or the relative Fisher–Lee spread) is treated as
zero: the phase is the same everywhere up to single-precision rounding, and correlating that
rounding with distance or angle would produce any value at all."""
_ROTATION_MARGIN = 0.2
"""Rotation centres are searched only this fraction of the array's size away from its edges:
around a centre near an edge the polar angle spans half a turn, over which a plane wave's
phase correlates with it as well as a rotating wave's does."""


@dataclass(frozen=True, eq=False)
class CentreGeometry:
    """What the correlations need from each candidate centre, over the live electrodes only.

    Attributes
    ----------
    live_index
        (N,) row-major indices of the live electrodes.
    stacked
        (R + 2C, N): the distance of each live electrode to each of R source candidates,
        standardised per candidate (zero mean, unit variance: only its correlation with phase
        matters), then the cosine and then the sine of each electrode's polar angle around
        each of C rotation-centre candidates. Stacked so that one matrix product gives every
        correlation term.
    n_sources
        R, the number of source candidates for radial waves.
    angle_scale
        (C,) ``1 / sqrt(N**2 - |sum exp(2i angle)|**2)``, the angles' factor of the Fisher–Lee
        denominator (0 where the angles do not spread), fixed by the geometry.
    """

    live_index: np.ndarray
    stacked: np.ndarray
    n_sources: int
    angle_scale: np.ndarray


def centre_geometry(grid: ElectrodeGrid, live: np.ndarray, step: int) -> CentreGeometry:
    """Candidate centres every ``step`` electrodes, against the live electrodes.

    Sources of radial waves are searched over the whole array, rotation centres only over its
    interior (``_ROTATION_MARGIN``). Candidates sit half a pitch off the electrode lattice so
    that none coincides with an electrode, whose polar angle would be undefined.
    """
    x, y = grid.positions_m()
    live_index = np.flatnonzero(live.ravel())
    ex, ey = x.ravel()[live_index], y.ravel()[live_index]
    cx = (np.arange(0, grid.cols - 1, step) + 0.5) * grid.pitch_m
    cy = (np.arange(0, grid.rows - 1, step) + 0.5) * grid.pitch_m
    source_y, source_x = (a.ravel() for a in np.meshgrid(cy, cx, indexing="ij"))
    inner_x = cx[_inside(cx, (grid.cols - 1) * grid.pitch_m)]
    inner_y = cy[_inside(cy, (grid.rows - 1) * grid.pitch_m)]
    centre_y, centre_x = (a.ravel() for a in np.meshgrid(inner_y, inner_x, indexing="ij"))

    distance = _standardise(np.hypot(ex - source_x[:, None], ey - source_y[:, None]))
    angle = np.arctan2(ey - centre_y[:, None], ex - centre_x[:, None])
    n = live_index.size
    spread = n**2 - np.abs(np.exp(2j * angle).sum(axis=1)) ** 2
    # float32 halves the cost of the one large product; correlations need no more precision.
    stacked = np.concatenate([distance, np.cos(angle), np.sin(angle)], axis=0).astype(np.float32)
    scale = _inverse(np.sqrt(np.maximum(spread, 0.0)), _PHASE_SPREAD_EPS * n)
    return CentreGeometry(
        live_index=live_index, stacked=stacked, n_sources=source_x.size, angle_scale=scale
    )


def _inside(coords: np.ndarray, extent: float) -> np.ndarray:
    """Candidates at least ``_ROTATION_MARGIN`` of ``extent`` from both ends (at least one)."""
    keep = (coords >= _ROTATION_MARGIN * extent) & (coords <= (1 - _ROTATION_MARGIN) * extent)
    if not keep.any():
        keep[np.argmin(np.abs(coords - extent / 2))] = True
    return keep


def phase_correlations(z: np.ndarray, geometry: CentreGeometry) -> tuple[np.ndarray, np.ndarray]:
    """Best phase-distance and phase-angle correlations of each frame of ``z`` (T, rows, cols).

    Returns
    -------
    radial
        (T,) circular-linear correlation between phase and distance from the best centre,
        in [0, 1] (Mardia's coefficient).
    rotating
        (T,) Fisher–Lee circular-circular correlation between phase and polar angle around
        the best centre, sign flipped so that it is positive for a wave that turns from +x
        toward +y (the sense of ``service.core.grid`` angles): such a wave reaches larger polar
        angles later, so its phase falls as the angle grows.
    """
    t = z.shape[0]
    flat = z.reshape(t, -1)[:, geometry.live_index]
    n = flat.shape[1]
    # cos and sin of the phase, written straight into the stacked operand of the product
    # below, by one reciprocal of the magnitude: what dividing the complex values by it does,
    # without the complex division.
    re, im = flat.real, flat.imag
    inv = 1.0 / np.maximum(np.abs(flat), np.float32(_EPS))
    # In the gather's memory order (columns, for a fancy index along the electrodes): with
    # every operand in one order the elementwise passes stream through memory.
    order = "F" if flat.flags.f_contiguous else "C"
    phasor = np.empty((2 * t, n), dtype=inv.dtype, order=order)
    cos_p = np.multiply(re, inv, out=phasor[:t])
    sin_p = np.multiply(im, inv, out=phasor[t:])
    # One product gives (cos, sin of phase) x (distance, cos, sin of angle) for every centre.
    # Computed transposed: the same sums, faster with the geometry's rows contiguous.
    terms = (geometry.stacked @ phasor.T).T
    r = geometry.n_sources
    c = geometry.angle_scale.shape[0]
    cos_dist, cos_cos, cos_sin = terms[:t, :r], terms[:t, r : r + c], terms[:t, r + c :]
    sin_dist, sin_cos, sin_sin = terms[t:, :r], terms[t:, r : r + c], terms[t:, r + c :]

    # First and second circular moments give every phase mean, variance and covariance
    # needed below: cos² = (1 + cos 2φ) / 2, sin² = (1 - cos 2φ) / 2, cos sin = sin 2φ / 2.
    # Means of the unit phasors themselves, in complex arithmetic: near-uniform phase leaves
    # the variances below at rounding level, where a different summation order would change
    # the correlations of flat frames.
    unit = np.empty_like(flat)  # the gather's memory order, which sets the summation order
    unit.real, unit.imag = cos_p, sin_p
    m1 = unit.mean(axis=1)
    m2 = (unit * unit).mean(axis=1)
    mean_c, mean_s = m1.real, m1.imag
    var_c = np.maximum(0.5 * (1.0 + m2.real) - mean_c**2, 0.0)
    var_s = np.maximum(0.5 * (1.0 - m2.real) - mean_s**2, 0.0)
    cov_cs = 0.5 * m2.imag - mean_c * mean_s

    # Circular-linear (Mardia): multiple correlation of distance on (cos, sin) of phase. The
    # distance is standardised, so correlating it with raw cos/sin only needs their s.d.
    inv_c = _inverse(np.sqrt(var_c), _PHASE_SPREAD_EPS)
    inv_s = _inverse(np.sqrt(var_s), _PHASE_SPREAD_EPS)
    r_cd = cos_dist * (inv_c / n)[:, None]
    r_sd = sin_dist * (inv_s / n)[:, None]
    r_cs = cov_cs * inv_c * inv_s
    rho2 = (r_cd**2 + r_sd**2 - 2.0 * r_cs[:, None] * r_cd * r_sd) * _inverse(1.0 - r_cs**2)[
        :, None
    ]
    radial = np.sqrt(np.clip(rho2.max(axis=1), 0.0, 1.0)).astype(np.float64)

    # Circular-circular (Fisher & Lee 1983): needs no mean direction, so it stays defined for
    # angles that go all the way round a centre, where the mean angle is meaningless.
    phase_spread = n**2 * np.maximum(1.0 - np.abs(m2) ** 2, 0.0)
    scale = np.outer(_inverse(np.sqrt(phase_spread), _PHASE_SPREAD_EPS * n), geometry.angle_scale)
    rho = 4.0 * (cos_cos * sin_sin - cos_sin * sin_cos) * scale
    best = np.argmax(np.abs(rho), axis=1)
    rotating = -np.clip(rho[np.arange(t), best], -1.0, 1.0).astype(np.float64)
    return radial, rotating


def _inverse(values: np.ndarray, eps: float = _EPS) -> np.ndarray:
    """``1 / values``, and 0 where a value is below ``eps`` (nothing varies to correlate)."""
    return np.divide(1.0, values, out=np.zeros(values.shape, values.dtype), where=values > eps)


def _standardise(values: np.ndarray) -> np.ndarray:
    """Zero mean and unit variance along the last axis; constant rows become all zero."""
    centred = values - values.mean(axis=-1, keepdims=True)
    sd = np.sqrt(np.mean(centred**2, axis=-1, keepdims=True))
    return np.divide(centred, sd, out=np.zeros_like(centred), where=sd > _EPS)
