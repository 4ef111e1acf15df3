"""TensorRT backend: an engine built from the ONNX window graph, run from a CUDA graph.

- The engine is built once per (ONNX file hash, GPU, TensorRT version) and cached on disk with
  TensorRT's timing cache, because a build takes from seconds to minutes.
- FP16 is used only when its output matches an FP32 engine's within ``FP16_TOLERANCE`` on real
  input; otherwise the FP32 engine is kept and the reason logged.
- Shapes are static (batch 1, 16 -> 16). Input and output live in preallocated pinned host and
  device buffers, on a dedicated CUDA stream; after one ordinary launch, the copy-in, the
  inference and the copy-out are captured into a CUDA graph, so each prediction is one launch.

Needs the ``gpu`` extra (``tensorrt`` and ``cuda-python``) and an NVIDIA GPU; elsewhere it
raises :class:`BackendUnavailableError` and ``auto`` moves on.
"""

from __future__ import annotations

import ctypes
import logging
from pathlib import Path

import numpy as np

from models.metadata import PAST_TIMES_INPUT, ModelMetadata, read_model_metadata
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
    ) -> None:
        if precision not in ("auto", "fp16", "fp32"):
            raise ValueError(f"'precision' must be 'auto', 'fp16' or 'fp32', got {precision!r}")
        try:
            import tensorrt as trt
        except ImportError as err:
            raise BackendUnavailableError(f"tensorrt is not installed: {err}") from None
        self._cudart = cudart = _cuda_runtime()
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
        self._cuda_stream = _check(cudart.cudaStreamCreate())

        fp32 = _Engine(self, self._engine_bytes(path, sha, gpu, cache, fp16=False), "fp32")
        chosen, why = fp32, "fp32 requested"
        if precision != "fp32":
            fp16 = _Engine(self, self._engine_bytes(path, sha, gpu, cache, fp16=True), "fp16")
            error = fp16.max_difference(fp32, self._parity_input())
            if precision == "fp16" or error <= FP16_TOLERANCE:
                chosen, why = fp16, f"fp16 (max |fp16 - fp32| = {error:.2e})"
                fp32.free()
            else:
                why = f"fp32: fp16 differs by {error:.2e} > {FP16_TOLERANCE:g}"
                fp16.free()
        self._engine = chosen
        _log.info("TensorRT engine for %s on %s: %s", path.name, gpu, why)
        if cuda_graph:
            self._engine.capture_graph()
        self.info = PredictorInfo(
            backend="tensorrt" + ("+cudagraph" if cuda_graph else ""),
            device=gpu,
            precision=self._engine.precision,
            mode="window",
            model=describe_model(self.metadata),
            model_path=str(path),
            model_sha256=sha,
            irregular=self.metadata.irregular,
        )
        self._warm(keep_warm_s)

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
            if self._cuda_stream is not None:
                self._cudart.cudaStreamDestroy(self._cuda_stream)
                self._cuda_stream = None

    def _run(self) -> np.ndarray:
        self._engine.run()
        return self._engine.host_output.copy()

    def _parity_input(self) -> np.ndarray:
        """Real-looking normalised input, not zeros: see :func:`parity_window`."""
        return parity_window(self._stream)

    def _engine_bytes(self, path: Path, sha: str, gpu: str, cache: Path, *, fp16: bool) -> bytes:
        """A serialized engine from the cache, or built now and cached."""
        trt = self._trt
        tag = "fp16" if fp16 else "fp32"
        key = f"{sha[:16]}-{_slug(gpu)}-trt{trt.__version__}-{tag}"
        engine_file = cache / f"{key}.engine"
        if engine_file.is_file():
            _log.info("TensorRT engine from cache %s", engine_file)
            return engine_file.read_bytes()
        _log.info("building TensorRT %s engine for %s (cached as %s)", tag, path.name, key)
        builder = trt.Builder(self._logger)
        network = builder.create_network(0)
        parser = trt.OnnxParser(network, self._logger)
        if not parser.parse(path.read_bytes()):
            errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise ModelMismatchError(f"TensorRT cannot parse {str(path)!r}: {errors}")
        config = builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, WORKSPACE_BYTES)
        if fp16:
            config.set_flag(trt.BuilderFlag.FP16)
        timing_file = cache / f"timing-{_slug(gpu)}-trt{trt.__version__}.cache"
        timing = config.create_timing_cache(
            timing_file.read_bytes() if timing_file.is_file() else b""
        )
        config.set_timing_cache(timing, ignore_mismatch=False)
        serialized = builder.build_serialized_network(network, config)
        if serialized is None:
            raise RuntimeError(f"TensorRT failed to build an engine for {str(path)!r}")
        data = bytes(serialized)
        partial = engine_file.with_suffix(".partial")
        partial.write_bytes(data)
        partial.replace(engine_file)
        timing_file.write_bytes(bytes(config.get_timing_cache().serialize()))
        return data


