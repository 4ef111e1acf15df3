"""A session laid out as the daemon's ring buffer holds it: one slot per nominal frame.

The ingestor numbers ring slots, not samples: a dropped sample becomes a placeholder slot
(the last frame held, marked invalid), so a prediction's ``input_seq`` is a slot number.
The replay lays out the whole session with the ingestor's own gap rules
(``service.core.gaps``), and blanks the stimulation artefact of each train the recording's
markers carry as the daemon's ring blanked it live, once, so every stage of the report
(scoring, ground truth, timestamps of decisions) looks frames up by the same sequence numbers
the loop published, in ``--fast`` and ``--realtime`` alike.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from bench.data.ground_truth import GroundTruth
from bench.data.session import Session
from bench.data.stimulation import INFO_KEY, blank_windows, is_opening_blank, stamped_in
from service.core.gaps import fill_gaps, find_gaps, hold_before, placed_at, timestamp_steps
from service.core.non_finite import MAX_NON_FINITE_FRACTION, hold_non_finite


@dataclass(frozen=True, eq=False)
class Timeline:
    """The session slot by slot.

    Attributes
    ----------
    frames
        (N, rows, cols) float32 µV, finite: placeholder slots, and frames with too many NaN or
        infinite values, hold the frame before; a NaN or infinite value in a frame that stays
        data holds its channel's last finite value (the ingestor's rules,
        ``service.core.non_finite``).
    times_s
        (N,) float64 seconds since the session's first sample (nominal time for placeholders).
    valid
        (N,) bool, False for placeholders, for frames with too many non-finite values, and for
        frames blanked as stimulation artefact.
    source_index
        (N,) int64 index of each slot's frame in the session, -1 for placeholders.
    sample_rate_hz
        The nominal rate the gaps were counted at.
    truth
        The session's ground truth, if any (indexed by session frame, see ``source_index``).
    held
        (rows, cols) int64: per electrode, the frames kept as data in which its NaN or
        infinite value was held.
    blanked
        (N,) bool, True for the measured frames blanked as stimulation artefact: stamped from a
        train's marker to ``blank_s`` after it, they hold the frame before, as the daemon's
        ring held them (``service.ingest.ring_buffer``).
    trains
        Stimulation trains the session's markers carry (``info["stimulation"]``).
    stream_openings
        Openings of a marker stream whose blank the markers carry (the daemon's two records
        of each: no train, but frames it blanked).
    held_values
        (N, rows, cols) bool, per slot the values held in a frame kept as data (NaN or
        infinite, holding their channel's last finite value): no measurement, so no truth to
        score a prediction on (the daemon's ring marks the same, ``Window.held``). None where
        the session held none.
    """

    frames: np.ndarray
    times_s: np.ndarray
    valid: np.ndarray
    source_index: np.ndarray
    sample_rate_hz: float
    truth: GroundTruth | None
    held: np.ndarray
    blanked: np.ndarray
    trains: int
    stream_openings: int = 0
    held_values: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.frames.shape[0])

    @property
    def duration_s(self) -> float:
        return float(self.times_s[-1]) + 1.0 / self.sample_rate_hz if len(self) else 0.0

    @property
    def missing(self) -> int:
        """Placeholder slots (samples the session lacks)."""
        return int(np.count_nonzero(self.source_index < 0))

    @property
    def non_finite(self) -> int:
        """Frames of the session with too many NaN or infinite values, kept as missing."""
        return (
            int(self.valid.size - np.count_nonzero(self.valid)) - self.missing - self.blanked_frames
        )

    @property
    def blanked_frames(self) -> int:
        """Measured frames blanked as stimulation artefact."""
        return int(np.count_nonzero(self.blanked))

    def truth_at(self, name: str) -> np.ndarray | None:
        """A ground-truth field per slot (None without truth); placeholders get NaN, False
        or -1 (for the integer pattern label)."""
        if self.truth is None:
            return None
        values = getattr(self.truth, name)
        fill = {"b": False, "i": -1}.get(values.dtype.kind, np.nan)
        out = np.full((len(self), *values.shape[1:]), fill, dtype=values.dtype)
        inside = self.source_index >= 0
        out[inside] = values[self.source_index[inside]]
        return out


def lay_out(
    session: Session,
    sample_rate_hz: float,
    max_fill: int,
    *,
    max_non_finite_fraction: float = MAX_NON_FINITE_FRACTION,
) -> Timeline:
    """The ring's view of ``session`` at the daemon's nominal rate.

    Parameters
    ----------
    session
        Frames and timestamps as recorded (dropped samples absent).
    sample_rate_hz
        The stream's nominal rate ([stream] sample_rate_hz), which the gap rule counts in.
    max_fill
        At most this many placeholders per gap, the ring's capacity, as the ingestor does.
    max_non_finite_fraction
        A frame with more of its channels NaN or infinite is missing ([ingest]
        max_non_finite_fraction); in others such values hold their channel's last finite one.

    Raises
    ------
    ValueError
        ``session.info["stimulation"]`` is not a list of markers with a finite ``time`` and
        ``blank_s``.
    """
    period = 1.0 / sample_rate_hz
    n = session.n_frames
    times = session.timestamps - session.timestamps[0]
    markers = session.info.get(INFO_KEY, [])
    windows = blank_windows(markers) - session.timestamps[0]
    openings = sum(map(is_opening_blank, markers))
    # Two records per opening (the blank before it and the one after).
    counts = (len(markers) - openings, math.ceil(openings / 2))
    steps = timestamp_steps(None, times, period, np.empty(n))
    positions, missing = find_gaps(steps, period)
    index = np.arange(n, dtype=np.int64)
    raw = session.frames
    # A NaN held, or a gap's placeholder, after a blanked frame takes it as blanked (holding
    # the frame before the train), as the ingestor writes one frame at a time while blanking.
    recorded_blank = stamped_in(times, windows)
    frames = hold_before(raw, recorded_blank, None) if recorded_blank.any() else raw
    held = np.zeros(session.grid.shape, dtype=np.int64)
    finite = np.ones(n, dtype=np.bool_)
    held_values = None
    if not np.isfinite(raw).all():  # judged, counted and held as the ingestor does
        judged = raw.copy()
        result = hold_non_finite(judged, None, max_non_finite_fraction)
        finite, held = result.valid, result.held
        held_values = ~np.isfinite(raw) & finite[:, None, None]
        if frames is raw:
            frames = judged
        else:
            hold_non_finite(frames, None, max_non_finite_fraction)
    if positions.size == 0:
        return _blanked(
            frames, times, finite, index, windows, counts, sample_rate_hz, session.truth, held,
            held_values,
        )  # fmt: skip
    common = {
        "positions": positions,
        "missing": missing,
        "previous_timestamp": None,
        "period": period,
        "max_fill": max_fill,
    }
    frames, filled_times, valid = fill_gaps(
        frames, times, previous_frame=frames[0], valid=finite, **common
    )
    source = np.full(filled_times.shape[0], -1, dtype=index.dtype)
    placed = placed_at(n, positions, missing, max_fill)
    source[placed] = index
    if held_values is not None:  # per slot: a placeholder holds none (it is missing)
        slots = np.zeros((source.shape[0], *held_values.shape[1:]), dtype=np.bool_)
        slots[placed] = held_values
        held_values = slots
    return _blanked(
        frames, filled_times, valid, source, windows, counts, sample_rate_hz, session.truth, held,
        held_values,
    )  # fmt: skip


def _blanked(
    frames: np.ndarray,
    times: np.ndarray,
    valid: np.ndarray,
    source: np.ndarray,
    windows: np.ndarray,
    counts: tuple[int, int],
    sample_rate_hz: float,
    truth: GroundTruth | None,
    held: np.ndarray,
    held_values: np.ndarray | None,
) -> Timeline:
    """The timeline with each slot stamped in a window ([start, end], inclusive) missing and
    holding the nearest slot before it outside every window (zeros at the start), as the
    ring's ``blank`` leaves it; ``counts``: the trains and the stream openings the windows
    are of."""
    blank = stamped_in(times, windows)
    if blank.any():
        frames = hold_before(frames, blank, None)
    return Timeline(
        frames=frames,
        times_s=times,
        valid=valid & ~blank,
        source_index=source,
        sample_rate_hz=float(sample_rate_hz),
        truth=truth,
        held=held,
        blanked=valid & blank,
        trains=counts[0],
        stream_openings=counts[1],
        held_values=held_values,
    )


def written_with(timeline: Timeline, slot: int) -> int:
    """The end (exclusive) of the write that brings ``slot`` into the ring: a gap's
    placeholders reach the ingestor's ring together with the frame after them, so a
    placeholder ``slot`` comes with the slots up to that frame, and a scheduler never sees a
    window end on it. Replays write the ring up to this, as the ingestor does."""
    stop = slot + 1
    while stop < len(timeline) and timeline.source_index[stop - 1] < 0:
        stop += 1
    return stop


def ring_capacity(ring_seconds: float, sample_rate_hz: float) -> int:
    """Slots in the ingestor's ring ([ingest] ring_seconds), as ``service.ingest.ingestor``
    sizes it."""
    return max(1, math.ceil(ring_seconds * sample_rate_hz))
