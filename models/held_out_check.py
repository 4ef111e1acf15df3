"""The held-out check an exported model carries: its PSNR per predicted frame beside
persistence's, on the validation split of the data it was trained on, scored through the
exported graph itself (ONNX Runtime, what the daemon serves).

Why in the file: a daemon handed a model learns only from live scoring, after
``[loop] health_min_scored`` predictions, that it is worse than predicting nothing at some
horizon. With the check in the metadata (``provenance["held_out_check"]``) the daemon can say
so when the model is configured (``service.inference.held_out``), before it serves anything.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from bench.data.session import Session
from models.evaluation import evaluate
from models.loading import load_predictor
from models.metadata import HELD_OUT_CHECK, read_model_metadata, rewrite_model_metadata
from models.windows import SplitWindows
from service.core.scores import DATA_RANGE

CHECK_SPLIT = "val"
"""The run's own held-out split: not trained on, and not the test split reports quote."""
MAX_WINDOWS = 512
"""About this many windows are scored (the stride is rounded per session), spread evenly over
the split: enough for a per-frame verdict at the 0.1 dB level on correlated windows, in
seconds of inference on a CPU."""
_BATCH = 64


def held_out_check(
    window_graph: str | Path, sessions: Sequence[Session], *, max_windows: int = MAX_WINDOWS
) -> dict[str, Any]:
    """Score ``window_graph`` and persistence on the validation split of ``sessions``.

    The windows are normalised as the model's own metadata says (the normalisation its run
    fitted), so the figures are in the model's units at ``DATA_RANGE``.
    """
    model = load_predictor(window_graph)
    everything = SplitWindows(sessions, CHECK_SPLIT, model.normalisation)
    if len(everything) == 0:
        raise ValueError(
            f"the {CHECK_SPLIT} split of the run's data holds no whole window to check the model on"
        )
    stride = max(1, math.ceil(len(everything) / max_windows))
    windows = SplitWindows(sessions, CHECK_SPLIT, model.normalisation, stride=stride)
    report = evaluate({"model": model.predict}, windows.batches(_BATCH))
    psnr = report.psnr
    return {
        "split": CHECK_SPLIT,
        "windows": report.n_windows,
        "window_stride": stride,
        "data_range": DATA_RANGE,
        "model_psnr_db": np.round(psnr["model"], 3).tolist(),
        "persistence_psnr_db": np.round(psnr["persistence"], 3).tolist(),
    }


def stamp_check(paths: Sequence[str | Path], check: dict[str, Any]) -> None:
    """Record ``check`` in the metadata of every file in ``paths`` (window, step and stage
    graphs of one model), leaving their graphs untouched."""
    for path in paths:
        metadata = read_model_metadata(path)
        provenance = {**metadata.provenance, HELD_OUT_CHECK: check}
        rewrite_model_metadata(path, replace(metadata, provenance=provenance))
