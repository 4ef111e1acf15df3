"""Per-electrode robust statistics of the recent past: the input scaling of a robust-online model.

A model trained on one rig's normalisation (fitted once, frozen into the file) sees every input
shifted on a rig with other gains or noise. A robust-online model instead sees each electrode
centred on its median and scaled by its median absolute deviation over the last ``window``
frames, refreshed every ``update`` frames: multiply the input by a gain g and add an offset c,
and the model sees the same numbers, so its µV output is ``g * prediction + c``.

The daemon (``service.inference.scale_updater``), the fast replay and training
(``models.data``) all use :func:`causal_stats`' schedule, so training sees what serving sees:
the statistics behind the window whose newest frame is ``t`` are those of the frames before
the last multiple of ``update`` at or below ``t + 1``, never a later frame.

Scale = ``SCALE_SIGMAS`` x 1.4826 x MAD: on Gaussian data 1.4826 x MAD estimates the standard
deviation, so this matches the fixed normalisation's "4 s.d." while one artefact or a burst
shorter than half the window barely moves it.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from service.core.checks import check_array, check_int, check_positive, check_type

SCALE_SIGMAS = 4.0
"""Scale in (robust) standard deviations, as the fixed normalisation's (``models.data``)."""
MAD_TO_SIGMA = 1.4826
"""1 / Phi^-1(3/4): the standard deviation of a Gaussian per unit of its MAD."""
SCALE_FLOOR_FRACTION = 1e-3
"""A scale below this fraction of the median electrode's is raised to it: a dead (flat) channel
gets a finite scale instead of a division by ~0 (as ``models.data.STD_FLOOR_FRACTION``)."""
FIXED = "fixed"
"""Normalisation kind of a model fitted once on its training split (implied when absent)."""
ROBUST_ONLINE = "robust-online"
"""Normalisation kind of a model fed :func:`robust_stats` of the recent past."""
NORMALISATION_KINDS = (FIXED, ROBUST_ONLINE)
MAX_STAT_FRAMES = 2048
"""Frames a refresh takes its statistics over at most: a longer window is thinned to every
k-th frame back from the newest. A 30 s window (8,334 frames) then costs ~20 ms instead of
~200 ms per refresh, with the median's standard error still ~3 % of a standard deviation."""

Stats = tuple[np.ndarray, np.ndarray]
"""(centre, scale), each (rows, cols) float32, scale > 0."""


