"""The int8 graphs ``[model] serving = "auto"`` may offer: the copies ``corticast export
--int8`` wrote beside the configured fp32 files, or the configured files themselves where
``[model] path`` names an int8 window graph.

A copy is offered for a mode only where its file is there (``x.int8.onnx``, and
``x.int8.step.onnx`` for stream mode, ``models.metadata.int8_path``), comes from the same
export as ``[model] path`` and carries a passed guard record. "The same export" is what the
exporter records: an int8 file carries its fp32 source's metadata (family, config, geometry,
normalisation, provenance: training run, steps, losses, code revision) plus its own
quantization record, so every field must be equal but that record and the held-out check
(``corticast export --int8`` scores the int8 copies through their own graph and records that
in them, so their check differs from the fp32 files'; the daemon's below-persistence warning
reads the files it serves). An int8 copy left beside a later export (another run, more steps)
differs there and is refused, as a row saying why. The guard record
(``models.metadata.int8_guard``) is what an int8 graph is judged by: it cannot meet the fp32
parity tolerance, and the guard scored it against fp32 on held-out windows when it was written.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from models.metadata import (
    HELD_OUT_CHECK,
    QUANTIZATION_KEY,
    ModelMetadata,
    differing_fields,
    int8_guard,
    int8_path,
    int8_step_path,
    read_model_metadata,
)
from service.inference.model_files import ModelFiles
from service.inference.predictor import StreamSpec
from service.inference.settings import ModelSettings

_OWN = (QUANTIZATION_KEY, HELD_OUT_CHECK)
"""Provenance in which an int8 copy may differ from its fp32 source (module docstring)."""


@dataclass(frozen=True)
class Int8Graphs:
    """The int8 files one mode would serve, and the guard they are judged by; or why not.

    Attributes
    ----------
    path, step_path
        The int8 window graph and, for stream mode, its step graph (None in window mode).
    guard
        The guard record in a few words: int8's pooled PSNR minus fp32's on the guard's
        held-out windows, and the least it may be.
    problem
        Why this mode has no int8 candidate (missing, stale, no passed guard); None when it has.
    """

    path: Path | None = None
    step_path: Path | None = None
    guard: str | None = None
    problem: str | None = None


def configured_precision(model: ModelSettings) -> str:
    """The precision of ``[model] path``: "int8" where it is itself an int8 graph, else "fp32"
    (an unreadable file is the start-up check's to report)."""
    try:
        return read_model_metadata(model.path.expanduser()).precision
    except (ValueError, OSError):
        return "fp32"


def int8_graphs(model: ModelSettings, stream: StreamSpec) -> dict[str, Int8Graphs]:
    """Mode -> the int8 graphs it may serve, for ``[model] path`` an fp32 window graph.

    Empty where no int8 window graph lies beside ``path`` (nothing to offer, nothing to say).
    Stream mode needs the int8 window graph's own step graph beside it.
    """
    window = model.path.expanduser()
    int8 = int8_path(window)
    if not int8.is_file():
        return {}
    try:
        guard = _tied(window, int8, "window")
        ModelFiles.for_start(_settings(model, int8, None, "window"), stream)
    except (ValueError, OSError) as err:  # ModelFileError is a ValueError
        problem = str(err)
        return {mode: Int8Graphs(problem=problem) for mode in ("window", "stream")}
    graphs = {"window": Int8Graphs(int8, None, guard)}
    step = int8_step_path(window)
    if not step.is_file():
        graphs["stream"] = Int8Graphs(problem=f"no int8 step graph at {str(step)!r}")
        return graphs
    try:
        ModelFiles.for_start(_settings(model, int8, step, "stream"), stream)
        guard = _guard(read_model_metadata(step), step, "step")
    except (ValueError, OSError) as err:  # ModelFileError is a ValueError
        graphs["stream"] = Int8Graphs(problem=str(err))
        return graphs
    graphs["stream"] = Int8Graphs(int8, step, guard)
    return graphs


def configured_int8(
    model: ModelSettings, step: Path | None, no_step: str | None
) -> dict[str, Int8Graphs]:
    """Mode -> the int8 graphs it serves where ``[model] path`` is itself int8: the configured
    files (``step``: the step graph the probe found, or None and ``no_step`` saying why)."""
    window = model.path.expanduser()
    graphs = {}
    for mode, path, kind in (("window", window, "window"), ("stream", step, "step")):
        if path is None:
            graphs[mode] = Int8Graphs(problem=no_step)
            continue
        try:
            guard = _guard(read_model_metadata(path), path, kind)
        except (ValueError, OSError) as err:
            graphs[mode] = Int8Graphs(problem=str(err))
            continue
        graphs[mode] = Int8Graphs(window, step if mode == "stream" else None, guard)
    return graphs


def _tied(fp32: Path, int8: Path, kind: str) -> str:
    """The guard of ``int8``, refused unless it is an int8 copy of ``fp32`` (same export)."""
    source, copy = read_model_metadata(fp32), read_model_metadata(int8)
    guard = _guard(copy, int8, kind)
    differ = differing_fields(source, copy, own_provenance=_OWN)
    if differ:
        raise ValueError(
            f"{int8.name!r} is not an int8 copy of {fp32.name!r}: their metadata differ in "
            f"{', '.join(differ)} (left from an earlier export? corticast export RUN OUT --int8 "
            "writes both)"
        )
    return guard


def _guard(metadata: ModelMetadata, path: Path, kind: str) -> str:
    try:
        change, limit = int8_guard(metadata, kind)
    except ValueError as err:
        raise ValueError(f"{path.name!r}: {err}") from None
    return f"guard {change:+.2f} dB (>= -{limit:g})"


def _settings(model: ModelSettings, path: Path, step: Path | None, mode: str) -> ModelSettings:
    return model.model_copy(update={"path": path, "step_path": step, "mode": mode})
