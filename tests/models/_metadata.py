"""Metadata for exporting an untrained model in a test: a short window, identity scaling."""

import numpy as np

from models.metadata import ModelMetadata
from models.registry import family, make_config


def short_metadata(
    name: str, config: dict, frames: int = 4, future: int | None = None
) -> ModelMetadata:
    """``name``'s metadata for ``config`` with ``frames`` frames in and ``future`` (default
    ``frames``) out, 18x20 grid."""
    return ModelMetadata(
        family=name,
        config=make_config(name, config).to_dict(),
        past_frames=frames,
        future_frames=frames if future is None else future,
        grid_rows=18,
        grid_cols=20,
        pitch_m=0.5e-3,
        sample_rate_hz=277.78,
        normalisation={"mean": np.zeros((18, 20)).tolist(), "scale": np.ones((18, 20)).tolist()},
        provenance={"sessions": ["synthetic seed 3"], "steps": 0},
        irregular=family(name).irregular,
    )
