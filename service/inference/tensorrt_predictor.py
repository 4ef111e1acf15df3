"""TensorRT backend: an engine built from the ONNX window graph, run from a CUDA graph.

- The engine is built once per (ONNX file hash, GPU, TensorRT version) and cached on disk with
  TensorRT's timing cache, because a build takes from seconds to minutes.
- FP32 engines are built with TF32 off (``BuilderFlag.TF32`` cleared), so "fp32" in
  ``PredictorInfo.precision`` means IEEE FP32 and the FP32 engine is a fair FP16 reference.
- FP16 is used only when its output matches an FP32 engine's within ``FP16_TOLERANCE`` on real
  input; otherwise the FP32 engine is kept and the reason logged. TensorRT 10.x makes an FP16
  engine from the FP32 ONNX file with ``BuilderFlag.FP16``; TensorRT 11.x removed that flag
  (networks are always strongly typed) and builds FP16 only from an FP16 ONNX file, looked for
  next to the model as ``<name>.fp16.onnx`` (NVIDIA's ModelOpt AutoCast with
  ``keep_io_types=True`` makes one): see :func:`fp16_route`.
- Shapes are static (batch 1, 16 -> 16). Input and output live in preallocated pinned host and
  device buffers, on a dedicated CUDA stream; after one ordinary launch, the copy-in, the
  inference and the copy-out are captured into a CUDA graph, so each prediction is one launch.
  A capture that fails is ended and the engine runs without a graph (as trtexec does: an
  engine may hold operations that cannot be captured).
- The device is set in whichever thread runs a prediction (the scheduler's, keep-warm's), not
  only in the constructing one. Whatever a failed build allocated is freed before it raises.

Needs the ``gpu`` extra (``tensorrt`` 10.x or 11.x and ``cuda-python``) and an NVIDIA GPU;
elsewhere it raises :class:`BackendUnavailableError` and ``auto`` moves on.
"""

from __future__ import annotations

import ctypes
import logging
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import numpy as np

from models.metadata import PAST_TIMES_INPUT, ModelMetadata, fp16_path, read_model_metadata
from service.core.atomic_write import write_atomically
from service.core.errors import CorticastError
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

_log = logging.getLogger("corticast.inference")

FP16_TOLERANCE = 2e-2
"""Largest |FP16 - FP32| (normalised units, whose values are within +-1) accepted for FP16.
At 4-sigma normalisation this is 0.08 of an electrode's standard deviation."""
WORKSPACE_BYTES = 1 << 30
TENSORRT_MAJORS = (10, 11)
"""TensorRT major versions whose Python API this module was checked against."""


class Fp16Route(NamedTuple):
    """How this TensorRT can build an FP16 engine: from ``onnx`` (None: it cannot, ``note``
    says why), with ``BuilderFlag.FP16`` or not."""

    onnx: Path | None
    builder_flag: bool
    note: str


def check_tensorrt_version(trt) -> int:
    """The major version of ``trt``, refused unless this module supports it."""
    try:
        major = int(str(trt.__version__).split(".")[0])
    except ValueError:
        major = -1
    if major not in TENSORRT_MAJORS:
        raise BackendUnavailableError(
            f"TensorRT {trt.__version__} is not supported: corticast runs TensorRT "
            f"{' or '.join(f'{m}.x' for m in TENSORRT_MAJORS)} (install the 'gpu' extra)"
        )
    return major


def fp16_route(trt, model: Path) -> Fp16Route:
    """Where an FP16 engine of ``model`` comes from with this TensorRT (see module docstring)."""
    if hasattr(trt.BuilderFlag, "FP16"):  # 10.x: weak typing, FP16 kernels allowed by a flag
        return Fp16Route(model, True, "BuilderFlag.FP16")
    fp16_onnx = fp16_path(model)
    if fp16_onnx.is_file():
        return Fp16Route(fp16_onnx, False, f"strongly typed network from {fp16_onnx.name}")
    return Fp16Route(
        None,
        False,
        f"TensorRT {trt.__version__} has no BuilderFlag.FP16 (strong typing only) and there is "
        f"no FP16 ONNX file {str(fp16_onnx)!r} (make one with ModelOpt AutoCast, "
        "keep_io_types=True)",
    )


