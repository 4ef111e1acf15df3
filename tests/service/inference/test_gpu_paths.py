"""The GPU backends' decisions, checked where no GPU is: which TensorRT builds FP16 how, the
precision flags set, a CUDA-graph capture that fails, buffers freed when a build fails, the
tolerance per precision, and ``auto`` failing over past a candidate that raises.

TensorRT and cuda-python are replaced by stand-in modules that hold only what the code under
test reads (their real versions need a GPU); ``auto`` runs the real ``create_predictor`` with
real ONNX Runtime sessions, one candidate swapped for a factory that fails.
"""

# The stand-in CUDA runtime keeps cuda-python's camelCase names, which the code under test calls.
# ruff: noqa: N802, N815

from __future__ import annotations

import ctypes
import logging
from types import SimpleNamespace

import numpy as np
import pytest

from service.inference import backends
from service.inference.backends import create_predictor
from service.inference.predictor import (
    DEFAULT_STREAM,
    BackendUnavailableError,
    ModelMismatchError,
    StreamSpec,
    parity_tolerance,
)
from service.inference.tensorrt_predictor import (
    TensorRTPredictor,
    _Engine,
    capture_graph,
    check_tensorrt_version,
    configure_precision,
    fp16_route,
    parity_window,
)

STREAM = StreamSpec()


def _tensorrt(version: str, *flags: str) -> SimpleNamespace:
    """A stand-in ``tensorrt`` module: its version and the builder flags it has."""
    return SimpleNamespace(
        __version__=version, BuilderFlag=SimpleNamespace(**{f: f for f in flags})
    )


TRT10 = _tensorrt("10.13.3.9", "FP16", "TF32")
TRT11 = _tensorrt("11.4.0.106", "TF32")  # 11.x: BuilderFlag.FP16 removed


def test_supported_tensorrt_versions_are_10_and_11():
    assert check_tensorrt_version(TRT10) == 10
    assert check_tensorrt_version(TRT11) == 11
    for version in ("8.6.1", "12.0.0", "dev"):
        with pytest.raises(BackendUnavailableError, match=rf"TensorRT {version} is not supported"):
            check_tensorrt_version(_tensorrt(version))


def test_fp16_comes_from_the_builder_flag_on_10_and_from_an_fp16_onnx_file_on_11(tmp_path):
    model = tmp_path / "default.onnx"
    model.write_bytes(b"")
    route = fp16_route(TRT10, model)
    assert (route.onnx, route.builder_flag) == (model, True)
    # 11.x without an FP16 file: no FP16 engine, and the reason names the file to make.
    route = fp16_route(TRT11, model)
    assert route.onnx is None and not route.builder_flag
    assert "no BuilderFlag.FP16" in route.note and "default.fp16.onnx" in route.note
    fp16_file = tmp_path / "default.fp16.onnx"
    fp16_file.write_bytes(b"")
    route = fp16_route(TRT11, model)
    assert (route.onnx, route.builder_flag) == (fp16_file, False)


class _Config:
    """A stand-in builder config recording the flags set and cleared."""

    def __init__(self) -> None:
        self.set, self.cleared = [], []

    def set_flag(self, flag) -> None:
        self.set.append(flag)

    def clear_flag(self, flag) -> None:
        self.cleared.append(flag)


@pytest.mark.parametrize("trt", [TRT10, TRT11], ids=["10", "11"])
def test_tf32_is_switched_off_explicitly_and_fp16_set_only_by_the_10_flag(trt):
    config = _Config()
    configure_precision(trt, config, fp16_flag=False)
    assert (config.set, config.cleared) == ([], ["TF32"])
    if hasattr(trt.BuilderFlag, "FP16"):
        config = _Config()
        configure_precision(trt, config, fp16_flag=True)
        assert (config.set, config.cleared) == (["FP16"], ["TF32"])


