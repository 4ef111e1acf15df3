"""Inference backends on the CPU (and the GPU when there is one): parity, refusal, streaming."""

import dataclasses
import errno
import json
import subprocess
import sys

import numpy as np
import onnx
import pytest

from models.export import run_onnx
from models.metadata import METADATA_KEY, read_model_metadata
from service.inference.backends import create_predictor
from service.inference.batch_runner import BatchRequest, BatchRunner
from service.inference.onnx_predictor import OnnxPredictor
from service.inference.predictor import (
    BackendUnavailableError,
    HostResourceError,
    ModelMismatchError,
    Predictor,
    StreamSpec,
    parity_tolerance,
)
from service.inference.streaming_predictor import StreamingPredictor
from service.inference.torch_predictor import TorchPredictor
from tests.service._fault_injection import sessions_out_of_descriptors

torch = pytest.importorskip("torch")
HAS_CUDA = torch.cuda.is_available()
STREAM = StreamSpec()


def _windows(session, count, start=100):
    return [session.frames[start + k : start + k + 16] for k in range(count)]


def test_onnx_and_torch_backends_agree(exported, session):
    run_dir, window_graph, _ = exported
    onnx_cpu = OnnxPredictor(window_graph, STREAM, threads=1)
    reference = TorchPredictor(run_dir, STREAM)
    assert isinstance(onnx_cpu, Predictor) and isinstance(reference, Predictor)
    for window in _windows(session, 5):
        got, want = onnx_cpu.predict(window), reference.predict(window)
        assert got.shape == (16, 18, 20) and got.dtype == np.float32
        # µV: the model's 1e-4 parity in normalised units, times the normalisation scale.
        scale = np.asarray(onnx_cpu.metadata.normalisation["scale"], dtype=np.float32)
        np.testing.assert_allclose(got, want, atol=float(2e-4 * scale.max()))
    assert onnx_cpu.info.backend == "onnxruntime-cpu" and reference.info.backend == "torch-eager"
    assert onnx_cpu.info.model.startswith("mr_layer_lstm")
    assert len(onnx_cpu.info.model_sha256) == 64


def test_predictions_are_in_microvolts_not_model_units(exported, session):
    """The metadata's normalisation is applied on the way in and undone on the way out."""
    _, window_graph, _ = exported
    predictor = OnnxPredictor(window_graph, STREAM, threads=1)
    norm = predictor.metadata.normalisation
    mean, scale = (np.asarray(norm[k], dtype=np.float32) for k in ("mean", "scale"))
    window = session.frames[200:216]
    model_units = run_onnx(window_graph, ((window - mean) / scale)[None, :, None])[0, :, 0]
    np.testing.assert_allclose(predictor.predict(window), model_units * scale + mean, atol=1e-3)


def test_streaming_starts_exactly_like_window_mode_and_reprimes_after_a_gap(exported, session):
    _, window_graph, step_graph = exported
    windowed = OnnxPredictor(window_graph, STREAM, threads=1)
    streaming = StreamingPredictor(step_graph, STREAM, threads=1)
    frames = session.frames
    first = streaming.predict(frames[0:16], newest_seq=15)
    np.testing.assert_allclose(first, windowed.predict(frames[0:16]), rtol=1e-4, atol=1e-3)
    assert streaming.reprimes == 1
    for newest in range(16, 24):  # one new frame each: the state is carried, not rebuilt
        streaming.predict(frames[newest - 15 : newest + 1], newest_seq=newest)
    assert streaming.reprimes == 1
    # A jump of more than a window: the carried state cannot continue, so it rebuilds.
    later = streaming.predict(frames[100:116], newest_seq=115)
    np.testing.assert_allclose(later, windowed.predict(frames[100:116]), rtol=1e-4, atol=1e-3)
    assert streaming.reprimes == 2
    streaming.predict(frames[99:115], newest_seq=114)  # backwards (a reconnect): rebuild
    assert streaming.reprimes == 3
    with pytest.raises(TypeError, match="'newest_seq' must be the int sequence number"):
        streaming.predict(frames[0:16])


