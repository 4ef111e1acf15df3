"""Phase gradients by complex multiplication: no phase is ever unwrapped.

The phase difference between two electrodes is the angle of ``z_b * conj(z_a)``, which is
correct modulo 2π without unwrapping as long as neighbours differ by less than π (a wavelength
longer than two pitches, 1 mm on the rig). Dead channels hold ``z = 0``, so every product that
touches one is 0 and drops out of every sum below; no mask is applied twice.

The per-electrode gradients (for the PGD) come from neighbours. The array's mean gradient comes
from electrodes far apart: the products of all pairs ``d`` electrodes apart along an axis are
summed, for a chain of distances ``1, 4, 16, ...`` up to most of the array. A background that
is correlated over a few electrodes adds a nearly real, positive term to every short-distance
product and so shrinks its angle (by ~10 % at 0 dB in a narrow band, more in a wide one); at a
long distance that term is gone, and the same phase noise divided by a longer distance is a
smaller gradient error (on the bench, the longest distance halved the speed error of fast
waves, whose phase changes little from one electrode to the next). The angle of a long-distance
product is ambiguous by multiples of 2π / d, so each link of the chain only measures the small
angle left after the previous link's gradient is multiplied out (``S_d exp(-i k d)``): every
step is still an angle of a product, and 4x steps leave a margin of π / 4 for the previous
link's error (an error of 25 % at the slowest, 2.5-pitch wavelength the generator makes).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

_PHASE_EPS = 1e-5
"""Phase steps below this (rad) are rounding error and count as zero. Even at 40 Hz a real
step this small would mean a speed above 10 km/s: only zero-lag synchrony (a common-mode
artefact, volume conduction) produces it, and it must not look like a perfectly aligned wave."""
_CHAIN_RATIO = 4
"""Each distance in the chain of the mean gradient is this many times the previous one."""
_MAX_LINK_ANGLE = np.pi / 2
"""Largest angle a link of the chain may leave, once the step found so far is multiplied out,
where the neighbours' own step is small (:data:`_MAX_NEAR_STEP`): twice the margin the chain
is built with (π / 4, an error of 25 % in the previous link). A larger one says that
electrodes far apart disagree with the near gradient, which no plane wave does: a phase
reversal (a dipole under the array, a standing wave) is in phase on either side of a line and
in anti-phase across it, so its neighbours show almost no step while its long-distance
products point the other way. Such a frame's PGD is 0.

