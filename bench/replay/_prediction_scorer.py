"""Score every prediction of a replay against the frames that really followed, with baselines.

Each prediction is looked up by its ``input_seq`` in the session's timeline: its target is
the next 16 slots, which must all be real frames (a placeholder is not the truth, as in
``service.loop.live_accuracy``). Persistence, linear extrapolation and the fitted AR model
(``"ar"``, fitted by :func:`fit_session_ar` on the first ``AR_FIT_FRACTION`` of the measured
frames) are scored on exactly the same windows, from the slots up to ``input_seq`` as the ring
held them.
Scores are kept per prediction and horizon, so the report can pool them over any subset (all,
seizures only).
Predictions are buffered and scored in batches: one filter call over many windows costs
little more than one over a single window.
"""

from __future__ import annotations

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
_BATCH = 256


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
        Predictions left out: their 16 true frames ran past the session or held placeholders.
    """

    input_seq: np.ndarray
    mse: dict[str, np.ndarray]
    ssim: dict[str, np.ndarray]
    unscorable: int


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
    ) -> None:
        self._timeline = timeline
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
        self._seq: list[np.ndarray] = []
        self._mse: dict[str, list[np.ndarray]] = {name: [] for name in PREDICTORS_AND_BASELINES}
        self._ssim: dict[str, list[np.ndarray]] = {name: [] for name in PREDICTORS_AND_BASELINES}
        self._unscorable = 0

    def add(self, input_seq: int, future: np.ndarray) -> None:
        """Queue one prediction (µV, (horizons, rows, cols)) made from slots up to ``input_seq``."""
        end = input_seq + 1 + self._horizons
        first = input_seq + 1 - self._past
        if (
            first < 0
            or end > len(self._timeline)
            or not self._timeline.valid[input_seq + 1 : end].all()
            or (self._stats is not None and self._stats.index[input_seq] < 0)
        ):
            self._unscorable += 1
            return
        self._pending_seq.append(int(input_seq))
        self._pending_future.append(future)
        if len(self._pending_seq) >= _BATCH:
            self._flush()

    def scores(self) -> Scores:
        """Everything scored so far, ordered by ``input_seq``."""
        self._flush()
        seq = np.concatenate(self._seq) if self._seq else np.zeros(0, dtype=np.int64)
        order = np.argsort(seq, kind="stable")
        empty = np.zeros((0, self._horizons))

        def stacked(parts: list[np.ndarray]) -> np.ndarray:
            return np.concatenate(parts)[order] if parts else empty

        return Scores(
            input_seq=seq[order],
            mse={name: stacked(parts) for name, parts in self._mse.items()},
            ssim={name: stacked(parts) for name, parts in self._ssim.items()},
            unscorable=self._unscorable,
        )

    def _flush(self) -> None:
        if not self._pending_seq:
            return
        seq = np.array(self._pending_seq, dtype=np.int64)
        offsets = np.arange(-self._past + 1, self._horizons + 1)
        block = self._normalise(self._timeline.frames[seq[:, None] + offsets], seq)
        past, target = block[:, : self._past], block[:, self._past :]
        outputs = {
            "model": self._normalise(np.stack(self._pending_future), seq),
            "persistence": persistence(past, self._horizons),
            "linear": linear_extrapolation(past, self._horizons),
            "ar": self._ar.predict(past, self._horizons),
        }
        for name, similarity in ssims(outputs, target).items():
            self._mse[name].append(squared_error(outputs[name], target))
            self._ssim[name].append(similarity)
        self._seq.append(seq)
        self._pending_seq.clear()
        self._pending_future.clear()

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
) -> FittedAutoregressive:
    """The AR baseline fitted on the session's slots up to where the first ``fraction`` of its
    measured frames lie (the first ``fraction`` of its slots where none is missing; a dropout
    early on does not leave the fit without data), in the scoring units: ``(mean, scale)``,
    or with ``stats`` each slot in the statistics in use at it (slots before the first
    statistics are left out). Placeholder slots are left out (NaN), so no row spans a gap."""
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
    return FittedAutoregressive(lags).fit(frames)
