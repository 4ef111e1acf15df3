"""Frames with NaN or infinite values (an amplifier fault): which stay data, and what they hold.

A broken contact sends NaN on its channel in every frame. Such a frame is still data: each
non-finite value is held at its channel's last finite value, so the channel is flat, and the
wave stage's dead-channel rule (``service.core.live_channels``) masks it. Only a frame with more
than ``max_fraction`` of its channels non-finite is missing (a connector off, an amplifier
reset; the missing-frame policy decides what the model gets): it holds the whole frame before
it, as a gap's placeholder does. One rule for the ingestor and the replay's timeline, so a
replay serves what the daemon serves; either way every frame leaves here finite, as a model
needs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MAX_NON_FINITE_FRACTION = 0.1
"""Default of ``[ingest] max_non_finite_fraction``: a frame with more than a tenth of its
channels NaN or infinite is missing. Held channels are data the model reads but nobody
measured, and the dead-channel rule measures each channel against the median channel's
spread, which a minority of flat channels leaves alone; a tenth (36 of 360 electrodes) covers
a few broken contacts, while more is a connector or amplifier fault."""

_BLOCK_FRAMES = 4096
"""Frames held per step: bounds the index arrays of a long recording to a few MB."""


@dataclass(frozen=True, eq=False)
class HeldValues:
    """What :func:`hold_non_finite` found.

    Attributes
    ----------
    valid
        (N,) bool, False for the frames kept as missing (too many non-finite channels).
    held
        (rows, cols) int64: per channel, the frames kept as data in which its value was held.
    newest
        (rows, cols) bool: the channels held in the last frame, none where that frame is kept
        as missing (a connector off is frames missing, not hundreds of held electrodes).
    """

    valid: np.ndarray
    held: np.ndarray
    newest: np.ndarray


def kept_as_data(non_finite: np.ndarray, max_fraction: float) -> np.ndarray:
    """(N,) bool: which frames stay data, given where their values are not finite
    (``non_finite``, (N, rows, cols) bool): those with at most ``max_fraction`` of their
    channels non-finite."""
    flat = non_finite.reshape(non_finite.shape[0], -1)
    return np.count_nonzero(flat, axis=1) / flat.shape[1] <= max_fraction


def hold_non_finite(
    frames: np.ndarray, previous_frame: np.ndarray | None, max_fraction: float
) -> HeldValues:
    """Replace, in place, the non-finite values of ``frames`` (N, rows, cols): in a frame kept
    as data each by its channel's last finite value, a frame kept as missing wholly by the
    frame before it; before the first frame, ``previous_frame`` (finite; zeros without one).
    """
    n = frames.shape[0]
    valid = np.empty(n, dtype=np.bool_)
    held = np.zeros(frames.shape[1:], dtype=np.int64)
    newest = np.zeros(frames.shape[1:], dtype=np.bool_)
    before = np.zeros(frames.shape[1:], frames.dtype) if previous_frame is None else previous_frame
    for start in range(0, n, _BLOCK_FRAMES):
        block = frames[start : start + _BLOCK_FRAMES]
        bad = ~np.isfinite(block)
        kept = kept_as_data(bad, max_fraction)
        valid[start : start + block.shape[0]] = kept
        held += np.count_nonzero(bad & kept[:, None, None], axis=0)
        _hold(block, bad, kept, before)
        before, newest = block[-1], bad[-1] & kept[-1]
    return HeldValues(valid, held, newest)


def _hold(block: np.ndarray, bad: np.ndarray, kept: np.ndarray, before: np.ndarray) -> None:
    """In ``block``, each ``bad`` value of a ``kept`` frame takes its channel's last value in a
    kept frame that is not bad, then each frame not kept the whole last kept frame; ``before``
    where the block has none. Only the channels with a bad value are touched (a broken
    contact is one column, not the whole block)."""
    rows = np.flatnonzero(kept)
    r, c = np.nonzero(bad[rows].any(axis=0))
    if r.size:
        index = rows[:, None]
        values = block[index, r, c]
        source = np.where(bad[index, r, c], -1, np.arange(rows.size)[:, None])
        np.maximum.accumulate(source, axis=0, out=source)
        last = np.take_along_axis(values, np.maximum(source, 0), axis=0)
        block[index, r, c] = np.where(source >= 0, last, before[r, c])
    missing = np.flatnonzero(~kept)
    if missing.size:
        last_kept = np.maximum.accumulate(np.where(kept, np.arange(kept.size), -1))[missing]
        found = (last_kept >= 0)[:, None, None]
        block[missing] = np.where(found, block[np.maximum(last_kept, 0)], before)
