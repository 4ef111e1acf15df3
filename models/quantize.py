"""INT8 copies of exported graphs: ONNX Runtime static quantization (QDQ), behind an accuracy
guard.

Only the convolutions are quantized (int8 weights per output channel, uint8 activations with
MinMax ranges): they hold the model's arithmetic, while quantizing the gates' element-wise
products and sigmoids would add a quantize/dequantize pair per operator for no int8 kernel.
The ranges are calibrated on generated windows that no shipped model trained on, and the guard
scores fp32 and int8 on other generated windows, distinct from those; an int8 graph whose
pooled PSNR is more than ``max_psnr_drop_db`` below fp32's, or that falls below persistence at
a horizon where fp32 was not, or, where fp32 was below persistence already, more than
``max_horizon_drop_db`` below fp32 at that horizon, is refused and nothing is written. (Short
horizons barely move the pooled MSE, so without that last rule int8 could lose any amount at
a horizon the fp32 model was already weak at; its limit is wider than the pooled one because
one horizon's score is noisier than all of them pooled.)

``quantize_static`` calibrates and quantizes the main graph only: it does not enter If
branches. A step graph (``models.export``) has all its arithmetic inside Ifs, so each branch
that holds convolutions is lifted into a model of its own (its outer-scope values become its
inputs or initialisers), calibrated on the values the fp32 step graph feeds it, quantized, and
put back in place.

The record of what was done (format, ranges, calibration and guard data, the guard's scores)
goes into the metadata's provenance under ``"quantization"``, the same in both files of a pair,
so the daemon's check that a step graph belongs to its window graph holds for int8 pairs too.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_static,
)

from models.evaluation import EvaluationReport, evaluate
from models.metadata import (
    INT8_MAX_PSNR_DROP_DB,
    METADATA_KEY,
    PAST_TIMES_INPUT,
    QUANTIZATION_KEY,
    ModelMetadata,
    int8_path,
    int8_step_path,
    read_model_metadata,
    replacing,
)
from models.stream_fit import misfits
from models.windows import Normalisation, regular_times
from service.core.checks import check_int, check_range
from service.core.errors import CorticastError
from service.core.grid import ElectrodeGrid
from service.core.robust_scale import FIXED, normalisation_kind

QUANTIZED_OPS = ("Conv",)
Feeds = dict[str, np.ndarray]


class QuantizationRefusedError(CorticastError, ValueError):
    """The int8 graphs failed the accuracy guard; no file was written."""


@dataclass(frozen=True)
class Int8Settings:
    """Where calibration and guard windows come from, how many, and the guard's limits:
    ``max_psnr_drop_db`` on the pooled PSNR, ``max_horizon_drop_db`` at each horizon where fp32
    is below persistence (the default's int8 copies lose at most 0.08 dB at any horizon on the
    guard windows, ``models/weights/README.md``).

    The two data specs (``models.sources``) must share no session (refused here if equal, and
    where they are used if they overlap): the guard scores windows the calibration never saw.
    Their seeds are not among any shipped model's training seeds.
    """

    calibration_data: str = "synthetic-mix:9000-9003@10"
    guard_data: str = "synthetic-mix:9100-9103@10"
    calibration_windows: int = 128
    guard_windows: int = 512
    max_psnr_drop_db: float = INT8_MAX_PSNR_DROP_DB
    max_horizon_drop_db: float = 0.5

    def __post_init__(self) -> None:
        if self.calibration_data == self.guard_data:
            raise ValueError(
                "'guard_data' must differ from 'calibration_data' (the guard scores held-out "
                f"windows), both are {self.guard_data!r}"
            )
        check_int("calibration_windows", self.calibration_windows, 1)
        check_int("guard_windows", self.guard_windows, 1)
        check_range("max_psnr_drop_db", self.max_psnr_drop_db, 0.0)
        check_range("max_horizon_drop_db", self.max_horizon_drop_db, 0.0)


def export_int8(
    window: str | Path,
    step: str | Path | None = None,
    settings: Int8Settings = Int8Settings(),
    *,
    progress: Callable[[str], None] = lambda _: None,
) -> list[str]:
    """Quantize the exported ``window`` graph (and ``step`` graph), guard, and write the int8
    files beside ``window`` (:func:`int8_path`, :func:`int8_step_path`); returns one line per
    file, then the guard's PSNR table per graph (fp32, int8, persistence, linear).

    Raises
    ------
    QuantizationRefusedError
        If a graph fails the guard (the message gives the scores); nothing is written.
    ValueError
        If the model cannot be quantized here (not a fixed normalisation, wrong graph kind).
    """
    _check_guard_held_out(settings)
    window, step = Path(window), None if step is None else Path(step)
    metadata = _checked_metadata(window, "window")
    if step is not None:
        _checked_metadata(step, "step")
    normalisation = quantizable_normalisation(metadata.normalisation)
    progress(f"generating calibration ({settings.calibration_data}) and guard windows")
    calibration = _windows(
        settings.calibration_data, metadata, normalisation, settings.calibration_windows
    )
    guard = _windows(settings.guard_data, metadata, normalisation, settings.guard_windows)
    progress("quantizing the window graph and scoring it against fp32")
    (past, _), calibrated = calibration
    graphs = {"window": (window, quantize_window(onnx.load(str(window)), past))}
    if step is not None:
        progress("quantizing the step graph's branches and scoring it against fp32")
        graphs["step"] = (step, quantize_step(onnx.load(str(step)), past))
    (guard_past, guard_future), guarded = guard
    reports = {
        kind: guard_report(kind, source, quantized, guard_past, guard_future)
        for kind, (source, quantized) in graphs.items()
    }
    failures = [
        f"{kind} graph: {why}" for kind, report in reports.items()
        for why in refusals(report, settings)
    ]  # fmt: skip
    if failures:
        table = "\n".join(r.to_markdown() for r in reports.values())
        raise QuantizationRefusedError(
            "int8 refused, nothing written: " + "; ".join(failures) + "\n" + table
        )
    record = _record(settings, calibrated, guarded, reports)
    lines = []
    for kind, (source, quantized) in graphs.items():
        out = int8_path(window) if kind == "window" else int8_step_path(window)
        _stamp(quantized, read_model_metadata(source), record)
        with replacing(out) as scratch:
            onnx.save(quantized, str(scratch))
        fp32, int8 = (reports[kind].pooled_psnr[name] for name in ("fp32", "int8"))
        lines.append(
            f"wrote {out} ({kind} graph, int8 QDQ; pooled PSNR {int8:.2f} dB vs fp32 "
            f"{fp32:.2f} dB on {reports[kind].n_windows} held-out windows)"
        )
    for kind, report in reports.items():
        lines.append(f"int8 guard, {kind} graph ({settings.guard_data}):\n{report.to_markdown()}")
    return lines


def quantize_window(model: onnx.ModelProto, windows: np.ndarray) -> onnx.ModelProto:
    """``model`` (a window graph) with its convolutions in int8, calibrated on ``windows``
    (N, past, 1, rows, cols) in model units."""
    metadata = ModelMetadata.from_custom_map({p.key: p.value for p in model.metadata_props})
    feeds = [_window_feeds(metadata, window) for window in windows]
    return _checked_int8(_quantize(model, feeds), "window")


def quantize_step(model: onnx.ModelProto, windows: np.ndarray) -> onnx.ModelProto:
    """``model`` (a step graph) with the convolutions of its If branches in int8, each branch
    calibrated on what the fp32 graph feeds it while priming on ``windows``."""
    main = model.graph
    values = _step_values(model, windows)
    initializers = {init.name: init for init in main.initializer}
    quantized = onnx.ModelProto()
    quantized.CopyFrom(model)
    for branch in _compute_branches(quantized.graph):
        outer = sorted(_outer_names(branch))
        missing = [n for n in outer if n not in initializers and n not in values[0]]
        if missing:
            raise ValueError(
                f"cannot calibrate If branch {branch.name!r}: it reads {missing}, which are "
                "neither weights nor inputs or outputs of the step graph"
            )
        lifted = _lift(model, branch, outer, initializers, values[0])
        feeds = [{n: v[n] for n in outer if n not in initializers} for v in values]
        result = _quantize(lifted, feeds).graph
        _replace_branch(branch, result, initializers)
    _drop_unused_initializers(quantized.graph)
    return _checked_int8(quantized, "step")


def _checked_int8(model: onnx.ModelProto, kind: str) -> onnx.ModelProto:
    """``model``, refused if no operator of it (nested graphs included) was quantized: a file
    called int8 that computes in fp32 would mislead whoever serves it."""
    if not _counts(model.graph, "DequantizeLinear"):
        raise ValueError(
            f"the {kind} graph has no {'/'.join(QUANTIZED_OPS)} operator that could be "
            "quantized (in its main graph or, for a step graph, in an If branch)"
        )
    return model


def _counts(graph: onnx.GraphProto, op_type: str) -> int:
    """Nodes of ``op_type`` in ``graph`` and every graph nested in it."""
    count = 0
    for node in graph.node:
        count += node.op_type == op_type
        for attribute in node.attribute:
            if attribute.type == onnx.AttributeProto.GRAPH:
                count += _counts(attribute.g, op_type)
    return count


def guard_report(
    kind: str, fp32: Path, int8: onnx.ModelProto, past: np.ndarray, future: np.ndarray
) -> EvaluationReport:
    """fp32 and int8 scored with persistence on the guard windows (``past``, ``future``, model
    units), each graph run as the daemon runs its ``kind`` ("window" or "step")."""
    metadata = read_model_metadata(fp32)
    run = _run_window if kind == "window" else _run_step
    sessions = {"fp32": _session(fp32.read_bytes()), "int8": _session(int8.SerializeToString())}
    predictors = {
        name: (lambda batch, s=session: np.stack([run(s, metadata, w) for w in batch]))
        for name, session in sessions.items()
    }
    return evaluate(predictors, [(past, future)])


def refusals(report: EvaluationReport, settings: Int8Settings) -> list[str]:
    """Why ``report``'s int8 graph is refused (empty: accepted): pooled PSNR more than
    ``settings.max_psnr_drop_db`` below fp32's, below persistence at a horizon where fp32 was
    not, or more than ``settings.max_horizon_drop_db`` below fp32 at a horizon where fp32 was
    below persistence."""
    pooled, psnr = report.pooled_psnr, report.psnr
    why = []
    drop = pooled["fp32"] - pooled["int8"]
    if not drop <= settings.max_psnr_drop_db:
        why.append(
            f"pooled PSNR {pooled['int8']:.3f} dB is {drop:.3f} dB below fp32's "
            f"{pooled['fp32']:.3f} dB (limit {settings.max_psnr_drop_db} dB)"
        )
    floor = psnr["persistence"]
    fallen = np.flatnonzero((psnr["int8"] < floor) & (psnr["fp32"] >= floor)) + 1
    if len(fallen):
        why.append(f"below persistence at predicted frame(s) {fallen.tolist()} where fp32 is not")
    below = psnr["fp32"] < floor
    drops = psnr["fp32"] - psnr["int8"]
    further = np.flatnonzero(below & ~(drops <= settings.max_horizon_drop_db))
    if len(further):
        by = ", ".join(f"{d:.3f}" for d in drops[further])
        why.append(
            f"at predicted frame(s) {(further + 1).tolist()}, where fp32 is below persistence, "
            f"{by} dB below fp32 (limit {settings.max_horizon_drop_db} dB)"
        )
    return why


def _checked_metadata(path: Path, kind: str) -> ModelMetadata:
    metadata = read_model_metadata(path)
    if metadata.graph != kind:
        raise ValueError(f"{str(path)!r} is a {metadata.graph!r} graph, expected a {kind} graph")
    if metadata.precision != "fp32":
        raise ValueError(f"{str(path)!r} is already quantized; quantize its fp32 export")
    return metadata


def check_quantizable(metadata: ModelMetadata, settings: Int8Settings = Int8Settings()) -> None:
    """Raise ValueError naming why :func:`export_int8` could not calibrate and guard the model
    ``metadata`` describes with ``settings``' data (its normalisation, another stream's
    data): ``corticast export --int8`` asks before it writes anything."""
    from models.sources import load_sessions

    quantizable_normalisation(metadata.normalisation)
    _check_guard_held_out(settings)
    for spec in (settings.calibration_data, settings.guard_data):
        for session in load_sessions([spec]):
            _check_fits(spec, session, metadata)


def _check_guard_held_out(settings: Int8Settings) -> None:
    """ValueError where the calibration and guard data share a session (``9000-9003@10`` and
    ``9002-9005@10``): the guard must score windows the calibration never saw. Here, not in
    ``Int8Settings``, because reading a mixture spec imports the generators (~1 s), and every
    import of this module builds the default settings."""
    from models.sources import check_each_recording_once

    check_each_recording_once(
        [settings.calibration_data, settings.guard_data],
        "the guard would score windows the calibration saw (int8 calibration and guard data)",
    )


def quantizable_normalisation(normalisation: dict[str, Any]) -> Normalisation:
    """A model's normalisation as the calibration and guard windows are scaled; ValueError
    for one int8 export cannot use."""
    if normalisation_kind(normalisation) != FIXED:
        raise ValueError(
            f"int8 export needs a fixed normalisation (calibration windows are scaled once), "
            f"this model has {normalisation.get('kind')!r}"
        )
    return Normalisation.from_dict(normalisation)


def _windows(spec: str, metadata: ModelMetadata, normalisation: Normalisation, count: int):
    """``count`` windows spread evenly over the sessions ``spec`` names, as stacked (past,
    future) in model units, and where they came from; ValueError if the sessions are not of
    the model's stream (grid, pitch, rate)."""
    from models.sources import load_sessions
    from models.windows import SplitWindows

    sessions = load_sessions([spec])
    for session in sessions:
        _check_fits(spec, session, metadata)
    every = SplitWindows(sessions, "train", normalisation, fractions=(1.0, 0.0, 0.0))
    if len(every) < count:
        raise ValueError(f"{spec!r} holds {len(every)} windows, fewer than the {count} needed")
    picks = np.linspace(0, len(every) - 1, count).round().astype(int)
    past = np.stack([every[int(k)][0] for k in picks])
    future = np.stack([every[int(k)][1] for k in picks])
    return (past, future), {"data": spec, "windows": count, "of": len(every)}


