"""Which files a hot swap may load: inside the model directory, under the size limit, and in
stream mode the step graph that belongs to the window graph named.

A swap request (``PUT /control/model``) names files on the daemon's machine. Each is resolved
(symlinks followed, ``..`` collapsed; a relative name is taken inside the directory) and must
lie inside ``[model] directory`` once resolved: a path outside, a traversal and a symlink out of
the directory are refused alike, with one message whether or not the file exists, so a refusal
tells nothing about the rest of the machine. Inside, a file must be a regular file no larger
than ``[model] max_file_bytes``, checked before anything reads it. Stream mode runs the step
graph alone; one is taken from the request or from beside the window graph (``x.onnx`` ->
``x.step.onnx``, as ``corticast export`` names them) and must carry the window graph's metadata
(the same export), or the swap would serve some other model than the one named. Files beside
the window graph that the swap reads where they are there pass the same rules before anything
reads them, and one that breaks them refuses the swap: under ``[model] serving = "auto"`` its
measurement reads the step graph and the int8 copies, and TensorRT 11 builds an FP16 engine
from the FP16 graph beside it.

The files are checked, then opened by the loader: whoever can write into the model directory
between the two can change what is loaded, so the directory must be writable only by those
trusted to install models.
"""

from __future__ import annotations

import dataclasses
import functools
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from models.metadata import (
    RASTER_STAGES,
    check_shortfall,
    describe_check_data,
    describe_shortfall,
    differing_fields,
    fp16_path,
    held_out_check_of,
    int8_path,
    int8_step_path,
    raster_stage_path,
    read_model_metadata,
)
from service.core.errors import EXIT_UNUSABLE, CorticastError, ModelMismatchError
from service.core.regular_files import NotRegularFileError, open_regular
from service.core.settings_model import read_from
from service.inference.predictor import StreamSpec, check_model_fits
from service.inference.resource_failures import raise_if_host_failure
from service.inference.settings import ModelSettings

STEP_SUFFIX = ".step"
"""Inserted before a window graph's suffix to name its step graph: ``x.onnx`` -> ``x.step.onnx``."""
_STEP_ONLY = ("graph", "state_shapes", "input_name")
"""Metadata in which a step graph differs from its window graph (``models.export``)."""

Refusal = Literal["outside", "missing", "unusable"]


class ModelFileError(CorticastError, ValueError):
    """A swap request refused for its files; nothing was loaded.

    Attributes
    ----------
    kind
        ``"outside"``: not inside the model directory (or not resolvable; whether it exists is
        not said); ``"missing"``: no such file inside it; ``"unusable"``: there, but not a file
        a swap may load (too large, not a regular file, no matching step graph).
    """

    exit_code = EXIT_UNUSABLE
    """At start (:meth:`ModelFiles.for_start`): the configured files can never load, so a
    restart cannot help."""

    def __init__(self, message: str, kind: Refusal) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True)
