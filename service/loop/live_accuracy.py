"""How good are the predictions right now? Score each one when its true frames arrive.

Every prediction is kept until the 16 frames it predicted have been written to the ring; it is
then scored per horizon against them, next to persistence (the last input frame repeated), the
floor any model must clear, and next to the prediction actually served (the model blended
with persistence per horizon, ``service.loop.blend``, which is fitted on these scores). Scores
roll over the last ``window`` predictions, so a model that degrades on a changed recording
shows it within seconds.

Beside them, once fitted, the fitted AR baseline (``"ar"``, ``service.core.autoregressive``):
what a careful user would try before a deep model. It needs fitting data, which the daemon has
only as the ring's recent past, so :class:`~service.loop.ar_baseline.ArBaseline` (a background
thread) refits it every few seconds on the last seconds of measured frames and scores it on the
windows :meth:`LiveAccuracy.update` queued, in batches, off the scheduler thread. Its figures
therefore trail the model's by up to one scoring round and cover the windows scored since its
first fit. The blend also serves it (``[loop] blend_ar``): :meth:`LiveAccuracy.ar_forecast`
is then called for every prediction (by the loop, beside the model's inference), and the
forecast is kept with the prediction so the blend is fitted on it.

Over all horizons the figure is the PSNR of the MSE pooled over the horizons (every scored
prediction adds one error per horizon, so each horizon weighs the same), as the README's
"PSNR: one scale" defines it: not the mean of the per-horizon dB, which a model very good at
the first horizons and bad at the last wins however large its MSE
(``service.loop.model_health`` judges the model on it).

Units: errors are computed in the running model's normalised units (per electrode,
``(x - mean) / scale``, scale = 4 training standard deviations), so PSNR = 10 log10(R² / MSE)
with the project's one R (``service.core.scores.DATA_RANGE`` = 2) spans ±4 training standard
deviations on every electrode, the range the model's tanh output can reach. A robust-online
model has no fixed units: each prediction is scored in the statistics it was made with
(``Prediction.normalisation``, scale = 4 robust standard deviations of the last window), which
are the units that model saw. Predictions whose true
frames include missing (placeholder) frames are not scored: a placeholder is not the truth.
Nor is a value the ingest held (a NaN or infinite value sent by a broken contact, held at its
channel's last finite value, ``service.core.non_finite``): the brain did not do it, and
persistence, which repeats that very value, would be scored right there while a model that
predicted what the cortex did is scored wrong. Each true frame is scored over its measured
values of the scored channels; the held ones left out are counted
(``corticast_accuracy_held_values_not_scored``, ``/status``'s ``scheduler`` block), and a
prediction with a true frame left with none is not scored. The blend is fitted as if they
were not there.

Nor are predictions whose input or true frames are stimulation artefact, blanked
(``RingBuffer.blank``) whenever that happened: a train's mV transients would be most of every
figure, model's and persistence's alike, and a model far worse than persistence on cortex would
score level with it on them, judged healthy. Another tool's marker reaches the daemon a link's
latency after its train starts, so a prediction is scored only ``settle_frames`` after its last
true frame (``[ingest] stimulation_marker_latency_ms``, where other tools' marker streams are
read): its frames are then blanked if any marker is coming for them.

Only the channels the wave stage uses are scored (:meth:`LiveAccuracy.score_channels`: its
latest mask leaves out dead and noisy ones). A channel of noise no model can predict would
otherwise be most of every figure, and persistence, which repeats the noise, errs twice as
much there as any prediction of modest size: with one electrode of noise 500 times the
background's, a model gone wrong (another moment's frames, three times too loud) scored 3.3 dB
better than persistence and was judged healthy. The blend is fitted on the same channels.

The scores are one model's: a prediction is kept only if the model that made it
(``Prediction.predictor``) is the one scored now. Across a hot swap the scheduler may hand on
the old model's last prediction after the scores were reset for the new model; scored, it
would count in the new model's record (its health, its blend) in the new model's units.
Those the change leaves unscored (the old model's predictions still waiting for their true
frames, and any handed on after) are counted, in
``corticast_accuracy_unscored_after_swap_predictions`` and ``/status``'s ``scheduler``
block: they were served, and the scores have a gap there.
"""

from __future__ import annotations

