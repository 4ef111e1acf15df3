"""ONNX Runtime backend, raster mode: S-HR-VQVAE's faithful sampler driven from the host.

Paper 002 predicts a frame's codes one position at a time in raster order (eq. 6), each seeing
the ones chosen before it. A graph cannot hold that loop at a useful size, so the export writes
four graphs beside the window graph (``models.metadata.raster_stage_path``) and this module runs
the loop: ``encode`` the past once; per future frame, ``context`` once, then ``step`` once per
code position, keeping that position's code; ``decode`` the 16 chosen code maps. That is
``1 + 16 * (1 + h*w) + 1`` sequential evaluations (1,618 for a 10x10 code grid): a few hundred
milliseconds per prediction on a CPU, for evaluation and replay, not a closed loop at stride 1
(the daemon's scheduler skips the windows it cannot keep up with, and counts them).

Decoding is greedy (argmax at every position), the same choice ``SHRVQVAE.predict_raster``
makes without noise, so the export's parity check can compare codes exactly.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import numpy as np

from models.metadata import RASTER_STAGES, ModelMetadata, raster_stage_path
from service.inference._window_predictor import WindowPredictor
from service.inference.onnx_predictor import open_session, session_info
from service.inference.predictor import DEFAULT_STREAM, ModelMismatchError, StreamSpec

_log = logging.getLogger("corticast.inference")


class RasterSampler:
    """The four stage sessions and the host loop over them, on normalised frames.

    Parameters
    ----------
    window_path
        The family's window graph; the stages are read from beside it.
    device, threads, device_id
        As :func:`service.inference.onnx_predictor.open_session` (``"cpu"`` or ``"cuda"``).

    Raises
    ------
    ModelMismatchError
        If a stage file is missing, is not the stage its name says, or comes from another
        export than its siblings (their metadata differ beyond the graph kind and names).
    """

    def __init__(
        self, window_path: str | Path, *, device: str = "cpu", threads: int = 1, device_id: int = 0
    ) -> None:
        if device not in ("cpu", "cuda"):
            raise ValueError(f"'device' must be 'cpu' or 'cuda' in raster mode, got {device!r}")
        self.sessions = {}
        self.paths = {}
        metadata: dict[str, ModelMetadata] = {}
        for stage in RASTER_STAGES:
            path = raster_stage_path(window_path, stage)
            if not path.is_file():
                raise ModelMismatchError(
                    f"raster mode needs {str(path)!r} beside {str(window_path)!r}; export the "
                    "model with `corticast export ... --raster`"
                )
            session, metadata[stage] = open_session(
                path, device, threads=threads, device_id=device_id
            )
            if metadata[stage].graph != f"raster-{stage}":
                raise ModelMismatchError(
                    f"{str(path)!r} is a {metadata[stage].graph!r} graph, not 'raster-{stage}'"
                )
            self.sessions[stage], self.paths[stage] = session, path
        first = metadata[RASTER_STAGES[0]]
        for stage, other in metadata.items():
            if _identity(other) != _identity(first):
                raise ModelMismatchError(
                    f"{str(self.paths[stage])!r} comes from another export than "
                    f"{str(self.paths[RASTER_STAGES[0]])!r} (their metadata differ)"
                )
        self.metadata = first
        self._code_shape = tuple(self.sessions["step"].get_inputs()[1].shape)  # (1, h, w)
        self.evaluations = 2 + first.future_frames * (1 + int(np.prod(self._code_shape)))
        """Sequential graph evaluations per prediction."""

    def sample(self, past: np.ndarray) -> np.ndarray:
        """(1, F, 1, rows, cols) normalised future of a (1, P, 1, rows, cols) normalised past."""
        return self.decode(self.codes(past))

    def codes(self, past: np.ndarray) -> np.ndarray:
        """(1, F, h, w) the code maps chosen for the future, position by position."""
        run = self.sessions
        (window,) = run["encode"].run(None, {"past": past})
        _, rows, cols = self._code_shape
        chosen = []
        for _ in range(self.metadata.future_frames):
            (context,) = run["context"].run(None, {"window": window})
            current = np.zeros(self._code_shape, dtype=np.int64)
            feeds = {"context": context, "current": current}
            for row in range(rows):
                for col in range(cols):
                    (codes,) = run["step"].run(None, feeds)
                    current[0, row, col] = codes[0, row, col]
            chosen.append(current)
            window = np.concatenate([window[:, 1:], current[:, None]], axis=1)
        return np.stack(chosen, axis=1)

    def decode(self, codes: np.ndarray) -> np.ndarray:
        """(1, F, 1, rows, cols) normalised frames of (1, F, h, w) code maps."""
        (future,) = self.sessions["decode"].run(None, {"codes": codes})
        return future


def _identity(metadata: ModelMetadata) -> ModelMetadata:
    """What every stage of one export shares: its metadata less the graph's own names."""
    return replace(metadata, graph="window", input_name="", output_name="")


class RasterPredictor(WindowPredictor):
    """:class:`RasterSampler` behind the daemon's ``Predictor`` protocol (µV in, µV out).

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
    ) -> None:
        self._sampler = RasterSampler(path, device=device, threads=threads, device_id=device_id)
        super().__init__(self._sampler.metadata, stream, path)
        self._input = np.zeros((1, stream.past_frames, 1, *stream.grid.shape), dtype=np.float32)
        self._times = None
        step_path = self._sampler.paths["step"]
        self.info = session_info(step_path, self.metadata, device, device_id, "fp32", "raster")
        self._warm(keep_warm_s=None)
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