def configure_precision(trt, config, *, fp16_flag: bool) -> None:
    """Set the builder's precision explicitly: TF32 off (FP32 means IEEE FP32), FP16 kernels
    allowed only with ``fp16_flag`` (TensorRT 10.x)."""
    if hasattr(trt.BuilderFlag, "TF32"):
        config.clear_flag(trt.BuilderFlag.TF32)
    if fp16_flag:
        config.set_flag(trt.BuilderFlag.FP16)


def _cuda_runtime():
    """cuda-python's runtime module (its import path moved in cuda-python 12.6)."""
    try:
        from cuda.bindings import runtime
    except ImportError:
        try:
            from cuda import cudart as runtime
        except ImportError as err:
            raise BackendUnavailableError(f"cuda-python is not installed: {err}") from None
    return runtime


def _check(result):
    """Unpack a cuda-python ``(err, *values)`` tuple, raising on any error."""
    err, *values = result if isinstance(result, tuple) else (result,)
    if int(err) != 0:
        raise RuntimeError(f"CUDA call failed: {err}")
    return values[0] if len(values) == 1 else values


def _handle(cuda_object) -> int:
    """The address behind a cuda-python object, as TensorRT takes it (``int()`` on these is
    deprecated from cuda-bindings 13.0, which adds ``get_cuda_native_handle``)."""
    if isinstance(cuda_object, int):  # device pointers from cudaMalloc are plain ints
        return cuda_object
    try:
        from cuda.bindings.utils import get_cuda_native_handle
    except ImportError:  # cuda-bindings 12.x
        return int(cuda_object)
    return int(get_cuda_native_handle(cuda_object))


def capture_graph(cudart, stream, enqueue: Callable[[], None]):
    """An instantiated CUDA graph of ``enqueue`` on ``stream``, or None when it cannot be
    captured. The capture is always ended, so a failure never leaves ``stream`` capturing;
    the graph template is destroyed once instantiated."""
    mode = cudart.cudaStreamCaptureMode.cudaStreamCaptureModeGlobal
    _check(cudart.cudaStreamBeginCapture(stream, mode))
    try:
        enqueue()
    except Exception as err:
        ended = cudart.cudaStreamEndCapture(stream)  # ends capture; its error is the expected one
        graph = ended[1] if isinstance(ended, tuple) and len(ended) > 1 else None
        if graph is not None and int(ended[0]) == 0:
            cudart.cudaGraphDestroy(graph)
        _log.warning("CUDA graph capture failed (%s): running without a graph", err)
        return None
    try:
        graph = _check(cudart.cudaStreamEndCapture(stream))
    except RuntimeError as err:
        _log.warning("CUDA graph capture failed (%s): running without a graph", err)
        return None
    try:
        return _check(cudart.cudaGraphInstantiate(graph, 0))
    except RuntimeError as err:
        _log.warning("CUDA graph instantiation failed (%s): running without a graph", err)
        return None
    finally:
        cudart.cudaGraphDestroy(graph)