def test_carried_state_differs_from_re_encoding(exported, session):
    """Stream mode is not window mode in disguise: after a few frames the state differs."""
    _, window_graph, step_graph = exported
    windowed = OnnxPredictor(window_graph, STREAM, threads=1)
    streaming = StreamingPredictor(step_graph, STREAM, threads=1)
    frames = session.frames
    for newest in range(15, 40):
        streamed = streaming.predict(frames[newest - 15 : newest + 1], newest_seq=newest)
    assert not np.allclose(streamed, windowed.predict(frames[24:40]), atol=1e-3)


def test_catching_up_on_skipped_frames_gives_what_predicting_at_each_frame_gives(exported, session):
    """Frames a busy scheduler skipped only advance the state (no rollout): a predictor called
    at every fourth frame predicts what one called at every frame does at those frames."""
    _, _, step_graph = exported
    every = StreamingPredictor(step_graph, STREAM, threads=1)
    fourth = StreamingPredictor(step_graph, STREAM, threads=1)
    frames = session.frames
    for newest in range(15, 48):
        window = frames[newest - 15 : newest + 1]
        each = every.predict(window, newest_seq=newest)
        if (newest - 15) % 4 == 0:
            np.testing.assert_allclose(fourth.predict(window, newest_seq=newest), each, atol=1e-5)
    assert every.reprimes == fourth.reprimes == 1


def test_a_step_graph_without_the_rollout_flag_is_refused(exported, tmp_path):
    _, _, step_graph = exported
    model = onnx.load(str(step_graph))
    (flag,) = [i for i in model.graph.input if i.name == "rollout"]
    flag.name = "renamed"
    for node in model.graph.node:
        node.input[:] = ["renamed" if name == "rollout" else name for name in node.input]
    old = tmp_path / "old.step.onnx"
    onnx.save(model, str(old))
    with pytest.raises(ModelMismatchError, match=r"from before the 'rollout' input.*re-export"):
        StreamingPredictor(old, STREAM, threads=1)


def _with_metadata(path, tmp_path, name, **changes):
    model = onnx.load(str(path))
    metadata = dataclasses.replace(read_model_metadata(path), **changes)
    for entry in model.metadata_props:
        if entry.key == METADATA_KEY:
            entry.value = metadata.to_json()
    out = tmp_path / name
    onnx.save(model, str(out))
    return out


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"sample_rate_hz": 500.0}, "sample rate 500 Hz != stream 277.78 Hz"),
        ({"grid_rows": 16}, "grid 16x20 != stream 18x20"),
        ({"past_frames": 8}, "past window 8 != 16 frames"),
        ({"pitch_m": 1e-3}, "pitch 0.001 m != stream 0.0005 m"),
    ],
)
def test_a_model_that_does_not_fit_the_stream_is_refused(exported, tmp_path, changes, message):
    _, window_graph, _ = exported
    bad = _with_metadata(window_graph, tmp_path, "bad.onnx", **changes)
    with pytest.raises(ModelMismatchError, match=message):
        OnnxPredictor(bad, STREAM, threads=1)


def test_files_that_are_not_corticast_models_are_refused(exported, tmp_path):
    _, window_graph, step_graph = exported
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"not a model at all")
    with pytest.raises(ModelMismatchError, match="ONNX Runtime cannot load"):
        OnnxPredictor(garbage, STREAM)
    plain = onnx.load(str(window_graph))
    del plain.metadata_props[:]
    anonymous = tmp_path / "anonymous.onnx"
    onnx.save(plain, str(anonymous))
    with pytest.raises(ModelMismatchError, match="has no 'corticast' metadata"):
        OnnxPredictor(anonymous, STREAM)
    with pytest.raises(ModelMismatchError, match="window mode needs the window graph"):
        OnnxPredictor(step_graph, STREAM)
    with pytest.raises(ModelMismatchError, match="stream mode needs the step graph"):
        StreamingPredictor(window_graph, STREAM)


