"""The one place model families are looked up by name.

Each entry maps a lowercase name to a :class:`Family`: its config class, model class, training
objective and whether it takes irregularly sampled input. A config is built from a plain dict
(checkpoint, ONNX metadata, CLI) and unknown keys are errors, never ignored.

A family's model provides ``predict(past)`` -> future, both (B, T, 1, rows, cols) in model
units, or ``predict(past, past_times)`` when ``irregular`` (``models.objective.Batch`` says
what the times are); the config provides ``past_frames``, ``future_frames`` and ``to_dict()``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from torch import nn

from models.catalogue import CATALOGUE, model_names
from models.convlstm.model import (
    BenchmarkConvLSTM,
    ConvLSTMConfig,
    MRLayerLSTM,
    MultiResolutionLSTM,
)
from models.convlstm.training import convlstm_objective
from models.ile.config import ILEConfig
from models.ile.model import ILE
from models.ile.training import ile_objective
from models.mspn.config import MSPNConfig
from models.mspn.model import MSPN
from models.mspn.training import mspn_objective
from models.objective import ObjectiveFactory
from models.trajgru.config import (
    TrajGRUAttentionConfig,
    TrajGRUAttentionODEConfig,
    TrajGRUConfig,
    TrajGRUODEConfig,
)
from models.trajgru.model import TrajGRU
from models.trajgru.training import trajgru_objective
from models.vqvae.config import VQVAEConfig
from models.vqvae.model import SHRVQVAE
from models.vqvae.training import vqvae_objective


@dataclass(frozen=True)
class Family:
    """How to build, train and feed one model family.

    Attributes
    ----------
    config
        Dataclass of the family's sizes (``to_dict()``, ``past_frames``, ``future_frames``).
    model
        ``nn.Module`` built from a config.
    objective
        Builds the family's training objective (``models.objective.ObjectiveFactory``).
    paper
        The design paper it follows (``../shared/papers/NNN_*``).
    irregular
        Whether ``predict`` takes the past frames' true times: such models serve the
        daemon's ``irregular`` missing-frame policy.
    """

    config: type
    model: type[nn.Module]
    objective: ObjectiveFactory
    paper: str
    irregular: bool = False


_BUILDERS: dict[str, tuple[type, type[nn.Module], ObjectiveFactory]] = {
    "convlstm": (ConvLSTMConfig, BenchmarkConvLSTM, convlstm_objective),
    "mr_lstm": (ConvLSTMConfig, MultiResolutionLSTM, convlstm_objective),
    "mr_layer_lstm": (ConvLSTMConfig, MRLayerLSTM, convlstm_objective),
    "mspn": (MSPNConfig, MSPN, mspn_objective),
    "ile": (ILEConfig, ILE, ile_objective),
    "s_hr_vqvae": (VQVAEConfig, SHRVQVAE, vqvae_objective),
    "trajgru": (TrajGRUConfig, TrajGRU, trajgru_objective),
    "trajgru_attention": (TrajGRUAttentionConfig, TrajGRU, trajgru_objective),
    "trajgru_ode": (TrajGRUODEConfig, TrajGRU, trajgru_objective),
    "trajgru_attention_ode": (TrajGRUAttentionODEConfig, TrajGRU, trajgru_objective),
}
"""Each family's config, model and objective; its paper and input come from the catalogue."""

REGISTRY: dict[str, Family] = {
    name: Family(*_BUILDERS[name], entry.paper, entry.irregular)
    for name, entry in CATALOGUE.items()
}


def family(name: str) -> Family:
    """The registry entry of ``name``; ValueError naming the valid ones otherwise."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; valid models are {model_names()}") from None


def make_config(name: str, values: dict[str, Any] | None = None) -> Any:
    """The config of family ``name`` from ``values`` (defaults for keys left out)."""
    config_class = family(name).config
    values = dict(values or {})
    known = {field.name for field in dataclasses.fields(config_class)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"unknown {name} config key(s) {unknown}; valid keys are {sorted(known)}")
    return config_class(**values)


def build_model(name: str, values: dict[str, Any] | None = None) -> nn.Module:
    """A freshly initialised model of family ``name``."""
    return family(name).model(make_config(name, values))