class _Engine:
    """One deserialized engine with its context, pinned host and device buffers, and graph."""

    def __init__(self, owner: TensorRTPredictor, data: bytes, precision: str) -> None:
        trt, cudart = owner._trt, owner._cudart
        self._cudart = cudart
        self._stream = owner._cuda_stream
        runtime = trt.Runtime(owner._logger)
        self._engine = runtime.deserialize_cuda_engine(data)
        if self._engine is None:
            raise RuntimeError("TensorRT could not deserialize the engine")
        self._context = self._engine.create_execution_context()
        self.precision = precision
        metadata = owner.metadata
        self.host_input = self._pinned((1, metadata.past_frames, 1, *_grid(metadata)))
        self.host_output = self._pinned((1, metadata.future_frames, 1, *_grid(metadata)))
        # An irregular model's second input: the past frames' times (regular until fed).
        self.host_times = self._pinned((1, metadata.past_frames)) if metadata.irregular else None
        if self.host_times is not None:
            self.host_times[0] = regular_past_times(metadata.past_frames)
        self._device_input = _check(cudart.cudaMalloc(self.host_input.nbytes))
        self._device_output = _check(cudart.cudaMalloc(self.host_output.nbytes))
        self._device_times = (
            None if self.host_times is None else _check(cudart.cudaMalloc(self.host_times.nbytes))
        )
        tensors = [
            (metadata.input_name, self._device_input),
            (metadata.output_name, self._device_output),
        ]
        if self._device_times is not None:
            tensors.append((PAST_TIMES_INPUT, self._device_times))
        for name, address in tensors:
            if not self._context.set_tensor_address(name, int(address)):
                raise ModelMismatchError(f"the engine has no tensor {name!r}")
        self._graph_exec = None

    def run(self) -> None:
        cudart = self._cudart
        if self._graph_exec is not None:
            _check(cudart.cudaGraphLaunch(self._graph_exec, self._stream))
        else:
            self._enqueue()
        _check(cudart.cudaStreamSynchronize(self._stream))

    def capture_graph(self) -> None:
        """Record copy-in + inference + copy-out once; later runs replay it."""
        cudart = self._cudart
        self.run()  # TensorRT must run once outside capture to finish lazy initialisation
        mode = cudart.cudaStreamCaptureMode.cudaStreamCaptureModeGlobal
        _check(cudart.cudaStreamBeginCapture(self._stream, mode))
        self._enqueue()
        graph = _check(cudart.cudaStreamEndCapture(self._stream))
        self._graph_exec = _check(cudart.cudaGraphInstantiate(graph, 0))

    def max_difference(self, other: _Engine, normalised_window: np.ndarray) -> float:
        for engine in (self, other):
            engine.host_input[0, :, 0] = normalised_window
            engine.run()
        return float(np.abs(self.host_output - other.host_output).max())

    def free(self) -> None:
        cudart = self._cudart
        for pointer in (self._device_input, self._device_output, self._device_times):
            if pointer is not None:
                cudart.cudaFree(pointer)
        for array in (self.host_input, self.host_output, self.host_times):
            if array is not None:
                cudart.cudaFreeHost(array.ctypes.data)
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
        if not self._context.execute_async_v3(self._stream):
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