class ModelFiles:
    """The files a model runs from: the window graph, and the step graph in stream mode.

    ``opened`` lists every file the predictor will open, as checked (the window or step
    graph, a raster sampler's stage graphs): the daemon compares it with what the backend
    reports having loaded.
    """

    path: Path
    step_path: Path | None = None
    opened: tuple[Path, ...] = dataclasses.field(default=(), compare=False)

    @classmethod
    def for_swap(
        cls,
        path: str | Path,
        step_path: str | Path | None,
        model: ModelSettings,
        *,
        measured: bool = False,
    ) -> ModelFiles:
        """The files a swap to ``path`` (and ``step_path``) loads under ``model``'s rules.

        Files beside the window graph that the swap reads where they are there pass the
        same rules first: with ``measured`` (the swap is measured, ``[model] serving =
        "auto"``) the int8 copies ``x.int8.onnx`` and ``x.int8.step.onnx`` and outside stream
        mode the step graph ``x.step.onnx`` (their metadata and hashes; an int8 way loads the
        copies), and where TensorRT may build an FP16 engine (window mode, ``backend``
        "tensorrt" or "auto", ``precision`` not "fp32") the FP16 graph ``x.fp16.onnx``
        TensorRT 11 builds it from.

        Raises
        ------
        ModelFileError
            Naming the rule broken (see the module docstring).
        """
        directory, limit = _directory(model), model.max_file_bytes
        window = _checked("path", path, directory, limit)
        for name, beside, reader in _beside(window, model, measured):
            _check_beside(name, beside, reader, directory, limit)
        if model.mode == "stream":
            step = _step_graph(window, step_path, directory, limit)
            return cls(window, step, (step,))
        if step_path is not None:
            raise ModelFileError(
                f"'step_path' is for stream mode; this daemon runs {model.mode} mode "
                "([model] mode)",
                "unusable",
            )
        stages = [raster_stage_path(window, s) for s in RASTER_STAGES if model.mode == "raster"]
        opened = (window, *(_checked("raster stage", s, directory, limit) for s in stages))
        return cls(window, None, opened)

    @classmethod
    def for_start(cls, model: ModelSettings, stream: StreamSpec) -> ModelFiles:
        """The configured files (``[model] path``, ``step_path``), checked before the daemon
        starts: each there and readable, a corticast ONNX graph of the right kind, the step
        graph (stream mode) from the same export, the raster stages (raster mode) present, and
        the model fit for the stream. The configured files are trusted where they lie (the
        model directory rule is for swaps).

        Raises
        ------
        ModelFileError
            Naming the ``[model]`` key and what is wrong with its file.
        """
        window = _configured("path", model.path)
        try:
            metadata = read_model_metadata(window)
            check_model_fits(metadata, stream, window)
        except (ValueError, ModelMismatchError) as err:
            raise ModelFileError(f"[model] path: {err}", "unusable") from None
        if metadata.graph != "window":
            raise ModelFileError(
                f"[model] path {str(window)!r} is a {metadata.graph!r} graph; it must be the "
                "window graph (corticast export RUN OUT writes it)",
                "unusable",
            )
        if model.mode == "stream":
            step = _configured("step_path", model.step_graph)
            try:
                _check_step_matches(window, step)
            except ModelFileError as err:
                raise ModelFileError(f"[model] step_path: {err}", "unusable") from None
            return cls(window, step, (step,))
        stages = [raster_stage_path(window, s) for s in RASTER_STAGES if model.mode == "raster"]
        opened = (window, *(_configured("raster stage of path", s) for s in stages))
        return cls(window, None, opened)

    @functools.cached_property
    def held_out_check(self) -> dict | None:
        """The window graph's recorded held-out check (``corticast export`` or ``adapt``);
        None where the file records none."""
        try:
            return held_out_check_of(read_model_metadata(self.path))
        except ValueError:
            return None

    @property
    def held_out_shortfall(self) -> dict[int, float] | None:
        """Predicted frames where the recorded held-out check is below persistence, with the
        dB short; empty where it is nowhere below, None where the file records no check."""
        return None if self.held_out_check is None else check_shortfall(self.held_out_check)

    @property
    def held_out_check_data(self) -> str | None:
        """In words, the data the recorded check was scored on; None without a check."""
        return None if self.held_out_check is None else describe_check_data(self.held_out_check)

    def below_persistence_warning(self) -> str | None:
        """The warning to log when this model is configured or swapped in, if any."""
        if not self.held_out_shortfall:
            return None
        return (
            f"model {str(self.path)!r} is {describe_shortfall(self.held_out_shortfall)}, "
            f"scored on {self.held_out_check_data}: there the served prediction leans on "
            "persistence and the live AR baseline ([loop] blend_enabled, blend_ar) and the "
            "model adds little"
        )

    def as_dict(self) -> dict[str, str | None]:
        """``path`` and ``step_path`` as strings (``/status``, the swap's answer)."""
        step = None if self.step_path is None else str(self.step_path)
        return {"path": str(self.path), "step_path": step}


def _configured(key: str, path: Path) -> Path:
    """``path`` (the ``[model]`` key ``key``) resolved: an existing, readable regular file."""
    where = f"[model] {key} {str(path)!r}"
    try:
        resolved = path.expanduser().resolve(strict=True)
        with open_regular(resolved):  # looked at before it is opened: a FIFO would wait
            pass
    except FileNotFoundError:
        missing = f"{where} does not exist{read_from(path.expanduser())}"
        raise ModelFileError(missing, "missing") from None
    except NotRegularFileError as err:
        raise ModelFileError(f"{where} is {err.kind}, not a regular file", "unusable") from None
    except (OSError, RuntimeError) as err:
        raise_if_host_failure(err, f"cannot read {where}")  # exit 1, not 2: a restart helps
        reason = getattr(err, "strerror", None) or str(err)
        raise ModelFileError(f"{where} cannot be read: {reason}", "unusable") from None
    return resolved


def _directory(model: ModelSettings) -> Path:
    directory = model.swap_directory
    try:
        resolved = directory.resolve(strict=True)
    except (OSError, RuntimeError):
        resolved = None
    if resolved is None or not resolved.is_dir():
        raise ModelFileError(
            f"the model directory {str(directory)!r} ([model] directory) is not a directory "
            "here: no model can be swapped in",
            "unusable",
        )
    return resolved


