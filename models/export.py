"""ONNX export of a generator: the window graph, the single-step graph, metadata, parity.

The window graph is encoder + predictor only (the decoder reconstructs the past for training):
batch 1, a fixed window, recurrences unrolled, weights as initialisers. The step graph is the
streaming form: one new frame and the encoder state in, the 16-frame rollout and the new state
out. Both work on normalised frames; the normalisation travels in the metadata
(``models.metadata``), so a file is self-describing.
"""

from __future__ import annotations

import functools
import itertools
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort
import torch
from onnx_ir.passes.common import (
    ClearMetadataAndDocStringPass,
    DeduplicateInitializersPass,
    RemoveUnusedNodesPass,
)
from torch import nn

from models.metadata import METADATA_KEY, PAST_TIMES_INPUT, ModelMetadata, replacing
from models.registry import family, make_config

OPSET = 18
NCHWC_BLOCKS = (8, 16)
"""Channels per block of ONNX Runtime's blocked (NCHWc) convolution layout: 8 on x86 without
AVX-512 (SSE, AVX2), 16 with it (MLAS's ``NchwcBlockSize``). A multiple of 16 fills whole
blocks on every such host, a multiple of 8 on some."""
PARITY_TOLERANCE = 1e-4
"""Largest FP32 difference between ONNX Runtime and PyTorch accepted at export."""
UPPER_DUE = "upper_due"
ROLLOUT = "rollout"
"""Step-graph input: 1.0 rolls the predictor out, 0.0 only advances the encoder state."""


class _PredictionGraph(nn.Module):
    """The part of a generator that runs in the daemon: ``predict``."""

    def __init__(self, generator: nn.Module) -> None:
        super().__init__()
        self.generator = generator

    def forward(self, past: torch.Tensor, *past_times: torch.Tensor) -> torch.Tensor:
        return self.generator.predict(past, *past_times)


class _StepGraph(nn.Module):
    """``stream_step`` with the state flattened to tensors:
    (frame, *state, upper_due, rollout) -> (future, *state).

    Two stages, the encoder step and the predictor's rollout (16 of the 17 steps), the second
    behind an If on ``rollout``: a caller catching up on frames that need no prediction of
    their own feeds 0.0 and gets the new state and a zero future for the cost of the encoder
    step. (ONNX Runtime's inference builds run every node whatever is fetched, so fetching the
    state alone would not skip the rollout.) For a model with a temporal skip each stage
    branches on ``upper_due`` too, into two branches specialised to one phase, which run the
    upper layer and the head only where they are due (28 % faster for the shipped model on one
    CPU thread than one graph running both phases and blending them by the flag). Any other
    model ignores ``upper_due``.
    """

    def __init__(self, generator: nn.Module) -> None:
        super().__init__()
        self.generator = generator
        self.skip = getattr(generator, "temporal_skip", False)

    def forward(self, frame: torch.Tensor, *state_due_rollout: torch.Tensor) -> tuple:
        *flat, upper_due, rollout = state_due_rollout
        new_flat = self._by_phase(self._encode, upper_due, (frame, *flat))
        future = torch.cond(
            rollout[0] > 0.5, self._rollout, self._no_rollout, (frame, upper_due, *new_flat)
        )
        return (*future, *new_flat)

    def _by_phase(self, stage, upper_due: torch.Tensor, operands: tuple) -> tuple:
        """``stage(phase, *operands)`` for the phase ``upper_due`` names: an If over both
        phases for a model with a temporal skip, the one stage for any other model."""
        if not self.skip:
            return stage(True, *operands)
        return torch.cond(
            upper_due[0] > 0.5,
            functools.partial(stage, True),
            functools.partial(stage, False),
            operands,
        )

    def _encode(self, upper_due: bool, frame: torch.Tensor, *flat: torch.Tensor) -> tuple:
        new_states = self.generator.stream_encode(frame, _pairs(flat), upper_due)
        # A held state is the input itself; a branch of torch.cond may not return an input.
        return tuple(t.clone() for state in new_states for t in state)

    def _rollout(self, frame: torch.Tensor, upper_due: torch.Tensor, *flat: torch.Tensor) -> tuple:
        return self._by_phase(self._rollout_phase, upper_due, (frame, *flat))

    def _rollout_phase(self, upper_due: bool, frame: torch.Tensor, *flat: torch.Tensor) -> tuple:
        return (self.generator.stream_rollout(frame, _pairs(flat), upper_due),)

    def _no_rollout(
        self, frame: torch.Tensor, upper_due: torch.Tensor, *flat: torch.Tensor
    ) -> tuple:
        future_frames = self.generator.config.future_frames
        return (frame.new_zeros((frame.shape[0], future_frames, 1, *frame.shape[-2:])),)