A 10 Hz reversal at 10 dB over a 1/f background used to pass the policy's PGD and speed checks
on 8 consecutive predicted frames in 14-27 of 99 blocks (``bench.benchmarks.wave_accuracy``:
a reversal across the middle of the columns or rows, off centre, a standing half
wavelength), in a direction of either sign along its axis; now in none."""
_MIN_LINK_COHERENCE = 0.3
"""Smallest coherence ``|sum of products| / sum of |products|`` a link of the chain may have
where the neighbours' step is small (:data:`_MAX_NEAR_STEP`). A plane wave's products at any
distance share one angle, so only the background lowers it (0.58 at the least, 0.85 mostly,
in frames of plane waves at 0 dB that pass the policy). A standing wave whose nodes lie inside
the array has products of either sign at a quarter of its wavelength, which cancel: the
link's angle is then the background's, anything up to ±π / 2 gets past
:data:`_MAX_LINK_ANGLE`, and the next, longer link locks the step onto a multiple of
``2π / d``. A 10 Hz standing wave 8 mm long across the columns at 10 dB (coherence 0.08-0.18
at 4 pitches) read 0.08 m/s (its wavelength x its frequency) with PGD >= 0.6 and passed the
policy's PGD and speed checks on 8 consecutive predicted frames in 10-24 of 96 blocks; now in
none. Plane waves of 4-30 Hz at 0.05-1 m/s, sine or sharp, at 0 and 10 dB, lose at most
0.005 of their frames with PGD >= 0.6 (0.5 would lose 0.034)."""
_MAX_NEAR_STEP = np.pi / 32
"""The checks above apply only where the neighbours' step (rad per pitch) is below this. A
slow wave's far links multiply its near step's error by their distance and leave large angles
by chance: gated at π / 2 alone, a sharp-edged 20 Hz wave at 0.1 m/s at 0 dB kept 61 % of its
frames with PGD >= 0.6 instead of all, and a 30 Hz one at 0.05 m/s 23 % instead of 91 %. At
this gate, plane waves of 4-30 Hz at 0.05-1 m/s, sine or sharp, at 0 and 10 dB, lose at most
0.02 of those frames (mean 0.606 before and after), while no reversal passes at 10 dB."""

_MAX_FAR_TO_NEAR = 2.0
"""Largest ratio of the chain's mean phase step (rad per pitch, both axes together) to the
neighbours' own where that is small (:data:`_MAX_NEAR_STEP`); a larger one makes the frame's
PGD 0. A plane wave's phase steps as much between neighbours as per pitch between electrodes
far apart: the far links only take out the background's shrinkage of the near step (ratios
of 0.93-1.26, 1st-99th percentile, and at most 1.95 in frames of plane waves of 4-30 Hz at
0.05-1 m/s, sine or sharp, at 0 and 10 dB with PGD >= 0.6). A standing wave whose node lies
near the array's edge has no reversal inside the array to contradict; but beside its node the
wave is weak and the spatially correlated background's phase shows through, so the phase
changes there and hardly where the wave is strong (its phase gradient follows its amplitude
gradient, which no travelling wave's does; over spatially white noise, or none, the same wave
passed in no block). The neighbours' products, weighted by amplitude, are the strong
part's and show a small step; the far pairs, from the weak part to the strong, read the
whole change: ratios of 1.8-37 (5th-99th percentile), 4.5 at the median. A 10 Hz standing
wave 20 mm long at 10 dB, its node a pitch inside an edge or a corner, passed the policy's
PGD and speed checks on 8 consecutive predicted frames in 3-8 of 23 blocks; now in none
(``test_a_standing_wave_with_its_node_near_the_edge_is_not_a_travelling_wave``). Plane waves
of 4-30 Hz at 0.05-1 m/s, sine or sharp, at 0 and 10 dB (80 conditions, 3 seeds each) keep
their share of frames with PGD >= 0.6 (0.6720 before, 0.6719 after; one condition, 4 Hz at
0.1 m/s at 0 dB, loses 0.009), their blocks passing and their speed errors; radial and
rotating waves keep their labels. Over 17 node positions near and inside the edges, along
the rows, columns and diagonal, 3 seeds each, 171 of 3519 blocks passed before, 6 after (0-2
of 23 per case: a node on an edge row or beside a corner, whose phase change the neighbours
see nearly as much as the far pairs)."""


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
        (T,) phase-gradient directionality in [0, 1]; 0 where the chain's far links
        contradict a small near step (:data:`_MAX_LINK_ANGLE`), their products cancel
        (:data:`_MIN_LINK_COHERENCE`) or they find a step several times the near one
        (:data:`_MAX_FAR_TO_NEAR`).
    """

    gradient: np.ndarray
    omega: np.ndarray
    pgd: np.ndarray