def _check_fits(spec: str, session, metadata: ModelMetadata) -> None:
    """Calibration and guard windows must be of the stream the model serves: at another rate
    or grid the guard would score something the daemon never feeds it."""
    grid = ElectrodeGrid(metadata.grid_rows, metadata.grid_cols, metadata.pitch_m)
    rate = session.sample_rate_hz
    if misfits([session], grid, metadata.sample_rate_hz):
        raise ValueError(
            f"int8 calibration/guard data {spec!r} is {session.grid.describe()}, {rate:g} Hz, "
            f"not this model's {grid.describe()}, {metadata.sample_rate_hz:g} Hz: its int8 "
            f"copy cannot be calibrated and guarded here"
        )


def _window_feeds(metadata: ModelMetadata, window: np.ndarray) -> Feeds:
    feeds = {metadata.input_name: window[None].astype(np.float32)}
    if metadata.irregular:
        feeds[PAST_TIMES_INPUT] = regular_times(1, len(window)).astype(np.float32)
    return feeds


def _session(model: bytes) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def _run_window(session, metadata: ModelMetadata, window: np.ndarray) -> np.ndarray:
    return session.run(None, _window_feeds(metadata, window))[0][0]


def _run_step(session, metadata: ModelMetadata, window: np.ndarray) -> np.ndarray:
    """The step graph primed from zeros on ``window``: window mode's prediction, as
    ``service.inference.streaming_predictor`` re-primes."""
    return _prime(session, metadata, window, lambda feeds, outputs: None)


