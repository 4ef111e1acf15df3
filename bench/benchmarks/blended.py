"""What the daemon would have served: a model blended with persistence, fitted as live.

The daemon does not serve its model's prediction as it is: per horizon it serves
``persistence + w (model - persistence)``, with the weights :class:`service.loop.blend.Blend`
has fitted on the predictions scored so far (``service.loop.live_accuracy`` scores one once its
16 future frames have arrived; ``service.loop.closed_loop`` serves each prediction before it
scores what the frame just arrived completes). :class:`ServedColumns` replays that on a bench's
windows with the real ``Blend`` and default :class:`~service.loop.settings.LoopSettings`:

- one ``Blend`` per session, reset when the next session starts (a new recording: the daemon's
  weights describe one model on one recording);
- windows in time order; each is served with the weights fitted on the windows whose last
  future frame came before its newest past frame (frame index ``p_j + 16 < p_i``: what a daemon
  predicting at every frame has scored when it serves ``p_i``), then queued to be scored;
- errors reach the blend in the model's own normalised units, as the live scores do (the
  bench's windows are in a shared normalisation; each is mapped into the model's);
- with ``[loop] blend_ar`` (the default) the live fitted AR baseline joins the blend as the
  daemon's does: fitted in the model's units on the newest ``ar_history_s`` of the session's
  frames up to the window's newest, refitted on the daemon's schedule
  (:class:`service.loop.ar_baseline.SessionRefits`), its forecast served beside the model's.
  The daemon's ring marks dropped samples missing and the AR fit skips them; here the split's
  frames run on across a drop;
- the blend is fitted on each window's live channels (``SplitWindows.live``, the ones
  ``models.evaluation.evaluate`` scores it on), as the daemon fits it on those it scores.

What the bench's blend sees: only the bench's windows, one every ``stride`` frames, all of them
gap-free (a window whose span has a dropped sample does not exist, where the daemon would
predict it and not score it). The blend counts windows, not seconds, so at a bench stride of 4
its ``blend_window`` (1000) reaches back 4000 frames and it serves the raw model for the first
``blend_min_windows`` (200) windows, 800 frames, of each session: the daemon at stride ``s``
does the same with ``s`` in place of 4, at stride 1 over a quarter of those frames.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from models.loading import LoadedModel
from models.windows import PAST_FRAMES, Normalisation, SplitWindows
from service.core.autoregressive import FittedAutoregressive, served_forecast
from service.core.grid import NOMINAL_RATE_HZ
from service.inference.scheduler import Prediction
from service.loop.ar_baseline import SessionRefits
from service.loop.blend import Blend
from service.loop.settings import LoopSettings

SUFFIX = " blended"
"""A model's blended column is named after it with this suffix."""


@dataclass(frozen=True)
class _Queued:
    """A served window waiting for the frame after its last future frame, in model units."""

    newest: int
    model: np.ndarray
    persistence: np.ndarray
    truth: np.ndarray
    ar: np.ndarray | None
    live: np.ndarray