import threading
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge

from service.core.autoregressive import DEFAULT_LAGS, FittedAutoregressive, served_forecast
from service.core.scores import PSNR_SCALE, psnr_db
from service.inference.missing_frames import on_frame_grid
from service.inference.predictor import PredictorInfo
from service.inference.scheduler import Prediction
from service.ingest.ring_buffer import RingBuffer

if TYPE_CHECKING:
    from service.loop.blend import Blend

PREDICTORS = ("model", "served", "persistence", "ar")


class _RollingMean:
    """Mean of the last ``window`` (horizons,) error vectors, O(1) per new vector.

    The daemon scores a prediction per frame in the scheduler thread; re-averaging a thousand
    vectors each time cost about half a millisecond of the next inference's budget. The sum
    is recomputed exactly once per ``window`` additions so rounding cannot accumulate.
    """

    def __init__(self, window: int, horizons: int) -> None:
        self._values: deque[np.ndarray] = deque(maxlen=window)
        self._sum = np.zeros(horizons)
        self._since_exact = 0

    def __len__(self) -> int:
        return len(self._values)

    def append(self, value: np.ndarray) -> None:
        if len(self._values) == self._values.maxlen:
            self._sum -= self._values[0]
        self._values.append(value)
        self._sum += value
        self._since_exact += 1
        if self._since_exact >= self._values.maxlen:
            self._sum = np.sum(self._values, axis=0)
            self._since_exact = 0

    def clear(self) -> None:
        self._values.clear()
        self._sum[:] = 0.0
        self._since_exact = 0

    def mean(self) -> np.ndarray:
        return self._sum / len(self._values)


@dataclass(frozen=True)
class LiveRecord:
    """The rolling figures of one model at one moment.

    Attributes
    ----------
    scored
        Scored predictions they cover.
    psnr
        Predictor -> (horizons,) PSNR in dB; empty arrays before anything is scored.
    pooled_psnr
        Predictor -> PSNR in dB of the MSE pooled over all horizons (the README's "PSNR
        over all horizons"), for the predictors scored so far.
    """

    scored: int
    psnr: dict[str, np.ndarray]
    pooled_psnr: dict[str, float]


@dataclass
class _Pending:
    first_input_seq: int
    input_seq: int
    future: np.ndarray
    served: np.ndarray
    last_input: np.ndarray
    mean: np.ndarray
    scale: np.ndarray
    ar: np.ndarray | Future[np.ndarray | None] | None


def _mean_square(difference: np.ndarray, channels: np.ndarray | None) -> np.ndarray:
    """float64 mean square of a (..., rows, cols) ``difference`` over the ``channels``
    ((rows, cols) bool, the same for every frame, or as ``difference``, each frame's own;
    None: all), one per leading index."""
    if channels is None:
        return np.square(difference).mean(axis=(-2, -1), dtype=np.float64)
    if channels.ndim == 2:
        return np.square(difference[..., channels]).mean(axis=-1, dtype=np.float64)
    square = np.where(channels, np.square(difference, dtype=np.float64), 0.0)
    return square.sum(axis=(-2, -1)) / np.count_nonzero(channels, axis=(-2, -1))


def _measured(channels: np.ndarray | None, held: np.ndarray) -> np.ndarray | None:
    """The values of true frames to score: the ``channels`` ((rows, cols) bool; None: all)
    less those ``held`` ((horizons, rows, cols) bool, the ring's); per frame where any is
    held."""
    if not held.any():
        return channels
    return ~held if channels is None else channels & ~held


def _resolved(ar: np.ndarray | Future[np.ndarray | None] | None) -> np.ndarray | None:
    """The forecast itself, or a future's result: by the time its prediction is scored, 16
    frames later, it is normally done; one that failed or is not done counts as none."""
    if not isinstance(ar, Future):
        return ar
    if not ar.done() or ar.cancelled() or ar.exception() is not None:
        return None
    return ar.result()