def _checked(name: str, requested: str | Path, directory: Path, max_bytes: int) -> Path:
    """``requested`` resolved inside ``directory``, a regular file of at most ``max_bytes``."""
    outside = ModelFileError(
        f"{name} {str(requested)!r} is not a file inside the model directory "
        f"{str(directory)!r} ([model] directory): models load only from there",
        "outside",
    )
    try:
        resolved = (directory / requested).resolve()
    except (OSError, RuntimeError, ValueError):  # a symlink loop, a NUL byte
        raise outside from None
    if not resolved.is_relative_to(directory):
        raise outside
    try:
        info = resolved.stat()
    except FileNotFoundError:
        raise ModelFileError(
            f"{name} {str(requested)!r} does not exist in the model directory", "missing"
        ) from None
    except OSError as err:
        raise_if_host_failure(err, f"cannot read {name} {str(requested)!r}")  # 503, not 422
        raise ModelFileError(
            f"{name} {str(requested)!r} cannot be read: {err.strerror}", "unusable"
        ) from None
    if not stat.S_ISREG(info.st_mode):
        raise ModelFileError(f"{name} {str(requested)!r} is not a regular file", "unusable")
    if info.st_size > max_bytes:
        raise ModelFileError(
            f"{name} {str(requested)!r} is {info.st_size} bytes, more than [model] "
            f"max_file_bytes ({max_bytes})",
            "unusable",
        )
    return resolved


def _beside(window: Path, model: ModelSettings, measured: bool) -> list[tuple[str, Path, str]]:
    """The files beside ``window`` that a swap under ``model`` reads where they are there
    (named by ``models.metadata``), each with what reads it."""
    files = []
    if measured:
        reader = "a swap under [model] serving = 'auto'"
        if model.mode != "stream":  # in stream mode it is the swap's own, checked as such
            step = window.with_name(f"{window.stem}{STEP_SUFFIX}{window.suffix}")
            files.append(("step graph", step, reader))
        files.append(("int8 copy", int8_path(window), reader))
        files.append(("int8 step graph", int8_step_path(window), reader))
    tensorrt = model.mode == "window" and model.backend in ("tensorrt", "auto")
    if tensorrt and model.precision != "fp32":
        files.append(("FP16 graph", fp16_path(window), "TensorRT 11 building an FP16 engine"))
    return files


def _check_beside(name: str, beside: Path, reader: str, directory: Path, limit: int) -> None:
    """Refuse a swap that would read ``beside`` if it breaks the rules; one that is not there
    is not read."""
    try:
        _checked(f"the {name}", beside, directory, limit)
    except ModelFileError as err:
        if err.kind != "missing":
            raise ModelFileError(f"{err} ({reader} reads it)", err.kind) from None


def _step_graph(window: Path, step_path: str | Path | None, directory: Path, limit: int) -> Path:
    """The step graph of ``window``: ``step_path``, or the one beside it; checked to match."""
    if step_path is not None:
        step = _checked("step_path", step_path, directory, limit)
    else:
        beside = window.with_name(f"{window.stem}{STEP_SUFFIX}{window.suffix}")
        try:
            step = _checked("step_path", beside, directory, limit)
        except ModelFileError as err:
            if err.kind != "missing":
                raise
            raise ModelFileError(
                f"stream mode runs the step graph, and {window.name!r} has none beside it: "
                f"export it as {beside.name!r} (corticast export RUN OUT --step STEP) or give "
                "'step_path'",
                "unusable",
            ) from None
    _check_step_matches(window, step)
    return step


def _check_step_matches(window: Path, step: Path) -> None:
    """Refuse a step graph that is not the one exported with ``window``."""
    try:
        window_meta, step_meta = read_model_metadata(window), read_model_metadata(step)
    except ValueError as err:
        raise ModelFileError(str(err), "unusable") from None
    for path, meta, kind in ((window, window_meta, "window"), (step, step_meta, "step")):
        if meta.graph != kind:
            raise ModelFileError(
                f"{path.name!r} is a {meta.graph!r} graph, not a {kind} graph "
                "(corticast export RUN OUT --step STEP writes both)",
                "unusable",
            )
    differ = differing_fields(window_meta, step_meta, own=_STEP_ONLY)
    if differ:
        raise ModelFileError(
            f"{step.name!r} is not the step graph of {window.name!r}: their metadata differ "
            f"in {', '.join(differ)} (export both from one run: corticast export RUN OUT "
            "--step STEP)",
            "unusable",
        )
