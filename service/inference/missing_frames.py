"""What to feed a model when its window has frames the stream never delivered.

The ingestor fills each missing frame with the last frame received before it (marked invalid),
so ``hold`` is simply the window as it is. ``interpolate`` replaces each run of missing frames
with a straight line between the valid frames either side; a run at the newest end has no
later frame and keeps holding (a predictor must never look at data that has not arrived).
``refuse`` skips the window. Any policy refuses a window with more than ``max_missing``
missing frames: past that, the model would mostly see invented data.

``irregular`` invents nothing: it feeds the last ``past_frames`` frames actually received,
reaching back up to ``max_missing`` frames further, with their true times
(:func:`received_frames`), to a model that takes irregularly sampled input (its metadata says
``irregular``); the model still predicts the frames after the newest nominal one.
"""

from __future__ import annotations

from typing import Literal, get_args

import numpy as np

MissingFramePolicy = Literal["hold", "interpolate", "refuse", "irregular"]
"""What to do with a window that has missing frames ([scheduler] missing_frames)."""
MISSING_FRAME_POLICIES: tuple[str, ...] = get_args(MissingFramePolicy)
IRREGULAR = "irregular"


def prepare_window(
    frames: np.ndarray, valid: np.ndarray, policy: str, max_missing: int
) -> tuple[np.ndarray | None, str | None]:
    """The frames to predict from, or None and the reason the window is refused.

    Parameters
    ----------
    frames
        (T, rows, cols) float32, missing frames already holding the last received values.
    valid
        (T,) bool, False where the frame was missing.
    policy
        One of :data:`MISSING_FRAME_POLICIES`.
    max_missing
        Most missing frames accepted in one window.
    """
    if policy not in MISSING_FRAME_POLICIES or policy == IRREGULAR:
        fixed = tuple(p for p in MISSING_FRAME_POLICIES if p != IRREGULAR)
        raise ValueError(f"'policy' must be one of {fixed}, got {policy!r}")
    missing = int(valid.size - np.count_nonzero(valid))
    if missing == 0:
        return frames, None
    if policy == "refuse":
        return None, f"{missing} missing frame(s) in the window and policy 'refuse'"
    if missing > max_missing:
        return None, f"{missing} missing frames in the window > max_missing_frames {max_missing}"
    if not valid.any():
        return None, "every frame of the window is missing"
    if policy == "hold":
        return frames, None
    return _interpolate(frames, valid), None


def _interpolate(frames: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Linear in time between valid neighbours; ends hold the nearest valid frame."""
    out = frames.copy()
    known = np.flatnonzero(valid)
    gaps = np.flatnonzero(~valid)
    after = np.searchsorted(known, gaps)  # index into known of the first valid frame after
    interior = (after > 0) & (after < known.size)
    left = known[np.maximum(after - 1, 0)]
    right = known[np.minimum(after, known.size - 1)]
    weight = np.where(interior, (gaps - left) / np.maximum(right - left, 1), 0.0)
    weight = weight.astype(np.float32)[:, None, None]
    source_left = np.where(after > 0, left, right)  # a leading run copies the first valid
    out[gaps] = (1 - weight) * frames[source_left] + weight * frames[right]
    return out


def received_frames(
    frames: np.ndarray,
    valid: np.ndarray,
    timestamps: np.ndarray,
    past_frames: int,
    sample_rate_hz: float,
) -> tuple[np.ndarray | None, np.ndarray | None, str | None]:
    """The newest ``past_frames`` received frames and their times, or the reason there are
    not enough.

    ``frames``, ``valid`` and ``timestamps`` cover the newest nominal frames (the last one is
    the newest nominal frame, received or not), ``past_frames`` plus however many missing
    frames are tolerated. Times are in frame periods relative to the newest nominal frame's
    time, from the LSL timestamps (so jitter is kept): ``-(past_frames - 1), ..., 0`` when
    nothing was dropped. Returns (frames (past_frames, rows, cols), times (past_frames,)
    float32, None) or (None, None, reason).
    """
    received = np.flatnonzero(valid)
    if received.size < past_frames:
        span = valid.size
        return (
            None,
            None,
            (
                f"{received.size} frames received in the newest {span} < {past_frames} "
                f"(more than {span - past_frames} missing) and policy 'irregular'"
            ),
        )
    chosen = received[-past_frames:]
    times = ((timestamps[chosen] - timestamps[-1]) * sample_rate_hz).astype(np.float32)
    if not times_in_order(times):
        # A model divides by the gaps between these times: refuse rather than feed it a zero.
        return None, None, "the received frames' timestamps are not strictly increasing"
    return frames[chosen], times, None


def times_in_order(times: np.ndarray) -> bool:
    """Whether past frames' times (frame periods before the newest nominal frame) are what an
    irregular model may be fed: strictly increasing, the newest at or before 0."""
    return not (times[-1] > 0 or np.any(np.diff(times) <= 0))


def on_frame_grid(frames: np.ndarray, past_times: np.ndarray) -> tuple[np.ndarray, int]:
    """Received ``frames`` at ``past_times`` (:func:`received_frames`) put back on the nominal
    frame grid, from the oldest to the newest received, each frame missing between them holding
    the one before it (as ``hold`` feeds it); and how many nominal frames came after the newest
    received. For what forecasts frame by frame from the window (the live AR baseline): fed the
    received frames as if consecutive, it forecast from the newest received as if it were the
    newest nominal frame, as many frames early as were missing at the end."""
    slots = np.rint(past_times).astype(np.int64)
    late = int(-slots[-1])
    index = slots - slots[0]
    held = np.zeros(int(index[-1]) + 1, dtype=np.int64)
    held[index] = np.arange(index.size)
    grid = frames[np.maximum.accumulate(held)]  # each slot: the newest frame at or before it
    return grid, late
