"""ONNX Runtime backend, window mode: the CPU path of the daemon and its CUDA / TensorRT EPs.

One session per model, configured for a closed loop rather than throughput: intra-op threads
set explicitly (never "all cores", which fights the ingest thread), sequential execution,
full graph optimisation, and a warm-up at load so the first real prediction is not the slow
one. The normalised input lives in one preallocated buffer. On a GPU the input and output are
bound to preallocated device buffers (IOBinding), and a keep-warm thread stops an idle GPU
session from going cold.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np

from models.metadata import PAST_TIMES_INPUT, ModelMetadata
from service.core.errors import CorticastError
from service.core.ort_options import session_options
from service.inference._window_predictor import WindowPredictor
from service.inference.predictor import (
    DEFAULT_STREAM,
    BackendUnavailableError,
    ModelMismatchError,
    PredictorInfo,
    StreamSpec,
    describe_model,
    file_sha256,
    regular_past_times,
)
from service.inference.resource_failures import OUT_OF, host_resource_failure, out_of

_log = logging.getLogger("corticast.inference")

STEP_FLAGS = ("upper_due", "rollout")
"""A step graph's inputs besides its frame and states (``models.metadata.ModelMetadata``)."""
DEVICES = ("cpu", "cuda", "tensorrt")
"""Execution providers this backend drives: CPU, CUDA, and ONNX Runtime's TensorRT EP."""


def open_session(
    path: str | Path,
    device: str,
    *,
    threads: int,
    device_id: int = 0,
    engine_cache_dir: str | Path | None = None,
    fp16: bool = False,
):
    """An ``onnxruntime.InferenceSession`` on ``device``, with its model's metadata.

    Raises
    ------
    BackendUnavailableError
        If onnxruntime or the requested execution provider is not installed here.
    HostResourceError
        If the host ran out of file descriptors or memory building the session.
    ModelMismatchError
        If ONNX Runtime cannot load the file, or its corticast metadata is not valid.
    """
    try:
        import onnxruntime as ort
    except ImportError as err:
        raise BackendUnavailableError(f"onnxruntime is not installed: {err}") from None
    if device not in DEVICES:
        raise ValueError(f"'device' must be one of {DEVICES}, got {device!r}")
    options = session_options(threads)
    # TF32 off: "fp32" means IEEE FP32 (the CUDA EP enables TF32 by default on Ampere+).
    cuda = ("CUDAExecutionProvider", {"device_id": device_id, "use_tf32": 0})
    providers: list = {
        "cpu": ["CPUExecutionProvider"],
        "cuda": [cuda, "CPUExecutionProvider"],
        "tensorrt": [
            (
                "TensorrtExecutionProvider",
                {
                    "device_id": device_id,
                    "trt_fp16_enable": fp16,
                    "trt_engine_cache_enable": engine_cache_dir is not None,
                    "trt_engine_cache_path": str(engine_cache_dir or ""),
                    "trt_timing_cache_enable": engine_cache_dir is not None,
                    "trt_timing_cache_path": str(engine_cache_dir or ""),
                },
            ),
            cuda,
            "CPUExecutionProvider",
        ],
    }[device]
    wanted = providers[0] if isinstance(providers[0], str) else providers[0][0]
    if wanted not in ort.get_available_providers():
        raise BackendUnavailableError(
            f"ONNX Runtime here has no {wanted} (available: {ort.get_available_providers()}); "
            "install the 'gpu' extra on a machine with a GPU"
        )
    try:
        session = ort.InferenceSession(str(path), options, providers=providers)
    except Exception as err:  # ORT raises its own Fail/InvalidGraph/NoSuchFile types
        raise _load_failure(path, err) from None
    if session.get_providers()[0] != wanted:
        raise BackendUnavailableError(
            f"{wanted} did not initialise (session runs on {session.get_providers()}); "
            "check the CUDA / TensorRT libraries"
        )
    custom = session.get_modelmeta().custom_metadata_map
    try:
        metadata = ModelMetadata.from_custom_map(custom)
    except ValueError as err:
        raise ModelMismatchError(f"{str(path)!r}: {err}") from None
    return session, metadata


_SYSTEM_ERROR = re.compile(r"system error number (\d+)")
"""How ONNX Runtime reports the errno of a file it could not open or map."""