@dataclass(frozen=True)
class RobustScale:
    """The schedule of a robust-online normalisation, as stored in a model's metadata.

    Attributes
    ----------
    window_s
        Seconds of past frames the median and MAD are taken over.
    update_s
        Seconds between refreshes (at most ``window_s``).
    min_s
        Seconds of valid frames the first statistics need; until then the predictor is not
        ready. Later refreshes with fewer valid frames (a long dropout) keep the previous
        statistics.
    """

    window_s: float = 30.0
    update_s: float = 1.0
    min_s: float = 1.0

    def __post_init__(self) -> None:
        for name in ("window_s", "update_s", "min_s"):
            check_positive(name, getattr(self, name))
        if self.update_s > self.window_s or self.min_s > self.window_s:
            raise ValueError(
                f"'update_s' and 'min_s' must be <= 'window_s' ({self.window_s!r}), "
                f"got {self.update_s!r} and {self.min_s!r}"
            )

    def frames(self, sample_rate_hz: float) -> tuple[int, int, int]:
        """(window, update, min) in frames at ``sample_rate_hz``, each >= 2 (a MAD needs 2)."""
        check_positive("sample_rate_hz", sample_rate_hz)
        return tuple(  # type: ignore[return-value]
            max(2, round(s * sample_rate_hz)) for s in (self.window_s, self.update_s, self.min_s)
        )

    def to_dict(self) -> dict[str, Any]:
        """The model metadata's ``normalisation`` entry."""
        return {
            "kind": ROBUST_ONLINE,
            "window_s": float(self.window_s),
            "update_s": float(self.update_s),
            "min_s": float(self.min_s),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RobustScale:
        """Inverse of :meth:`to_dict`; unknown or missing keys and bad values are ValueErrors."""
        check_type("normalisation", data, Mapping)
        expected = {"kind", "window_s", "update_s", "min_s"}
        if set(data) != expected or data["kind"] != ROBUST_ONLINE:
            raise ValueError(
                f"a {ROBUST_ONLINE!r} normalisation must have exactly the keys "
                f"{sorted(expected)} with kind {ROBUST_ONLINE!r}, got {dict(data)!r}"
            )
        try:
            return cls(float(data["window_s"]), float(data["update_s"]), float(data["min_s"]))
        except (TypeError, ValueError) as err:
            raise ValueError(f"normalisation {dict(data)!r} is unusable: {err}") from None


def normalisation_kind(data: Mapping[str, Any]) -> str:
    """The ``kind`` of a metadata ``normalisation`` dict (``"fixed"`` when absent: old files).

    Raises ValueError for a kind this version does not know.
    """
    check_type("normalisation", data, Mapping)
    kind = data.get("kind", FIXED)
    if kind not in NORMALISATION_KINDS:
        raise ValueError(
            f"normalisation kind must be one of {NORMALISATION_KINDS}, got {kind!r} "
            "(a model from a newer corticast?)"
        )
    return kind


def robust_stats(
    frames: np.ndarray, valid: np.ndarray | None = None, min_frames: int = 2
) -> Stats | None:
    """Per-electrode median and ``SCALE_SIGMAS`` x 1.4826 x MAD of ``frames`` (T, rows, cols).

    Over more than ``MAX_STAT_FRAMES`` frames, every k-th frame back from the newest is used.
    Frames with ``valid`` False and NaN values are ignored. Returns None when fewer than
    ``min_frames`` frames are valid or no electrode varies: there is nothing to scale by. An
    electrode with no finite value gets centre 0; every scale is floored at
    ``SCALE_FLOOR_FRACTION`` of the median electrode's.
    """
    check_array("frames", frames, ndim=3)
    check_int("min_frames", min_frames, 2)
    if valid is not None:
        check_array("valid", valid, shape=(frames.shape[0],), dtype=np.bool_)
    step = max(1, -(-frames.shape[0] // MAX_STAT_FRAMES))
    frames = frames[::-step]
    if valid is not None:
        frames = frames[valid[::-step]]
    if frames.shape[0] < min_frames:
        return None
    # (electrodes, T) in float32: the median partitions contiguous rows.
    values = np.ascontiguousarray(frames.reshape(frames.shape[0], -1).T, dtype=np.float32)
    median = np.nanmedian if np.isnan(values).any() else np.median
    with warnings.catch_warnings():  # a dead (all-NaN) electrode is handled below
        warnings.filterwarnings("ignore", "All-NaN slice", RuntimeWarning)
        centre = median(values, axis=1, keepdims=True)
        mad = median(np.abs(values - centre), axis=1)
    centre = centre[:, 0]
    live = mad[np.isfinite(mad) & (mad > 0)]
    if live.size == 0:
        return None
    spread = SCALE_SIGMAS * MAD_TO_SIGMA * mad
    floor = SCALE_SIGMAS * MAD_TO_SIGMA * SCALE_FLOOR_FRACTION * float(np.median(live))
    spread = np.where(np.isfinite(spread), np.maximum(spread, floor), floor)
    centre = np.where(np.isfinite(centre), centre, 0.0)
    shape = frames.shape[1:]
    return centre.reshape(shape).astype(np.float32), spread.reshape(shape).astype(np.float32)


@dataclass(frozen=True, eq=False)
class CausalStats:
    """The statistics a daemon would have had at every frame of a recording.

    Attributes
    ----------
    index
        (T,) int64: for frame ``t`` (the newest frame of a window), the row of ``centre`` and
        ``scale`` in use then; -1 before the first statistics exist (not ready).
    centre, scale
        (K, rows, cols) float32, one row per refresh that produced statistics.
    """

    index: np.ndarray
    centre: np.ndarray
    scale: np.ndarray

    def at(self, t: int) -> Stats | None:
        """(centre, scale) in use when frame ``t`` is the newest; None when not ready."""
        k = int(self.index[t])
        return None if k < 0 else (self.centre[k], self.scale[k])


def refresh_boundary(newest: int, update: int) -> int:
    """Frames seen by the last refresh when frame ``newest`` is the newest: the largest
    multiple of ``update`` at or below ``newest + 1``. Refreshes take the frames before it."""
    return (newest + 1) // update * update


def causal_stats(
    frames: np.ndarray,
    valid: np.ndarray | None,
    *,
    window: int,
    update: int,
    min_frames: int,
) -> CausalStats:
    """:func:`robust_stats` on the schedule a daemon follows, for every frame index.

    At each boundary ``b = update, 2 update, ...`` (frames seen), statistics are taken over
    frames ``[max(0, b - window), b)``; frame ``t`` uses the last boundary at or below
    ``t + 1`` that produced any (:func:`refresh_boundary`). No frame after ``t`` is ever used.
    """
    check_array("frames", frames, ndim=3)
    for name, value in (("window", window), ("update", update), ("min_frames", min_frames)):
        check_int(name, value, 2)
    if update > window or min_frames > window:
        raise ValueError(
            f"'update' and 'min_frames' must be <= 'window' ({window}), got {update}, {min_frames}"
        )
    n = frames.shape[0]
    index = np.full(n, -1, dtype=np.int64)
    centres, scales = [], []
    for b in range(update, n + 1, update):
        lo = max(0, b - window)
        stats = robust_stats(frames[lo:b], None if valid is None else valid[lo:b], min_frames)
        if stats is not None:
            centres.append(stats[0])
            scales.append(stats[1])
        if centres:
            index[b - 1 : b - 1 + update] = len(centres) - 1
    shape = (0, *frames.shape[1:])
    return CausalStats(
        index=index,
        centre=np.stack(centres) if centres else np.zeros(shape, dtype=np.float32),
        scale=np.stack(scales) if scales else np.ones(shape, dtype=np.float32),
    )
