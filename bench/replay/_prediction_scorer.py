"""Score every prediction of a replay against the frames that really followed, with baselines.

Each prediction is looked up by its ``input_seq`` in the session's timeline: its target is
the next 16 slots, which must all be real frames (a placeholder is not the truth, as in
``service.loop.live_accuracy``), and neither they nor its input may have been blanked as a
train's artefact (as the daemon's live scores leave those out). Persistence, linear
extrapolation and the fitted AR model (``"ar"``, fitted by :func:`fit_session_ar` on the first
``AR_FIT_FRACTION`` of the measured frames) are scored on exactly the same windows, from the
slots up to ``input_seq`` as the ring held them.
Scores are kept per prediction and horizon, so the report can pool them over any subset (all,
seizures only). Only the channels given are scored (the session's dead and noisy ones left
out, as the daemon's live scores leave out its wave stage's; ``bench.replay._waves``): a
channel of noise no predictor can follow would otherwise be most of every figure. SSIM, a
measure of neighbourhoods, sees every predictor right on the channels left out. So are the
values the session held (NaN or infinite, holding their channel's last finite value,
``Timeline.held_values``), true frame by true frame, as the daemon leaves them out: the brain
did not do them, and persistence, which repeats them, would be scored right there. They are
counted (``Scores.held_values_not_scored``), and a prediction with a true frame left with no
value to score is unscorable.
Predictions are buffered and scored in batches: one filter call over many windows costs
little more than one over a single window. A batch is scored in a thread of its own while the
loop goes on (its array work runs without the GIL): on two cores the scoring fills the time the
loop and the model leave idle instead of adding to the loop's. Batches are scored one at a time,
in order, and :meth:`PredictionScorer.scores` (or :meth:`PredictionScorer.wait`) waits for them.
A batched fast replay scores them in its loop's own thread instead
(:meth:`PredictionScorer.score_in_caller`), while that loop would wait for the model's worker:
two busy threads on two cores rather than three.
"""

from __future__ import annotations

import threading
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from bench.replay.timeline import Timeline
from service.core.autoregressive import DEFAULT_LAGS, FittedAutoregressive
from service.core.robust_scale import CausalStats
from service.core.scores import linear_extrapolation, persistence, squared_error, ssims

PREDICTORS_AND_BASELINES = ("model", "persistence", "linear", "ar")
AR_FIT_FRACTION = 0.6
"""Share of the session's measured frames, from its start, the AR baseline is fitted on. Its windows
there are scored in-sample, which a 13-parameter model fitted on millions of (electrode,
frame) rows barely profits from; keeping every predictor on the same windows matters more."""
_BATCH = 32
"""Predictions per scoring batch. Each filter still runs over 512 frames at once, and the arrays
stay in cache: measured per prediction on the 60 s synthetic session, one thread, 0.79 ms at
32, 0.88 at 64, 1.53 at 256 (and 16 no cheaper); the last batch, which a fast replay waits for
at its end, is short too."""


@dataclass(frozen=True, eq=False)
class Scores:
    """Per-prediction scores, in normalised units.

    Attributes
    ----------
    input_seq
        (M,) the scored predictions' newest input slot, ascending.
    mse, ssim
        ``"model"``, ``"persistence"``, ``"linear"``, ``"ar"`` -> (M, horizons) float64.
    unscorable
        Predictions left out: their 16 true frames ran past the session or held placeholders,
        or their input or true frames were blanked as stimulation artefact (as the daemon's
        live scores leave them out, ``service.loop.live_accuracy``).
    held_values_not_scored
        Values of the scored channels in the scored predictions' true frames left out because
        the session held them (NaN or infinite there).
    """

    input_seq: np.ndarray
    mse: dict[str, np.ndarray]
    ssim: dict[str, np.ndarray]
    unscorable: int
    held_values_not_scored: int = 0


@dataclass(frozen=True, eq=False)
class _Batch:
    """The scores of one batch of predictions, in the order they were queued."""

    seq: np.ndarray
    mse: dict[str, np.ndarray]
    ssim: dict[str, np.ndarray]