def _load_failure(path: str | Path, err: Exception) -> CorticastError:
    """What ONNX Runtime's refusal to build a session means: a :class:`HostResourceError`
    where the host ran out of descriptors or memory (ORT says only "system error number 24"
    for EMFILE; calling that a misfit model would stop systemd restarting the daemon), else
    a :class:`ModelMismatchError`, as the file is then what it cannot load."""
    doing = f"ONNX Runtime could not load {str(path)!r}"
    found = _SYSTEM_ERROR.search(str(err))
    if found and int(found.group(1)) in OUT_OF:
        return out_of(int(found.group(1)), doing, str(err))
    failure = host_resource_failure(err, doing)  # a MemoryError from std::bad_alloc
    if failure is not None:
        return failure
    return ModelMismatchError(f"ONNX Runtime cannot load {str(path)!r}: {err}")


def check_graph_io(session, metadata: ModelMetadata, path: str | Path) -> None:
    """Refuse a window or step graph whose inputs and outputs are not what its metadata says
    (past and future frames, grid, state shapes in and out, tensor names and float32 types,
    inputs no more than those and a step graph's flags): metadata that fits the stream but
    not its graph would otherwise load and return frames of the wrong count, or fail at the
    first run with ONNX Runtime's message instead of naming the file.

    Raises
    ------
    ModelMismatchError
        Naming the file, the tensor, the graph's shape and the metadata's.
    """
    rows, cols, future = metadata.grid_rows, metadata.grid_cols, metadata.future_frames
    if metadata.graph == "window":
        inputs = {metadata.input_name: [1, metadata.past_frames, 1, rows, cols]}
        if metadata.irregular:
            inputs[PAST_TIMES_INPUT] = [1, metadata.past_frames]
    else:
        inputs = {metadata.input_name: [1, 1, rows, cols]}
        inputs.update({f"state_in_{k}": s for k, s in enumerate(metadata.state_shapes)})
    names = output_names(metadata)
    outputs = dict(zip(names, [[1, future, 1, rows, cols], *metadata.state_shapes], strict=True))
    flags = () if metadata.graph == "window" else STEP_FLAGS  # checked by the step's loader
    extra = sorted({arg.name for arg in session.get_inputs()} - set(inputs) - set(flags))
    if extra:
        hint = (
            f"an irregular graph's {PAST_TIMES_INPUT!r} needs 'irregular': true"
            if metadata.graph == "window"
            else "'state_shapes' names one state_in_<k> per state"
        )
        raise ModelMismatchError(
            f"{str(path)!r} has input(s) {extra} its metadata does not name ({hint}): the "
            "daemon would not feed them"
        )
    for kind, declared, expected in (
        ("input", session.get_inputs(), inputs),
        ("output", session.get_outputs(), outputs),
    ):
        shapes = {arg.name: arg.shape for arg in declared}
        types = {arg.name: arg.type for arg in declared}
        for name, shape in expected.items():
            if name not in shapes:
                raise ModelMismatchError(
                    f"{str(path)!r} has no {kind} {name!r}, which its metadata names "
                    f"({kind}s: {sorted(shapes)})"
                )
            if types[name] != "tensor(float)":
                raise ModelMismatchError(
                    f"{str(path)!r}: its graph's {kind} {name!r} holds {types[name]}, where "
                    "the daemon feeds and reads float32 (an FP16 graph kept for TensorRT?)"
                )
            if len(shapes[name]) != len(shape) or any(
                isinstance(got, int) and got != want
                for got, want in zip(shapes[name], shape, strict=True)
            ):
                raise ModelMismatchError(
                    f"{str(path)!r}: its graph's {kind} {name!r} is {shapes[name]}, its "
                    f"metadata says {shape}: the file was edited or not exported by corticast"
                )


def output_names(metadata: ModelMetadata) -> list[str]:
    """The outputs a predictor runs its graph for, in the order it reads them: the future,
    then a step graph's states (``state_out_<k>``). Asked for by name, as another tool may
    list a graph's outputs in another order or add some."""
    states = [f"state_out_{k}" for k in range(len(metadata.state_shapes))]
    return [metadata.output_name, *states]


def session_info(
    path: str | Path,
    metadata: ModelMetadata,
    device: str,
    device_id: int,
    precision: str,
    mode: str,
) -> PredictorInfo:
    """What an ONNX Runtime predictor reports about itself."""
    return PredictorInfo(
        backend=f"onnxruntime-{device}",
        device="cpu" if device == "cpu" else f"cuda:{device_id}",
        precision=precision,
        mode=mode,
        model=describe_model(metadata),
        model_path=str(path),
        model_sha256=file_sha256(path),
        irregular=metadata.irregular,
    )


