"""Where a predicted wave is, whether it heads for the target region, and when it gets there.

The wave is located from its envelope: electrodes whose analytic amplitude reaches the
policy's amplitude threshold are *active*, and the wave's position is their envelope-weighted
centroid. Its front is found on the envelope profile along the direction of propagation (the
mean envelope of the electrodes in each one-pitch strip across that direction): the furthest
strip whose mean reaches half the profile's peak and the threshold. Averaging across a strip
keeps the background's isolated excursions above threshold (about 1 % of electrodes at 3 s.d.)
from posing as a front far ahead of the wave. The envelope comes out of the causal band-pass
late by the filter's group delay, so the front is moved on by speed x delay before use. The
front reaches the target region when it reaches the target electrode nearest to it along the
direction of propagation; a front already past the target gives a negative lead (it arrived
that long ago). Every step is vectorised over frames, and nothing here is NaN: where the wave
cannot be located the direction error is 180° and the lead time +inf; where the front has
reached the furthest strip it can be followed in (the far side of the array, or the last strip
with enough live electrodes before a dead target region), it may be anywhere beyond, the
target's included, and the lead time is -inf (arrived, when unknown). Either way the lead-time
threshold fails.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

_MIN_STRIP = 3
"""Fewest live electrodes a strip across the direction of propagation needs to be trusted."""


@dataclass(frozen=True, eq=False)
class Arrival:
    """Per-frame geometry of the wave relative to the target region.

    Attributes
    ----------
    direction_error_deg
        (P,) angle between the direction of propagation and the direction from the wave's
        position to the target region's centre, in [0, 180].
    lead_s
        (P,) predicted arrival of the front at the target region, in seconds after the newest
        measured frame (negative: it arrived that long before); -inf where the front is in the
        furthest strip it can be followed in (it may be past the target), +inf where no
        arrival can be predicted
        (no wave located, no finite direction, or no finite positive speed).
    """

    direction_error_deg: np.ndarray
    lead_s: np.ndarray


def arrival(
    envelope: np.ndarray,
    live: np.ndarray,
    direction_deg: np.ndarray,
    speed_mps: np.ndarray,
    delay_s: np.ndarray,
    frame_time_s: np.ndarray,
    threshold_uv: float,
    positions: tuple[np.ndarray, np.ndarray],
    target: tuple[np.ndarray, np.ndarray],
    pitch_m: float,
) -> Arrival:
    """Direction error and lead time of each of P predicted frames.

    Parameters
    ----------
    envelope
        (P, rows, cols) analytic amplitude (0 on dead channels).
    live
        (rows, cols) live channels; dead ones do not dilute a strip's mean.
    direction_deg, speed_mps
        (P,) direction of propagation and phase speed.
    delay_s
        (P,) how late the envelope is (the band-pass's group delay).
    frame_time_s
        (P,) time of each frame after the newest measured frame.
    threshold_uv
        Envelope an electrode needs to count as part of the wave.
    positions
        Electrode coordinates ``(x, y)``, each (rows, cols), metres.
    target
        Target electrode coordinates ``(x, y)``, each (K,), K >= 1.
    pitch_m
        Electrode spacing: a wave centred within half of it of the target's centre has no
        direction toward it.
    """
    x, y = positions
    tx, ty = target
    # An infinite direction (WaveEstimate refuses only NaN) has no heading: no wave is
    # located on it, and its NaN unit vector would break the strips across it.
    heading = np.isfinite(direction_deg)
    theta = np.radians(np.where(heading, direction_deg, 0.0))
    ux, uy = np.cos(theta), np.sin(theta)

    active = envelope >= threshold_uv
    located = active.any(axis=(1, 2)) & heading
    weight = np.where(active, envelope, 0.0)
    total = np.where(located, weight.sum(axis=(1, 2)), 1.0)
    wave_x = np.einsum("pij,ij->p", weight, x) / total
    wave_y = np.einsum("pij,ij->p", weight, y) / total

    to_x, to_y = tx.mean() - wave_x, ty.mean() - wave_y
    apart = np.hypot(to_x, to_y)
    cosine = (ux * to_x + uy * to_y) / np.where(apart > 0, apart, 1.0)
    error = np.degrees(np.arccos(np.clip(cosine, -1.0, 1.0)))
    error = np.where(located & (apart >= 0.5 * pitch_m), error, 180.0)

    moving = np.isfinite(speed_mps) & (speed_mps > 0)
    speed = np.where(moving, speed_mps, 1.0)
    front, found, at_edge = _front(envelope, live, ux, uy, x, y, threshold_uv, pitch_m)
    front = front + speed * delay_s
    entry = (ux[:, None] * tx + uy[:, None] * ty).min(axis=1)
    gap = entry - front
    # A front in the furthest strip that can be followed may be anywhere beyond it: past a
    # target in that strip or before it, and past a target beyond it (a dead target region).
    lead = np.where(at_edge, -np.inf, frame_time_s + gap / speed)
    lead = np.where(found & moving & heading, lead, np.inf)
    return Arrival(direction_error_deg=error, lead_s=lead)


def _front(
    envelope: np.ndarray,
    live: np.ndarray,
    ux: np.ndarray,
    uy: np.ndarray,
    x: np.ndarray,
    y: np.ndarray,
    threshold_uv: float,
    pitch_m: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Furthest position along (ux, uy) whose strip mean envelope reaches the level.

    Returns the front's position along the direction (metres, half a pitch past the centre of
    its strip: between the last electrodes that reach the level and the next, which do not)
    whether any strip qualified, and whether the front is in the array's furthest usable strip
    (so it may already be beyond the array), all (P,). Strips with fewer than ``_MIN_STRIP`` live
    electrodes (the corners, on a diagonal) are ignored: their mean is as noisy as one
    electrode.
    """
    frames = envelope.shape[0]
    along = ux[:, None, None] * x + uy[:, None, None] * y  # (P, rows, cols)
    low = along.min(axis=(1, 2), keepdims=True)
    # Strips one pitch wide, centred on multiples of the pitch: along an axis each row or
    # column of electrodes is exactly one strip, whatever the rounding of its coordinate.
    strip = np.rint((along - low) / pitch_m).astype(np.int64)
    n_strips = int(strip.max()) + 1
    index = (strip + n_strips * np.arange(frames)[:, None, None])[:, live]
    total = np.bincount(index.ravel(), envelope[:, live].ravel(), minlength=frames * n_strips)
    count = np.bincount(index.ravel(), minlength=frames * n_strips)
    total = total.reshape(frames, n_strips)
    count = count.reshape(frames, n_strips)
    mean = np.where(count >= _MIN_STRIP, total / np.maximum(count, 1), 0.0)
    # Half the profile's peak marks the front: a step in amplitude comes out of the band-pass
    # reaching half its height about one group delay late, and that delay is added back.
    level = np.maximum(threshold_uv, 0.5 * mean.max(axis=1, keepdims=True))
    usable = count >= _MIN_STRIP
    hot = usable & (mean >= level)
    found = hot.any(axis=1)
    last = n_strips - 1 - np.argmax(hot[:, ::-1], axis=1)
    furthest = n_strips - 1 - np.argmax(usable[:, ::-1], axis=1)
    return low[:, 0, 0] + (last + 0.5) * pitch_m, found, last == furthest
