"""ONNX export of a generator's prediction graph, with metadata and a parity check.

The exported graph is encoder + predictor only (the decoder reconstructs the past for training):
batch 1, a fixed window, recurrences unrolled, weights as initialisers. It works on normalised
frames; the normalisation travels in the metadata (``models.metadata``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn

from models.metadata import METADATA_KEY, ModelMetadata

OPSET = 18
PARITY_TOLERANCE = 1e-4
"""Largest FP32 difference between ONNX Runtime and PyTorch accepted at export."""


class _PredictionGraph(nn.Module):
    """The part of a generator that runs in the daemon: ``predict``."""

    def __init__(self, generator: nn.Module) -> None:
        super().__init__()
        self.generator = generator

    def forward(self, past: torch.Tensor) -> torch.Tensor:
        return self.generator.predict(past)


def export_onnx(
    generator: nn.Module, path: str | Path, metadata: ModelMetadata, *, optimize: bool = True
) -> float:
    """Write ``generator``'s prediction graph to ``path`` and check it against PyTorch.

    Returns the largest absolute difference between ONNX Runtime and PyTorch on a seeded
    random window.

    Raises
    ------
    RuntimeError
        If that difference exceeds ``PARITY_TOLERANCE``; the file is removed.
    """
    path = Path(path)
    shape = (1, metadata.past_frames, 1, metadata.grid_rows, metadata.grid_cols)
    example = torch.randn(shape, generator=torch.Generator().manual_seed(0)).clamp(-1, 1)
    generator = generator.eval()
    torch.onnx.export(
        _PredictionGraph(generator).eval(),
        (example,),
        str(path),
        input_names=[metadata.input_name],
        output_names=[metadata.output_name],
        opset_version=OPSET,
        dynamo=True,
        optimize=optimize,
        verbose=False,
    )
    model = onnx.load(str(path))
    entry = model.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, metadata.to_json()
    model.producer_name = "corticast"
    onnx.checker.check_model(model)
    onnx.save(model, str(path))

    with torch.no_grad():
        expected = generator.predict(example).numpy()
    got = run_onnx(path, example.numpy())
    error = float(np.abs(got - expected).max())
    if not error <= PARITY_TOLERANCE:
        path.unlink()
        raise RuntimeError(
            f"ONNX export differs from PyTorch by {error:.3g} (> {PARITY_TOLERANCE:g}); "
            f"removed {path}"
        )
    return error


def run_onnx(path: str | Path, past: np.ndarray) -> np.ndarray:
    """One prediction with ONNX Runtime on the CPU (for checks, not the daemon's runtime)."""
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return session.run(None, {name: past.astype(np.float32)})[0]


def read_metadata(path: str | Path) -> ModelMetadata:
    """The metadata of an exported model file."""
    model = onnx.load(str(path), load_external_data=False)
    return ModelMetadata.from_custom_map({p.key: p.value for p in model.metadata_props})