def _prime(session, metadata: ModelMetadata, window: np.ndarray, seen) -> np.ndarray:
    """The future after ``window``, fed frame by frame from a zero state, the upper layer due
    at the newest frame's parity and the rollout at the newest only; ``seen(feeds, outputs)``
    after each step."""
    state = [np.zeros(shape, dtype=np.float32) for shape in metadata.state_shapes]
    names = [f"state_in_{k}" for k in range(len(state))]
    outputs = [o.name for o in session.get_outputs()]
    newest = len(window) - 1
    future = None
    for t, frame in enumerate(window):
        feeds = {
            metadata.input_name: frame[None].astype(np.float32),
            "upper_due": np.array([1.0 if (newest - t) % 2 == 0 else 0.0], dtype=np.float32),
            "rollout": np.array([1.0 if t == newest else 0.0], dtype=np.float32),
            **dict(zip(names, state, strict=True)),
        }
        future, *state = session.run(None, feeds)
        seen(feeds, dict(zip(outputs, [future, *state], strict=True)))
    return future[0]


def _step_values(model: onnx.ModelProto, windows: np.ndarray) -> list[Feeds]:
    """Every input and output of the fp32 step graph at each step of priming on ``windows``."""
    metadata = ModelMetadata.from_custom_map({p.key: p.value for p in model.metadata_props})
    session = _session(model.SerializeToString())
    values: list[Feeds] = []
    for window in windows:
        _prime(session, metadata, window, lambda feeds, outs: values.append({**feeds, **outs}))
    return values


