"""Find dropped samples from timestamps and fill them with marked placeholder frames.

LSL timestamps jitter, so a gap is only declared when consecutive samples are more than 1.5
nominal periods apart; the number of missing frames is then counted from the nominal rate.
The common case (no gap, no backward step) is recognised by :func:`is_regular` in plain Python:
chunks are a few samples long, where each numpy call costs more than the arithmetic.
"""

from __future__ import annotations

import numpy as np

GAP_THRESHOLD_PERIODS = 1.5
MAX_GAP_FRAMES = 2**40
"""A gap is counted as at most this many frames (about 125 years at 277.78 Hz): a source
clock that jumps further (garbage timestamps) would otherwise be cast past int64 and wrap."""


def is_regular(previous_timestamp: float | None, timestamps: list[float], period: float) -> bool:
    """Whether every step (from the previous chunk's last sample on) is in (0, 1.5 periods]."""
    limit = GAP_THRESHOLD_PERIODS * period
    before = timestamps[0] - period if previous_timestamp is None else previous_timestamp
    for timestamp in timestamps:
        if not 0.0 < timestamp - before <= limit:
            return False
        before = timestamp
    return True


def timestamp_steps(
    previous_timestamp: float | None, timestamps: np.ndarray, period: float, out: np.ndarray
) -> np.ndarray:
    """Time from each sample's predecessor to it, into ``out`` (same length as ``timestamps``).

    The first sample of a stream has no predecessor and gets one nominal ``period``.
    """
    out[0] = period if previous_timestamp is None else timestamps[0] - previous_timestamp
    np.subtract(timestamps[1:], timestamps[:-1], out=out[1:])
    return out


def find_gaps(steps: np.ndarray, period: float) -> tuple[np.ndarray, np.ndarray]:
    """Gaps in a step array from :func:`timestamp_steps`.

    Returns
    -------
    positions
        Index ``i`` of each sample that follows a gap (the gap lies before sample ``i``).
    missing
        Number of frames missing in each gap (>= 1).
    """
    at = np.flatnonzero(steps > GAP_THRESHOLD_PERIODS * period)
    frames = np.minimum(np.rint(steps[at] / period), MAX_GAP_FRAMES + 1)
    missing = np.maximum(frames.astype(np.int64) - 1, 1)
    return at, missing


def fill_gaps(
    frames: np.ndarray,
    timestamps: np.ndarray,
    positions: np.ndarray,
    missing: np.ndarray,
    *,
    previous_frame: np.ndarray,
    previous_timestamp: float | None,
    period: float,
    max_fill: int,
    valid: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Insert placeholder frames where samples are missing.

    A placeholder repeats the last frame received before the gap (so downstream filters see no
    artificial step) at its nominal timestamp, and is marked invalid. At most ``max_fill``
    placeholders are inserted per gap (the newest ones, nearest the data that follows): a gap
    longer than the ring buffer only needs to flush it. ``valid`` marks the frames given (None:
    all valid).

    Returns the frames, timestamps and validity mask with placeholders inserted.
    """
    inserted = np.minimum(missing, max_fill)
    total = frames.shape[0] + int(inserted.sum())
    out_frames = np.empty((total, *frames.shape[1:]), dtype=frames.dtype)
    out_timestamps = np.empty(total, dtype=np.float64)
    out_valid = np.ones(total, dtype=np.bool_)
    if valid is None:
        valid = np.ones(frames.shape[0], dtype=np.bool_)
    src = dst = 0
    for position, n_missing, n_insert in zip(positions, missing, inserted, strict=True):
        real = position - src
        out_frames[dst : dst + real] = frames[src:position]
        out_timestamps[dst : dst + real] = timestamps[src:position]
        out_valid[dst : dst + real] = valid[src:position]
        dst += real
        hold = frames[position - 1] if position > 0 else previous_frame
        before = timestamps[position - 1] if position > 0 else previous_timestamp
        steps = np.arange(n_missing - n_insert + 1, n_missing + 1)
        out_frames[dst : dst + n_insert] = hold
        out_timestamps[dst : dst + n_insert] = before + steps * period
        out_valid[dst : dst + n_insert] = False
        dst += n_insert
        src = position
    out_frames[dst:] = frames[src:]
    out_timestamps[dst:] = timestamps[src:]
    out_valid[dst:] = valid[src:]
    return out_frames, out_timestamps, out_valid


def placed_at(n: int, positions: np.ndarray, missing: np.ndarray, max_fill: int) -> np.ndarray:
    """Where each of the ``n`` frames given to :func:`fill_gaps` (with these ``positions``,
    ``missing`` and ``max_fill``) lands in its output: after the placeholders inserted before
    it. What else travels with the frames (the values held, their source) is placed by it."""
    inserted = np.zeros(n, dtype=np.int64)
    inserted[positions] = np.minimum(missing, max_fill)
    return np.arange(n) + np.cumsum(inserted)


def hold_before(frames: np.ndarray, blanked: np.ndarray, before: np.ndarray | None) -> np.ndarray:
    """``frames`` (n, rows, cols) with each ``blanked`` one replaced by the nearest frame before
    it that is not: ``before`` (the frame preceding them all) where none in ``frames`` is, and
    zeros where there is none at all (nothing was received before it). A copy. How the ring
    holds frames blanked as stimulation artefact, and how a replay holds them the same way."""
    index = np.arange(frames.shape[0])
    source = np.maximum.accumulate(np.where(blanked, -1, index))
    held = frames[np.maximum(source, 0)]
    first = source < 0
    held[first] = 0.0 if before is None else before
    return held
