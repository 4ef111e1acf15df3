"""What an exported model says about itself, so a model file is self-describing.

The daemon imports this module (never torch): it reads the metadata of an ONNX file and refuses
one whose grid, rate or window does not match the stream. Stored as one JSON document under the
ONNX ``metadata_props`` key ``corticast``.
"""

from __future__ import annotations

import contextlib
import json
import reprlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from service.core.atomic_write import written_atomically

METADATA_KEY = "corticast"
FORMAT_VERSION = 1
RASTER_STAGES = ("encode", "context", "step", "decode")
"""The graphs of a host-driven raster sampler (S-HR-VQVAE, paper 002), in the order they run:
the past's codes once, then per future frame a context and one step per code position, then
the future decoded (``models.vqvae.raster_sampler``)."""
GRAPH_KINDS = ("window", "step", *(f"raster-{stage}" for stage in RASTER_STAGES))
PAST_TIMES_INPUT = "past_times"
"""Name of the second input of an irregular model's window graph."""
QUANTIZATION_KEY = "quantization"
"""Key of the record a quantized graph (``models.quantize``) keeps in its provenance."""
INT8_MAX_PSNR_DROP_DB = 0.1
"""The most pooled PSNR an int8 graph may lose against fp32 on its guard windows to be served
(``models.quantize``'s default limit): a record made with a wider limit (``Int8Settings`` in
Python) is judged by this one, not its own."""


