"""INT8 copies of the committed tiny model: what they record, their guard, and the CLI flag."""

import dataclasses
import shutil

import numpy as np
import onnx
import pytest
from typer.testing import CliRunner

from bench.data.session import Session
from bench.data.session_io.xdf_writer import write_xdf
from bench.data.synth import SynthConfig, generate_session
from models.evaluation import EvaluationReport
from models.metadata import QUANTIZATION_KEY, read_model_metadata
from models.quantize import (
    Int8Settings,
    QuantizationRefusedError,
    check_quantizable,
    export_int8,
    int8_path,
    int8_step_path,
    quantize_window,
    refusals,
)
from service.cli.app import app
from service.inference.settings import SHIPPED_WEIGHTS
from tests import _tiny_int8
from tests.data.tiny_model import copy_tiny_model

CHEAP = Int8Settings(
    calibration_data="synthetic-mix:9000@4",
    guard_data="synthetic-mix:9100@4",
    calibration_windows=16,
    guard_windows=64,
)
"""A few seconds of data each: the tiny model needs no more to show the guard at work."""
PAIR = _tiny_int8.SETTINGS
"""What the ``quantized`` pair was calibrated and guarded on: :data:`CHEAP`'s calibration data,
its own guard data (``tests._tiny_int8`` says why), half the guard windows."""


@pytest.fixture(scope="module")
def quantized(tiny_int8):
    """The tiny model's window and step graphs and their int8 copies (and what was printed),
    made on :data:`PAIR` once per test run with the service tests' (read-only)."""
    return tiny_int8


def _ops(graph: onnx.GraphProto) -> list[str]:
    """Operator types of ``graph`` and of every graph nested in it."""
    found = []
    for node in graph.node:
        found.append(node.op_type)
        for attribute in node.attribute:
            if attribute.type == onnx.AttributeProto.GRAPH:
                found.extend(_ops(attribute.g))
    return found


def test_int8_files_keep_the_metadata_and_record_their_calibration(quantized):
    window, step, lines = quantized
    written = [str(int8_path(window)), str(int8_step_path(window))]
    assert [line.split()[1] for line in lines[:2]] == written
    assert [line.splitlines()[0] for line in lines[2:]] == [
        f"int8 guard, {kind} graph ({PAIR.guard_data}):" for kind in ("window", "step")
    ]
    assert "| frame | fp32 | int8 | persistence | linear |" in lines[2]
    for fp32, int8 in ((window, int8_path(window)), (step, int8_step_path(window))):
        before, after = read_model_metadata(fp32), read_model_metadata(int8)
        assert (before.precision, after.precision) == ("fp32", "int8")
        record = after.provenance[QUANTIZATION_KEY]
        assert record["format"] == "QDQ"
        assert record["calibration"]["data"] == PAIR.calibration_data
        assert record["calibration"]["windows"] == PAIR.calibration_windows
        assert record["guard"]["data"] == PAIR.guard_data
        assert dataclasses.replace(after, provenance=before.provenance) == before
    # One record for the pair, so the daemon's same-export check holds for it.
    window_record = read_model_metadata(int8_path(window)).provenance[QUANTIZATION_KEY]
    assert read_model_metadata(int8_step_path(window)).provenance[QUANTIZATION_KEY] == window_record


def test_the_convolutions_run_in_int8_also_inside_the_step_graphs_branches(quantized):
    window, step, _ = quantized
    for fp32, int8 in ((window, int8_path(window)), (step, int8_step_path(window))):
        assert "QuantizeLinear" not in _ops(onnx.load(str(fp32)).graph)
        ops = _ops(onnx.load(str(int8)).graph)
        assert ops.count("DequantizeLinear") >= ops.count("Conv") > 0
    step_graph = onnx.load(str(int8_step_path(window))).graph
    assert "QuantizeLinear" not in [node.op_type for node in step_graph.node]  # only in Ifs


@pytest.fixture(scope="module")
def shipped(tmp_path_factory):
    """A copy of the shipped window graph: a trained model, whose predictions int8 can spoil
    (the tiny model's barely depend on its input, whatever its ranges)."""
    window = tmp_path_factory.mktemp("shipped") / "default.onnx"
    shutil.copy(SHIPPED_WEIGHTS / "default.onnx", window)
    return window


def test_the_guard_accepts_the_shipped_model_calibrated_as_exported(shipped):
    line, _ = export_int8(shipped, None, CHEAP)
    assert line.startswith(f"wrote {int8_path(shipped)} (window graph, int8 QDQ")
    record = read_model_metadata(int8_path(shipped)).provenance[QUANTIZATION_KEY]
    scores = record["guard"]["pooled_psnr_db"]["window"]
    assert scores["fp32"] - 0.1 <= scores["int8"] != scores["fp32"]
    assert scores["int8"] > scores["persistence"]
    int8_path(shipped).unlink()


