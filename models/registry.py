"""The one place model families are looked up by name.

Each entry maps a lowercase name to its config class and model class; a config is built from a
plain dict (checkpoint, ONNX metadata, CLI) and unknown keys are errors, never ignored.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from torch import nn

from models.convlstm.model import (
    BenchmarkConvLSTM,
    ConvLSTMConfig,
    MRLayerLSTM,
    MultiResolutionLSTM,
)

REGISTRY: dict[str, tuple[type, type[nn.Module]]] = {
    "convlstm": (ConvLSTMConfig, BenchmarkConvLSTM),
    "mr_lstm": (ConvLSTMConfig, MultiResolutionLSTM),
    "mr_layer_lstm": (ConvLSTMConfig, MRLayerLSTM),
}


def model_names() -> list[str]:
    return sorted(REGISTRY)


def make_config(name: str, values: dict[str, Any] | None = None) -> Any:
    """The config of family ``name`` from ``values`` (defaults for keys left out)."""
    config_class, _ = _entry(name)
    values = dict(values or {})
    known = {field.name for field in dataclasses.fields(config_class)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"unknown {name} config key(s) {unknown}; valid keys are {sorted(known)}")
    return config_class(**values)


def build_model(name: str, values: dict[str, Any] | None = None) -> nn.Module:
    """A freshly initialised model of family ``name``."""
    _, model_class = _entry(name)
    return model_class(make_config(name, values))


def _entry(name: str) -> tuple[type, type[nn.Module]]:
    try:
        return REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; valid models are {model_names()}") from None