class PredictionScorer:
    """Accumulates scores of one model's predictions; see the module docstring.

    Parameters
    ----------
    timeline
        The session as the ring holds it.
    mean, scale
        (rows, cols) normalisation every model of the replay is scored in (the first model's),
        so that their scores compare; None when ``stats`` are given.
    stats
        For a robust-online first model: the statistics in use at each slot
        (``bench.replay._models.timeline_stats``); each prediction, its target and its
        baselines are scored in those at its ``input_seq``, the units the model saw, and a
        prediction from before the first statistics is unscorable.
    ar
        The fitted AR baseline, in the same normalised units (:func:`fit_session_ar`).
    past_frames, horizons
        Model window and horizon.
    channels
        (rows, cols) bool, the channels scored (at least one); None: all.
    """

    def __init__(
        self,
        timeline: Timeline,
        mean: np.ndarray | None,
        scale: np.ndarray | None,
        ar: FittedAutoregressive,
        *,
        past_frames: int = 16,
        horizons: int = 16,
        stats: CausalStats | None = None,
        channels: np.ndarray | None = None,
    ) -> None:
        if channels is not None and not channels.any():
            raise ValueError(
                f"'channels' must leave at least one channel to score, got none of {channels.size}"
            )
        self._timeline = timeline
        self._channels = None if channels is None or channels.all() else channels
        self._stats = stats
        if stats is None:
            if mean is None or scale is None:
                raise ValueError("'mean' and 'scale' must be given unless 'stats' are")
            self._mean = mean.astype(np.float32)
            self._scale = scale.astype(np.float32)
        self._ar = ar
        self._past = past_frames
        self._horizons = horizons
        self._pending_seq: list[int] = []
        self._pending_future: list[np.ndarray] = []
        self._batches: list[Future[_Batch]] = []
        self._pool: ThreadPoolExecutor | None = None
        self._queued: deque[tuple[np.ndarray, np.ndarray]] | None = None
        """Batches waiting for :meth:`score_queued` (None: scored in a thread of their own)."""
        self._scoring = threading.Condition()
        """Guards the queue and :attr:`_in_flight`, batches :meth:`score_queued` is scoring."""
        self._in_flight = 0
        self._unscorable = 0
        self._held_not_scored = 0

    def score_in_caller(self) -> None:
        """From now on, queue each batch for :meth:`score_queued` (or :meth:`wait`) instead of
        scoring it in a thread of its own.

        For a batched fast replay, whose model runs in a worker thread about as fast as the
        loop works through the windows: each scores while it would otherwise wait for the
        other, so the two share the two cores without a third thread preempting both.
        """
        if self._queued is None:
            self._queued = deque()

    def score_queued(self) -> bool:
        """Score the oldest queued batch in the caller's thread; False when none is queued.
        Threads may call it at once, each scoring a batch of its own (a batched replay's loop
        and its model's worker, each while it would wait for the other); an error scoring it
        is raised by :meth:`wait`."""
        with self._scoring:
            if not self._queued:
                return False
            seq, futures = self._queued.popleft()
            self._in_flight += 1
        scored: Future[_Batch] = Future()
        try:
            scored.set_result(self._score(seq, futures))
        except Exception as err:
            scored.set_exception(err)
        with self._scoring:
            self._batches.append(scored)
            self._in_flight -= 1
            self._scoring.notify_all()
        return True

    def add(self, input_seq: int, future: np.ndarray) -> None:
        """Queue one prediction (µV, (horizons, rows, cols)) made from slots up to ``input_seq``."""
        end = input_seq + 1 + self._horizons
        first = input_seq + 1 - self._past
        if (
            first < 0
            or end > len(self._timeline)
            or not self._timeline.valid[input_seq + 1 : end].all()
            or self._timeline.blanked[first:end].any()
            or (self._stats is not None and self._stats.index[input_seq] < 0)
        ):
            self._unscorable += 1
            return
        held = self._held(np.array([input_seq]))
        if held is not None:
            left_out = held[0] if self._channels is None else held[0] & self._channels
            kept = ~left_out if self._channels is None else self._channels & ~left_out
            if not kept.any(axis=(1, 2)).all():  # a true frame with nothing measured
                self._unscorable += 1
                return
            self._held_not_scored += int(np.count_nonzero(left_out))
        self._pending_seq.append(int(input_seq))
        self._pending_future.append(future)
        if len(self._pending_seq) >= _BATCH:
            self._flush()

    def scores(self) -> Scores:
        """Everything scored so far, ordered by ``input_seq``."""
        self.wait()
        batches = [batch.result() for batch in self._batches]
        seq = np.concatenate([b.seq for b in batches]) if batches else np.zeros(0, dtype=np.int64)
        order = np.argsort(seq, kind="stable")
        empty = np.zeros((0, self._horizons))

        def stacked(parts: list[np.ndarray]) -> np.ndarray:
            return np.concatenate(parts)[order] if parts else empty

        names = PREDICTORS_AND_BASELINES
        return Scores(
            input_seq=seq[order],
            mse={name: stacked([b.mse[name] for b in batches]) for name in names},
            ssim={name: stacked([b.ssim[name] for b in batches]) for name in names},
            unscorable=self._unscorable,
            held_values_not_scored=self._held_not_scored,
        )

    def wait(self) -> None:
        """Score what is queued and wait until every batch is scored (a scoring error is
        raised here)."""
        self._flush()
        while self.score_queued():
            pass
        with self._scoring:  # another thread's last batch
            self._scoring.wait_for(lambda: self._in_flight == 0)
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        for batch in self._batches:
            batch.result()

    def _flush(self) -> None:
        """Hand the pending predictions, as one batch, to the scoring thread or the queue."""
        if not self._pending_seq:
            return
        seq = np.array(self._pending_seq, dtype=np.int64)
        futures = np.stack(self._pending_future)
        self._pending_seq.clear()
        self._pending_future.clear()
        if self._queued is not None:
            with self._scoring:
                self._queued.append((seq, futures))
            return
        if self._pool is None:
            self._pool = ThreadPoolExecutor(1, thread_name_prefix="corticast-scorer")
        self._batches.append(self._pool.submit(self._score, seq, futures))

    def _score(self, seq: np.ndarray, futures: np.ndarray) -> _Batch:
        """The scores of one batch: predictions ``futures`` (µV) made at slots ``seq``."""
        offsets = np.arange(-self._past + 1, self._horizons + 1)
        block = self._normalise(self._timeline.frames[seq[:, None] + offsets], seq)
        past, target = block[:, : self._past], block[:, self._past :]
        outputs = {
            "model": self._normalise(futures, seq),
            "persistence": persistence(past, self._horizons),
            "linear": linear_extrapolation(past, self._horizons),
            "ar": self._ar.predict(past, self._horizons),
        }
        scored = self._scored(seq)
        if scored is not None:  # SSIM sees every predictor right on the others
            left_out = np.broadcast_to(~scored, target.shape)
            for output in outputs.values():  # each a fresh array
                output[left_out] = target[left_out]
        similarity = ssims(outputs, target)
        return _Batch(
            seq=seq,
            mse={name: squared_error(outputs[name], target, scored) for name in similarity},
            ssim=similarity,
        )

    def _held(self, seq: np.ndarray) -> np.ndarray | None:
        """(M, horizons, rows, cols) bool: the values the session held in the true frames of
        the predictions at ``seq``; None where none is held."""
        if self._timeline.held_values is None:
            return None
        held = self._timeline.held_values[seq[:, None] + np.arange(1, self._horizons + 1)]
        return held if held.any() else None

    def _scored(self, seq: np.ndarray) -> np.ndarray | None:
        """The values scored of the predictions at ``seq``' true frames: the channels given
        ((rows, cols)), less the values held, per frame ((M, horizons, rows, cols)) where any
        is; None: all."""
        held = self._held(seq)
        if held is None:
            return self._channels
        return ~held if self._channels is None else self._channels & ~held

    def _normalise(self, frames: np.ndarray, seq: np.ndarray) -> np.ndarray:
        """(M, T, rows, cols) µV of the predictions at ``seq`` -> scoring units."""
        if self._stats is None:
            return (frames - self._mean) / self._scale
        k = self._stats.index[seq]
        return (frames - self._stats.centre[k][:, None]) / self._stats.scale[k][:, None]