def test_the_guard_refuses_int8_calibrated_on_garbage_and_writes_nothing(shipped, tmp_path):
    session = generate_session(SynthConfig(duration_s=4.0, seed=3))
    noise = np.random.default_rng(0).normal(0, 1e4, session.frames.shape).astype(np.float32)
    write_xdf(tmp_path / "noise.xdf", Session(noise, session.timestamps))
    settings = dataclasses.replace(CHEAP, calibration_data=str(tmp_path / "noise.xdf"))
    with pytest.raises(QuantizationRefusedError) as refused:
        export_int8(shipped, None, settings)
    message = str(refused.value)
    assert message.startswith("int8 refused, nothing written: window graph: pooled PSNR")
    assert "below persistence at predicted frame(s) [1" in message
    assert "| all | " in message  # the scores, to see by how much
    assert not int8_path(shipped).exists()


def test_the_verdict_names_each_rule_broken():
    fp32 = np.full(4, 0.10)
    persistence = np.array([0.104, 0.2, 0.2, 0.2])
    within = fp32 * 10 ** (0.05 / 10)  # 0.05 dB worse everywhere: above persistence still

    def verdict(int8, limit=0.1):
        mse = {"fp32": fp32, "int8": int8, "persistence": persistence, "linear": persistence}
        report = EvaluationReport(mse, {k: np.zeros(4) for k in mse}, 10)
        return refusals(report, dataclasses.replace(CHEAP, max_psnr_drop_db=limit))

    assert verdict(within) == []
    assert verdict(within, limit=0.04) == [
        "pooled PSNR 15.971 dB is 0.050 dB below fp32's 16.021 dB (limit 0.04 dB)"  # R = 2
    ]
    assert verdict(fp32 * np.array([1.05, 1, 1, 1])) == [
        "below persistence at predicted frame(s) [1] where fp32 is not"
    ]
    with pytest.raises(ValueError, match="'max_psnr_drop_db' must be"):
        dataclasses.replace(CHEAP, max_psnr_drop_db=-1.0)
    with pytest.raises(ValueError, match="'guard_data' must differ"):
        dataclasses.replace(CHEAP, guard_data=CHEAP.calibration_data)


def test_where_fp32_is_below_persistence_int8_may_not_lose_more_there():
    """Frame 1's error is small, so int8 losing 1.3 dB there moves the pooled PSNR by 0.05 dB:
    only the per-horizon rule sees it."""
    fp32 = np.array([0.02, 0.1, 0.2, 0.3])
    persistence = np.array([0.015, 0.3, 0.4, 0.5])  # fp32 below it at frame 1

    def verdict(int8):
        mse = {"fp32": fp32, "int8": int8, "persistence": persistence, "linear": persistence}
        return refusals(EvaluationReport(mse, {k: np.zeros(4) for k in mse}, 10), CHEAP)

    assert verdict(fp32 * np.array([1.1, 1, 1, 1])) == []  # 0.41 dB there: within 0.5
    assert verdict(fp32 * np.array([1.35, 1, 1, 1])) == [
        "at predicted frame(s) [1], where fp32 is below persistence, 1.303 dB below fp32 "
        "(limit 0.5 dB)"
    ]
    assert verdict(np.array([np.nan, 0.1, 0.2, 0.3]))[-1].startswith("at predicted frame(s) [1]")
    with pytest.raises(ValueError, match="'max_horizon_drop_db' must be"):
        dataclasses.replace(CHEAP, max_horizon_drop_db=-1.0)


def test_an_int8_graph_is_not_quantized_again(quantized):
    window, _, _ = quantized
    with pytest.raises(ValueError, match="already quantized"):
        export_int8(int8_path(window), None, CHEAP)


@pytest.mark.slow  # the default calibration and guard data: ~18 s on two cores
def test_export_int8_from_the_command_line(tmp_path, memoized_export):
    """(The tiny run's window graph is traced once for this test and the refusal's below.)"""
    run, _, _ = copy_tiny_model(tmp_path / "tiny")
    out = tmp_path / "out" / "model.onnx"
    out.parent.mkdir()
    result = CliRunner().invoke(app, ["export", str(run), str(out), "--int8"])
    assert result.exit_code == 0, result.output
    assert f"wrote {int8_path(out)} (window graph, int8 QDQ" in result.output
    assert read_model_metadata(int8_path(out)).precision == "int8"
    assert not int8_step_path(out).exists()  # no --step, no step graph
    np.testing.assert_equal(len(list(out.parent.iterdir())), 2)


