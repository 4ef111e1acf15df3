"""The models a replay compares: exported ONNX files, each with a name, checked up front.

Every model is checked against the stream before anything runs (a realtime replay would
otherwise find out only from a spawned daemon's log), and its normalisation is read from its
metadata, without loading it into a runtime, so scores can be put in one model's units (for a
robust-online model, the statistics a daemon would have had at each slot: :func:`timeline_stats`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.replay.timeline import Timeline
from models.metadata import ModelMetadata, read_model_metadata
from service.config import Settings
from service.core.robust_scale import (
    ROBUST_ONLINE,
    CausalStats,
    RobustScale,
    causal_stats,
    normalisation_kind,
)
from service.inference.predictor import (
    ModelMismatchError,
    Normaliser,
    StreamSpec,
    check_model_fits,
)


@dataclass(frozen=True)
class ModelChoice:
    """One model of the replay.

    Attributes
    ----------
    name
        Its name in the report: the file name without ``.onnx`` (made unique).
    path, step_path
        Window graph and, if there is one, the step graph (``NAME.step.onnx`` beside it, or
        the configured one for the configured model).
    metadata
        What the file says about itself.
    """

    name: str
    path: Path
    step_path: Path | None
    metadata: ModelMetadata

    @property
    def online(self) -> RobustScale | None:
        """The robust-online schedule of the model's inputs; None for a fixed model."""
        norm = self.metadata.normalisation
        return RobustScale.from_dict(norm) if normalisation_kind(norm) == ROBUST_ONLINE else None

    @property
    def normalisation(self) -> tuple[np.ndarray, np.ndarray] | tuple[None, None]:
        """(mean, scale), each (rows, cols) float32; (None, None) for a robust-online model."""
        norm = self.metadata.normalisation
        if self.online is not None:
            return None, None
        return (
            np.asarray(norm["mean"], dtype=np.float32),
            np.asarray(norm["scale"], dtype=np.float32),
        )


def choose_models(
    paths: Sequence[Path], settings: Settings, stream: StreamSpec
) -> list[ModelChoice]:
    """The models ``paths`` name (the configured model when empty), checked against ``stream``.

    Raises
    ------
    FileNotFoundError
        A path that is not a file.
    ModelMismatchError
        A file that is not a corticast ONNX model, does not fit the stream, or in stream mode
        (``[model] mode``) has no step graph: found here, not from a spawned daemon's log.
    """
    configured = Path(settings.model.path)
    paths = list(paths) or [configured]
    chosen: list[ModelChoice] = []
    names: set[str] = set()
    for path in paths:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"model file {str(path)!r} does not exist")
        try:
            metadata = read_model_metadata(path)
        except ValueError as err:
            raise ModelMismatchError(str(err)) from None
        check_model_fits(metadata, stream, path)
        Normaliser(metadata)  # an unknown normalisation kind is refused before anything runs
        name = _unique(path.name.removesuffix(".onnx"), names)
        names.add(name)
        step = _step_path(path, configured, settings)
        if settings.model.mode == "stream" and (step is None or not step.is_file()):
            raise ModelMismatchError(_no_step_graph(path, step))
        chosen.append(ModelChoice(name, path, step, metadata))
    return chosen


def _no_step_graph(path: Path, step: Path | None) -> str:
    """Why a model cannot be replayed in stream mode, and the two ways out."""
    expected = step or path.with_name(path.name.removesuffix(".onnx") + ".step.onnx")
    return (
        f"model {str(path)!r}: stream mode ([model] mode, the default) serves its step graph, "
        f"and {str(expected)!r} is not a file; export it beside the model "
        f"(corticast export RUN {path.name} --step {expected.name}) or replay in window mode "
        '([model] mode = "window", or CORTICAST_MODEL__MODE=window)'
    )


def _step_path(path: Path, configured: Path, settings: Settings) -> Path | None:
    sibling = path.with_name(path.name.removesuffix(".onnx") + ".step.onnx")
    if sibling.is_file():
        return sibling
    if path.resolve() == configured.resolve():
        return settings.model.step_graph
    return None


def _unique(name: str, taken: set[str]) -> str:
    if name not in taken:
        return name
    index = 2
    while f"{name}-{index}" in taken:
        index += 1
    return f"{name}-{index}"


def timeline_stats(timeline: Timeline, online: RobustScale) -> CausalStats:
    """The statistics a daemon serving a robust-online model has at every slot of a replay
    (slots are ring sequence numbers): the fast replay feeds them to the model and the scorer
    puts predictions in them."""
    window, update, least = online.frames(timeline.sample_rate_hz)
    return causal_stats(
        timeline.frames, timeline.valid, window=window, update=update, min_frames=least
    )
