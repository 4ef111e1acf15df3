"""Data shared by every model family and by evaluation: per-electrode normalisation, gap-free
windows, a time-ordered train/val/test split, and the (past, future) windows of a split as numpy
arrays (``models.data.SessionWindows`` serves them as tensors for training).

Frames outside the model are µV; every generator ends in tanh, so the model sees frames mapped
either by :class:`Normalisation` (kind ``"fixed"``: fitted on the training split only and stored
with the model) or by robust statistics of the recent past (kind ``"robust-online"``,
:class:`service.core.robust_scale.RobustScale`): each window normalised with the median / MAD a
daemon would have had at its newest past frame, which makes the model blind to the rig's gains
and offsets.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from itertools import pairwise
from numbers import Integral
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from bench.data.session import Session
from models._arrays import is_tensor
from service.core.checks import (
    check_array,
    check_choice,
    check_int,
    check_positive,
    check_range,
    check_type,
)
from service.core.gaps import GAP_THRESHOLD_PERIODS
from service.core.grid import HORIZON_FRAMES, RATE_TOLERANCE
from service.core.live_channels import BLOCK_FRAMES, HISTORY_S, decision_live
from service.core.robust_scale import (
    FIXED,
    CausalStats,
    RobustScale,
    causal_stats,
    normalisation_kind,
)

PAST_FRAMES = 16
"""Observed frames per window (57.6 ms at 277.78 Hz)."""
FUTURE_FRAMES = HORIZON_FRAMES
"""Predicted frames per window."""
WINDOW_FRAMES = PAST_FRAMES + FUTURE_FRAMES
SCALE_SIGMAS = 4.0
"""Normalisation scale in per-electrode standard deviations. The tanh heads can only output
values in (-1, 1), so targets must sit inside it: at 4 sigma a Gaussian electrode leaves 6e-5
of its samples outside, while typical values stay near +-0.25, where tanh is almost linear.
Heavy-tailed activity (seizures) leaves more outside: see :meth:`Normalisation.coverage`."""
STD_FLOOR_FRACTION = 1e-3
"""A standard deviation below this fraction of the median electrode's is raised to it, so a
dead (flat) channel gets a finite scale instead of a division by ~0."""
SPLITS = ("train", "val", "test")
"""Split names, in time order."""
_MOMENT_CHUNK = 65_536
"""Frames per chunk when fitting, so a long recording needs no float64 copy of itself."""
_PROVENANCE_INFO_KEYS = ("source", "generator", "seed", "config", "family", "mixture")
"""Session ``info`` entries copied into the provenance: they say where the frames came from
(and, for the generator mixture, which family and mixture seed, so held-out families are known)."""

if TYPE_CHECKING:
    from torch import Tensor

FrameArray = TypeVar("FrameArray", np.ndarray, "Tensor")


@dataclass(frozen=True, eq=False)
class Normalisation:
    """Per-electrode affine map ``(frames - mean) / scale`` between µV and model units.

    Parameters
    ----------
    mean, scale
        (rows, cols) float32; ``scale`` is ``SCALE_SIGMAS`` x the electrode's standard
        deviation (floored), all > 0. Stored as read-only copies.
    """

    mean: np.ndarray
    scale: np.ndarray

    def __post_init__(self) -> None:
        check_array("mean", self.mean, ndim=2, dtype=np.float32, finite=True)
        check_array("scale", self.scale, shape=self.mean.shape, dtype=np.float32, finite=True)
        if not np.all(self.scale > 0):
            raise ValueError(f"'scale' must be > 0 everywhere, got minimum {self.scale.min()!r}")
        for name in ("mean", "scale"):
            frozen = getattr(self, name).copy()
            frozen.flags.writeable = False
            object.__setattr__(self, name, frozen)

    @classmethod
    def fit(cls, frames: np.ndarray, valid_mask: np.ndarray | None = None) -> Normalisation:
        """Fit on training frames (T, rows, cols) µV; ``valid_mask`` (T,) bool drops frames.

        Only the training split may be passed: statistics of held-out data would leak into
        the model. Frames excluded by ``valid_mask`` (placeholders for dropped samples) need
        not be finite.
        """
        check_array("frames", frames, ndim=3)
        if valid_mask is not None:
            check_array("valid_mask", valid_mask, shape=(frames.shape[0],), dtype=np.bool_)
        count, mean, std = _moments(frames, valid_mask)
        if count < 2:
            raise ValueError(f"'frames' must hold at least 2 valid frames to fit, got {count}")
        live = std[std > 0]
        if live.size == 0:
            raise ValueError("'frames' must vary on at least one electrode, got constant frames")
        floor = STD_FLOOR_FRACTION * np.median(live)
        scale = SCALE_SIGMAS * np.maximum(std, floor)
        return cls(mean.astype(np.float32), scale.astype(np.float32))

    def normalise(self, frames: FrameArray) -> FrameArray:
        """µV -> model units; ``frames`` (..., rows, cols), numpy array or torch tensor."""
        mean, scale = self._like(frames)
        return (frames - mean) / scale

    def denormalise(self, frames: FrameArray) -> FrameArray:
        """Model units -> µV; the inverse of :meth:`normalise`."""
        mean, scale = self._like(frames)
        return frames * scale + mean

    def coverage(self, frames: np.ndarray) -> float:
        """Fraction of the values of ``frames`` (µV) that normalise into (-1, 1).

        On the training frames, ``1 - coverage`` is the fraction of targets the tanh heads
        cannot reach; report it with the model.
        """
        check_array("frames", frames)
        if frames.size == 0:
            raise ValueError(f"'frames' must not be empty, got shape {frames.shape}")
        inside = np.count_nonzero(np.abs(self.normalise(frames)) < 1)
        return inside / frames.size

    def to_dict(self) -> dict[str, list]:
        """JSON-ready form (nested lists of floats); :meth:`from_dict` restores it exactly.

        Every float32 is exactly representable as a Python float and JSON keeps all its
        digits, so the round trip through a checkpoint or ONNX metadata is bitwise.
        """
        return {"mean": self.mean.tolist(), "scale": self.scale.tolist()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Normalisation:
        """Rebuild from :meth:`to_dict` output (``kind: "fixed"`` allowed); unknown or missing
        keys are errors."""
        check_type("data", data, Mapping)
        if data.get("kind", FIXED) == FIXED:
            data = {key: value for key, value in data.items() if key != "kind"}
        if set(data) != {"mean", "scale"}:
            raise ValueError(
                f"'data' must have exactly the keys ['mean', 'scale'], got {sorted(data)}"
            )
        return cls(
            np.asarray(data["mean"], dtype=np.float32), np.asarray(data["scale"], dtype=np.float32)
        )

    def _like(self, frames: FrameArray) -> tuple[Any, Any]:
        """``mean`` and ``scale`` as the same kind of array as ``frames``, after a shape check."""
        tensor = is_tensor(frames)
        if not (tensor or isinstance(frames, np.ndarray)):
            raise TypeError(f"'frames' must be ndarray or Tensor, got {type(frames).__name__}")
        if tuple(frames.shape[-2:]) != self.mean.shape:
            raise ValueError(
                f"'frames' must end in the grid shape {self.mean.shape}, got {tuple(frames.shape)}"
            )
        if tensor:  # same dtype and device as the frames
            return frames.new_tensor(self.mean), frames.new_tensor(self.scale)
        return self.mean, self.scale


AnyNormalisation = Normalisation | RobustScale
"""What a model's input scaling can be: fixed, or robust statistics of the recent past."""


