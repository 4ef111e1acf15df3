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
  bench's windows are in a shared normalisation; each is mapped into the model's).

What the bench's blend sees: only the bench's windows, one every ``stride`` frames, all of them
gap-free (a window whose span has a dropped sample does not exist, where the daemon would
predict it and not score it). The blend counts windows, not seconds, so at a bench stride of 4
its ``blend_window`` (1000) reaches back 4000 frames and it serves the raw model for the first
``blend_min_windows`` (200) windows, 800 frames, of each session: the daemon at stride ``s``
does the same with ``s`` in place of 4, at stride 1 over a quarter of those frames.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np

from models.loading import LoadedModel
from models.windows import PAST_FRAMES, Normalisation, SplitWindows
from service.inference.scheduler import Prediction
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
        ``blend_*`` of the daemon's ``[loop]`` section; default: the daemon's defaults.
    """

    def __init__(
        self,
        model: LoadedModel,
        windows: SplitWindows,
        settings: LoopSettings | None = None,
    ) -> None:
        if not isinstance(windows.normalisation, Normalisation):
            raise ValueError(
                "'windows' must be in a fixed normalisation (the blend fits in the model's "
                f"units, mapped from the windows'), got {type(windows.normalisation).__name__}"
            )
        self._model = model
        self._windows = windows
        self._origins = windows.origins
        self.blend = Blend(settings or LoopSettings())
        """The real blend, as it stands after the windows served so far."""
        self._next = 0
        self._session = -1
        self._queue: deque[_Queued] = deque()
        self._last: tuple[Any, np.ndarray] | None = None
        self.final_weights: list[list[float]] = []
        """The weights each session ended with, sessions in order (a session's are added when
        the next starts or :meth:`finish` is called)."""

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
            self.final_weights.append(self.blend.weights.round(3).tolist())
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
        horizons = len(future)
        while self._queue and self._queue[0].newest + horizons < newest:
            done = self._queue.popleft()
            self.blend.observe(done.model, done.persistence, done.truth)
        own_past, own_future = self._own(past), self._own(future)
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
        served, _ = self.blend.serve(prediction)
        self._queue.append(_Queued(newest, own_future, own_past[-1], self._own(truth)))
        frames = self._windows.normalisation
        return frames.normalise(self._model.normalisation.denormalise(served.future))[:, None]

    def _own(self, frames: np.ndarray) -> np.ndarray:
        """(T, 1, H, W) frames in the windows' normalisation -> (T, H, W) in the model's."""
        uv = self._windows.normalisation.denormalise(frames[:, 0])
        return self._model.normalisation.normalise(uv).astype(np.float32)
