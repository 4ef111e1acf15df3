"""Untrained models with 2-frame windows, exported once per session and shared by the tests."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from torch import nn

from models.export import export_onnx, export_step_onnx, step_metadata
from models.metadata import ModelMetadata
from models.registry import build_model
from tests._built_once import built_once
from tests._export_memo import ExportMemo
from tests.models._metadata import short_metadata

SHORT = {"hidden": (3, 4), "kernel_size": 3, "past_frames": 2, "future_frames": 2}
"""A two-layer model of widths 3 and 4 (told apart in state shapes), 2 frames in and out: the
export traces each frame, and two still roll out across both phases of MR-layer's temporal
skip."""
STEP_FRAMES = 2
"""Frames in and out of the model a step graph is exported from: the export traces the rollout
once per frame and phase (18 s for 2 frames, 36 s for 4 on a busy 2-core machine), and two
frames still roll out across both phases of MR-layer's temporal skip."""


@dataclass(frozen=True)
class ShortExport:
    """One exported graph: the model it came from, its metadata, the file, the parity error."""

    model: nn.Module
    metadata: ModelMetadata
    path: Path
    error: float


def short_exporter(
    factory: pytest.TempPathFactory, memo: ExportMemo
) -> Callable[[str, str], ShortExport]:
    """``export(family, graph)`` for ``graph`` "window" (a ``SHORT`` model) or "step" (with
    ``STEP_FRAMES`` frames), each exported once per test run (``tests/_built_once.py``).

    A step export traces ``torch.cond`` and costs tens of seconds on two busy cores, so the
    tests that read the same graph share one file instead of exporting it each. The model and
    its metadata are rebuilt where the file was exported by another worker: the same seed
    gives the same weights. The trace is kept in ``memo``: a test that exports the same model
    again (over a deployed file, say) reuses it.
    """
    made: dict[tuple[str, str], ShortExport] = {}

    def export(family: str, graph: str) -> ShortExport:
        if (family, graph) not in made:
            frames = SHORT["past_frames"] if graph == "window" else STEP_FRAMES
            config = {**SHORT, "past_frames": frames, "future_frames": frames}
            torch.manual_seed(0)
            model = build_model(family, config).eval()
            metadata = short_metadata(family, config, frames)
            if graph == "step":
                metadata = step_metadata(model, metadata)
            name = f"{family}.{graph}.onnx"

            def build(folder: Path) -> float:
                if graph == "window":
                    return export_onnx(model, folder / name, metadata, optimize=False)
                return export_step_onnx(model, folder / name, metadata)

            with memo.active():
                folder, error = built_once(factory, f"short-{family}-{graph}", build)
            made[family, graph] = ShortExport(model, metadata, folder / name, error)
        return made[family, graph]

    return export