def normalisation_from_dict(data: Mapping[str, Any]) -> AnyNormalisation:
    """The normalisation a checkpoint or model metadata stores, by its ``kind`` (absent: fixed)."""
    if normalisation_kind(data) == FIXED:
        return Normalisation.from_dict(data)
    return RobustScale.from_dict(data)


def regular_times(batch_size: int, past_frames: int) -> np.ndarray:
    """(B, P) float32 past times of a window with nothing dropped: ``-(P-1), ..., 0``."""
    times = np.arange(-(past_frames - 1), 1, dtype=np.float32)
    return np.tile(times, (batch_size, 1))


def window_starts(
    timestamps: np.ndarray,
    sample_rate_hz: float,
    *,
    length: int = WINDOW_FRAMES,
    stride: int = 1,
) -> np.ndarray:
    """Start indices of windows of ``length`` consecutive frames with no dropped sample inside.

    A step between timestamps above 1.5 nominal periods (the ingestor's gap rule, robust to
    jitter) or not forward breaks the sequence. Within each unbroken run, windows start at the
    run's first frame and every ``stride`` frames after it, so a gap costs as few windows as
    possible. Returns sorted int64 indices.
    """
    check_array("timestamps", timestamps, ndim=1, dtype=np.float64, finite=True)
    check_positive("sample_rate_hz", sample_rate_hz)
    check_int("length", length, 1)
    check_int("stride", stride, 1)
    steps = np.diff(timestamps)
    broken = (steps <= 0) | (steps > GAP_THRESHOLD_PERIODS / sample_rate_hz)
    bounds = [0, *(np.flatnonzero(broken) + 1).tolist(), timestamps.size]
    runs = [np.arange(a, b - length + 1, stride) for a, b in pairwise(bounds)]
    return np.concatenate([np.zeros(0, dtype=np.int64), *runs]).astype(np.int64)


