"""The stimulation trains a session carries, and the frames their artefact is on.

A recording made in closed loop carries the daemon's stimulation markers
(``service.core.stimulation_markers``) as ``info["stimulation"]``: a list of
``{"time": <stamp on the session's clock>, "blank_s": ..., ...}``, one per train the stimulator
may have delivered (``bench.data.session_io`` reads and writes them). The frames stamped in
``[time, time + blank_s]`` carry the train's artefact, not cortex: the daemon blanked them live,
a replay blanks them (``bench.replay.timeline``), and what learns from or scores a recording
leaves them out (:func:`without_artefact`). The daemon also records, as two announced blanks
(announcement ``UNHEARD``), the blank around each opening of another tool's marker stream: no
train, but frames it blanked all the same (a train announced before it was read is not known).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

from bench.data.session import Session
from service.core.stimulation_markers import ANNOUNCED_FORMAT, UNHEARD

INFO_KEY = "stimulation"
"""The key of ``Session.info`` that holds the markers."""
STREAMS_KEY = "stimulation_streams"
"""The key of ``Session.info`` that says, of a recording, which marker streams' trains it holds
and which it left out (another rig's), and why (``bench.data.session_io.read_xdf``)."""


def stream_named(record: dict[str, Any]) -> str:
    """An ``info[STREAMS_KEY]`` record's marker stream, as the replay's log and page name it.

    An empty source id is none (LSL's default: a daemon whose ``[stream] source_id`` was
    empty), said so rather than shown as ``''``."""
    source_id = record["source_id"]
    return f"{record['stream']!r} ({f'source id {source_id!r}' if source_id else 'no source id'})"


def blank_windows(markers: Any) -> np.ndarray:
    """(trains, 2) float64 ``[time, time + blank_s]`` of each marker, on the session's clock.

    Raises ValueError naming the entry that has no finite ``time`` and ``blank_s`` >= 0."""
    if not isinstance(markers, (list, tuple)):
        raise ValueError(
            f"'session.info[{INFO_KEY!r}]' must be a list of markers, got {type(markers).__name__}"
        )
    windows = np.empty((len(markers), 2), dtype=np.float64)
    for k, marker in enumerate(markers):
        try:
            start, length = float(marker["time"]), float(marker["blank_s"])
        except (TypeError, KeyError, ValueError):
            start = length = math.nan
        if not (math.isfinite(start) and math.isfinite(length) and length >= 0):
            raise ValueError(
                f"'session.info[{INFO_KEY!r}][{k}]' must have a finite 'time' and a finite "
                f"'blank_s' >= 0, got {marker!r}"
            )
        windows[k] = start, start + length
    return windows


def stamped_in(stamps: np.ndarray, windows: np.ndarray) -> np.ndarray:
    """(T,) bool: which of the increasing ``stamps`` lie in any of ``windows`` ((k, 2)
    ``[start, end]``, inclusive, as :func:`blank_windows` gives them)."""
    edges = np.zeros(stamps.shape[0] + 1, dtype=np.int64)
    np.add.at(edges, np.searchsorted(stamps, windows[:, 0], side="left"), 1)
    np.add.at(edges, np.searchsorted(stamps, windows[:, 1], side="right"), -1)
    return np.cumsum(edges[:-1]) > 0


def on_artefact(session: Session) -> np.ndarray:
    """(T,) bool: the frames of ``session`` stamped in a train's blanking window."""
    return stamped_in(session.timestamps, blank_windows(session.info.get(INFO_KEY, [])))


def is_opening_blank(marker: Any) -> bool:
    """Whether ``marker`` (an ``info["stimulation"]`` entry) is the daemon's record of the
    blank around its opening of a marker stream, not of a train."""
    return (
        isinstance(marker, dict)
        and marker.get("format") == ANNOUNCED_FORMAT
        and marker.get("announcement") == UNHEARD
    )


def without_artefact(session: Session) -> Session:
    """``session`` without the frames its trains' artefact is on: they become a gap in its
    timestamps, which every window, fit and score already steps over as a dropped stretch
    (no window spans it). ``info["frames_on_artefact"]`` says how many were left out, and
    ``info["frames_around_openings"]`` how many of them only for a blank around a marker
    stream's opening (no train's)."""
    inside = on_artefact(session)
    if not inside.any():
        return session
    markers = session.info.get(INFO_KEY, [])
    trains = [marker for marker in markers if not is_opening_blank(marker)]
    around = inside & ~stamped_in(session.timestamps, blank_windows(trains))
    kept = ~inside
    return dataclasses.replace(
        session,
        frames=session.frames[kept],
        timestamps=session.timestamps[kept],
        truth=None if session.truth is None else session.truth.take(kept),
        info={
            **session.info,
            "frames_on_artefact": int(np.count_nonzero(inside)),
            "frames_around_openings": int(np.count_nonzero(around)),
        },
    )
