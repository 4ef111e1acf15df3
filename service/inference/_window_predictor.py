"""What every predictor fed the whole window on each call shares: window mode on ONNX Runtime,
TensorRT and PyTorch, and raster mode's host-driven sampler.

Each call checks the window, normalises it into the backend's input buffer (and an irregular
model's times into its times buffer), runs the model once under the predictor's lock and maps
the output back to µV. A backend supplies only its buffers and :meth:`WindowPredictor._run`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from models.metadata import ModelMetadata
from service.inference._keep_warm import WarmPredictor
from service.inference.predictor import (
    PredictorInfo,
    StreamSpec,
    check_future,
    check_model_fits,
    check_window,
    normaliser_of,
    past_times_input,
)


class WindowPredictor(WarmPredictor):
    """Base of the predictors fed the whole window (see the module docstring).

    A subclass calls ``super().__init__`` once it has the model's metadata (a model that does
    not fit ``stream`` is refused there), provides ``_input`` (1, past_frames, 1, rows, cols)
    and ``_times`` (1, past_frames), None for a regular model (attributes or properties), sets
    ``info`` and then calls :meth:`_warm`.
    """

    info: PredictorInfo
    _input: np.ndarray
    _times: np.ndarray | None

    def __init__(self, metadata: ModelMetadata, stream: StreamSpec, path: str | Path) -> None:
        check_model_fits(metadata, stream, path)
        super().__init__()
        self.metadata = metadata
        self._stream = stream
        self.normaliser = normaliser_of(metadata, path)

    def predict(
        self,
        window: np.ndarray,
        newest_seq: int | None = None,
        past_times: np.ndarray | None = None,
    ) -> np.ndarray:
        check_window(window, self._stream)
        times = past_times_input(past_times, self.metadata)
        with self._lock:
            self._check_kept_warm()
            stats = self.normaliser.stats_for_prediction()
            self.normaliser.normalise_into(window, self._input[0, :, 0], stats)
            if times is not None:
                self._times[0] = times
            future = check_future(self._run(), self._stream, self.info.model_path)
            self._used()
        return self.normaliser.denormalise(future[0, :, 0], stats)

    def _warm_once(self) -> None:
        check_future(self._run(), self._stream, self.info.model_path)

    def _run(self) -> np.ndarray:
        """The model on the input buffers: (1, future_frames, 1, rows, cols) normalised, in an
        array the next run does not overwrite (it is read after the lock is released)."""
        raise NotImplementedError