def split_by_time(
    n_frames: int,
    fractions: tuple[float, float, float] = (0.8, 0.1, 0.1),
    guard: int = WINDOW_FRAMES,
) -> dict[str, range]:
    """Contiguous train, val and test index ranges, in time order, ``guard`` frames apart.

    Held-out data must come later in time, not interleaved: neighbouring frames are nearly the
    same, so interleaved windows would let the model see its test targets while training. The
    ``guard`` frames between splits belong to none, so no window built from a start in one
    split (with ``guard >= WINDOW_FRAMES``) can reach into the next, and the first held-out
    frames are not the continuation of the last training window.

    Parameters
    ----------
    n_frames
        Frames in the session.
    fractions
        Shares of the ``n_frames - 2 * guard`` usable frames, summing to 1; the test split
        takes what rounding leaves.
    guard
        Frames left out between consecutive splits.
    """
    check_int("n_frames", n_frames, 1)
    check_int("guard", guard, 0)
    if len(fractions) != len(SPLITS):
        raise ValueError(f"'fractions' must hold {len(SPLITS)} numbers, got {fractions!r}")
    for index, fraction in enumerate(fractions):
        check_range(f"fractions[{index}]", fraction, 0.0, 1.0)
    if not math.isclose(sum(fractions), 1.0, abs_tol=1e-9):
        raise ValueError(f"'fractions' must sum to 1, got {fractions!r} (sum {sum(fractions)!r})")
    usable = n_frames - 2 * guard
    if usable < 1:
        raise ValueError(
            f"'n_frames' must exceed 2 x 'guard' ({2 * guard}) to leave frames to split, "
            f"got {n_frames}"
        )
    train_end = round(usable * fractions[0])
    val_start = train_end + guard
    val_end = val_start + round(usable * (fractions[0] + fractions[1])) - train_end
    return {
        "train": range(0, train_end),
        "val": range(val_start, val_end),
        "test": range(val_end + guard, n_frames),
    }