def phase_gradients(
    z: np.ndarray,
    pitch_m: float,
    fs: float,
    valid: np.ndarray,
    chains: tuple[tuple[int, ...], tuple[int, ...]] = ((1,), (1,)),
) -> PhaseGradients:
    """Spatial and temporal phase derivatives of the analytic signal ``z`` (T, rows, cols).

    ``z`` must be 0 on dead channels. At each electrode the derivative along an axis is the
    angle of the sum of the products with both neighbours (a central difference, weighted by
    amplitude), or with the one live neighbour (one-sided, at edges and next to dead channels).
    ``valid`` (rows, cols) marks electrodes whose gradient has both components; only these
    count in the PGD.

    The frame's mean gradient along x (y) comes from the products of electrodes ``d`` columns
    (rows) apart summed over the array, for the distances of ``chains[0]`` (``chains[1]``),
    from :func:`baseline_chain`; ``(1,)`` is the neighbours' products alone. Summing products
    weights each pair by signal power: noisy, low-amplitude electrodes count less than in a
    plain mean of phase differences, which matters at low SNR.
    """
    zc = z.conj()
    across, cx = _neighbour_products(z, zc, axis=2)  # (T, rows, cols - 1), (T, rows, cols)
    down, cy = _neighbour_products(z, zc, axis=1)  # (T, rows - 1, cols), (T, rows, cols)
    gx = _angle(cx) / pitch_m
    gy = _angle(cy) / pitch_m

    mean_x, near_x, contradicted_x = _chained(z, zc, across, chains[0], axis=2)
    mean_y, near_y, contradicted_y = _chained(z, zc, down, chains[1], axis=1)
    pgd = _directionality(gx, gy, valid, _PHASE_EPS / pitch_m)
    near = np.hypot(near_x, near_y)
    outran = (near < _MAX_NEAR_STEP) & (np.hypot(mean_x, mean_y) > _MAX_FAR_TO_NEAR * near)
    pgd[contradicted_x | contradicted_y | outran] = 0.0

    step = _sum_frames(z[1:] * zc[:-1])  # (T - 1,)
    both = np.empty(z.shape[0], dtype=np.complex128)
    both[1:-1] = step[1:] + step[:-1]
    both[0], both[-1] = step[0], step[-1]
    omega = _angle(both) * fs
    gradient = np.stack([mean_x, mean_y], axis=1) / pitch_m
    return PhaseGradients(gradient=gradient, omega=omega, pgd=pgd)


def baseline_chain(n: int, span: float) -> tuple[int, ...]:
    """Distances (electrodes) for the mean gradient along an axis of ``n`` electrodes.

    ``1, 4, 16, ...`` while below the longest, ``round(span * (n - 1))``, which ends the chain;
    ``span`` 0 gives ``(1,)``, the neighbours alone.
    """
    longest = max(1, round(span * (n - 1)))
    chain = [1]
    while chain[-1] * _CHAIN_RATIO < longest:
        chain.append(chain[-1] * _CHAIN_RATIO)
    if chain[-1] != longest:
        chain.append(longest)
    return tuple(chain)


