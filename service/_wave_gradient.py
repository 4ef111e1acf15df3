"""Phase gradients by complex multiplication: no phase is ever unwrapped.

The phase difference between two electrodes is the angle of ``z_b * conj(z_a)``, which is
correct modulo 2π without unwrapping as long as neighbours differ by less than π (a wavelength
longer than two pitches, 1 mm on the rig). Dead channels hold ``z = 0``, so every product that
touches one is 0 and drops out of every sum below; no mask is applied twice.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

_PHASE_EPS = 1e-5
"""Phase steps below this (rad) are rounding error and count as zero. Even at 40 Hz a real
step this small would mean a speed above 10 km/s: only zero-lag synchrony (a common-mode
artefact, volume conduction) produces it, and it must not look like a perfectly aligned wave."""


@dataclass(frozen=True, eq=False)
class PhaseGradients:
    """Per-frame results of :func:`phase_gradients` (all float64).

    Attributes
    ----------
    gradient
        (T, 2) amplitude-weighted mean phase gradient ``(d/dx, d/dy)`` in rad/m.
    omega
        (T,) amplitude-weighted mean instantaneous angular frequency in rad/s.
    pgd
        (T,) phase-gradient directionality in [0, 1].
    """

    gradient: np.ndarray
    omega: np.ndarray
    pgd: np.ndarray


def phase_gradients(z: np.ndarray, pitch_m: float, fs: float, valid: np.ndarray) -> PhaseGradients:
    """Spatial and temporal phase derivatives of the analytic signal ``z`` (T, rows, cols).

    ``z`` must be 0 on dead channels. At each electrode the derivative along an axis is the
    angle of the sum of the products with both neighbours (a central difference, weighted by
    amplitude), or with the one live neighbour (one-sided, at edges and next to dead channels).
    ``valid`` (rows, cols) marks electrodes whose gradient has both components; only these
    count in the PGD.

    The frame's mean gradient is the angle of the products summed over the array, i.e. the
    circular mean of the per-electrode differences weighted by signal power: noisy,
    low-amplitude electrodes count less than in a plain mean, which matters at low SNR.
    """
    across = z[:, :, 1:] * z[:, :, :-1].conj()  # (T, rows, cols - 1)
    down = z[:, 1:, :] * z[:, :-1, :].conj()  # (T, rows - 1, cols)
    cx = _both_sides(across, axis=2)
    cy = _both_sides(down, axis=1)
    gx = np.angle(cx) / pitch_m
    gy = np.angle(cy) / pitch_m

    mean_x = _step(across.sum(axis=(1, 2), dtype=np.complex128)) / pitch_m
    mean_y = _step(down.sum(axis=(1, 2), dtype=np.complex128)) / pitch_m
    pgd = _directionality(gx, gy, valid, _PHASE_EPS / pitch_m)

    step = np.einsum("tij,tij->t", z[1:], z[:-1].conj(), dtype=np.complex128)  # (T - 1,)
    both = np.empty(z.shape[0], dtype=np.complex128)
    both[1:-1] = step[1:] + step[:-1]
    both[0], both[-1] = step[0], step[-1]
    omega = np.angle(both) * fs
    return PhaseGradients(gradient=np.stack([mean_x, mean_y], axis=1), omega=omega, pgd=pgd)


def _step(products: np.ndarray) -> np.ndarray:
    """Phase step (rad) of complex products, with rounding-level steps set to exactly 0."""
    angle = np.angle(products)
    return np.where(np.abs(angle) < _PHASE_EPS, 0.0, angle)


def gradient_valid(live: np.ndarray) -> np.ndarray:
    """(rows, cols) electrodes that are live and have a live neighbour along both axes."""
    pad_x = np.pad(live, ((0, 0), (1, 1)))
    pad_y = np.pad(live, ((1, 1), (0, 0)))
    has_x = pad_x[:, :-2] | pad_x[:, 2:]
    has_y = pad_y[:-2, :] | pad_y[2:, :]
    return live & has_x & has_y


def _both_sides(pairs: np.ndarray, axis: int) -> np.ndarray:
    """Per electrode, the sum of the pair products on its two sides along ``axis``.

    Pairs lie between electrodes, so electrode ``i`` has pair ``i - 1`` on one side and pair
    ``i`` on the other; an edge electrode has only one, which makes the difference one-sided.
    """
    shape = list(pairs.shape)
    shape[axis] += 1
    out = np.zeros(shape, dtype=pairs.dtype)
    head = [slice(None)] * pairs.ndim
    tail = [slice(None)] * pairs.ndim
    head[axis] = slice(None, -1)
    tail[axis] = slice(1, None)
    out[tuple(head)] += pairs
    out[tuple(tail)] += pairs
    return out


def _directionality(gx: np.ndarray, gy: np.ndarray, valid: np.ndarray, floor: float) -> np.ndarray:
    """PGD: ``|mean gradient| / mean |gradient|`` over the valid electrodes of each frame.

    1 when every gradient points the same way (a plane wave), near 0 for disordered phase or
    gradients that cancel (radial and rotating waves). A frame whose mean gradient magnitude
    is below ``floor`` (rad/m; a flat or perfectly synchronous signal, where only rounding is
    left) has PGD 0: it shows no direction.
    """
    weight = valid.astype(np.float64)
    norm = np.einsum("tij,ij->t", np.hypot(gx, gy), weight)
    resultant = np.hypot(np.einsum("tij,ij->t", gx, weight), np.einsum("tij,ij->t", gy, weight))
    enough = norm > floor * max(float(weight.sum()), 1.0)
    return np.divide(resultant, norm, out=np.zeros_like(norm), where=enough)