@dataclass(frozen=True)
class ModelMetadata:
    """Identity, geometry, normalisation and provenance of one exported model.

    Attributes
    ----------
    family
        Registry name (``models.registry``), e.g. ``"convlstm"``.
    config
        The family's config as a plain dict (rebuilds the same architecture).
    past_frames, future_frames
        Window the graph takes and returns.
    grid_rows, grid_cols, pitch_m, sample_rate_hz
        The stream the model was trained for.
    normalisation
        Per-electrode ``mean`` and ``scale`` (µV, rows x cols nested lists): the graph works on
        ``(x - mean) / scale`` and returns frames in the same units.
    provenance
        Training data (sessions, seeds, splits), steps, losses, code version: whatever lets
        someone trace what the weights learned from.
    input_name, output_name
        Graph input (1, past_frames, 1, rows, cols) and output (1, future_frames, 1, rows, cols).
    graph
        ``"window"``: the graph maps a whole past window to the future. ``"step"``: the
        streaming form: inputs ``input_name`` (one frame, (1, 1, rows, cols)), the encoder
        state ``state_in_<k>`` and ``upper_due`` ((1,), 1.0 where a temporal-skip layer
        updates at this frame, alternating); outputs ``output_name`` and ``state_out_<k>``.
        ``"raster-<stage>"``: one stage of a raster sampler (``RASTER_STAGES``), a file beside
        its window graph named by :func:`raster_stage_path`.
    state_shapes
        Shapes of the state tensors of a ``"step"`` graph, in ``<k>`` order; empty otherwise.
    irregular
        The window graph has a second input ``PAST_TIMES_INPUT`` (1, past_frames) float32:
        each past frame's time in frame periods relative to the newest nominal frame (<= 0,
        ``-(P-1)..0`` when nothing was dropped), so it can be fed the last frames actually
        received (the daemon's ``irregular`` missing-frame policy).
    residual
        The network predicts the departure from the last past frame and the graph adds that
        frame back (``models.residual``): the output is frames either way, so serving is the
        same; recorded so reports can say which parameterisation was scored. Files written
        before the field existed are absolute (False).
    """

    family: str
    config: dict[str, Any]
    past_frames: int
    future_frames: int
    grid_rows: int
    grid_cols: int
    pitch_m: float
    sample_rate_hz: float
    normalisation: dict[str, Any]
    provenance: dict[str, Any] = field(default_factory=dict)
    input_name: str = "past"
    output_name: str = "future"
    graph: str = "window"
    state_shapes: list[list[int]] = field(default_factory=list)
    irregular: bool = False
    residual: bool = False
    format_version: int = FORMAT_VERSION

    def __post_init__(self) -> None:
        # Hold JSON-native values (lists, not tuples) so a round trip through the file is exact.
        for name in ("config", "normalisation", "provenance", "state_shapes"):
            object.__setattr__(self, name, json.loads(json.dumps(getattr(self, name))))
        if self.graph not in GRAPH_KINDS:
            raise ValueError(
                f"model metadata 'graph' must be one of {GRAPH_KINDS}, got {self.graph!r}"
            )
        if self.irregular and self.graph != "window":
            raise ValueError("model metadata 'irregular' applies to a 'window' graph only")
        if (self.graph == "step") != bool(self.state_shapes):
            raise ValueError(
                "model metadata 'state_shapes' must be given for a 'step' graph and only then, "
                f"got graph {self.graph!r} with {len(self.state_shapes)} state shapes"
            )
        record = self.provenance.get(QUANTIZATION_KEY)
        if record is not None and not (
            isinstance(record, dict) and record.get("precision") == "int8"
        ):
            # ``precision`` reads it: a hand-edited record is refused here, not where it is used
            raise ValueError(
                f"model metadata 'provenance.{QUANTIZATION_KEY}' must be a JSON object with "
                f'"precision": "int8" (corticast export --int8 writes it), got '
                f"{reprlib.repr(record)}"
            )

    @property
    def precision(self) -> str:
        """What the graph's weights are stored in: ``"int8"`` for a copy quantized by
        ``models.quantize`` (its provenance records how), ``"fp32"`` for an export."""
        return self.provenance.get(QUANTIZATION_KEY, {}).get("precision", "fp32")

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ModelMetadata:
        """Parse and validate; unknown keys, missing keys, values of the wrong JSON type and
        other versions are errors."""
        try:
            values = json.loads(text)
        except json.JSONDecodeError as err:
            raise ValueError(f"model metadata is not valid JSON: {err}") from None
        if not isinstance(values, dict):
            raise ValueError(f"model metadata must be a JSON object, got {type(values).__name__}")
        version = values.get("format_version")
        if version != FORMAT_VERSION:
            raise ValueError(
                f"model metadata format_version must be {FORMAT_VERSION}, got {version!r}"
            )
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ValueError(f"model metadata has unknown keys {unknown}")
        for key, value in values.items():
            rule, fits = _JSON_TYPES[key]
            if not fits(value):
                raise ValueError(
                    f"model metadata {key!r} must be {rule}, got {reprlib.repr(value)}"
                )
        try:
            return cls(**values)
        except TypeError as err:
            raise ValueError(f"model metadata is incomplete: {err}") from None

    @classmethod
    def from_custom_map(cls, custom: dict[str, str]) -> ModelMetadata:
        """From an ONNX file's metadata map (``onnx`` or ``onnxruntime``'s view of it)."""
        if METADATA_KEY not in custom:
            raise ValueError(
                f"model file has no '{METADATA_KEY}' metadata: not exported by corticast "
                f"(keys found: {sorted(custom)})"
            )
        return cls.from_json(custom[METADATA_KEY])


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


_JSON_TYPES: dict[str, tuple[str, Callable[[object], bool]]] = {
    **dict.fromkeys(
        ("family", "input_name", "output_name", "graph"),
        ("a string", lambda v: isinstance(v, str)),
    ),
    **dict.fromkeys(
        ("config", "normalisation", "provenance"),
        ("a JSON object", lambda v: isinstance(v, dict)),
    ),
    **dict.fromkeys(
        ("past_frames", "future_frames", "grid_rows", "grid_cols", "format_version"),
        ("an integer", _is_int),
    ),
    **dict.fromkeys(
        ("pitch_m", "sample_rate_hz"),
        ("a number", lambda v: isinstance(v, float) or _is_int(v)),
    ),
    **dict.fromkeys(("irregular", "residual"), ("true or false", lambda v: isinstance(v, bool))),
    "state_shapes": (
        "a list of lists of integers",
        lambda v: (
            isinstance(v, list)
            and all(isinstance(s, list) and all(_is_int(n) for n in s) for s in v)
        ),
    ),
}
"""What each key of a file's metadata must hold, in words, and the test: a hand-edited file is
refused naming the key, not failed where the value is first used."""