def fit_session_ar(
    timeline: Timeline,
    mean: np.ndarray | None,
    scale: np.ndarray | None,
    *,
    stats: CausalStats | None = None,
    fraction: float = AR_FIT_FRACTION,
    lags: int = DEFAULT_LAGS,
    channels: np.ndarray | None = None,
) -> FittedAutoregressive:
    """The AR baseline fitted on the session's slots up to where the first ``fraction`` of its
    measured frames lie (the first ``fraction`` of its slots where none is missing; a dropout
    early on does not leave the fit without data), in the scoring units: ``(mean, scale)``,
    or with ``stats`` each slot in the statistics in use at it (slots before the first
    statistics are left out). Placeholder slots are left out (NaN), so no row spans a gap, as
    are the values the session held (``Timeline.held_values``), and so are the channels not
    in ``channels`` ((rows, cols) bool; None: all), as unmeasured: a noisy channel's rows
    would rule the least squares."""
    measured = np.cumsum(timeline.valid)
    end = int(np.searchsorted(measured, max(1, round(int(measured[-1]) * fraction)))) + 1
    if stats is None:
        frames = (timeline.frames[:end] - mean) / scale
        usable = timeline.valid[:end]
    else:
        k = np.maximum(stats.index[:end], 0)
        frames = (timeline.frames[:end] - stats.centre[k]) / stats.scale[k]
        usable = timeline.valid[:end] & (stats.index[:end] >= 0)
    frames = frames.astype(np.float32, copy=True)
    frames[~usable] = np.nan
    if timeline.held_values is not None:  # repeating the value before: rows of persistence
        frames[timeline.held_values[:end]] = np.nan
    if channels is not None:
        frames[:, ~channels] = np.nan
    return FittedAutoregressive(lags).fit(frames)