class LiveAccuracy:
    """Rolling per-horizon PSNR of the model and of persistence on live data.

    Parameters
    ----------
    mean, scale
        The running model's normalisation, (rows, cols) float32; None for a model whose
        predictions carry theirs (robust-online).
    horizons
        Predicted frames per prediction.
    window
        Scored predictions the rolling figures cover.
    registry
        Where ``corticast_accuracy_*`` instruments are registered.
    blend
        Fitted on every scored prediction, and reset with the history (a new model runs).
    ar_lags
        Own lags of the fitted AR baseline.
    model
        The running model's info (its predictor's ``info``): only its predictions are
        scored. Identity, not equality: each loaded model has its own, so a reload of the same
        files is another model. None: every prediction is scored (one model for good).
    settle_frames
        Frames written after a prediction's last true frame before it is scored, and left
        out of the newest frames the AR is fitted on: time for a late marker to blank them.
    """

    def __init__(
        self,
        mean: np.ndarray | None,
        scale: np.ndarray | None,
        *,
        horizons: int = 16,
        window: int = 1000,
        registry: CollectorRegistry | None = None,
        blend: Blend | None = None,
        ar_lags: int = DEFAULT_LAGS,
        model: PredictorInfo | None = None,
        settle_frames: int = 0,
    ) -> None:
        if window < 1:
            raise ValueError(f"'window' must be >= 1, got {window!r}")
        if settle_frames < 0:
            raise ValueError(f"'settle_frames' must be >= 0, got {settle_frames!r}")
        self._settle = settle_frames
        self._ar_lags = ar_lags
        self._ar: FittedAutoregressive | None = None
        self._ar_queue: deque[int] = deque(maxlen=window)
        self._mean, self._scale = mean, scale
        self._model = model
        self._horizons = horizons
        self._blend = blend
        self._pending: deque[_Pending] = deque(maxlen=4 * horizons + settle_frames + window)
        self._errors = {name: _RollingMean(window, horizons) for name in PREDICTORS}
        self._channels: np.ndarray | None = None
        """(rows, cols) bool, the channels scored; None: all of them."""
        self._lock = threading.RLock()
        registry = registry or CollectorRegistry()
        self._psnr = Gauge(
            "corticast_accuracy_psnr_db",
            f"Rolling PSNR of live predictions per horizon ({PSNR_SCALE} = ±4 sd)",
            ["predictor", "horizon"],
            registry=registry,
        )
        self._pooled_psnr = Gauge(
            "corticast_accuracy_pooled_psnr_db",
            f"Rolling PSNR of live predictions over all horizons, of the MSE pooled over them "
            f"({PSNR_SCALE} = ±4 sd): what the model health rule compares",
            ["predictor"],
            registry=registry,
        )
        self._psnr_cells: dict[tuple[str, int], Gauge] = {}
        """The gauge's child per (predictor, horizon), looked up once: setting 4 x 16 values
        through ``labels`` took 0.087 ms per scored prediction, through these 0.025 ms."""
        self._scored = Counter(
            "corticast_accuracy_scored_predictions",
            "Predictions scored against the frames that later arrived",
            registry=registry,
        )
        self._unscorable = Counter(
            "corticast_accuracy_unscorable_predictions",
            "Predictions whose true frames were missing or overwritten before scoring, or "
            "whose input or true frames were blanked as stimulation artefact",
            registry=registry,
        )
        self._held_not_scored = Counter(
            "corticast_accuracy_held_values_not_scored",
            "Values of scored channels in true frames left out of the live scores because the "
            "ingest held them (NaN or infinite, held at the channel's last finite value): "
            "not what the cortex did",
            registry=registry,
        )
        self.held_values_not_scored = 0
        """The counter's value, for ``/status``."""
        self._unscored_after_swap = Counter(
            "corticast_accuracy_unscored_after_swap_predictions",
            "Predictions of a model a hot swap or reload replaced, left unscored: waiting for "
            "their true frames when it changed, or handed on after it",
            registry=registry,
        )
        self.unscored_after_swap = 0
        """The counter's value, for ``/status``."""
        self._scores_forgotten = Counter(
            "corticast_accuracy_scores_forgotten",
            "Times the live scores, the blend's fit and the fitted AR were forgotten because a "
            "stimulation marker came later than [ingest] stimulation_marker_latency_ms: the "
            "model is unproven again until [loop] health_min_scored predictions are scored",
            registry=registry,
        )
        self.scores_forgotten = 0
        """The counter's value, for ``/status``."""
        self._generation = 0
        """Bumped whenever the scores are cleared: a refit begun before is not installed."""

    def set_normalisation(
        self,
        mean: np.ndarray | None,
        scale: np.ndarray | None,
        model: PredictorInfo | None = None,
    ) -> None:
        """Score another ``model`` (its info, as the constructor's) in its units from now on
        (after a hot swap or a reload); history is reset, and a prediction of any other model
        added later is not scored. Both the old model's pending predictions and those are
        counted as unscored after a swap."""
        with self._lock:
            self._mean, self._scale = mean, scale
            self._model = model
            self._count_unscored_after_swap(len(self._pending))
            self._pending.clear()
            self._clear_scores()  # fitted and scored in the old units

    def forget_scores(self) -> None:
        """Forget every score so far, the blend's fit and the fitted AR: a stimulation marker
        came later than ``settle_frames`` allowed, so its train's frames may have been scored
        and fitted on as cortex, and a model far worse than persistence may look level with it
        there. The model is unproven again until ``[loop] health_min_scored`` predictions are
        scored; those still waiting are scored as ever (their blanked frames left out)."""
        with self._lock:
            self._clear_scores()
            self.scores_forgotten += 1
            self._scores_forgotten.inc()

    def _clear_scores(self) -> None:
        """Every figure, the AR and the blend's fit gone, as before the first score. Under the
        lock; a refit running now is not installed."""
        self._generation += 1
        self._ar = None
        self._ar_queue.clear()
        for errors in self._errors.values():
            errors.clear()
        self._psnr.clear()  # no figures until scored again
        self._pooled_psnr.clear()
        self._psnr_cells.clear()  # children of the cleared gauge, no longer exported
        if self._blend is not None:
            self._blend.reset()

    def score_channels(self, live: np.ndarray | None) -> None:
        """Score only the ``live`` channels ((rows, cols) bool; None: all) from now on: the
        wave stage's latest mask, which leaves out the dead and the noisy ones. A mask
        leaving none is refused: its mean square would be NaN in every rolling figure."""
        if live is not None and not live.any():
            raise ValueError(
                f"'live' must leave at least one channel to score, got none of {live.size}"
            )
        channels = None if live is None or live.all() else live.copy()
        with self._lock:
            self._channels = channels

    def scores(self, model: PredictorInfo) -> bool:
        """Whether ``model``'s predictions are the ones scored now, so the health judged on
        these scores is its own (any model when none was named)."""
        with self._lock:
            return self._model is None or model is self._model

    def add(
        self,
        prediction: Prediction,
        served: np.ndarray | None = None,
        ar: np.ndarray | Future[np.ndarray | None] | None = None,
    ) -> None:
        """Remember a prediction (the model's), the frames ``served`` in its place (default:
        the same) and the AR forecast of its past (:meth:`ar_forecast`, for the blend's fit;
        a future of one still running is read when the prediction is scored) until their true
        frames arrive, with the units to score them in. A prediction of a model other than
        the one scored now (one a swap overtook) is left out."""
        served = prediction.future if served is None else served
        with self._lock:
            if self._model is not None and prediction.predictor is not self._model:
                self._count_unscored_after_swap(1)
                return
            mean, scale = self._mean, self._scale
            if mean is None or scale is None:
                mean, scale = prediction.normalisation or (None, None)
            if mean is None or scale is None:
                raise ValueError(
                    "'prediction.normalisation' must be given when LiveAccuracy has no fixed "
                    "normalisation (a robust-online model), got None"
                )
            self._pending.append(
                _Pending(
                    prediction.first_input_seq,
                    prediction.input_seq,
                    prediction.future,
                    served,
                    prediction.past[-1],
                    mean,
                    scale,
                    ar,
                )
            )

    def update(self, ring: RingBuffer) -> int:
        """Score every pending prediction whose true frames have all arrived, ``settle_frames``
        before the newest; returns how many."""
        scored = 0
        settled = ring.next_seq - self._settle  # the frames before it are scored
        with self._lock:
            while self._pending and self._pending[0].input_seq + self._horizons < settled:
                pending = self._pending.popleft()
                truth = ring.read_since(pending.input_seq + 1, max_frames=self._horizons, held=True)
                complete = len(truth) == self._horizons and truth.seq[0] == pending.input_seq + 1
                last = pending.input_seq + self._horizons
                if (
                    not complete
                    or not truth.valid.all()
                    or ring.blanked_among(pending.first_input_seq, last)
                ):
                    self._unscorable.inc()
                    continue
                assert truth.held is not None  # asked for
                channels = _measured(self._channels, truth.held)
                if channels is not self._channels:
                    if not channels.any(axis=(1, 2)).all():  # a frame with nothing measured
                        self._unscorable.inc()
                        continue
                    left_out = truth.held if self._channels is None else truth.held & self._channels
                    self._count_held_not_scored(int(np.count_nonzero(left_out)))
                mean, scale = pending.mean, pending.scale
                target = (truth.frames - mean) / scale
                outputs = {
                    "model": (pending.future - mean) / scale,
                    "served": (pending.served - mean) / scale,
                    "persistence": (pending.last_input - mean) / scale,
                }
                for name, output in outputs.items():
                    self._errors[name].append(_mean_square(output - target, channels))
                if self._blend is not None:
                    ar = _resolved(pending.ar)
                    ar = None if ar is None else (ar - mean) / scale
                    self._blend.observe(
                        outputs["model"], outputs["persistence"], target, ar, channels
                    )
                self._ar_queue.append(pending.input_seq)
                scored += 1
            if scored:
                self._scored.inc(scored)
                self._publish()
        return scored

    @property
    def settle_frames(self) -> int:
        """Frames written after a prediction's last true frame before it is scored."""
        return self._settle

    @property
    def ar(self) -> FittedAutoregressive | None:
        """The fitted AR baseline scored now, or None before its first fit (or after a swap)."""
        return self._ar

    def ar_forecast(
        self, past: np.ndarray, past_times: np.ndarray | None = None
    ) -> np.ndarray | None:
        """The fitted AR baseline's forecast from a prediction's ``past`` (T, rows, cols) µV,
        µV (horizons, rows, cols) float32, for the blend to serve beside the model (bounded as
        :func:`~service.core.autoregressive.served_forecast` says); None before the first fit,
        after a model change, or for a robust-online model (no fixed units to fit in).
        ``past_times`` (under the ``irregular`` policy: the received frames' times): the
        frames are put back on the frame grid, and the forecast reaches past any newest frames
        missing to the same horizons the model predicts (the frames after the newest nominal
        one). Thread-safe: the loop runs it beside the model's inference."""
        with self._lock:
            model, mean, scale = self._ar, self._mean, self._scale
        late = 0
        if past_times is not None:
            past, late = on_frame_grid(past, past_times)
        if model is None or mean is None or scale is None or len(past) < model.lags:
            return None
        normalised = (past[-model.lags :] - mean) / scale
        forecast = served_forecast(model, normalised, self._horizons + late)[late:]
        return forecast * scale + mean

    def refit_ar(self, ring: RingBuffer, frames: int) -> bool:
        """Fit the AR baseline on the newest ``frames`` of ``ring`` (at most its capacity)
        before the last ``settle_frames``, in the current units; placeholders, blanked
        artefact, values the ingest held and the channels not scored are left out. Slow: call
        it off the scheduler thread. Returns whether a model was installed (False: too little
        measured data yet, the scores were cleared while fitting, or a robust-online model
        runs, whose units change with every refresh: the AR baseline is not scored live for
        such a model)."""
        with self._lock:
            mean, scale, channels = self._mean, self._scale, self._channels
            generation = self._generation
        if mean is None or scale is None:
            return False
        settled = ring.next_seq - self._settle  # a late marker may yet blank those after
        count = min(frames, ring.capacity - self._settle, settled)
        if count <= self._ar_lags:
            return False
        window = ring.read_since(settled - count, max_frames=count, held=True)
        recent = (window.frames - mean) / scale
        recent[~window.valid] = np.nan
        # As unmeasured too: a held value repeats the one before, rows that teach persistence.
        assert window.held is not None  # asked for
        recent[window.held] = np.nan
        if channels is not None:  # as unmeasured: a noisy channel's rows would rule the fit
            recent[:, ~channels] = np.nan
        try:
            model = FittedAutoregressive(self._ar_lags).fit(recent)
        except ValueError:  # too few measured frames so far: keep what there is
            return False
        with self._lock:
            if self._generation != generation:  # cleared while fitting (a swap, a late marker)
                return False
            self._ar = model
        return True

    def drop_ar(self) -> None:
        """Forget the fitted AR baseline (its thread failed to refit it): none is served or
        scored, nor shown (its figures and gauge cleared), as before the first fit, until a
        refit succeeds, rather than an old fit served on for good or its last figures shown
        as current while none is scored."""
        with self._lock:
            self._ar = None
            self._ar_queue.clear()
            self._errors["ar"].clear()
            for name, horizon in [cell for cell in self._psnr_cells if cell[0] == "ar"]:
                self._psnr.remove(name, str(horizon + 1))
                del self._psnr_cells[name, horizon]
            self._pooled_psnr.remove("ar")  # a no-op before its first figure

    def score_ar(self, ring: RingBuffer) -> int:
        """Score the AR baseline on the windows :meth:`update` has scored since the last call,
        in one batch; returns how many. Windows whose past has left the ring, or whose past
        (its ``ar_lags`` frames) or true frames are blanked, are dropped."""
        with self._lock:
            model, mean, scale = self._ar, self._mean, self._scale
            channels = self._channels
            seqs = list(self._ar_queue)
            self._ar_queue.clear()
        if model is None or not seqs:
            return 0
        lags, pasts, targets, measured = model.lags, [], [], []
        for seq in seqs:
            first = seq + 1 - lags
            # Its own lags may reach before the prediction's input, into blanked artefact
            # (held frames, no cortex), which update() checked only from the input on.
            if first < 0 or ring.blanked_among(first, seq + self._horizons):
                continue
            block = ring.read_since(first, max_frames=lags + self._horizons, held=True)
            if len(block) == lags + self._horizons and block.seq[0] == first:
                assert block.held is not None  # asked for
                scored = ~block.held[lags:]  # as update() scores it: held values left out
                if channels is not None:
                    scored &= channels
                if not scored.any(axis=(1, 2)).all():  # update() left it unscored
                    continue
                pasts.append(block.frames[:lags])
                targets.append(block.frames[lags:])
                measured.append(scored)
        if not pasts:
            return 0
        past = (np.stack(pasts) - mean) / scale
        target = (np.stack(targets) - mean) / scale
        difference = model.predict(past, self._horizons) - target
        errors = _mean_square(difference, np.stack(measured))
        with self._lock:
            if self._ar is not model:  # swapped while scoring: these are in the old units
                return 0
            for error in errors:
                self._errors["ar"].append(error)
            self._publish()
        return len(errors)

    def _count_held_not_scored(self, count: int) -> None:
        if count:
            self.held_values_not_scored += count
            self._held_not_scored.inc(count)

    def _count_unscored_after_swap(self, count: int) -> None:
        if count:
            self.unscored_after_swap += count
            self._unscored_after_swap.inc(count)

    def _publish(self) -> None:
        record = self.record()
        for name, values in record.psnr.items():
            for k, value in enumerate(values):
                cell = self._psnr_cells.get((name, k))
                if cell is None:
                    cell = self._psnr_cells[name, k] = self._psnr.labels(name, str(k + 1))
                cell.set(value)
        for name, value in record.pooled_psnr.items():
            self._pooled_psnr.labels(name).set(value)

    def psnr(self) -> dict[str, np.ndarray]:
        """Predictor -> (horizons,) rolling PSNR in dB; empty arrays before anything is scored."""
        return self.record().psnr

    @property
    def scored(self) -> int:
        """Scored predictions the rolling figures cover now."""
        return len(self._errors["model"])

    def record(self) -> LiveRecord:
        """:attr:`scored`, :meth:`psnr` and the pooled PSNR at one moment: read apart, a
        model change between them would pair the old model's count with the new model's
        (empty) figures."""
        psnr, pooled = {}, {}
        with self._lock:
            for name, errors in self._errors.items():
                if not errors:
                    psnr[name] = np.zeros(0)
                    continue
                mse = errors.mean()  # every horizon has the same count: one per prediction
                psnr[name] = psnr_db(mse)
                pooled[name] = float(psnr_db(mse.mean()))
            return LiveRecord(len(self._errors["model"]), psnr, pooled)
