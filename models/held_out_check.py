"""The held-out check an exported model carries: its PSNR per predicted frame beside
persistence's, on data it was not tuned on, scored through the exported graph itself (ONNX
Runtime, what the daemon serves). ``corticast export`` scores the validation split of the data
it was trained on; ``corticast adapt`` the held-out tail of the rig's sessions it was adapted on,
in-session, what the rig will see. The check names which (``data``).

Why in the file: a daemon handed a model learns only from live scoring, after
``[loop] health_min_scored`` predictions, that it is worse than predicting nothing at some
horizon. With the check in the metadata (``provenance["held_out_check"]``) the daemon can say
so when the model is configured (``service.inference.model_files``), before it serves anything.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from bench.data.session import Session
from models.evaluation import evaluate
from models.loading import load_predictor
from models.metadata import (
    HELD_OUT_CHECK,
    RUN_VALIDATION,
    read_model_metadata,
    rewrite_model_metadata,
)
from models.windows import SplitWindows
from service.core.scores import DATA_RANGE

CHECK_SPLIT = "val"
"""The run's own held-out split: not trained on, and not the test split reports quote."""
MAX_WINDOWS = 512
"""At most this many windows are scored (every k-th of the split's, k rounded up), spread
evenly over the split: enough for a per-frame verdict at the 0.1 dB level on correlated windows, in
seconds of inference on a CPU."""
_BATCH = 64


def held_out_check(
    window_graph: str | Path,
    sessions: Sequence[Session],
    *,
    split: str = CHECK_SPLIT,
    fractions: tuple[float, float, float] = (0.8, 0.1, 0.1),
    data: str = RUN_VALIDATION,
    max_windows: int = MAX_WINDOWS,
) -> dict[str, Any]:
    """Score ``window_graph`` and persistence on ``split`` of ``sessions``, each split by time
    into ``fractions`` (the default: the run's own validation split, as training splits).

    ``data`` labels the result (:data:`models.metadata.CHECK_DATA`). The windows are
    normalised as the model's own metadata says (the normalisation its run fitted), so the
    figures are in the model's units at ``DATA_RANGE``.
    """
    model = load_predictor(window_graph)
    windows = SplitWindows(sessions, split, model.normalisation, fractions=fractions)
    # Every stride-th window of the split, evenly spread: one build of the windows, thinned.
    stride = max(1, math.ceil(len(windows) / max_windows))
    picked = range(0, len(windows), stride)
    report = evaluate({"model": model.predict}, _batches(windows, picked))
    psnr = report.psnr
    return {
        "data": data,
        "split": split,
        "windows": report.n_windows,
        "window_stride": stride,
        "data_range": DATA_RANGE,
        "model_psnr_db": np.round(psnr["model"], 3).tolist(),
        "persistence_psnr_db": np.round(psnr["persistence"], 3).tolist(),
    }


def _batches(windows: SplitWindows, picked: range) -> Iterator[tuple[np.ndarray, ...]]:
    """The ``picked`` windows as (past, future, live) stacks of up to ``_BATCH``, one at a
    time: each scored over its live channels, as the daemon's live scores it is set beside."""
    for first in range(0, len(picked), _BATCH):
        indices = picked[first : first + _BATCH]
        chunk = [windows[index] for index in indices]
        yield (
            np.stack([past for past, _ in chunk]),
            np.stack([future for _, future in chunk]),
            np.stack([windows.live(index) for index in indices]),
        )


def stamp_check(paths: Sequence[str | Path], check: dict[str, Any]) -> None:
    """Record ``check`` in the metadata of every file in ``paths`` (window, step and stage
    graphs of one model), leaving their graphs untouched."""
    for path in paths:
        metadata = read_model_metadata(path)
        provenance = {**metadata.provenance, HELD_OUT_CHECK: check}
        rewrite_model_metadata(path, replace(metadata, provenance=provenance))