def _pairs(flat: tuple[torch.Tensor, ...]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The (hidden, cell) state of each layer from the step graph's flat state inputs."""
    return [(flat[i], flat[i + 1]) for i in range(0, len(flat), 2)]


def export_onnx(
    generator: nn.Module, path: str | Path, metadata: ModelMetadata, *, optimize: bool = True
) -> float:
    """Write ``generator``'s window graph to ``path`` and check it against PyTorch.

    Returns the largest absolute difference between ONNX Runtime and PyTorch on a seeded
    random window.

    The graph is written beside ``path`` and renamed onto it once its parity holds
    (:func:`replacing`): a file already at ``path`` stays as it was until then.

    Raises
    ------
    RuntimeError
        If that difference exceeds ``PARITY_TOLERANCE``; nothing is written.
    """
    _check_graph(metadata, "window")
    if metadata.irregular != family(metadata.family).irregular:
        raise ValueError(
            f"model metadata 'irregular' is {metadata.irregular} but family "
            f"{metadata.family!r} has irregular={family(metadata.family).irregular}"
        )
    path = Path(path)
    shape = (1, metadata.past_frames, 1, metadata.grid_rows, metadata.grid_cols)
    inputs = {metadata.input_name: example_input(shape, seed=0)}
    if metadata.irregular:
        inputs[PAST_TIMES_INPUT] = _irregular_times(metadata.past_frames, seed=0)
    generator = generator.eval()
    with torch.no_grad():
        expected = [generator.predict(*inputs.values()).numpy()]
    with replacing(path) as scratch:
        trace_to_onnx(
            _PredictionGraph(generator), tuple(inputs.values()), scratch, list(inputs),
            [metadata.output_name], metadata, optimize,
        )  # fmt: skip
        return _check_parity(scratch, {k: v.numpy() for k, v in inputs.items()}, expected, path)


def export_step_onnx(
    generator: nn.Module, path: str | Path, metadata: ModelMetadata, *, optimize: bool = True
) -> float:
    """Write ``generator``'s single-step graph (``stream_step``) to ``path``, parity-checked.

    ``metadata`` must have ``graph="step"`` and the state shapes (see :func:`step_metadata`).
    Parity is checked for both values of ``upper_due`` and of ``rollout`` on a random frame
    and state.
    """
    _check_graph(metadata, "step")
    _check_streaming(generator, metadata.family)
    path = Path(path)
    generator = generator.eval()
    frame = example_input((1, 1, metadata.grid_rows, metadata.grid_cols), seed=0)
    shapes = metadata.state_shapes
    state = [example_input(tuple(shape), seed=k + 1) for k, shape in enumerate(shapes)]
    n = len(state)
    inputs = [metadata.input_name, *(f"state_in_{k}" for k in range(n)), UPPER_DUE, ROLLOUT]
    outputs = [metadata.output_name, *(f"state_out_{k}" for k in range(n))]
    graph = _StepGraph(generator)
    example = (frame, *state, torch.ones(1), torch.ones(1))
    with replacing(path) as scratch:
        trace_to_onnx(graph, example, scratch, inputs, outputs, metadata, optimize)
        error = 0.0
        for due, rollout in itertools.product((1.0, 0.0), repeat=2):
            flags = (torch.full((1,), due), torch.full((1,), rollout))
            with torch.no_grad():
                expected = [t.numpy() for t in graph(frame, *state, *flags)]
            feeds = dict(zip(inputs, [t.numpy() for t in (frame, *state, *flags)], strict=True))
            error = max(error, _check_parity(scratch, feeds, expected, path))
    return error


def step_metadata(generator: nn.Module, window: ModelMetadata) -> ModelMetadata:
    """The step graph's metadata: the window's, with ``graph="step"`` and the state shapes."""
    _check_streaming(generator, window.family)
    like = torch.zeros(1, 1, window.grid_rows, window.grid_cols)
    shapes = [list(t.shape) for state in generator.zero_stream_state(like) for t in state]
    values = {**window.__dict__, "graph": "step", "state_shapes": shapes, "input_name": "frame"}
    return ModelMetadata(**values)


def export_from_checkpoint(
    run_dir: str | Path,
    out: str | Path,
    step_out: str | Path | None = None,
    *,
    raster: bool = False,
    progress: Callable[[str], None] = lambda _: None,
) -> list[str]:
    """Export a training run's newest checkpoint; returns one line per file written.

    ``progress`` is told each stage before it starts (tracing and its parity check take from
    seconds for the window graph to a minute for a step graph on a CPU).

    ``raster`` also writes the raster sampler's stage graphs beside ``out``
    (``models.vqvae.raster_export``), for a family that has one.

    The metadata carries the family, its full config, the normalisation fitted on the
    training split, the grid and rate the data had, and the training provenance (data, steps,
    final losses, code revision).
    """
    from models.training import generator_from_checkpoint, load_checkpoint

    state = load_checkpoint(run_dir)
    generator = generator_from_checkpoint(state)
    metadata = metadata_from_checkpoint(state)
    if step_out is not None:
        _check_streaming(generator, metadata.family)  # before any file is written
    if raster and not getattr(generator, "raster_sampler", False):
        raise ValueError(
            f"model family {metadata.family!r} has no raster sampler; export without --raster"
        )
    if raster and metadata.residual:
        raise ValueError(
            "the raster sampler's decode stage serves absolute frames and this model is "
            "residual; export it without --raster (its window graph is the parallel mode)"
        )
    for path in (out, step_out):  # a folder of its own for a new model, made as asked
        if path is not None:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
    lines = []
    progress(f"exporting the window graph to {out} and checking it against PyTorch")
    error = export_onnx(generator, out, metadata)
    lines.append(f"wrote {out} (window graph, max |ONNX - PyTorch| = {error:.2e})")
    if step_out is not None:
        progress(f"exporting the step graph to {step_out} and checking it against PyTorch")
        error = export_step_onnx(generator, step_out, step_metadata(generator, metadata))
        lines.append(f"wrote {step_out} (step graph, max |ONNX - PyTorch| = {error:.2e})")
    if raster:
        from models.vqvae.raster_export import export_raster

        progress("exporting the raster sampler's stages and checking them against PyTorch")
        paths, error = export_raster(generator, out, metadata)
        names = ", ".join(str(path) for path in paths)
        lines.append(f"wrote {names} (raster sampler, max |ONNX - PyTorch| = {error:.2e})")
    return lines


def metadata_from_checkpoint(state: dict[str, Any]) -> ModelMetadata:
    """Window-graph metadata for a checkpoint written by ``models.training``."""
    run = state["config"]
    config = make_config(run["family"], run["model"])
    data = state["provenance"]
    grid = data["grid"]
    return ModelMetadata(
        family=run["family"],
        config=config.to_dict(),
        past_frames=config.past_frames,
        future_frames=config.future_frames,
        grid_rows=grid["rows"],
        grid_cols=grid["cols"],
        pitch_m=grid["pitch_m"],
        sample_rate_hz=data["sample_rate_hz"],
        normalisation=state["normalisation"],
        irregular=family(run["family"]).irregular,
        residual=config.residual,
        provenance={
            "run": run,
            "steps_done": state["steps_done"],
            "final_losses": state.get("last_logs", {}),
            "training_data": data,
            "code_revision": _code_revision(),
        },
    )


def run_onnx(
    path: str | Path, past: np.ndarray, past_times: np.ndarray | None = None
) -> np.ndarray:
    """One prediction with ONNX Runtime on the CPU (for checks, not the daemon's runtime);
    ``past_times`` (1, P) feeds an irregular model's second input."""
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feeds = {session.get_inputs()[0].name: past.astype(np.float32)}
    if past_times is not None:
        feeds[PAST_TIMES_INPUT] = past_times.astype(np.float32)
    return session.run(None, feeds)[0]


def trace_to_onnx(
    module: nn.Module,
    example: tuple[torch.Tensor, ...],
    path: Path,
    inputs: list[str],
    outputs: list[str],
    metadata: ModelMetadata,
    optimize: bool,
) -> None:
    """Export ``module`` with static shapes, fold duplicated weights, drop the exporter's
    per-node debug metadata, stamp ours, check, and write one self-contained file.

    Unrolling the recurrence makes the exporter fold each step's slice of a weight (e.g. one
    gate's peepholes) into a constant of its own: identical copies, one per time step, that
    multiply the file size and make every step read different memory. They are merged back
    into one initialiser each.
    """
    torch.onnx.export(
        module.eval(),
        example,
        str(path),
        input_names=inputs,
        output_names=outputs,
        opset_version=OPSET,
        dynamo=True,
        optimize=optimize,
        verbose=False,
    )
    external = path.with_name(path.name + ".data")  # where the exporter puts large weights
    graph = ir.from_proto(onnx.load(str(path)))
    DeduplicateInitializersPass(size_limit=1 << 24)(graph)  # compares contents exactly
    localise_branch_conv_constants(graph.graph)
    RemoveUnusedNodesPass()(graph)
    ClearMetadataAndDocStringPass()(graph)  # the exporter's per-node source traces
    model = ir.to_proto(graph)
    entry = model.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, metadata.to_json()
    model.producer_name = "corticast"
    onnx.checker.check_model(model)
    onnx.save(model, str(path))  # weights inline: the file alone is the model
    external.unlink(missing_ok=True)


def localise_branch_conv_constants(graph: ir.Graph) -> int:
    """Give each subgraph (an If branch) its own copy of the enclosing graph's constants that
    its convolutions read, for convolutions whose output channels fill whole NCHWc blocks;
    returns the number of copies made.

    The exporter keeps every weight and every constant it folds (such as the gate bias,
    ``ConvLSTMCell._gate_bias``) in the main graph, and ONNX Runtime's NCHWc transformer takes
    a convolution into its blocked layout only when its weight and bias are initialisers of
    its own graph. In the step graph, whose cells run inside Ifs, each gate convolution with
    the bias ran as im2col + sgemm instead (58 against 108 GFLOP/s blocked for the shipped
    default, one thread) and its partner's blocked output was reordered back for the sum. The
    1-channel output heads are left as they are: blocked, their one channel would be padded to
    a block and reordered around, which measured slower.
    """
    copies: dict[tuple[int, str], ir.Value] = {}
    for node in ir.traversal.RecursiveGraphIterator(graph):
        branch = node.graph
        if branch is graph or node.op_type != "Conv" or not _fills_blocks(node):
            continue
        for index, value in enumerate(node.inputs[1:3], start=1):
            if value is None or not value.is_initializer() or value.graph is branch:
                continue
            key = (id(branch), value.name)
            if key not in copies:
                copies[key] = ir.Value(
                    name=f"{value.name}_local{len(copies)}",
                    shape=value.shape,
                    type=value.type,
                    const_value=value.const_value,
                )
                branch.register_initializer(copies[key])
            node.replace_input_with(index, copies[key])
    return len(copies)


def _fills_blocks(conv: ir.Node) -> bool:
    """Whether a convolution's output channels (its weight's first dimension) are a whole
    number of NCHWc blocks on some host: a multiple of the smallest block. A host whose blocks
    are larger leaves the others as they were; their copies cost bytes only."""
    shape = conv.inputs[1].shape
    return shape is not None and isinstance(shape[0], int) and shape[0] % min(NCHWC_BLOCKS) == 0


def _check_parity(
    scratch: Path, feeds: dict[str, np.ndarray], expected: list[np.ndarray], path: Path
) -> float:
    """Largest |ONNX Runtime - PyTorch| over all outputs of the graph written to ``scratch``
    for ``path``; raises above tolerance."""
    session = ort.InferenceSession(str(scratch), providers=["CPUExecutionProvider"])
    got = session.run(None, feeds)
    error = max(float(np.abs(g - e).max()) for g, e in zip(got, expected, strict=True))
    if not error <= PARITY_TOLERANCE:
        raise RuntimeError(
            f"ONNX export differs from PyTorch by {error:.3g} (> {PARITY_TOLERANCE:g}); "
            f"{path} not written"
        )
    return error


def _irregular_times(past_frames: int, seed: int) -> torch.Tensor:
    """(1, P) past times with some frames dropped: the parity check must see real gaps."""
    rng = np.random.default_rng(seed)
    span = past_frames + past_frames // 4
    kept = np.sort(rng.choice(span, size=past_frames, replace=False))
    return torch.from_numpy((kept - (span - 1)).astype(np.float32))[None]


def example_input(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    """A seeded input in the range normalised frames and LSTM states live in."""
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed)).clamp(-1, 1)


def _check_streaming(generator: nn.Module, family: str) -> None:
    if not getattr(generator, "streaming", False):
        raise ValueError(
            f"model family {family!r} cannot stream one frame at a time; "
            "export its window graph only"
        )


def _check_graph(metadata: ModelMetadata, graph: str) -> None:
    if metadata.graph != graph:
        raise ValueError(f"metadata describes a {metadata.graph!r} graph, exporting a {graph!r}")


def _code_revision() -> str:
    """The git commit the exporting code came from, or "unknown" outside a checkout."""
    try:
        result = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=Path(__file__).parent,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return result.stdout.strip()