class SplitWindows:
    """(past, future) windows of normalised frames from one split of one or more sessions.

    Each session is split by time on its own (:func:`split_by_time`), so every session
    contributes its early part to training and its late part to the held-out splits. Windows
    of ``WINDOW_FRAMES`` gap-free frames (:func:`window_starts`) are taken inside the chosen
    split, in session then time order; there is no randomness (shuffle in the DataLoader).

    Parameters
    ----------
    sessions
        One session or a sequence of them, all at the same nominal rate.
    split
        ``"train"``, ``"val"`` or ``"test"``.
    normalisation
        The training split's normalisation. None fits one on this dataset's frames, which is
        allowed for ``split="train"`` only; pass ``train.normalisation`` to the other splits.
        A :class:`RobustScale` normalises each window with the statistics a daemon would have
        had at its newest past frame (:func:`service.core.robust_scale.causal_stats` over the
        split, from its start), past and future alike, as the daemon denormalises a
        prediction with the statistics it normalised the input with; windows before the first
        statistics exist are left out, as the daemon does not predict then.
    fractions, guard
        Passed to :func:`split_by_time`.
    stride
        Frames between window starts (1 uses every window; larger strides thin correlated ones).
    extra_past
        Gap-free frames each window also has before its past (:meth:`span`): the frames a
        simulated drop (``models.drops``) reaches back into.

    Items are ``(past, future)`` float32 arrays of (16, 1, rows, cols) in model units;
    :meth:`batches` stacks them. :meth:`live` says which channels of a window the daemon
    would score.
    """

    def __init__(
        self,
        sessions: Session | Sequence[Session],
        split: str = "train",
        normalisation: Normalisation | None = None,
        *,
        fractions: tuple[float, float, float] = (0.8, 0.1, 0.1),
        guard: int = WINDOW_FRAMES,
        stride: int = 1,
        extra_past: int = 0,
    ) -> None:
        check_choice("split", split, SPLITS)
        check_int("stride", stride, 1)
        check_int("extra_past", extra_past, 0)
        self.extra_past = extra_past
        sessions = _check_sessions(sessions)
        ranges = [split_by_time(s.n_frames, fractions, guard) for s in sessions]
        pieces = []
        for index, (session, split_ranges) in enumerate(zip(sessions, ranges, strict=True)):
            span = split_ranges[split]
            name = f"sessions[{index}].frames[{span.start}:{span.stop}]"
            if "source" in session.info:  # read from a file: say which
                name += f" of {session.info['source']}"
            pieces.append(check_array(name, session.frames[span.start : span.stop], finite=True))
        normalisation = _resolve_normalisation(normalisation, split, pieces, sessions[0])
        self._normalisation = normalisation
        starts = [
            window_starts(
                s.timestamps[r[split].start : r[split].stop],
                s.sample_rate_hz,
                length=WINDOW_FRAMES + extra_past,
                stride=stride,
            )
            for s, r in zip(sessions, ranges, strict=True)
        ]
        self._stats: list[CausalStats] | None = None
        if isinstance(normalisation, RobustScale):
            window, update, least = normalisation.frames(sessions[0].sample_rate_hz)
            self._stats = [
                causal_stats(p, None, window=window, update=update, min_frames=least)
                for p in pieces
            ]
            newest = extra_past + PAST_FRAMES - 1
            starts = [
                st[stats.index[st + newest] >= 0]
                for st, stats in zip(starts, self._stats, strict=True)
            ]
            self._frames = [p[:, None] for p in pieces]
        else:
            self._frames = [normalisation.normalise(p)[:, None] for p in pieces]
        self._session = np.concatenate(
            [np.full(len(st), i, dtype=np.int64) for i, st in enumerate(starts)]
        )
        self._start = np.concatenate(starts)
        if self._start.size == 0:
            lengths = ", ".join(
                f"{len(r[split])}{source_note(s)}" for s, r in zip(sessions, ranges, strict=True)
            )
            raise ValueError(
                f"the {split!r} split of the sessions holds no window of "
                f"{WINDOW_FRAMES + extra_past} gap-free frames (split lengths {lengths})"
            )
        self._history = round(HISTORY_S * sessions[0].sample_rate_hz)
        self._provenance = _provenance(sessions, ranges, starts, split, fractions, guard, stride)
        self._provenance["coverage"] = (
            _coverage(normalisation, pieces)
            if self._stats is None
            else _online_coverage(pieces, self._stats)
        )

    def __len__(self) -> int:
        return int(self._start.size)

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        frames = self.span(index)
        return frames[self.extra_past : -FUTURE_FRAMES], frames[-FUTURE_FRAMES:]

    def batches(self, size: int) -> list[tuple[np.ndarray, np.ndarray]]:
        """All windows in order as (past, future) stacks of up to ``size`` windows each: the
        batches a DataLoader without shuffling would give, as numpy arrays."""
        return list(self.iter_batches(size))

    def iter_batches(self, size: int, *, live: bool = False) -> Iterator[tuple[np.ndarray, ...]]:
        """:meth:`batches` one at a time, each built when asked for: a consumer that keeps
        only sums (``models.evaluation.evaluate``) holds one batch of a split of any length.
        ``live``: each batch also carries (B, rows, cols) bool, each window's :meth:`live`
        channels, the only ones ``evaluate`` then scores."""
        check_int("size", size, 1)
        for first in range(0, len(self), size):
            indices = range(first, min(first + size, len(self)))
            chunk = [self[index] for index in indices]
            batch = np.stack([p for p, _ in chunk]), np.stack([f for _, f in chunk])
            yield (*batch, np.stack([self.live(i) for i in indices])) if live else batch

    def live(self, index: int) -> np.ndarray:
        """(rows, cols) bool: the channels of window ``index`` the daemon would score its
        prediction on (``service.core.live_channels.decision_live``: neither dead nor noisy),
        judged as it judges them, in µV, on the split's ``HISTORY_S`` of frames up to the
        window's newest past frame (fewer near the split's start) and its newest
        ``BLOCK_FRAMES``. Without it an offline figure would count channels the live one
        leaves out: one of noise that no model predicts would be most of it."""
        check_type("index", index, Integral)
        if not -len(self) <= index < len(self):
            raise IndexError(f"'index' must be in [-{len(self)}, {len(self)}), got {index!r}")
        index %= len(self)
        newest = int(self._start[index]) + self.extra_past + PAST_FRAMES - 1
        frames = self._frames[int(self._session[index])]
        history = frames[max(0, newest + 1 - self._history) : newest + 1, 0]
        if self._stats is None:  # stored in model units; the rule judges µV, as the daemon
            history = self._normalisation.denormalise(history)
        return decision_live(history, history[-BLOCK_FRAMES:])

    def span(self, index: int) -> np.ndarray:
        """All ``extra_past + 32`` frames of window ``index`` (the extra past, then past and
        future), (T, 1, rows, cols), a copy."""
        check_type("index", index, Integral)
        if not -len(self) <= index < len(self):
            # IndexError, not ValueError: it is what ends iteration over a sequence.
            raise IndexError(f"'index' must be in [-{len(self)}, {len(self)}), got {index!r}")
        index %= len(self)
        start = int(self._start[index])
        frames = self._frames[int(self._session[index])]
        # A copy, not a view: a view would carry the whole split's storage to DataLoader workers.
        span = frames[start : start + self.extra_past + WINDOW_FRAMES].copy()
        if self._stats is None:
            return span
        stats = self._stats[int(self._session[index])]
        k = int(stats.index[start + self.extra_past + PAST_FRAMES - 1])
        span -= stats.centre[k]
        span /= stats.scale[k]
        return span

    def split_frames(self, session: int, start: int, stop: int) -> np.ndarray:
        """Frames ``start:stop`` of session ``session``'s split (as :attr:`origins` counts
        them), (T, 1, rows, cols), a copy: in this dataset's units for a fixed normalisation,
        µV for a robust-online one (each window is normalised on its own). For consumers that
        fit on a session's recent past as a daemon would (``bench.benchmarks.blended``)."""
        check_int("session", session, 0)
        if session >= len(self._frames):
            raise IndexError(f"'session' must be < {len(self._frames)}, got {session}")
        return self._frames[session][start:stop].copy()

    @property
    def origins(self) -> np.ndarray:
        """(windows, 2) int64: each window's session (its index in ``sessions``) and the frame
        its span starts at, counted from the start of that session's split (a copy). What a
        consumer that replays the windows as recordings, one session at a time in time order,
        needs to know (``bench.benchmarks.blended``)."""
        return np.stack([self._session, self._start], axis=1)

    @property
    def normalisation(self) -> AnyNormalisation:
        """The normalisation applied to every item (fitted on the training split, or the
        robust-online schedule)."""
        return self._normalisation

    @property
    def provenance(self) -> dict[str, Any]:
        """JSON-serialisable description for the model's metadata: sessions, splits, windows.

        ``coverage`` is the fraction of this split's values inside (-1, 1) after normalisation.
        """
        return copy.deepcopy(self._provenance)