def _compute_branches(graph: onnx.GraphProto) -> list[onnx.GraphProto]:
    """The If branches (at any depth) that hold a quantizable operator themselves."""
    found = []
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.type == onnx.AttributeProto.GRAPH:
                branch = attribute.g
                if any(n.op_type in QUANTIZED_OPS for n in branch.node):
                    found.append(branch)
                found.extend(_compute_branches(branch))
    return found


def _outer_names(graph: onnx.GraphProto) -> set[str]:
    """Names ``graph`` (its nested graphs included) reads from outside itself."""
    local = {o for n in graph.node for o in n.output}
    local |= {i.name for i in graph.initializer} | {i.name for i in graph.input}
    used = set()
    for node in graph.node:
        used.update(node.input)
        for attribute in node.attribute:
            if attribute.type == onnx.AttributeProto.GRAPH:
                used |= _outer_names(attribute.g)
    return used - local - {""}


def _lift(
    model: onnx.ModelProto,
    branch: onnx.GraphProto,
    outer: Sequence[str],
    initializers: dict[str, onnx.TensorProto],
    example: Feeds,
) -> onnx.ModelProto:
    """``branch`` as a model of its own: outer weights copied in, other outer values inputs."""
    graph = onnx.GraphProto()
    graph.CopyFrom(branch)
    for name in outer:
        if name in initializers:
            graph.initializer.append(initializers[name])
        else:
            value = example[name]
            graph.input.append(
                onnx.helper.make_tensor_value_info(
                    name, onnx.helper.np_dtype_to_tensor_dtype(value.dtype), value.shape
                )
            )
    lifted = onnx.helper.make_model(graph, opset_imports=model.opset_import)
    lifted.ir_version = model.ir_version
    return lifted