def test_a_graph_with_nothing_to_quantize_is_refused(tmp_path):
    _, window, _ = copy_tiny_model(tmp_path)
    shape = [1, 16, 1, 18, 20]
    identity = onnx.helper.make_model(
        onnx.helper.make_graph(
            [onnx.helper.make_node("Identity", ["past"], ["future"])],
            "identity",
            [onnx.helper.make_tensor_value_info("past", onnx.TensorProto.FLOAT, shape)],
            [onnx.helper.make_tensor_value_info("future", onnx.TensorProto.FLOAT, shape)],
        ),
        opset_imports=[onnx.helper.make_opsetid("", 18)],
    )
    identity.metadata_props.extend(onnx.load(str(window)).metadata_props)
    windows = np.zeros((4, *shape[1:]), dtype=np.float32)
    with pytest.raises(ValueError, match="the window graph has no Conv operator"):
        quantize_window(identity, windows)


@pytest.mark.slow  # an export and its held-out check from the command line: ~10 s
def test_a_refused_int8_copy_still_lets_the_fp32_export_finish(
    tmp_path, monkeypatch, memoized_export
):
    """The fp32 files are written before the int8 copies are tried: a refusal must not leave
    them without their held-out check (the daemon's below-persistence warning reads it) or skip
    --weights-copy, and the command still fails to say int8 was refused."""
    import models.quantize

    session = generate_session(SynthConfig(duration_s=4.0, seed=3))
    noise = np.random.default_rng(0).normal(0, 1e4, session.frames.shape).astype(np.float32)
    write_xdf(tmp_path / "noise.xdf", Session(noise, session.timestamps))
    garbage = dataclasses.replace(CHEAP, calibration_data=str(tmp_path / "noise.xdf"))
    real = models.quantize.export_int8
    monkeypatch.setattr(models.quantize, "export_int8", lambda *a, **k: real(*a, garbage, **k))
    run, _, _ = copy_tiny_model(tmp_path / "tiny")
    out = tmp_path / "out" / "model.onnx"
    out.parent.mkdir()
    copy = tmp_path / "copy"
    result = CliRunner().invoke(
        app, ["export", str(run), str(out), "--int8", "--weights-copy", str(copy)]
    )
    assert result.exit_code == 1, result.output
    assert "int8 refused, nothing written" in result.output
    assert not int8_path(out).exists()
    assert "held-out check" in result.output  # reached (the tiny run records no data to use)
    assert (copy / "checkpoint.pt").is_file(), result.output
    assert result.output.index("error: int8 refused") > result.output.index("held-out check")


def test_data_of_another_stream_than_the_models_is_refused_before_quantizing(tmp_path):
    """Calibration and guard windows at another rate (or grid) than the model's would guard
    nothing the daemon serves: refused naming both, with nothing written."""
    from models.metadata import rewrite_model_metadata

    _, window, _ = copy_tiny_model(tmp_path)
    metadata = read_model_metadata(window)
    rewrite_model_metadata(window, dataclasses.replace(metadata, sample_rate_hz=500.0))
    with pytest.raises(ValueError, match=r"synthetic-mix:9000@4.*277.78 Hz.*this model's.*500 Hz"):
        export_int8(window, None, CHEAP)
    assert not int8_path(window).exists()


@pytest.mark.parametrize(
    ("calibration", "guard", "shared"),
    [
        (
            "synthetic-mix:9000-9003@4",
            "synthetic-mix:9002-9005@4",
            "synthetic-mix seed 9002 of 4 s",
        ),
        ("synthetic:40-41@4", "synthetic:41@4", "synthetic seed 41 of 4 s"),
    ],
)
def test_calibration_and_guard_data_sharing_a_session_are_refused_before_quantizing(
    tmp_path, calibration, guard, shared
):
    """The guard must score windows the calibration never saw; before, only identical specs
    were refused, and overlapping seeds were calibrated on and guarded on alike."""
    _, window, _ = copy_tiny_model(tmp_path)
    settings = dataclasses.replace(CHEAP, calibration_data=calibration, guard_data=guard)
    said = rf"generated session {shared}.* twice .*the guard would score windows the calibration"
    with pytest.raises(ValueError, match=said):
        check_quantizable(read_model_metadata(window), settings)
    with pytest.raises(ValueError, match=said):
        export_int8(window, None, settings)
    assert not int8_path(window).exists()
