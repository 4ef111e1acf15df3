"""Serving an int8 copy is a configuration change: the daemon's predictors and its start-up
file checks take the pair ``corticast export --int8`` writes."""

import numpy as np
import pytest

from models.quantize import Int8Settings, export_int8, int8_path, int8_step_path
from service.inference.model_files import ModelFileError, ModelFiles
from service.inference.onnx_predictor import OnnxPredictor
from service.inference.predictor import DEFAULT_STREAM
from service.inference.settings import ModelSettings
from service.inference.streaming_predictor import StreamingPredictor
from tests.data.tiny_model import copy_tiny_model


@pytest.fixture(scope="module")
def int8_pair(tmp_path_factory):
    """The tiny model's fp32 window and step graphs, and their int8 copies beside them."""
    _, window, step = copy_tiny_model(tmp_path_factory.mktemp("int8"))
    cheap = Int8Settings(
        calibration_data="synthetic-mix:9000@4",
        guard_data="synthetic-mix:9100@4",
        calibration_windows=16,
        guard_windows=32,
    )
    export_int8(window, step, cheap)
    return window, step


def _window(session, end=40):
    return session.frames[end - DEFAULT_STREAM.past_frames : end]


@pytest.mark.parametrize("mode", ["window", "stream"])
def test_the_int8_graphs_load_and_predict_like_fp32(int8_pair, session, mode):
    window, step = int8_pair
    if mode == "window":
        fp32, int8 = OnnxPredictor(window, threads=1), OnnxPredictor(int8_path(window), threads=1)
    else:
        fp32 = StreamingPredictor(step, threads=1)
        int8 = StreamingPredictor(int8_step_path(window), threads=1)
    assert (fp32.info.precision, int8.info.precision) == ("fp32", "int8")
    expected = fp32.predict(_window(session), newest_seq=39)
    got = int8.predict(_window(session), newest_seq=39)
    assert got.shape == expected.shape == (16, *DEFAULT_STREAM.grid.shape)
    assert not np.array_equal(got, expected)  # computed in int8, not a copy of fp32
    spread = np.abs(expected - session.frames[40:56]).mean()
    assert np.abs(got - expected).mean() < 0.1 * spread  # close next to its own error


def test_the_daemon_starts_on_the_int8_pair_from_the_path_alone(int8_pair):
    window, _ = int8_pair
    files = ModelFiles.for_start(ModelSettings(path=int8_path(window)), DEFAULT_STREAM)
    assert files.step_path == int8_step_path(window).resolve()


def test_an_fp32_window_graph_with_an_int8_step_graph_is_refused(int8_pair):
    window, _ = int8_pair
    mixed = ModelSettings(path=window, step_path=int8_step_path(window))
    with pytest.raises(ModelFileError, match="their metadata differ in provenance"):
        ModelFiles.for_start(mixed, DEFAULT_STREAM)