def _moments(
    frames: np.ndarray, valid_mask: np.ndarray | None
) -> tuple[int, np.ndarray, np.ndarray]:
    """Count, mean and (population) standard deviation of the valid frames, in float64.

    Two passes over chunks: float64 accuracy without a float64 copy of a long recording.
    """

    def chunks() -> Iterator[np.ndarray]:
        for start in range(0, frames.shape[0], _MOMENT_CHUNK):
            chunk = frames[start : start + _MOMENT_CHUNK]
            yield chunk if valid_mask is None else chunk[valid_mask[start : start + _MOMENT_CHUNK]]

    count, total = 0, np.zeros(frames.shape[1:])
    for chunk in chunks():
        check_array("frames", chunk, finite=True)
        count += chunk.shape[0]
        total += chunk.sum(axis=0, dtype=np.float64)
    mean = total / max(count, 1)
    squares = np.zeros_like(mean)
    for chunk in chunks():
        squares += np.square(chunk - mean).sum(axis=0)
    return count, mean, np.sqrt(squares / max(count, 1))


def _check_sessions(sessions: Session | Sequence[Session]) -> tuple[Session, ...]:
    """The sessions as a non-empty tuple of Session, all at one rate and grid, each >= 1 window."""
    if isinstance(sessions, Session):
        sessions = (sessions,)
    check_type("sessions", sessions, (Sequence, Session))
    sessions = tuple(sessions)
    if not sessions:
        raise ValueError("'sessions' must hold at least one Session, got none")
    for index, session in enumerate(sessions):
        check_type(f"sessions[{index}]", session, Session)
        if session.n_frames < WINDOW_FRAMES:
            raise ValueError(
                f"'sessions[{index}]'{source_note(session)} must hold at least one window "
                f"({WINDOW_FRAMES} frames), got {session.n_frames}"
            )
        if not math.isclose(
            session.sample_rate_hz, sessions[0].sample_rate_hz, rel_tol=RATE_TOLERANCE
        ):
            raise ValueError(
                f"'sessions[{index}].sample_rate_hz' must be the first session's "
                f"({sessions[0].sample_rate_hz!r}, within {RATE_TOLERANCE:.1%}), got "
                f"{session.sample_rate_hz!r}"
            )
        if not session.grid.same_array(sessions[0].grid):
            raise ValueError(
                f"'sessions[{index}].grid' must be the first session's array, "
                f"{sessions[0].grid.describe()}, got {session.grid.describe()}"
            )
    return sessions