def _precision(device: str, fp16: bool, metadata: ModelMetadata) -> str:
    """What a session computes in: an int8 graph's convolutions in int8 on every device
    (``models.quantize``); the TensorRT EP has no TF32 switch and TensorRT allows TF32 by
    default, so its FP32 is reported as "tf32"; CPU and CUDA (``use_tf32`` 0) are FP32."""
    if metadata.precision != "fp32":
        return metadata.precision
    if device != "tensorrt":
        return "fp32"
    return "fp16" if fp16 else "tf32"


class OnnxPredictor(WindowPredictor):
    """A window-graph model on ONNX Runtime (CPU, CUDA or TensorRT execution provider).

    Parameters
    ----------
    path
        Exported window graph (``corticast export``).
    stream
        What the daemon feeds it; a model that does not fit is refused.
    device
        ``"cpu"``, ``"cuda"`` or ``"tensorrt"`` (ONNX Runtime's TensorRT EP, engines cached in
        ``engine_cache_dir``).
    threads
        Intra-op threads (CPU work of the session).
    keep_warm_s
        On a GPU, run a dummy prediction after this long without a real one; None never.
    warm
        Run the warm-up at load (and keep-warm, where configured); False leaves both to the
        caller, which calls :meth:`warmup` before the calls it times (a batched replay builds
        this predictor for its ``info`` and never runs it).
    """

    def __init__(
        self,
        path: str | Path,
        stream: StreamSpec = DEFAULT_STREAM,
        *,
        device: str = "cpu",
        threads: int = 2,
        device_id: int = 0,
        engine_cache_dir: str | Path | None = None,
        fp16: bool = False,
        keep_warm_s: float | None = 1.0,
        warm: bool = True,
    ) -> None:
        self._session, metadata = open_session(
            path,
            device,
            threads=threads,
            device_id=device_id,
            engine_cache_dir=engine_cache_dir,
            fp16=fp16,
        )
        if metadata.graph != "window":
            raise ModelMismatchError(
                f"{str(path)!r} is a {metadata.graph!r} graph; window mode needs the "
                "window graph (use mode 'stream' for a step graph)"
            )
        super().__init__(metadata, stream, path)
        check_graph_io(self._session, metadata, path)
        shape = (1, stream.past_frames, 1, *stream.grid.shape)
        self._input = np.zeros(shape, dtype=np.float32)
        self._feeds = {self.metadata.input_name: self._input}
        self._outputs = output_names(self.metadata)
        self._times = None
        if self.metadata.irregular:
            self._times = regular_past_times(stream.past_frames)[None]
            self._feeds[PAST_TIMES_INPUT] = self._times
        self._binding = self._bind(device, device_id) if device != "cpu" else None
        precision = _precision(device, fp16, self.metadata)
        self.info = session_info(path, self.metadata, device, device_id, precision, "window")
        self._warm(keep_warm_s if device != "cpu" else None, at_load=warm)
        _log.info("loaded %s on %s (%s)", self.info.model, self.info.backend, path)

    def _run(self) -> np.ndarray:
        if self._binding is None:
            return self._session.run(self._outputs, self._feeds)[0]
        binding, device_inputs, device_output = self._binding
        for name, device_input in device_inputs.items():
            device_input.update_inplace(self._feeds[name])
        self._session.run_with_iobinding(binding)
        return device_output.numpy()

    def _bind(self, device: str, device_id: int):
        """Preallocated device input and output, bound once (IOBinding)."""
        import onnxruntime as ort

        output_shape = (1, self._stream.future_frames, 1, *self._stream.grid.shape)
        device_inputs = {
            name: ort.OrtValue.ortvalue_from_numpy(host, "cuda", device_id)
            for name, host in self._feeds.items()
        }
        device_output = ort.OrtValue.ortvalue_from_shape_and_type(
            output_shape, np.float32, "cuda", device_id
        )
        binding = self._session.io_binding()
        for name, device_input in device_inputs.items():
            binding.bind_ortvalue_input(name, device_input)
        binding.bind_ortvalue_output(self.metadata.output_name, device_output)
        return binding, device_inputs, device_output