_OUT_OF_DESCRIPTORS = """
import json, os, resource, sys
import onnxruntime  # imported while descriptors remain
from service.inference.onnx_predictor import open_session
from service.inference.predictor import ModelMismatchError
resource.setrlimit(resource.RLIMIT_NOFILE, (64, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
try:
    while True:
        os.open(os.devnull, os.O_RDONLY)
except OSError:
    pass
try:
    open_session(sys.argv[1], "cpu", threads=1)
except Exception as err:
    print(json.dumps([type(err).__name__, isinstance(err, ModelMismatchError),
                      getattr(err, "exit_code", None), getattr(err, "errno", None), str(err)]))
"""


def test_a_load_that_runs_out_of_descriptors_is_a_transient_failure_not_a_misfit(exported):
    """ONNX Runtime says only "system error number 24" when the process is out of file
    descriptors: a misfit model (exit 2, which systemd does not restart; 422 on a swap) it is
    not. A real session, in a child whose descriptors are all taken."""
    _, window_graph, _ = exported
    child = subprocess.run(
        [sys.executable, "-c", _OUT_OF_DESCRIPTORS, str(window_graph)],
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    kind, misfit, exit_code, number, message = json.loads(child.stdout)
    assert (kind, misfit, exit_code, number) == ("HostResourceError", False, 1, errno.EMFILE)
    assert "out of file descriptors" in message and str(window_graph) in message


def test_bad_windows_are_refused_naming_the_problem(exported, session):
    _, window_graph, _ = exported
    predictor = OnnxPredictor(window_graph, STREAM, threads=1)
    window = session.frames[:16].copy()
    window[3, 4, 5] = np.nan
    with pytest.raises(ValueError, match="'window' must be finite, got 1 NaN/inf"):
        predictor.predict(window)
    with pytest.raises(ValueError, match=r"'window' must have shape \(16, 18, 20\)"):
        predictor.predict(session.frames[:15])
    with pytest.raises(TypeError, match="'window' must have dtype float32"):
        predictor.predict(session.frames[:16].astype(np.float64))


def test_auto_picks_what_runs_here_and_names_what_does_not(exported, caplog):
    run_dir, window_graph, step_graph = exported
    caplog.set_level("DEBUG", logger="corticast.inference")
    predictor = create_predictor(
        "auto", "window", model_path=window_graph, checkpoint=run_dir, stream=STREAM, threads=1
    )
    expected = "torch-cudagraph" if HAS_CUDA else "onnxruntime-cpu"
    if not HAS_CUDA:
        assert predictor.info.backend == expected
        assert "backend tensorrt unavailable" in caplog.text
        # At INFO, one line says what runs and that others were skipped: a CPU-only host is
        # not told at every start that it has no GPU.
        info = [r.getMessage() for r in caplog.records if r.levelname == "INFO"]
        assert not any("backend tensorrt unavailable" in m for m in info)
        assert any("inference backend onnxruntime-cpu (auto; skipped" in m for m in info)
    streaming = create_predictor(
        "auto", "stream", model_path=window_graph, step_path=step_graph, stream=STREAM
    )
    assert streaming.info.mode == "stream"
    with pytest.raises(ValueError, match="runs window mode only"):
        create_predictor("tensorrt", "stream", model_path=window_graph, stream=STREAM)
    with pytest.raises(ValueError, match="'backend' must be one of"):
        create_predictor("tpu", "window", model_path=window_graph, stream=STREAM)
    with pytest.raises(BackendUnavailableError, match="none is configured"):
        create_predictor("torch-cpu", "window", model_path=window_graph, stream=STREAM)


def test_auto_does_not_fail_over_on_a_host_out_of_descriptors(exported, monkeypatch):
    """``[model] backend = "auto"`` (the default) tried the next backend on any failure: a
    passing descriptor shortage left a slower one serving until a restart, or, where ONNX
    Runtime CPU (the last) met it, ended as "no inference backend can run here", exit 2,
    which systemd does not restart on. The first session built fails as a process out of
    descriptors makes it fail; nothing is tried after it."""
    _, window_graph, _ = exported
    built = sessions_out_of_descriptors(monkeypatch)
    with pytest.raises(HostResourceError, match="out of file descriptors") as failed:
        create_predictor("auto", "window", model_path=window_graph, stream=STREAM, threads=1)
    assert (failed.value.exit_code, failed.value.errno, len(built)) == (1, errno.EMFILE, 1)


GPU_BACKENDS = ("torch-cudagraph", "torch-cuda", "onnxruntime-cuda", "onnxruntime-tensorrt",
                "tensorrt")  # fmt: skip


@pytest.mark.skipif(not HAS_CUDA, reason="no CUDA device on this machine")
@pytest.mark.parametrize("backend", GPU_BACKENDS)
@pytest.mark.parametrize("precision", ["fp32", "auto"])
def test_gpu_backends_agree_with_the_cpu_reference(exported, session, tmp_path, backend, precision):
    """Each GPU backend on its own (one missing here skips only itself), within the tolerance
    of the precision it reports: TF32 and FP16 are not held to FP32's."""
    run_dir, window_graph, _ = exported
    reference = TorchPredictor(run_dir, STREAM)
    scale = float(np.max(reference.metadata.normalisation["scale"]))
    try:
        predictor = create_predictor(
            backend, "window", model_path=window_graph, checkpoint=run_dir, stream=STREAM,
            precision=precision, engine_cache_dir=tmp_path, keep_warm_s=None,
        )  # fmt: skip
    except BackendUnavailableError as err:
        pytest.skip(f"{backend}: {err}")
    if precision == "fp32":
        assert predictor.info.precision in ("fp32", "tf32"), predictor.info
    tolerance = parity_tolerance(predictor.info.precision)
    for window in _windows(session, 3):
        np.testing.assert_allclose(
            predictor.predict(window), reference.predict(window), atol=tolerance * scale,
            err_msg=str(predictor.info),
        )  # fmt: skip
    predictor.close()


def test_tensorrt_says_why_it_cannot_run_here(exported):
    _, window_graph, _ = exported
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        with pytest.raises(BackendUnavailableError, match="tensorrt is not installed"):
            create_predictor("tensorrt", "window", model_path=window_graph, stream=STREAM)
    else:
        pytest.skip("tensorrt is installed: covered by the GPU parity test")


def test_stream_mode_rebuilds_on_a_schedule_fixed_to_sequence_numbers(exported, session):
    """With ``reprime_every_frames = 8`` a state started at each multiple of 8 takes over once
    it has seen a whole window: at those frames (8k + 15) the prediction is window mode's
    exactly, as at the first call; between them the state is carried (and differs)."""
    _, window_graph, step_graph = exported
    windowed = OnnxPredictor(window_graph, STREAM, threads=1)
    streaming = StreamingPredictor(step_graph, STREAM, threads=1, reprime_every_frames=8)
    frames = session.frames
    for newest in range(18, 50):  # first call at 18: off the schedule
        window = frames[newest - 15 : newest + 1]
        streamed = streaming.predict(window, newest_seq=newest)
        same = np.allclose(streamed, windowed.predict(window), rtol=1e-4, atol=1e-3)
        assert same == (newest == 18 or (newest - 15) % 8 == 0), newest
    assert (streaming.reprimes, streaming.handovers) == (1, 4)  # at 23, 31, 39, 47
    with pytest.raises(ValueError, match="'reprime_every_frames' must be >= 1 or None, got 0"):
        StreamingPredictor(step_graph, STREAM, threads=1, reprime_every_frames=0)


def test_after_a_handover_stream_predictions_depend_only_on_the_frames(exported, session):
    """Two predictors started at different frames and called at different frames (as the
    replay and the daemon are) predict the same numbers for every frame both predict after
    their first handover: which frames a busy scheduler skipped changes nothing. One first
    called at a handover frame is on the schedule from that call on."""
    _, _, step_graph = exported
    every = StreamingPredictor(step_graph, STREAM, threads=1, reprime_every_frames=16)
    sparse = StreamingPredictor(step_graph, STREAM, threads=1, reprime_every_frames=16)
    late = StreamingPredictor(step_graph, STREAM, threads=1, reprime_every_frames=16)
    frames = session.frames
    sparse_calls = {20, 23, 29, 30, 38, 47, 49, 54, 61, 62, 70, 77, 79, 88}  # gaps of 1 to 9
    compared = 0
    for newest in range(15, 90):
        window = frames[newest - 15 : newest + 1]
        each = every.predict(window, newest_seq=newest)
        if newest >= 47:  # first called at a handover frame: on the schedule from the start
            np.testing.assert_allclose(late.predict(window, newest_seq=newest), each, atol=1e-5)
        if newest in sparse_calls:
            theirs = sparse.predict(window, newest_seq=newest)
            if newest >= 31:  # both handed over to the state started at frame 16, at 31
                np.testing.assert_allclose(theirs, each, atol=1e-5)
                compared += 1
            else:  # each still carries its first call's window: they differ
                assert not np.allclose(theirs, each, atol=1e-3), newest
    assert compared == 10
    assert every.reprimes == sparse.reprimes == late.reprimes == 1


@pytest.mark.parametrize(
    ("changes", "stream", "message"),
    [
        (
            {"future_frames": 8},
            StreamSpec(future_frames=8),
            r"output 'future' is \[1, 16, 1, 18, 20\]",
        ),
        ({"past_frames": 8}, StreamSpec(past_frames=8), r"input 'past' is \[1, 16, 1, 18, 20\]"),
        ({"output_name": "prediction"}, STREAM, "has no output 'prediction'"),
    ],
)
def test_metadata_that_disagrees_with_its_graph_is_refused_at_load(
    exported, tmp_path, changes, stream, message
):
    """Metadata that fits the stream but not the graph it describes: refused naming the file
    and the tensor, not loaded to return frames of the wrong count or failed by ONNX
    Runtime at the first run."""
    _, window_graph, _ = exported
    bad = _with_metadata(window_graph, tmp_path, "bad.onnx", **changes)
    with pytest.raises(ModelMismatchError, match=rf"'{bad}'.*{message}"):
        OnnxPredictor(bad, stream, threads=1)


def test_a_step_graph_whose_state_shapes_disagree_with_its_graph_is_refused(exported, tmp_path):
    _, _, step_graph = exported
    shapes = read_model_metadata(step_graph).state_shapes
    wrong = [[*shapes[0][:-1], shapes[0][-1] + 1], *shapes[1:]]
    bad = _with_metadata(step_graph, tmp_path, "bad.step.onnx", state_shapes=wrong)
    with pytest.raises(ModelMismatchError, match=rf"'{bad}'.*input 'state_in_0' is"):
        StreamingPredictor(bad, STREAM, threads=1)


def test_a_step_graph_with_a_state_its_metadata_does_not_name_is_refused(exported, tmp_path):
    """Metadata listing fewer states than the graph carries: refused at load naming the file
    and the tensor (before, it loaded and ONNX Runtime failed its first run: "Required inputs
    (['state_in_3']) are missing from input feed", naming neither)."""
    _, _, step_graph = exported
    shapes = read_model_metadata(step_graph).state_shapes
    bad = _with_metadata(step_graph, tmp_path, "bad.step.onnx", state_shapes=shapes[:-1])
    last = f"state_in_{len(shapes) - 1}"
    with pytest.raises(ModelMismatchError, match=rf"'{bad}' has input\(s\) \['{last}'\]"):
        StreamingPredictor(bad, STREAM, threads=1, warm=False)


def test_outputs_are_taken_by_the_names_the_metadata_gives_not_by_their_order(
    exported, session, tmp_path
):
    """A graph whose outputs another tool listed in another order: the future and each state
    are read by name, by the daemon and by the fast replay. Before, a step graph with
    ``state_out_0`` and ``state_out_1`` swapped fed each state back as the other, and a window
    graph listing its input first as an output returned it as the future: other numbers,
    silently."""
    _, window_graph, step_graph = exported
    step = onnx.load(str(step_graph))
    first, second = (onnx.ValueInfoProto.FromString(o.SerializeToString())
                     for o in step.graph.output[1:3])  # fmt: skip
    step.graph.output[1].CopyFrom(second)
    step.graph.output[2].CopyFrom(first)
    onnx.save(step, str(tmp_path / "swapped.step.onnx"))
    window = onnx.load(str(window_graph))
    window.graph.output.insert(0, window.graph.input[0])
    onnx.save(window, str(tmp_path / "extra.onnx"))
    past = session.frames[100:116]
    for made, exported_graph, predictor in (
        ("swapped.step.onnx", step_graph, StreamingPredictor),
        ("extra.onnx", window_graph, OnnxPredictor),
    ):
        expected = predictor(exported_graph, STREAM, threads=1).predict(past, newest_seq=115)
        got = predictor(tmp_path / made, STREAM, threads=1).predict(past, newest_seq=115)
        np.testing.assert_array_equal(got, expected)
        mode = "stream" if predictor is StreamingPredictor else "window"
        stats = predictor(exported_graph, STREAM, threads=1).normaliser.stats_for_prediction()
        request = BatchRequest(past, 115, None, stats)  # the fast replay's, batched
        [batched] = BatchRunner(tmp_path / made, mode, STREAM).run([request])
        np.testing.assert_array_equal(batched, expected)


def test_a_graph_that_takes_other_than_float32_is_refused_at_load_naming_the_tensor(
    exported, tmp_path
):
    """A graph with float16 inputs (an FP16 graph kept for TensorRT, ``x.fp16.onnx``, named as
    ``[model] path``): refused naming the file and the tensor, not loaded to fail its warm-up
    with ONNX Runtime's "Unexpected input data type", which names neither."""
    _, window_graph, _ = exported
    model = onnx.load(str(window_graph))
    past = model.graph.input[0]
    past.type.tensor_type.elem_type = onnx.TensorProto.FLOAT16
    for node in model.graph.node:
        node.input[:] = [f"{past.name}32" if name == past.name else name for name in node.input]
    cast = onnx.helper.make_node("Cast", [past.name], [f"{past.name}32"], to=onnx.TensorProto.FLOAT)
    model.graph.node.insert(0, cast)
    bad = tmp_path / "bad.onnx"
    onnx.save(model, str(bad))
    with pytest.raises(ModelMismatchError, match=rf"'{bad}': its graph's input 'past' holds "):
        OnnxPredictor(bad, STREAM, threads=1)


def test_a_graph_of_unfixed_dimensions_returning_another_horizon_is_refused(exported, tmp_path):
    """A graph that declares its output's frame count without a fixed size passes the check of
    its shapes at load; one that returns 8 frames for the 16 its metadata promises would have
    handed the blend, the wave stage and the scores 8 frames as the horizon. Refused at its
    warm-up, and at a prediction where it was not warmed, naming the file and both shapes."""
    _, window_graph, _ = exported
    model = onnx.load(str(window_graph))
    output = model.graph.output[0]
    for node in model.graph.node:
        node.output[:] = [f"{output.name}_all" if n == output.name else n for n in node.output]
    # Its end worked out from the data (8 + 0 x the largest value), so no shape is known at load.
    initial = [(np.array([0], np.int64), "first"), (np.array([1], np.int64), "axis"),
               (np.array([8], np.int64), "eight"), (np.array(0.0, np.float32), "zero")]  # fmt: skip
    model.graph.initializer.extend(onnx.numpy_helper.from_array(v, n) for v, n in initial)
    past = model.graph.input[0].name
    nodes = [
        ("ReduceMax", [past], ["top"], {"keepdims": 0}),
        ("Mul", ["top", "zero"], ["nought"], {}),
        ("Cast", ["nought"], ["nought_int"], {"to": onnx.TensorProto.INT64}),
        ("Add", ["eight", "nought_int"], ["last"], {}),
        ("Slice", [f"{output.name}_all", "first", "last", "axis"], [output.name], {}),
    ]
    for op, inputs, outputs, attributes in nodes:
        model.graph.node.append(onnx.helper.make_node(op, inputs, outputs, **attributes))
    output.type.tensor_type.shape.dim[1].dim_param = "frames"
    bad = tmp_path / "bad.onnx"
    onnx.save(model, str(bad))
    said = rf"'{bad}' returned a prediction of shape \(1, 8, 1, 18, 20\), not \(1, 16, 1, 18, 20\)"
    with pytest.raises(ModelMismatchError, match=said):
        OnnxPredictor(bad, STREAM, threads=1)
    cold = OnnxPredictor(bad, STREAM, threads=1, warm=False)
    with pytest.raises(ModelMismatchError, match=said):
        cold.predict(np.zeros((16, 18, 20), np.float32))


@pytest.mark.parametrize(
    ("value", "message"), [(float("nan"), "1 NaN or infinite value"), (0.0, "> 0 everywhere")]
)
def test_a_normalisation_that_cannot_scale_is_refused_naming_file_and_value(
    exported, tmp_path, value, message
):
    _, window_graph, step_graph = exported
    for graph, name, predictor in (
        (window_graph, "bad.onnx", OnnxPredictor),
        (step_graph, "bad.step.onnx", StreamingPredictor),
    ):
        normalisation = read_model_metadata(graph).normalisation
        scale = np.asarray(normalisation["scale"])
        scale[3, 4] = value
        bad = _with_metadata(
            graph, tmp_path, name, normalisation={**normalisation, "scale": scale.tolist()}
        )
        with pytest.raises(ModelMismatchError, match=rf"'{bad}': .*'scale' .*{message}"):
            predictor(bad, STREAM, threads=1)


def test_a_window_graph_with_an_input_its_metadata_does_not_name_is_refused(exported, tmp_path):
    """An irregular graph labelled regular: the daemon would never feed its times."""
    _, window_graph, _ = exported
    model = onnx.load(str(window_graph))
    model.graph.input.append(
        onnx.helper.make_tensor_value_info("past_times", onnx.TensorProto.FLOAT, [1, 16])
    )
    bad = tmp_path / "bad.onnx"
    onnx.save(model, str(bad))
    with pytest.raises(ModelMismatchError, match=rf"'{bad}' has input\(s\) \['past_times'\]"):
        OnnxPredictor(bad, STREAM, threads=1)


@pytest.mark.parametrize("mode", ["window", "stream"])
def test_a_predictor_built_cold_runs_its_model_only_when_asked(
    exported, session, monkeypatch, mode
):
    """``warm=False`` (a batched replay reads only the predictor's info) skips the load-time
    warm-up, which ``warmup()`` then runs; predictions are the warm predictor's either way."""
    from service.inference._keep_warm import WARMUP_RUNS

    _, window_graph, step_graph = exported
    cls = StreamingPredictor if mode == "stream" else OnnxPredictor
    runs = {"count": 0}
    warm_once = cls._warm_once

    def counted(self):
        runs["count"] += 1
        warm_once(self)

    monkeypatch.setattr(cls, "_warm_once", counted)

    def build(warm):
        return create_predictor(
            "onnxruntime-cpu", mode, model_path=window_graph, step_path=step_graph,
            stream=STREAM, threads=1, warm=warm,
        )  # fmt: skip

    cold = build(warm=False)
    assert runs["count"] == 0
    warm = build(warm=True)
    assert runs["count"] == WARMUP_RUNS
    window = session.frames[200:216]
    np.testing.assert_array_equal(cold.predict(window, 215), warm.predict(window, 215))
    cold.warmup()
    assert runs["count"] == 2 * WARMUP_RUNS