class _CudaRuntime:
    """A stand-in ``cuda.bindings.runtime``: capture calls are recorded; memory is real host
    memory (ctypes buffers), so what is still allocated can be counted."""

    cudaStreamCaptureMode = SimpleNamespace(cudaStreamCaptureModeGlobal="global")

    def __init__(self, *, end_capture_error: int = 0) -> None:
        self.calls: list[str] = []
        self.capturing = False
        self.live: dict[int, object] = {}
        self._end_capture_error = end_capture_error

    def cudaStreamBeginCapture(self, stream, mode):
        self.calls.append("begin")
        self.capturing = True
        return (0,)

    def cudaStreamEndCapture(self, stream):
        self.calls.append("end")
        self.capturing = False
        return (self._end_capture_error, "graph")

    def cudaGraphInstantiate(self, graph, flags):
        self.calls.append("instantiate")
        return (0, "graph-exec")

    def cudaGraphDestroy(self, graph):
        self.calls.append("destroy-graph")
        return (0,)

    def cudaGraphExecDestroy(self, graph_exec):
        self.calls.append("destroy-exec")
        return (0,)

    def cudaMallocHost(self, nbytes):
        buffer = ctypes.create_string_buffer(nbytes)
        self.live[ctypes.addressof(buffer)] = buffer
        return (0, ctypes.addressof(buffer))

    def cudaMalloc(self, nbytes):
        return self.cudaMallocHost(nbytes)

    def cudaFreeHost(self, pointer):
        del self.live[int(pointer)]
        return (0,)

    def cudaFree(self, pointer):
        return self.cudaFreeHost(pointer)


def test_a_capture_that_fails_is_ended_and_the_engine_runs_without_a_graph(caplog):
    cudart = _CudaRuntime()

    def enqueue() -> None:
        assert cudart.capturing
        raise RuntimeError("operation not permitted when stream is capturing")

    with caplog.at_level(logging.WARNING, logger="corticast.inference"):
        assert capture_graph(cudart, "stream", enqueue) is None
    assert cudart.calls == ["begin", "end", "destroy-graph"] and not cudart.capturing
    assert "running without a graph" in caplog.text and "not permitted" in caplog.text
    # Capture ended with an error (invalidated): no graph to destroy, none instantiated.
    cudart = _CudaRuntime(end_capture_error=901)
    assert capture_graph(cudart, "stream", lambda: None) is None
    assert cudart.calls == ["begin", "end"]


def test_a_capture_that_works_is_instantiated_and_its_template_destroyed():
    cudart = _CudaRuntime()
    assert capture_graph(cudart, "stream", lambda: None) == "graph-exec"
    assert cudart.calls == ["begin", "end", "instantiate", "destroy-graph"]


@pytest.mark.parametrize(
    ("bound", "dtype", "message"),
    [(False, "FLOAT", "the engine has no tensor"), (True, "HALF", "is HALF, not float32")],
)
def test_an_engine_that_fails_to_bind_frees_every_buffer_it_allocated(
    exported, bound, dtype, message
):
    """The engine lacks a tensor the model names, or has FP16 I/O: the pinned and device
    buffers already allocated are freed before the error propagates."""
    from models.metadata import read_model_metadata

    _, window_graph, _ = exported
    context = SimpleNamespace(set_tensor_address=lambda name, address: bound)
    engine = SimpleNamespace(
        create_execution_context=lambda: context, get_tensor_dtype=lambda name: dtype
    )
    runtime = SimpleNamespace(deserialize_cuda_engine=lambda data: engine)
    cudart = _CudaRuntime()
    owner = SimpleNamespace(
        _trt=SimpleNamespace(
            Runtime=lambda logger: runtime, DataType=SimpleNamespace(FLOAT="FLOAT")
        ),
        _cudart=cudart,
        _cuda_stream="stream",
        _logger=None,
        metadata=read_model_metadata(window_graph),
    )
    with pytest.raises(ModelMismatchError, match=message):
        _Engine(owner, b"engine", "fp32")
    assert cudart.live == {}