def source_note(session: Session) -> str:
    """`` (FILE)`` for a session read from a file, else empty: a refusal names the recording,
    not only its place in a list the user never wrote (a generated spec expands to many)."""
    return f" ({session.info['source']})" if "source" in session.info else ""


def _resolve_normalisation(
    normalisation: AnyNormalisation | None, split: str, pieces: list[np.ndarray], first: Session
) -> AnyNormalisation:
    """The given normalisation after checks, or one fitted on the training ``pieces``."""
    if normalisation is None:
        if split != "train":
            raise ValueError(
                f"'normalisation' must be given for split {split!r}: pass the training "
                "split's (SessionWindows(..., 'train').normalisation)"
            )
        return Normalisation.fit(np.concatenate(pieces))
    check_type("normalisation", normalisation, (Normalisation, RobustScale))
    if isinstance(normalisation, Normalisation) and normalisation.mean.shape != first.grid.shape:
        raise ValueError(
            f"'normalisation' must match the sessions' grid {first.grid.shape}, "
            f"got {normalisation.mean.shape}"
        )
    return normalisation


def _coverage(normalisation: Normalisation, pieces: list[np.ndarray]) -> float:
    """Fraction of all values of ``pieces`` that normalise into (-1, 1)."""
    used = [piece for piece in pieces if piece.size]
    shares = [normalisation.coverage(piece) for piece in used]
    return float(np.average(shares, weights=[piece.size for piece in used]))


def _online_coverage(pieces: list[np.ndarray], stats: list[CausalStats]) -> float:
    """Fraction of the values of frames with statistics that normalise into (-1, 1), each frame
    by the statistics in use when it was the newest."""
    inside = total = 0
    for piece, piece_stats in zip(pieces, stats, strict=True):
        ready = np.flatnonzero(piece_stats.index >= 0)
        k = piece_stats.index[ready]
        values = (piece[ready] - piece_stats.centre[k]) / piece_stats.scale[k]
        inside += np.count_nonzero(np.abs(values) < 1)
        total += values.size
    return inside / max(total, 1)


def _provenance(
    sessions: tuple[Session, ...],
    ranges: list[dict[str, range]],
    starts: list[np.ndarray],
    split: str,
    fractions: tuple[float, float, float],
    guard: int,
    stride: int,
) -> dict[str, Any]:
    """What the windows were built from, as plain JSON types."""
    described = []
    for session, split_ranges, session_starts in zip(sessions, ranges, starts, strict=True):
        entry = {key: session.info[key] for key in _PROVENANCE_INFO_KEYS if key in session.info}
        entry["info_keys"] = sorted(session.info)
        entry["n_frames"] = session.n_frames
        entry["splits"] = {name: [span.start, span.stop] for name, span in split_ranges.items()}
        entry["n_windows"] = int(session_starts.size)
        described.append(entry)
    return {
        "split": split,
        "fractions": [float(f) for f in fractions],
        "guard": int(guard),
        "stride": int(stride),
        "past_frames": PAST_FRAMES,
        "future_frames": FUTURE_FRAMES,
        "sample_rate_hz": float(sessions[0].sample_rate_hz),
        "grid": {
            "rows": sessions[0].grid.rows,
            "cols": sessions[0].grid.cols,
            "pitch_m": float(sessions[0].grid.pitch_m),
        },
        "n_windows": int(sum(s.size for s in starts)),
        "sessions": described,
    }