def _replace_branch(
    branch: onnx.GraphProto, result: onnx.GraphProto, outer: dict[str, onnx.TensorProto]
) -> None:
    """Put the quantized ``result`` in ``branch``'s place; weights it left as they were are
    read from the outer scope again rather than copied."""
    kept = [
        init
        for init in result.initializer
        if not (
            init.name in outer and init.SerializeToString() == outer[init.name].SerializeToString()
        )
    ]
    del branch.node[:]
    branch.node.extend(result.node)
    del branch.initializer[:]
    branch.initializer.extend(kept)
    del branch.value_info[:]


def _drop_unused_initializers(graph: onnx.GraphProto) -> None:
    used = {n for node in graph.node for n in node.input} | _outer_names_of_subgraphs(graph)
    keep = [init for init in graph.initializer if init.name in used]
    del graph.initializer[:]
    graph.initializer.extend(keep)


def _outer_names_of_subgraphs(graph: onnx.GraphProto) -> set[str]:
    names: set[str] = set()
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.type == onnx.AttributeProto.GRAPH:
                names |= _outer_names(attribute.g)
    return names


def _quantize(model: onnx.ModelProto, feeds: list[Feeds]) -> onnx.ModelProto:
    """``quantize_static`` (QDQ, per-channel int8 weights, uint8 MinMax activations) of the
    main graph's ``QUANTIZED_OPS``.

    ONNX Runtime's quantization pre-processing is not run: its optimisation pass rewrote these
    graphs into ones the quantizer then made unloadable (onnxruntime 1.32), and the session
    optimises the quantized graph when it loads it anyway."""
    prepared = onnx.ModelProto()
    prepared.CopyFrom(model)
    _own_conv_biases(prepared.graph)
    with tempfile.TemporaryDirectory() as scratch:
        source, target = Path(scratch) / "fp32.onnx", Path(scratch) / "int8.onnx"
        onnx.save(prepared, str(source))
        with _without_preprocessing_advice():
            quantize_static(
                str(source),
                str(target),
                _Reader(feeds),
                quant_format=QuantFormat.QDQ,
                op_types_to_quantize=list(QUANTIZED_OPS),
                per_channel=True,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                calibrate_method=CalibrationMethod.MinMax,
            )
        return onnx.load(str(target))


