"""``[model]`` and ``[scheduler]``: which model runs on which backend and mode, and how often
the inference stage predicts."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, model_validator

import models
from service.core.settings_model import PositiveSeconds, Section, UserPath
from service.inference.backends import AUTO_ORDER, BACKENDS, SERVING_MODES
from service.inference.missing_frames import MissingFramePolicy

SHIPPED_WEIGHTS = Path(models.__file__).resolve().parent / "weights"
"""The models that ship with corticast (``make weights`` rebuilds the default)."""


class ModelSettings(Section):
    """Which model runs, on which backend, in which mode (see ``service.inference.backends``)."""

    path: UserPath = SHIPPED_WEIGHTS / "default.onnx"
    step_path: UserPath | None = None
    """Stream mode's step graph; None: the one exported beside ``path`` (``x.onnx`` ->
    ``x.step.onnx``, as ``corticast export RUN OUT --step STEP`` names it). It must come from
    the same export as ``path``: checked when the daemon starts."""
    directory: UserPath | None = None
    """Where a hot swap (``PUT /control/model``) may load models from, and nowhere else (the
    paths it names are resolved, symlinks included, and must stay inside; see
    ``service.inference.model_files``). None: the directory of ``path``. Make it writable only by
    those trusted to install models."""
    max_file_bytes: Annotated[int, Field(ge=1)] = 32 * 2**20
    """Largest file a hot swap loads (each graph), checked before anything reads it; the
    shipped graphs are under 1 MiB."""
    checkpoint: UserPath | None = None
    backend: Literal[BACKENDS] = "auto"  # the names service.inference.backends builds
    mode: Literal[SERVING_MODES] = "stream"  # window | stream | raster (service.inference.backends)
    """Stream by default: at stride 1 it does half window mode's work, which is what keeps a
    CPU host inside the latency targets (README, end to end); window mode re-encodes from
    zeros exactly as trained (+0.3 dB at frame 1) and is the only mode TensorRT runs."""
    threads: Annotated[int, Field(ge=1, le=64)] = 1
    """Intra-op threads: one leaves the other cores to ingest and the wave stage, which on a
    2-core host beat a second model thread end to end."""
    device_id: Annotated[int, Field(ge=0)] = 0
    precision: Literal["auto", "fp16", "fp32"] = "auto"
    engine_cache_dir: UserPath = Field(Path("~/.cache/corticast/engines"), validate_default=True)
    keep_warm_s: PositiveSeconds = 1.0
    reprime_every_frames: Annotated[int, Field(ge=1, le=100_000)] | None = 16
    """Stream mode rebuilds its state on a schedule: a fresh state starts at every frame whose
    sequence number is a multiple of this, and takes over once it has seen a whole window
    (None: the state is carried until a gap forces a re-prime). Bounding how far the state
    strays from the 16-frame windows of training gets back most of the accuracy carried state
    loses (README); it costs about one extra encoder step per frame at 16, and makes the
    predictions independent of which frames the scheduler skipped."""

    serving: Literal["fixed", "auto"] = "fixed"
    """``fixed``: serve ``mode``, ``backend`` and ``threads`` as configured, at ``[scheduler]
    stride``. ``auto``: at start, measure every mode x backend x threads this host can run, x
    fp32 and int8 where ``corticast export --int8`` copies of ``path`` from the same export,
    with a passed guard, lie beside it (ONNX Runtime CPU; ``service.inference.serving_probe``;
    cached) and serve the fastest accurate one at the smallest stride its p99 fits (never below
    ``[scheduler] stride``), from its precision's files; when none fits the
    staleness limit, the daemon runs the configured way but refuses to arm, saying what would
    help. ``corticast doctor`` prints the same table without starting the daemon. Window and
    stream mode only (stream where the step graph exported with ``path`` is there; a missing
    one is a row saying so, not a refusal to start): raster mode is served ``fixed``. A hot
    swap measures the new files served the way chosen at start (mode, backend, threads; not
    every way: the old model serves meanwhile) and switches to the stride they need, or is
    refused, the old model serving on, when none fits; a reload keeps the way and stride in
    force."""
    serving_margin: Annotated[float, Field(gt=0, le=1)] = 0.7
    """Share of the frame period (and of the staleness limit) an inference's p99 may take;
    the rest is the ingest and wave stages' (``service.inference.serving_choice``)."""
    serving_probe_runs: Annotated[int, Field(ge=20, le=5000)] = 200
    """Timed predictions per candidate (after warm-up; fewer if they take over 5 s)."""
    serving_cache_dir: UserPath = Field(Path("~/.cache/corticast/serving"), validate_default=True)
    """Where the probe's measurements are kept, one small JSON file per model, valid for the
    same model files, host (CPU, cores, ONNX Runtime, GPU packages, NVIDIA driver and cards)
    and probe settings only."""

    @model_validator(mode="after")
    def _serving_fits_mode(self) -> ModelSettings:
        if self.serving == "auto" and self.mode == "raster":
            raise ValueError(
                "serving = 'auto' chooses between window and stream mode; raster mode is "
                "served as configured (serving = 'fixed')"
            )
        # Refused here, at load: found at start it was a run-time failure (exit 1), which
        # systemd restarts, where no restart can make the pair run.
        if self.backend not in ("auto", *AUTO_ORDER[self.mode]):
            window = " (or mode = 'window', which every backend runs)" * (self.mode == "stream")
            raise ValueError(
                f"backend {self.backend!r} does not run mode = {self.mode!r}: set backend to one "
                f"of {', '.join(AUTO_ORDER[self.mode])} or 'auto'{window}"
            )
        return self

    @property
    def step_graph(self) -> Path:
        """``step_path``, or the step graph beside ``path`` when none is set."""
        if self.step_path is not None:
            return self.step_path
        return self.path.with_name(f"{self.path.stem}.step{self.path.suffix}")

    @property
    def swap_directory(self) -> Path:
        """``directory``, or the directory of ``path`` when none is set."""
        return self.directory if self.directory is not None else self.path.parent


class SchedulerSettings(Section):
    """How often to predict and what to do with windows that have missing frames."""

    stride: Annotated[int, Field(ge=1, le=1024)] = 1
    missing_frames: MissingFramePolicy = "hold"
    """``irregular`` feeds the frames received with their times; the model must take them."""
    max_missing_frames: Annotated[int, Field(ge=0, le=16)] = 4