BUILT = b"a whole engine"
"""What the stand-in builder serializes, and the only bytes its runtime deserializes."""


class _BuildConfig(_Config):
    """A stand-in builder config with a timing cache."""

    def set_memory_pool_limit(self, pool, size) -> None:
        pass

    def create_timing_cache(self, data):
        return data

    def set_timing_cache(self, cache, ignore_mismatch) -> None:
        pass

    def get_timing_cache(self):
        return SimpleNamespace(serialize=lambda: b"the new timing cache")


def _building_predictor(window_graph, metadata, builds: list[str]) -> TensorRTPredictor:
    """A TensorRT predictor, not yet loaded, on a stand-in TensorRT that builds :data:`BUILT`
    (recording each build in ``builds``) and a stand-in CUDA runtime."""
    network = object()

    def build(net, config):
        builds.append("built")
        return BUILT

    builder = SimpleNamespace(
        create_network=lambda flags: network,
        create_builder_config=_BuildConfig,
        build_serialized_network=build,
    )
    context = SimpleNamespace(set_tensor_address=lambda name, address: True)
    engine = SimpleNamespace(
        create_execution_context=lambda: context, get_tensor_dtype=lambda name: "FLOAT"
    )
    trt = SimpleNamespace(
        __version__="10.13.3.9",
        BuilderFlag=SimpleNamespace(TF32="TF32"),
        MemoryPoolType=SimpleNamespace(WORKSPACE="workspace"),
        DataType=SimpleNamespace(FLOAT="FLOAT"),
        Builder=lambda logger: builder,
        OnnxParser=lambda net, logger: SimpleNamespace(parse=lambda data: True),
        Runtime=lambda logger: SimpleNamespace(
            deserialize_cuda_engine=lambda data: engine if data == BUILT else None
        ),
    )
    predictor = object.__new__(TensorRTPredictor)
    predictor._trt, predictor._cudart, predictor._cuda_stream = trt, _CudaRuntime(), "stream"
    predictor._logger, predictor.metadata = None, metadata
    return predictor


def test_a_cached_engine_that_cannot_be_deserialized_is_named_and_built_again(
    exported, tmp_path, caplog
):
    """A cached engine cut short (renamed into place, then the power went before its data
    was on disk) failed every start with 'could not deserialize the engine', naming no file."""
    from models.metadata import read_model_metadata

    _, window_graph, _ = exported
    builds: list[str] = []
    predictor = _building_predictor(window_graph, read_model_metadata(window_graph), builds)
    args = (window_graph, "0" * 64, "GPU", tmp_path)
    predictor._choose_engine(*args, "fp32", [])
    (cached,) = tmp_path.glob("*.engine")
    cached.write_bytes(BUILT[:5])  # cut short
    with caplog.at_level(logging.WARNING, "corticast.inference"):
        engine, _ = predictor._choose_engine(*args, "fp32", [])
    assert engine.precision == "fp32" and builds == ["built", "built"]
    assert cached.read_bytes() == BUILT
    assert f"TensorRT engine cache {cached} cannot be deserialized" in caplog.text


