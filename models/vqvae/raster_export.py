"""ONNX export of S-HR-VQVAE's faithful raster sampler as four graphs the host drives.

``models.vqvae.raster_sampler`` runs the loop; this module writes its stages beside the
window graph (``models.metadata.raster_stage_path``):

- ``encode``: past frames (1, P, 1, rows, cols) -> the last ``context_frames`` code maps
  ``window`` (1, K, h, w) int64 (encoder, then the argmin codebook lookups as MatMul + ArgMin +
  Gather per level);
- ``context``: ``window`` -> the temporal stack's summary for the next frame (1, C, h, w);
- ``step``: ``context`` and the frame's codes chosen so far ``current`` (1, h, w) -> the argmax
  code at every position (1, h, w); the host keeps only the next raster position's;
- ``decode``: the chosen code maps ``codes`` (1, F, h, w) -> future frames (1, F, 1, rows, cols).

Parity is checked end to end: the host loop over the four ONNX graphs must choose exactly the
codes ``SHRVQVAE.predict_raster`` chooses, and decode them to the same frames.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from models.export import PARITY_TOLERANCE, example_input, trace_to_onnx
from models.metadata import RASTER_STAGES, ModelMetadata, raster_stage_path
from models.vqvae.model import SHRVQVAE
from models.vqvae.raster_sampler import RasterSampler


class _Encode(nn.Module):
    def __init__(self, model: SHRVQVAE) -> None:
        super().__init__()
        self.model = model

    def forward(self, past: Tensor) -> Tensor:
        return self.model.encode(past)[:, -self.model.config.context_frames :]


class _Context(nn.Module):
    def __init__(self, model: SHRVQVAE) -> None:
        super().__init__()
        self.model = model

    def forward(self, window: Tensor) -> Tensor:
        return self.model.pixelcnn.next_context(window)


class _Step(nn.Module):
    def __init__(self, model: SHRVQVAE) -> None:
        super().__init__()
        self.model = model

    def forward(self, context: Tensor, current: Tensor) -> Tensor:
        return self.model.pixelcnn.raster_logits(context, current).argmax(1)


class _Decode(nn.Module):
    def __init__(self, model: SHRVQVAE) -> None:
        super().__init__()
        self.model = model

    def forward(self, codes: Tensor) -> Tensor:
        return self.model.decode(codes)


def export_raster(
    model: SHRVQVAE, window_path: str | Path, metadata: ModelMetadata, *, optimize: bool = True
) -> tuple[list[Path], float]:
    """Write the four stage graphs beside ``window_path`` and check the sampler they make.

    ``metadata`` is the window graph's; each stage carries it with its own ``graph`` kind.
    Returns the files written and the largest |ONNX - PyTorch| of the sampled future.

    Raises
    ------
    RuntimeError
        If the host loop over the graphs chooses other codes than PyTorch, or its frames
        differ by more than ``PARITY_TOLERANCE``; nothing is written.
    """
    model = model.eval()
    config = model.config
    side = model.latent_side
    past = example_input((1, config.past_frames, 1, *config.grid_shape), seed=0)
    with torch.no_grad():
        window = _Encode(model)(past)
        context = _Context(model)(window)
    examples = {
        "encode": (_Encode(model), (past,), ["past"], ["window"]),
        "context": (_Context(model), (window,), ["window"], ["context"]),
        "step": (
            _Step(model),
            (context, torch.zeros(1, side, side, dtype=torch.int64)),
            ["context", "current"],
            ["codes"],
        ),
        "decode": (
            _Decode(model),
            (torch.zeros(1, config.future_frames, side, side, dtype=torch.int64),),
            ["codes"],
            [metadata.output_name],
        ),
    }
    # Written and checked in a scratch folder beside, then renamed into place: a failed check
    # or a crash leaves the stage files that were there, not some of them or none.
    window_path = Path(window_path)
    scratch = Path(tempfile.mkdtemp(prefix=f".{window_path.name}.", dir=window_path.parent))
    try:
        for stage in RASTER_STAGES:
            module, example, inputs, outputs = examples[stage]
            path = raster_stage_path(scratch / window_path.name, stage)
            stage_metadata = replace(
                metadata, graph=f"raster-{stage}", input_name=inputs[0], output_name=outputs[0]
            )
            trace_to_onnx(module, example, path, inputs, outputs, stage_metadata, optimize)
        error = _check_sampler(model, scratch / window_path.name, past)
        paths = [raster_stage_path(window_path, stage) for stage in RASTER_STAGES]
        for stage, path in zip(RASTER_STAGES, paths, strict=True):
            os.replace(raster_stage_path(scratch / window_path.name, stage), path)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return paths, error


def _check_sampler(model: SHRVQVAE, window_path: str | Path, past: Tensor) -> float:
    """The largest frame difference between the ONNX host loop and ``predict_raster``, once
    both chose the same codes."""
    sampler = RasterSampler(window_path)
    codes = sampler.codes(past.numpy())
    with torch.no_grad():
        expected_codes = model.raster_codes(past)
        expected = model.decode(expected_codes).numpy()
    mismatched = int((codes != expected_codes.numpy()).sum())
    if mismatched:
        raise RuntimeError(
            f"the exported raster sampler chose {mismatched} of {codes.size} codes differently "
            "from PyTorch; its stage files were not written"
        )
    error = float(np.abs(sampler.decode(codes) - expected).max())
    if not error <= PARITY_TOLERANCE:
        raise RuntimeError(
            f"the exported raster sampler differs from PyTorch by {error:.3g} "
            f"(> {PARITY_TOLERANCE:g}); its stage files were not written"
        )
    return error