class ServedColumns:
    """A model's column and its blended column on ``windows``, one inference per batch.

    ``model`` and ``blended`` are predictors for ``models.evaluation.evaluate`` over
    ``windows`` in order (a DataLoader without shuffling, or ``windows.batches``): both take
    the past of the next windows, ``blended`` checks that it is, and the second of the two
    called with the same batch reuses the first's inference.

    Parameters
    ----------
    model
        Taking and returning frames in ``windows.normalisation``
        (``model.use_frame_normalisation(windows.normalisation)``).
    windows
        The scored windows, in a fixed normalisation.
    settings
        ``blend_*`` and ``ar_*`` of the daemon's ``[loop]`` section; default: the daemon's
        defaults.
    sample_rate_hz
        The sessions' frame rate: turns the AR's seconds into frames.
    """

    def __init__(
        self,
        model: LoadedModel,
        windows: SplitWindows,
        settings: LoopSettings | None = None,
        *,
        sample_rate_hz: float = NOMINAL_RATE_HZ,
    ) -> None:
        if not isinstance(windows.normalisation, Normalisation):
            raise ValueError(
                "'windows' must be in a fixed normalisation (the blend fits in the model's "
                f"units, mapped from the windows'), got {type(windows.normalisation).__name__}"
            )
        self._model = model
        self._windows = windows
        self._origins = windows.origins
        settings = settings or LoopSettings()
        self.blend = Blend(settings)
        """The real blend, as it stands after the windows served so far."""
        self._ar = _SessionAr(settings, sample_rate_hz) if self.blend.wants_ar else None
        self._next = 0
        self._session = -1
        self._queue: deque[_Queued] = deque()
        self._last: tuple[Any, np.ndarray] | None = None
        self.final_weights: list[list[float]] = []
        """The weights each session ended with, sessions in order (a session's are added when
        the next starts or :meth:`finish` is called)."""
        self.final_ar_weights: list[list[float]] = []
        """The live AR baseline's weights each session ended with, as ``final_weights``."""

    def model(self, past: Any) -> np.ndarray:
        """The model's prediction of ``past`` (B, T, 1, H, W), remembered for ``blended``."""
        if self._last is None or self._last[0] is not past:
            self._last = (past, np.asarray(self._model.predict(past)))
        return self._last[1]

    def blended(self, past: Any) -> np.ndarray:
        """What the daemon would have served for the next ``len(past)`` windows."""
        given = np.asarray(past)
        future = self.model(past)
        first = self._next
        if first + len(given) > len(self._windows):
            raise ValueError(
                f"'past' must be among the {len(self._windows)} windows: {len(given)} more "
                f"asked for after {first}"
            )
        served = np.empty_like(future)
        for k, index in enumerate(range(first, first + len(given))):
            window_past, truth = (np.asarray(part) for part in self._windows[index])
            if not np.array_equal(window_past, given[k]):
                raise ValueError(
                    f"'past' must be the windows' pasts in order: batch item {k} is not "
                    f"window {index}'s (evaluate the windows unshuffled, from the first)"
                )
            served[k] = self._serve(index, given[k], future[k], truth)
        self._next += len(given)
        return served

    def finish(self) -> None:
        """Record the last session's final weights (call once every window is served)."""
        if self._session >= 0:
            shares = self.blend.shares
            self.final_weights.append(shares.model.round(3).tolist())
            self.final_ar_weights.append(shares.ar.round(3).tolist())
            self._session = -1

    def _serve(
        self, index: int, past: np.ndarray, future: np.ndarray, truth: np.ndarray
    ) -> np.ndarray:
        """One window (T, 1, H, W): score what its newest frame completes, serve, queue it."""
        session, start = (int(value) for value in self._origins[index])
        newest = start + PAST_FRAMES - 1
        if session != self._session:
            self.finish()
            self.blend.reset()
            self._queue.clear()
            self._session = session
            if self._ar is not None:
                self._ar.restart()
        horizons = len(future)
        while self._queue and self._queue[0].newest + horizons < newest:
            done = self._queue.popleft()
            self.blend.observe(done.model, done.persistence, done.truth, done.ar, done.live)
        own_past, own_future = self._own(past), self._own(future)
        ar = None
        if self._ar is not None:
            self._ar.at(newest, lambda first: self._own(
                self._windows.split_frames(session, first, newest + 1)))  # fmt: skip
            ar = self._ar.forecast(own_past, horizons)
        prediction = Prediction(
            future=own_future,
            past=own_past,
            input_seq=newest,
            first_input_seq=newest - len(past) + 1,
            input_timestamp=0.0,
            available_at=0.0,
            started_at=0.0,
            finished_at=0.0,
            handed_at=0.0,
            missing_frames=0,
            skipped_before=0,
        )
        served, _ = self.blend.serve(prediction, ar)
        live = self._windows.live(index)
        self._queue.append(_Queued(newest, own_future, own_past[-1], self._own(truth), ar, live))
        frames = self._windows.normalisation
        return frames.normalise(self._model.normalisation.denormalise(served.future))[:, None]

    def _own(self, frames: np.ndarray) -> np.ndarray:
        """(T, 1, H, W) frames in the windows' normalisation -> (T, H, W) in the model's."""
        uv = self._windows.normalisation.denormalise(frames[:, 0])
        return self._model.normalisation.normalise(uv).astype(np.float32)


class _SessionAr:
    """The daemon's live AR baseline on one session's clock, for the blend (see the module
    docstring): fitted on the newest ``ar_history_s`` of frames, on the daemon's schedule."""

    def __init__(self, settings: LoopSettings, rate: float) -> None:
        self._settings, self._rate = settings, rate
        self.restart()

    def restart(self) -> None:
        """A new session: nothing fitted, the schedule from the start."""
        self._fitted: FittedAutoregressive | None = None
        self._refits = SessionRefits(self._settings, self._rate)

    def at(self, newest: int, frames: Callable[[int], np.ndarray]) -> None:
        """The round due once frame ``newest`` has arrived; ``frames(first)`` gives the
        session's frames ``first..newest`` (T, rows, cols) in the model's units."""

        def refit() -> bool:
            first = max(0, newest + 1 - self._refits.history_frames)
            try:
                self._fitted = FittedAutoregressive(self._settings.ar_lags).fit(frames(first))
            except ValueError:  # too little stream so far, as the daemon's first rounds
                return False
            return True

        self._refits.at(newest, self._fitted is not None, refit)

    def forecast(self, past: np.ndarray, horizons: int) -> np.ndarray | None:
        """(horizons, rows, cols) from ``past`` (T, rows, cols) in the model's units, as
        ``LiveAccuracy.ar_forecast`` serves it; None before the first fit."""
        return None if self._fitted is None else served_forecast(self._fitted, past, horizons)
