"""A model that takes irregular input, served: its backends feed it the past frames' times, the
times change what the attention model predicts, and the backends agree on irregular input."""

import numpy as np
import pytest

from service.inference.backends import create_predictor
from service.inference.onnx_predictor import OnnxPredictor
from service.inference.predictor import StreamSpec
from service.inference.torch_predictor import TorchPredictor
from tests.data.tiny_irregular_model import copy_tiny_irregular_model

torch = pytest.importorskip("torch")
STREAM = StreamSpec()
"""Served without warm-up (``warm=False``): 50 (ONNX) and 20 (torch) runs of the unrolled
32-frame graph, ~15 s on two busy cores, that only make later calls' latency steady."""


@pytest.fixture(scope="module")
def irregular_model(tmp_path_factory):
    """A briefly trained TrajGRU-Attention: its run directory and window graph.

    The committed one (``tests/data/tiny_irregular_model.py`` says how it is made and when to
    remake it), copied: exporting its unrolled graph here took 40-50 s.
    """
    return copy_tiny_irregular_model(tmp_path_factory.mktemp("irregular"))


def _dropped_times() -> np.ndarray:
    """Times of the 16 newest received frames when frames 3, 4 and 10 frames back were lost."""
    received = [t for t in range(-20, 1) if t not in (-3, -4, -10)][-16:]
    return np.asarray(received, dtype=np.float32)


def test_times_reach_the_model_and_change_its_prediction(irregular_model, session):
    _, graph = irregular_model
    predictor = OnnxPredictor(graph, STREAM, threads=1, warm=False)
    assert predictor.info.irregular
    window = session.frames[100:116]
    regular = predictor.predict(window, 115)
    assert np.array_equal(
        regular, predictor.predict(window, 115, np.arange(-15, 1.0, dtype=np.float32))
    )
    # The graph is deterministic: any difference is the times at work (an untrained tiny
    # model's attention is nearly uniform, so the difference is small, not absent).
    dropped = predictor.predict(window, 115, _dropped_times())
    assert not np.array_equal(dropped, regular)
    with pytest.raises(ValueError, match="strictly increasing"):
        predictor.predict(window, 115, _dropped_times()[::-1].copy())


def test_backends_agree_on_irregular_input(irregular_model, session):
    run_dir, graph = irregular_model
    onnx_cpu = create_predictor(
        "onnxruntime-cpu", "window", model_path=graph, step_path=None, checkpoint=None,
        stream=STREAM, threads=1, warm=False,
    )  # fmt: skip
    eager = TorchPredictor(run_dir, STREAM, threads=1, warm=False)
    assert eager.info.irregular
    scale = np.asarray(onnx_cpu.metadata.normalisation["scale"], dtype=np.float32).max()
    for start in (100, 300):
        window = session.frames[start : start + 16]
        np.testing.assert_allclose(
            onnx_cpu.predict(window, None, _dropped_times()),
            eager.predict(window, None, _dropped_times()),
            atol=float(2e-4 * scale),
        )
