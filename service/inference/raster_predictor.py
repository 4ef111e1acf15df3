"""ONNX Runtime backend, raster mode: S-HR-VQVAE's faithful sampler behind the ``Predictor``
protocol.

The sampler (:mod:`models.vqvae.raster_sampler`) runs ``1 + 16 * (1 + h*w) + 1`` sequential
stage evaluations per prediction (1,618 for a 10x10 code grid): a few hundred milliseconds on a
CPU, for evaluation and replay, not a closed loop at stride 1 (the daemon's scheduler skips the
windows it cannot keep up with, and counts them). This module opens its stages the daemon's way
(device, threads) and converts µV to model units and back.
"""

from __future__ import annotations

import logging
from functools import partial
from pathlib import Path

import numpy as np

from models.metadata import RASTER_STAGES, differing_fields, read_model_metadata
from models.vqvae.raster_sampler import STAGE_OWN, RasterSampler
from service.inference._window_predictor import WindowPredictor
from service.inference.onnx_predictor import open_session, session_info
from service.inference.predictor import DEFAULT_STREAM, ModelMismatchError, StreamSpec

_log = logging.getLogger("corticast.inference")


class RasterPredictor(WindowPredictor):
    """S-HR-VQVAE's raster sampler behind the daemon's ``Predictor`` protocol (µV in, µV out).

    Parameters are those of :class:`service.inference.onnx_predictor.OnnxPredictor`; ``path`` is the
    window graph the raster stages were exported beside. It is fed the whole window each call,
    as window mode is; its stages are never irregular. Nothing runs in the background in raster
    mode (no keep-warm).
    """

    warmup_runs = 1
    """Whole predictions at load: each is ~1,600 session runs, enough to settle every allocation."""

    def __init__(
        self,
        path: str | Path,
        stream: StreamSpec = DEFAULT_STREAM,
        *,
        device: str = "cpu",
        threads: int = 1,
        device_id: int = 0,
        warm: bool = True,
    ) -> None:
        if device not in ("cpu", "cuda"):
            raise ValueError(f"'device' must be 'cpu' or 'cuda' in raster mode, got {device!r}")
        opener = partial(open_session, device=device, threads=threads, device_id=device_id)
        self._sampler = RasterSampler(path, open_stage=opener)
        _check_stages_match(path, self._sampler)
        super().__init__(self._sampler.metadata, stream, path)
        self._input = np.zeros((1, stream.past_frames, 1, *stream.grid.shape), dtype=np.float32)
        self._times = None
        step_path = self._sampler.paths["step"]
        self.info = session_info(step_path, self.metadata, device, device_id, "fp32", "raster")
        self._warm(keep_warm_s=None, at_load=warm)
        _log.info(
            "loaded %s on %s (raster sampler, %d evaluations per prediction, %s)",
            self.info.model, self.info.backend, self._sampler.evaluations, path,
        )  # fmt: skip

    @property
    def evaluations(self) -> int:
        """Sequential graph evaluations per prediction."""
        return self._sampler.evaluations

    def _run(self) -> np.ndarray:
        return self._sampler.sample(self._input)


def _check_stages_match(path: str | Path, sampler: RasterSampler) -> None:
    """Refuse stages that are not the ones exported with the window graph ``path``: the
    daemon names, hashes and warns by that file, and would serve another export's sampler."""
    window, stages = read_model_metadata(path), sampler.metadata
    differ = differing_fields(window, stages, own=STAGE_OWN)
    if differ:
        raise ModelMismatchError(
            f"{str(sampler.paths[RASTER_STAGES[0]])!r} comes from another export than "
            f"{str(path)!r}: their metadata differ in {', '.join(differ)} (export both from "
            "one run: corticast export RUN OUT --raster)"
        )