def differing_fields(
    one: ModelMetadata,
    other: ModelMetadata,
    *,
    own: Iterable[str] = (),
    own_provenance: Iterable[str] = (),
) -> list[str]:
    """The fields in which two files' metadata differ (``provenance.<key>`` for provenance),
    less what each file of one export holds of its own: the fields ``own`` (its graph kind,
    tensor names) and the provenance keys ``own_provenance`` (an int8 copy's quantization
    record). Empty: the files come from one export."""
    own, own_provenance = set(own), set(own_provenance)
    differ = []
    for item in fields(one):
        mine, theirs = getattr(one, item.name), getattr(other, item.name)
        if item.name in own:
            continue
        if item.name != "provenance":
            if mine != theirs:
                differ.append(item.name)
            continue
        keys = (mine.keys() | theirs.keys()) - own_provenance
        differ += [f"provenance.{k}" for k in sorted(keys) if mine.get(k) != theirs.get(k)]
    return differ


def raster_stage_path(window_path: str | Path, stage: str) -> Path:
    """Where the raster sampler's ``stage`` graph lives beside the window graph
    ``window_path``: ``model.onnx`` -> ``model.raster-step.onnx``."""
    if stage not in RASTER_STAGES:
        raise ValueError(f"'stage' must be one of {RASTER_STAGES}, got {stage!r}")
    window_path = Path(window_path)
    return window_path.with_name(f"{window_path.stem}.raster-{stage}{window_path.suffix}")


def int8_path(window_path: str | Path) -> Path:
    """Where the int8 copy of the window graph ``x.onnx`` goes (``models.quantize``):
    ``x.int8.onnx``."""
    window_path = Path(window_path)
    return window_path.with_name(f"{window_path.stem}.int8{window_path.suffix}")


def fp16_path(window_path: str | Path) -> Path:
    """Where TensorRT 11 looks for an FP16 graph of the window graph ``x.onnx`` to build an
    FP16 engine from (``service.inference.tensorrt_predictor``; made by NVIDIA's ModelOpt
    AutoCast, not by corticast): ``x.fp16.onnx``."""
    window_path = Path(window_path)
    return window_path.with_name(f"{window_path.stem}.fp16{window_path.suffix}")


def int8_step_path(window_path: str | Path) -> Path:
    """Where the int8 step graph goes: beside the int8 window graph as the daemon looks for a
    step graph (``x.onnx`` -> ``x.int8.step.onnx``)."""
    int8 = int8_path(window_path)
    return int8.with_name(f"{int8.stem}.step{int8.suffix}")


def int8_guard(metadata: ModelMetadata, kind: str) -> tuple[float, float]:
    """The accuracy guard an int8 graph records for its ``kind`` ("window" or "step"): its
    pooled PSNR minus fp32's on the guard windows (dB, <= 0 where int8 lost accuracy) and the
    largest drop the guard allowed.

    ``models.quantize`` writes int8 files only when the guard passes, so a record that says
    otherwise was edited or made by other means. The limit is the record's own or
    :data:`INT8_MAX_PSNR_DROP_DB`, whichever is tighter: a record's wider limit would otherwise
    pass a graph the project's guard refuses. Raises ValueError naming what is missing, or the
    drop past the limit.
    """
    record = metadata.provenance.get(QUANTIZATION_KEY)
    if record is None:  # one that is there is an int8 record: ModelMetadata refuses others
        raise ValueError("it carries no int8 quantization record (corticast export --int8)")
    guard = record.get("guard")
    try:
        scores, limit = guard["pooled_psnr_db"][kind], guard["max_psnr_drop_db"]
        fp32, int8, limit = float(scores["fp32"]), float(scores["int8"]), float(limit)
    except (KeyError, TypeError, ValueError):  # a hand-edited record of another shape too
        raise ValueError(
            f"its quantization record holds no guard scores for a {kind} graph"
        ) from None
    allowed = min(limit, INT8_MAX_PSNR_DROP_DB)
    if not fp32 - int8 <= allowed:
        whose = "its own limit" if allowed == limit else f"the limit served (it allows {limit:g})"
        raise ValueError(
            f"its guard record fails {whose}: pooled PSNR {int8:.2f} dB is "
            f"{fp32 - int8:.2f} dB below fp32's {fp32:.2f} dB (limit {allowed:g} dB)"
        )
    return int8 - fp32, allowed