def _chained(
    z: np.ndarray, zc: np.ndarray, neighbours: np.ndarray, chain: tuple[int, ...], axis: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean phase step per electrode (rad) along ``axis``, refined along ``chain``, the
    neighbours' own step, and whether a link contradicted a small near step
    (:data:`_MAX_LINK_ANGLE`) or had products that cancel (:data:`_MIN_LINK_COHERENCE`);
    all (T,).

    ``zc`` is ``z.conj()``, ``neighbours`` the distance-1 products. Each later distance ``d``
    contributes the angle of its summed products once the step found so far is multiplied
    out, divided by ``d``; a distance with no live pair sums to 0 and leaves the step as it
    was (and its coherence, of nothing, counts as 1).
    """
    neighbours_step = step = _angle(_sum_frames(neighbours))
    disagreement = np.zeros_like(step)
    coherence = np.ones_like(step)
    for d in chain[1:]:
        far = [slice(None)] * 3
        near = [slice(None)] * 3
        far[axis] = slice(d, None)
        near[axis] = slice(None, -d)
        pairs = z[tuple(far)] * zc[tuple(near)]
        products = _sum_frames(pairs)
        power = np.abs(pairs).reshape(pairs.shape[0], -1).sum(axis=1)
        link = np.divide(np.abs(products), power, out=np.ones_like(power), where=power > 0)
        np.minimum(coherence, link, out=coherence)
        left = _angle(products * np.exp(-1j * d * step))
        np.maximum(disagreement, np.abs(left), out=disagreement)
        step = step + left / d
    broken = (disagreement > _MAX_LINK_ANGLE) | (coherence < _MIN_LINK_COHERENCE)
    contradicted = broken & (np.abs(neighbours_step) < _MAX_NEAR_STEP)
    return np.where(np.abs(step) < _PHASE_EPS, 0.0, step), neighbours_step, contradicted


def _angle(products: np.ndarray) -> np.ndarray:
    """``np.angle``, and 0 where ``products`` is exactly 0 (no live pair, or a channel whose
    signal is exactly 0: a flat one not yet masked).

    Such a zero is a product or sum of zeros whose real and imaginary parts carry signs
    (``0 * -0.5`` is ``-0.0``), and ``np.angle(complex(-0.0, 0.0))`` is π: a distance with no
    live pair added ±π / d to the mean phase step, and a flat channel ±π / pitch to its own
    gradient. Adding 0 turns ``-0.0`` into ``+0.0`` and leaves every other value as it is.
    """
    return np.angle(products + 0)


def _sum_frames(products: np.ndarray) -> np.ndarray:
    """(T,) complex128 sums of (T, ...) complex64 products over everything but time.

    Summed in single precision (pairwise, so a few hundred terms lose nothing that matters
    next to ``_PHASE_EPS``), then widened: a widening sum casts every term and costs more.
    """
    return products.reshape(products.shape[0], -1).sum(axis=1).astype(np.complex128)


def gradient_valid(live: np.ndarray) -> np.ndarray:
    """(rows, cols) electrodes that are live and have a live neighbour along both axes."""
    pad_x = np.pad(live, ((0, 0), (1, 1)))
    pad_y = np.pad(live, ((1, 1), (0, 0)))
    has_x = pad_x[:, :-2] | pad_x[:, 2:]
    has_y = pad_y[:-2, :] | pad_y[2:, :]
    return live & has_x & has_y


def _neighbour_products(z: np.ndarray, zc: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """Products of neighbours along ``axis`` and, per electrode, the sum of the two beside it.

    Pairs lie between electrodes, so electrode ``i`` has pair ``i - 1`` on one side and pair
    ``i`` on the other; an edge electrode has only one, which makes the difference one-sided.
    The pairs are written between zeros, one beyond each edge: then an electrode's two pairs
    are adjacent, and one addition over the whole flat buffer, shifted by one step along
    ``axis``, gives every sum (short strided runs cost more than the arithmetic).
    """
    n = z.shape[axis]
    shape = list(z.shape)
    shape[axis] = n + 1
    padded = np.zeros(shape, dtype=np.result_type(z, zc))
    pairs = _slab(padded, 1, n, axis)
    np.multiply(_slab(z, 1, n, axis), _slab(zc, 0, n - 1, axis), out=pairs)
    step = padded.strides[axis] // padded.itemsize
    flat = padded.reshape(-1)
    sides = np.empty_like(padded)
    np.add(flat[:-step], flat[step:], out=sides.reshape(-1)[:-step])
    return pairs, _slab(sides, 0, n, axis)


def _slab(a: np.ndarray, start: int, stop: int, axis: int) -> np.ndarray:
    """View of ``a`` with indices ``start:stop`` along ``axis``."""
    index = [slice(None)] * a.ndim
    index[axis] = slice(start, stop)
    return a[tuple(index)]


def _directionality(gx: np.ndarray, gy: np.ndarray, valid: np.ndarray, floor: float) -> np.ndarray:
    """PGD: ``|mean gradient| / mean |gradient|`` over the valid electrodes of each frame.

    1 when every gradient points the same way (a plane wave), near 0 for disordered phase or
    gradients that cancel (radial and rotating waves). A frame whose mean gradient magnitude
    is below ``floor`` (rad/m; a flat or perfectly synchronous signal, where only rounding is
    left) has PGD 0: it shows no direction.
    """
    t = gx.shape[0]
    # Sums as matrix-vector products in the gradients' own precision: a mixed-precision
    # einsum casts every term and cost more than the rest of the PGD.
    weight = valid.ravel().astype(gx.dtype)
    # sqrt of the sum of squares, not hypot: no overflow is possible at phase gradients, and
    # single-precision hypot costs several times more.
    norm = (np.sqrt(gx * gx + gy * gy).reshape(t, -1) @ weight).astype(np.float64)
    resultant = np.hypot(gx.reshape(t, -1) @ weight, gy.reshape(t, -1) @ weight).astype(np.float64)
    enough = norm > floor * max(float(np.count_nonzero(valid)), 1.0)
    pgd = np.divide(resultant, norm, out=np.zeros_like(norm), where=enough)
    return np.minimum(pgd, 1.0)  # |sum| <= sum of |.|, but not always after rounding
