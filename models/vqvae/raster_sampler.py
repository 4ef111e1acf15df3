"""S-HR-VQVAE's faithful raster sampler: the host loop over the four exported stage graphs.

Paper 002 predicts a frame's codes one position at a time in raster order (eq. 6), each seeing
the ones chosen before it. A graph cannot hold that loop at a useful size, so the export
(:mod:`models.vqvae.raster_export`) writes four graphs beside the window graph
(``models.metadata.raster_stage_path``) and this module runs the loop: ``encode`` the past once;
per future frame, ``context`` once, then ``step`` once per code position, keeping that
position's code; ``decode`` the 16 chosen code maps. That is ``1 + 16 * (1 + h*w) + 1``
sequential evaluations (1,618 for a 10x10 code grid).

Decoding is greedy (argmax at every position), the same choice ``SHRVQVAE.predict_raster``
makes without noise, so the export's parity check can compare codes exactly.

The sampler belongs to the model family, not to the daemon: the export checks it, offline
scoring runs it, and the daemon's raster backend (``service.inference.raster_predictor``) wraps
it, passing its own session opener (device, threads). It needs ONNX Runtime and numpy only.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from models.metadata import (
    RASTER_STAGES,
    ModelMetadata,
    differing_fields,
    raster_stage_path,
    read_model_metadata,
)
from service.core.errors import ModelMismatchError

STAGE_OWN = ("graph", "input_name", "output_name")
"""Metadata in which one raster stage of an export differs from its siblings and its window
graph: the graph's kind and tensor names."""
StageOpener = Callable[[Path], tuple[Any, ModelMetadata]]
"""Opens one stage file: an ``onnxruntime.InferenceSession`` and the file's metadata."""


def open_on_cpu(path: Path) -> tuple[Any, ModelMetadata]:
    """One stage on ONNX Runtime's CPU provider, one thread: what offline scoring and the
    export's parity check need (the daemon passes its own opener)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return session, read_model_metadata(path)


class RasterSampler:
    """The four stage sessions and the host loop over them, on normalised frames.

    Parameters
    ----------
    window_path
        The family's window graph; the stages are read from beside it.
    open_stage
        How each stage file is opened (provider, threads); :func:`open_on_cpu` by default.

    Raises
    ------
    ModelMismatchError
        If a stage file is missing, is not the stage its name says, or comes from another
        export than its siblings (their metadata differ beyond the graph kind and names).
    """

    def __init__(self, window_path: str | Path, *, open_stage: StageOpener = open_on_cpu) -> None:
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
            session, metadata[stage] = open_stage(path)
            if metadata[stage].graph != f"raster-{stage}":
                raise ModelMismatchError(
                    f"{str(path)!r} is a {metadata[stage].graph!r} graph, not 'raster-{stage}'"
                )
            self.sessions[stage], self.paths[stage] = session, path
        first = metadata[RASTER_STAGES[0]]
        for stage, other in metadata.items():
            if differing_fields(other, first, own=STAGE_OWN):
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