def test_a_build_stopped_while_writing_its_timing_cache_leaves_the_old_one_whole(
    exported, tmp_path, monkeypatch
):
    """The timing cache was written in place: a build stopped half-way through writing it
    left it cut short for every later build to read."""
    from pathlib import Path

    from models.metadata import read_model_metadata

    _, window_graph, _ = exported
    predictor = _building_predictor(window_graph, read_model_metadata(window_graph), [])
    timing = tmp_path / "timing-GPU-trt10.13.3.9.cache"
    timing.write_bytes(b"the old timing cache")
    real, writes = Path.write_bytes, []

    def killed_in_the_second_write(path, data):
        writes.append(path)
        if len(writes) < 2:
            return real(path, data)
        real(path, data[: len(data) // 2])
        raise KeyboardInterrupt  # where a kill would land

    monkeypatch.setattr(Path, "write_bytes", killed_in_the_second_write)
    with pytest.raises(KeyboardInterrupt):
        predictor._choose_engine(window_graph, "0" * 64, "GPU", tmp_path, "fp32", [])
    monkeypatch.undo()
    assert timing.read_bytes() == b"the old timing cache"
    assert [path.name for path in tmp_path.iterdir() if ".part" in path.name] == []


def test_tolerances_grow_with_coarser_precision():
    assert parity_tolerance("fp32") < parity_tolerance("tf32") < parity_tolerance("fp16")
    with pytest.raises(ValueError, match="'precision' must be one of"):
        parity_tolerance("int8")


def test_the_parity_window_follows_the_stream_grid_not_the_rig_default():
    from service.core.grid import ElectrodeGrid

    small = StreamSpec(grid=ElectrodeGrid(rows=6, cols=8, pitch_m=DEFAULT_STREAM.grid.pitch_m))
    assert parity_window(small).shape == (16, 6, 8)


def test_onnxruntime_tensorrt_turns_fp16_on_only_when_asked():
    assert backends._ort_tensorrt_fp16("fp16")
    assert not backends._ort_tensorrt_fp16("auto") and not backends._ort_tensorrt_fp16("fp32")


def test_only_families_that_cannot_be_captured_are_refused_the_cuda_graph():
    pytest.importorskip("torch")
    from models.registry import build_model
    from service.inference.torch_predictor import cuda_graph_refusal

    assert "host-to-device copy" in cuda_graph_refusal(build_model("trajgru"))
    assert (
        cuda_graph_refusal(build_model("mr_layer_lstm", {"hidden": [4, 4], "kernel_size": 3}))
        is None
    )


def _broken(**_arguments):
    raise RuntimeError("TensorRT failed to build an engine (stand-in for a broken build)")


def test_auto_fails_over_past_a_candidate_that_raises_and_logs_why(exported, monkeypatch, caplog):
    _, window_graph, _ = exported
    monkeypatch.setitem(backends._FACTORIES, "tensorrt", _broken)
    with caplog.at_level(logging.DEBUG, logger="corticast.inference"):
        predictor = create_predictor("auto", "window", model_path=window_graph, stream=STREAM)
    assert predictor.info.backend == "onnxruntime-cpu"
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        "backend tensorrt failed, trying the next: RuntimeError: TensorRT failed to build an "
        "engine (stand-in for a broken build)"
    ]
    window = parity_window(STREAM) * 10.0
    assert np.isfinite(predictor.predict(window)).all()
    predictor.close()


def test_auto_names_every_reason_when_no_candidate_runs(exported, monkeypatch):
    _, window_graph, _ = exported
    monkeypatch.setitem(backends._FACTORIES, "tensorrt", _broken)
    monkeypatch.setitem(backends._FACTORIES, "onnxruntime-cpu", _broken)
    with pytest.raises(BackendUnavailableError) as raised:
        create_predictor("auto", "window", model_path=window_graph, stream=STREAM)
    message = str(raised.value)
    for name in ("tensorrt: RuntimeError", "onnxruntime-cuda:", "torch-cudagraph:"):
        assert name in message
    assert "onnxruntime-cpu: RuntimeError: TensorRT failed" in message


def test_auto_reports_a_model_every_backend_refuses_as_the_models_fault(exported, tmp_path):
    """A model that does not fit the stream is refused by each candidate: the error is the
    model's (ModelMismatchError, "fix the config"), not "no backend here"."""
    _, window_graph, _ = exported
    other = StreamSpec(past_frames=8)
    with pytest.raises(ModelMismatchError, match="no inference backend can run this model"):
        create_predictor("auto", "window", model_path=window_graph, stream=other)