@contextlib.contextmanager
def _without_preprocessing_advice() -> Iterator[None]:
    """Hide the quantizer's advice to run its pre-processing (not run here, see
    :func:`_quantize`), logged on the root logger at every call."""

    def advice(record: logging.LogRecord) -> bool:
        return "pre-process" not in record.getMessage()

    root = logging.getLogger()
    root.addFilter(advice)
    try:
        yield
    finally:
        root.removeFilter(advice)


def _own_conv_biases(graph: onnx.GraphProto) -> None:
    """Give every Conv its own bias initialiser. A bias shared by several Convs (one per
    unrolled time step) is copied by the quantizer under the name plus a counter, which can
    collide with a value of the graph (``add_10`` -> ``add_101``)."""
    initializers = {init.name: init for init in graph.initializer}
    for node in graph.node:
        if node.op_type == "Conv" and len(node.input) > 2 and node.input[2] in initializers:
            bias = onnx.TensorProto()
            bias.CopyFrom(initializers[node.input[2]])
            bias.name = f"{node.name}.bias"
            graph.initializer.append(bias)
            node.input[2] = bias.name
    _drop_unused_initializers(graph)


class _Reader(CalibrationDataReader):
    """The calibration feeds, once through."""

    def __init__(self, feeds: Iterable[Feeds]) -> None:
        self._feeds = iter(feeds)

    def get_next(self) -> Feeds | None:
        return next(self._feeds, None)


def _record(
    settings: Int8Settings,
    calibration: dict[str, Any],
    guard: dict[str, Any],
    reports: dict[str, EvaluationReport],
) -> dict[str, Any]:
    """What the int8 files record about how they were made and what the guard measured."""
    return {
        "precision": "int8",
        "format": "QDQ",
        "tool": f"onnxruntime.quantization.quantize_static {ort.__version__}",
        "quantized_ops": list(QUANTIZED_OPS),
        "weights": "int8, symmetric, per output channel",
        "activations": "uint8, asymmetric, MinMax over the calibration windows",
        "calibration": calibration,
        "guard": {
            **guard,
            "max_psnr_drop_db": settings.max_psnr_drop_db,
            "max_horizon_drop_db": settings.max_horizon_drop_db,
            "pooled_psnr_db": {
                kind: {k: round(v, 4) for k, v in r.pooled_psnr.items()}
                for kind, r in reports.items()
            },
        },
    }


def _stamp(model: onnx.ModelProto, metadata: ModelMetadata, record: dict[str, Any]) -> None:
    """Replace ``model``'s corticast metadata with ``metadata`` plus the quantization record."""
    provenance = {**metadata.provenance, QUANTIZATION_KEY: record}
    stamped = dataclasses.replace(metadata, provenance=provenance)
    kept = [p for p in model.metadata_props if p.key != METADATA_KEY]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    entry = model.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, stamped.to_json()
    model.producer_name = "corticast"