class TensorRTPredictor(WindowPredictor):
    """A window-graph model on TensorRT (see the module docstring).

    Parameters
    ----------
    path
        Exported window graph (``corticast export``).
    stream
        What the daemon feeds it; a model that does not fit is refused.
    engine_cache_dir
        Where engines and the timing cache are kept.
    precision
        ``"auto"`` (FP16 when its parity check passes), ``"fp16"`` or ``"fp32"``.
    cuda_graph
        Replay the launch from a CUDA graph.
    keep_warm_s
        Run a dummy prediction after this long without a real one; None never.
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
        engine_cache_dir: str | Path = "~/.cache/corticast/engines",
        precision: str = "auto",
        device_id: int = 0,
        cuda_graph: bool = True,
        keep_warm_s: float | None = 1.0,
        warm: bool = True,
    ) -> None:
        if precision not in ("auto", "fp16", "fp32"):
            raise ValueError(f"'precision' must be 'auto', 'fp16' or 'fp32', got {precision!r}")
        try:
            import tensorrt as trt
        except ImportError as err:
            raise BackendUnavailableError(f"tensorrt is not installed: {err}") from None
        check_tensorrt_version(trt)
        self._cudart = cudart = _cuda_runtime()
        self._device_id = device_id
        try:
            _check(cudart.cudaSetDevice(device_id))
            props = _check(cudart.cudaGetDeviceProperties(device_id))
        except RuntimeError as err:
            raise BackendUnavailableError(f"no usable CUDA device {device_id}: {err}") from None
        self._trt = trt
        path = Path(path)
        metadata = read_model_metadata(path)
        if metadata.graph != "window":
            raise ModelMismatchError(f"{str(path)!r} is a {metadata.graph!r} graph")
        super().__init__(metadata, stream, path)
        gpu = props.name.decode() if isinstance(props.name, bytes) else str(props.name)
        sha = file_sha256(path)
        cache = Path(engine_cache_dir).expanduser()
        cache.mkdir(parents=True, exist_ok=True)
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._engine: _Engine | None = None
        self._cuda_stream = _check(cudart.cudaStreamCreate())
        engines: list[_Engine] = []
        try:
            self._engine, why = self._choose_engine(path, sha, gpu, cache, precision, engines)
            if cuda_graph:
                self._engine.capture_graph()
            _log.info("TensorRT engine for %s on %s: %s", path.name, gpu, why)
            self.info = PredictorInfo(
                backend="tensorrt" + ("+cudagraph" if self._engine.has_graph else ""),
                device=gpu,
                precision=self._engine.precision,
                mode="window",
                model=describe_model(self.metadata),
                model_path=str(path),
                model_sha256=sha,
                irregular=self.metadata.irregular,
            )
            self._warm(keep_warm_s, at_load=warm)
        except BaseException:
            for engine in engines:
                engine.free()
            self._engine = None
            self._destroy_stream()
            raise

    def _choose_engine(
        self, path: Path, sha: str, gpu: str, cache: Path, precision: str, engines: list
    ) -> tuple[_Engine, str]:
        """The engine to run and why; every engine made is appended to ``engines`` first, so
        the caller frees them all if this raises."""
        route = fp16_route(self._trt, path) if precision != "fp32" else None
        if precision == "fp16" and route.onnx is None:
            raise BackendUnavailableError(f"precision 'fp16' cannot be built: {route.note}")
        fp32 = self._engine_for(path, sha, gpu, cache, "fp32", fp16_flag=False)
        engines.append(fp32)
        if route is None:
            return fp32, "fp32 requested"
        if route.onnx is None:
            return fp32, f"fp32: no FP16 engine here ({route.note})"
        onnx_sha = sha if route.onnx == path else file_sha256(route.onnx)
        fp16 = self._engine_for(
            route.onnx, onnx_sha, gpu, cache, "fp16", fp16_flag=route.builder_flag
        )
        engines.append(fp16)
        error = fp16.max_difference(fp32, self._parity_input())
        if precision == "fp16" or error <= FP16_TOLERANCE:
            engines.remove(fp32)
            fp32.free()
            return fp16, f"fp16 via {route.note} (max |fp16 - fp32| = {error:.2e})"
        engines.remove(fp16)
        fp16.free()
        return fp32, f"fp32: fp16 differs by {error:.2e} > {FP16_TOLERANCE:g}"

    @property
    def _input(self) -> np.ndarray:
        return self._engine.host_input

    @property
    def _times(self) -> np.ndarray | None:
        return self._engine.host_times

    def close(self) -> None:
        super().close()
        with self._lock:
            if self._engine is not None:
                self._engine.free()
                self._engine = None
            self._destroy_stream()

    def _destroy_stream(self) -> None:
        if self._cuda_stream is not None:
            self._cudart.cudaStreamDestroy(self._cuda_stream)
            self._cuda_stream = None

    def _run(self) -> np.ndarray:
        # The CUDA device is per thread: the scheduler and keep-warm threads run this, not the
        # one that built the engine (cudaSetDevice to the current device is cheap).
        _check(self._cudart.cudaSetDevice(self._device_id))
        self._engine.run()
        return self._engine.host_output.copy()

    def _parity_input(self) -> np.ndarray:
        """Real-looking normalised input, not zeros: see :func:`parity_window`."""
        return parity_window(self._stream)

    def _engine_for(
        self, path: Path, sha: str, gpu: str, cache: Path, precision: str, *, fp16_flag: bool
    ) -> _Engine:
        """The engine of ``path``, from the cache where the cached one deserializes; one that
        does not (cut short by a power loss, damaged) is named, removed and built again, not a
        start that fails with no file named until someone finds it."""
        data, cached = self._engine_bytes(path, sha, gpu, cache, fp16_flag=fp16_flag)
        try:
            return _Engine(self, data, precision)
        except _UnreadableEngineError:
            if cached is None:
                raise
            _log.warning(
                "TensorRT engine cache %s cannot be deserialized (cut short or damaged); "
                "building it again", cached,
            )  # fmt: skip
            cached.unlink(missing_ok=True)
        data, _ = self._engine_bytes(path, sha, gpu, cache, fp16_flag=fp16_flag)
        return _Engine(self, data, precision)

    def _engine_bytes(
        self, path: Path, sha: str, gpu: str, cache: Path, *, fp16_flag: bool
    ) -> tuple[bytes, Path | None]:
        """A serialized engine from the cache (and the file it came from), or built now and
        cached (and None): FP16 kernels allowed only with ``fp16_flag``, TensorRT 10.x; an
        FP16 ONNX file carries its own types. The engine and the timing cache are written
        atomically, so a build stopped half-way leaves neither cut short."""
        trt = self._trt
        tag = "fp16" if fp16_flag or path.name.endswith(".fp16.onnx") else "fp32"
        # "notf32": engines cached before TF32 was switched off are not reused as FP32.
        key = f"{sha[:16]}-{_slug(gpu)}-trt{trt.__version__}-{tag}-notf32"
        engine_file = cache / f"{key}.engine"
        if engine_file.is_file():
            _log.info("TensorRT engine from cache %s", engine_file)
            return engine_file.read_bytes(), engine_file
        _log.info("building TensorRT %s engine for %s (cached as %s)", tag, path.name, key)
        builder = trt.Builder(self._logger)
        network = builder.create_network(0)  # 0: explicit batch (10.x), strongly typed (11.x)
        parser = trt.OnnxParser(network, self._logger)
        if not parser.parse(path.read_bytes()):
            errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise ModelMismatchError(f"TensorRT cannot parse {str(path)!r}: {errors}")
        config = builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, WORKSPACE_BYTES)
        configure_precision(trt, config, fp16_flag=fp16_flag)
        timing_file = cache / f"timing-{_slug(gpu)}-trt{trt.__version__}.cache"
        timing = config.create_timing_cache(
            timing_file.read_bytes() if timing_file.is_file() else b""
        )
        config.set_timing_cache(timing, ignore_mismatch=False)
        serialized = builder.build_serialized_network(network, config)
        if serialized is None:
            raise RuntimeError(f"TensorRT failed to build an engine for {str(path)!r}")
        data = bytes(serialized)
        write_atomically(engine_file, data)
        write_atomically(timing_file, bytes(config.get_timing_cache().serialize()))
        return data, None


class _UnreadableEngineError(CorticastError, RuntimeError):
    """TensorRT could not deserialize a serialized engine."""


class _Engine:
    """One deserialized engine with its context, pinned host and device buffers, and graph."""

    def __init__(self, owner: TensorRTPredictor, data: bytes, precision: str) -> None:
        trt, cudart = owner._trt, owner._cudart
        self._cudart = cudart
        self._stream = owner._cuda_stream
        self.precision = precision
        self._context = self._engine = self._graph_exec = None
        self.host_input = self.host_output = self.host_times = None
        self._device_input = self._device_output = self._device_times = None
        try:
            self._allocate(trt, trt.Runtime(owner._logger), data, owner.metadata)
        except BaseException:
            self.free()  # whatever was allocated before the failure
            raise

    @property
    def has_graph(self) -> bool:
        return self._graph_exec is not None

    def _allocate(self, trt, runtime, data: bytes, metadata: ModelMetadata) -> None:
        cudart = self._cudart
        self._engine = runtime.deserialize_cuda_engine(data)
        if self._engine is None:
            raise _UnreadableEngineError("TensorRT could not deserialize the engine")
        self._context = self._engine.create_execution_context()
        if self._context is None:
            raise RuntimeError("TensorRT could not create an execution context")
        self.host_input = self._pinned((1, metadata.past_frames, 1, *_grid(metadata)))
        self.host_output = self._pinned((1, metadata.future_frames, 1, *_grid(metadata)))
        # An irregular model's second input: the past frames' times (regular until fed).
        if metadata.irregular:
            self.host_times = self._pinned((1, metadata.past_frames))
            self.host_times[0] = regular_past_times(metadata.past_frames)
        self._device_input = _check(cudart.cudaMalloc(self.host_input.nbytes))
        self._device_output = _check(cudart.cudaMalloc(self.host_output.nbytes))
        if self.host_times is not None:
            self._device_times = _check(cudart.cudaMalloc(self.host_times.nbytes))
        tensors = [
            (metadata.input_name, self._device_input),
            (metadata.output_name, self._device_output),
        ]
        if self._device_times is not None:
            tensors.append((PAST_TIMES_INPUT, self._device_times))
        for name, address in tensors:
            if not self._context.set_tensor_address(name, _handle(address)):
                raise ModelMismatchError(f"the engine has no tensor {name!r}")
            dtype = self._engine.get_tensor_dtype(name)
            if dtype != trt.DataType.FLOAT:  # an FP16 ONNX file must keep float32 I/O
                raise ModelMismatchError(
                    f"engine tensor {name!r} is {dtype}, not float32: export the FP16 ONNX "
                    "file with keep_io_types=True"
                )

    def run(self) -> None:
        cudart = self._cudart
        if self._graph_exec is not None:
            _check(cudart.cudaGraphLaunch(self._graph_exec, self._stream))
        else:
            self._enqueue()
        _check(cudart.cudaStreamSynchronize(self._stream))

    def capture_graph(self) -> None:
        """Record copy-in + inference + copy-out once; later runs replay it (or, when it
        cannot be captured, run as they are: see :func:`capture_graph`)."""
        self.run()  # TensorRT must run once outside capture to finish lazy initialisation
        self._graph_exec = capture_graph(self._cudart, self._stream, self._enqueue)

    def max_difference(self, other: _Engine, normalised_window: np.ndarray) -> float:
        for engine in (self, other):
            engine.host_input[0, :, 0] = normalised_window
            engine.run()
        return float(np.abs(self.host_output - other.host_output).max())

    def free(self) -> None:
        """Release the graph, buffers, context and engine; safe on a partly built engine."""
        cudart = self._cudart
        if self._graph_exec is not None:
            cudart.cudaGraphExecDestroy(self._graph_exec)
            self._graph_exec = None
        for pointer in (self._device_input, self._device_output, self._device_times):
            if pointer is not None:
                cudart.cudaFree(pointer)
        self._device_input = self._device_output = self._device_times = None
        for array in (self.host_input, self.host_output, self.host_times):
            if array is not None:
                cudart.cudaFreeHost(array.ctypes.data)
        self.host_input = self.host_output = self.host_times = None
        self._context = None
        self._engine = None

    def _enqueue(self) -> None:
        cudart = self._cudart
        to_device = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
        to_host = cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        copies = [(self._device_input, self.host_input)]
        if self.host_times is not None:
            copies.append((self._device_times, self.host_times))
        for device, host in copies:
            _check(
                cudart.cudaMemcpyAsync(
                    device, host.ctypes.data, host.nbytes, to_device, self._stream
                )
            )
        if not self._context.execute_async_v3(_handle(self._stream)):
            raise RuntimeError("TensorRT execute_async_v3 failed")
        _check(
            cudart.cudaMemcpyAsync(
                self.host_output.ctypes.data, self._device_output, self.host_output.nbytes,
                to_host, self._stream,
            )
        )  # fmt: skip

    def _pinned(self, shape: tuple[int, ...]) -> np.ndarray:
        """A float32 array in page-locked host memory (fast, truly asynchronous copies)."""
        nbytes = int(np.prod(shape)) * 4
        pointer = _check(self._cudart.cudaMallocHost(nbytes))
        buffer = (ctypes.c_float * int(np.prod(shape))).from_address(int(pointer))
        return np.frombuffer(buffer, dtype=np.float32).reshape(shape)


def _grid(metadata: ModelMetadata) -> tuple[int, int]:
    return metadata.grid_rows, metadata.grid_cols


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in text)


def parity_window(stream: StreamSpec, seed: int = 7) -> np.ndarray:
    """A normalised window in which a 9 Hz plane wave crosses the array at 0.3 m/s under white
    noise: structure at the scales the model works at, so an FP16 engine that loses precision
    on real data fails the parity check, where zeros or pure noise would pass it. Made here
    rather than drawn from ``bench.data.synth``: the runtime does not import test data."""
    grid = stream.grid
    t = np.arange(stream.past_frames)[:, None, None] / stream.sample_rate_hz
    x = np.arange(grid.cols)[None, None, :] * grid.pitch_m
    wave = np.sin(2 * np.pi * 9.0 * (t - x / 0.3))
    noise = np.random.default_rng(seed).normal(0.0, 0.3, (stream.past_frames, *grid.shape))
    return (wave + noise).astype(np.float32)