def read_model_metadata(path: str | Path) -> ModelMetadata:
    """The metadata of an exported model file, without loading its weights into a runtime.

    Raises
    ------
    ValueError
        If the file is not an ONNX model or carries no valid corticast metadata.
    """
    import onnx
    from google.protobuf.message import DecodeError

    try:
        model = onnx.load(str(path), load_external_data=False)
    except (DecodeError, ValueError) as err:
        raise ValueError(f"{str(path)!r} is not a readable ONNX model: {err}") from None
    try:
        return ModelMetadata.from_custom_map({p.key: p.value for p in model.metadata_props})
    except ValueError as err:
        raise ValueError(f"{str(path)!r}: {err}") from None


@contextlib.contextmanager
def replacing(path: str | Path) -> Iterator[Path]:
    """A scratch path beside ``path`` to write a model file to, renamed onto ``path`` when
    the block ends without an error and removed when it raises: the daemon, or a crash, never
    meets a half-written or unchecked file where a model was, and a failed write leaves the
    model that was there. A symlink at ``path`` keeps pointing where it did (its target is
    replaced), and a file replaced keeps its permission bits."""
    with written_atomically(path) as scratch:
        try:
            yield scratch
        finally:  # where the exporter put large weights, before they were taken inline
            scratch.with_name(scratch.name + ".data").unlink(missing_ok=True)


def rewrite_model_metadata(path: str | Path, metadata: ModelMetadata) -> None:
    """Replace the corticast metadata of an exported model file, leaving its graph as it is
    (e.g. to record a check made on the exported file itself)."""
    import onnx

    model = onnx.load(str(path))
    kept = [p for p in model.metadata_props if p.key != METADATA_KEY]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    entry = model.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, metadata.to_json()
    with replacing(path) as scratch:
        onnx.save(model, str(scratch))


HELD_OUT_CHECK = "held_out_check"
"""Key in ``provenance`` of the check ``corticast export`` and ``adapt`` record
(``models.held_out_check``)."""
RUN_VALIDATION = "run-validation"
"""A check's ``data``: the validation split of the data the model was trained on (export)."""
ADAPTED_TAIL = "adapted-tail"
"""A check's ``data``: the held-out tail of the rig's sessions the model was adapted on (adapt)."""
CHECK_DATA = {
    RUN_VALIDATION: "the validation split of its training data",
    ADAPTED_TAIL: "the held-out tail of the sessions it was adapted on",
}
"""What each ``data`` label of a check means, in words for logs and reports."""


def held_out_check_of(metadata: ModelMetadata) -> dict[str, Any] | None:
    """The held-out check ``metadata`` records; None without one."""
    check = metadata.provenance.get(HELD_OUT_CHECK)
    return check if isinstance(check, dict) else None


def held_out_shortfall(metadata: ModelMetadata) -> dict[int, float] | None:
    """:func:`check_shortfall` of the check ``metadata`` records; None without a check."""
    check = held_out_check_of(metadata)
    return None if check is None else check_shortfall(check)


def describe_check_data(check: dict[str, Any]) -> str:
    """In words, the data a check was scored on (a check without ``data`` predates adapt's, so
    export made it, on the run's validation split)."""
    data = check.get("data", RUN_VALIDATION)
    return CHECK_DATA.get(data, str(data))


def check_shortfall(check: dict[str, Any]) -> dict[int, float] | None:
    """Predicted frames (1-based) where a held-out check's model PSNR is below persistence's,
    with the shortfall in dB; empty where it is not, None if the check lacks the figures."""
    model, persistence = check.get("model_psnr_db"), check.get("persistence_psnr_db")
    if not isinstance(model, list) or not isinstance(persistence, list):
        return None
    return {
        frame: round(p - m, 3)
        for frame, (m, p) in enumerate(zip(model, persistence, strict=False), start=1)
        if m < p
    }


def describe_shortfall(shortfall: dict[int, float]) -> str:
    """One line for logs and reports: which frames, by how much at most."""
    frames = ", ".join(str(frame) for frame in shortfall)
    return (
        f"below persistence on its held-out check at predicted frame(s) {frames} "
        f"(by up to {max(shortfall.values()):.2f} dB)"
    )
