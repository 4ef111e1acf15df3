"""The model that ships: small, self-describing, consistent across its two graphs, and better
than both baselines on data it never saw."""

import numpy as np
import pytest
import torch

from models.data import Normalisation, SessionWindows
from models.evaluation import evaluate
from models.loading import load_predictor
from models.metadata import read_model_metadata
from models.sources import load_spec
from models.training import load_checkpoint
from service.config import Settings
from service.inference.onnx_predictor import OnnxPredictor
from service.inference.predictor import DEFAULT_STREAM
from service.inference.settings import SHIPPED_WEIGHTS
from service.inference.streaming_predictor import StreamingPredictor

WINDOW = SHIPPED_WEIGHTS / "default.onnx"
STEP = SHIPPED_WEIGHTS / "default.step.onnx"
HELD_OUT = "synthetic:900@40"
"""A session generated from a seed the model was not trained on (training used 100-115)."""


def test_the_default_config_points_at_the_shipped_files():
    model = Settings().model
    assert model.path == WINDOW and model.step_graph == STEP
    for path in (WINDOW, STEP):
        assert path.is_file(), f"{path} missing: run `make weights`"
        assert path.stat().st_size < 4_000_000


def test_metadata_describes_the_rig_stream_and_the_training():
    metadata = read_model_metadata(WINDOW)
    assert (metadata.grid_rows, metadata.grid_cols) == (18, 20)
    assert metadata.sample_rate_hz == pytest.approx(277.78)
    assert (metadata.past_frames, metadata.future_frames) == (16, 16)
    provenance = metadata.provenance
    assert provenance["run"]["data"] == ["synthetic-mix:100-119@60", "synthetic:100-103@60"]
    assert provenance["steps_done"] == provenance["run"]["steps"]
    seeds = {entry["seed"] for entry in provenance["training_data"]["sessions"]}
    assert 900 not in seeds
    Normalisation.from_dict(metadata.normalisation)  # valid: finite, positive scale
    assert read_model_metadata(STEP).graph == "step"


def test_window_and_step_graphs_agree_on_a_fresh_window():
    session = load_spec("synthetic:901@2")[0]
    window = OnnxPredictor(WINDOW, DEFAULT_STREAM, threads=1)
    stream = StreamingPredictor(STEP, DEFAULT_STREAM, threads=1)
    past = session.frames[100:116]
    scale = float(np.max(window.metadata.normalisation["scale"]))
    np.testing.assert_allclose(
        stream.predict(past, newest_seq=115), window.predict(past), atol=2e-4 * scale
    )


def test_the_shipped_weights_are_the_shipped_model():
    """``default.run`` (what ``corticast adapt --from default`` tunes) holds the weights of
    ``default.onnx``, without the state only resuming a training needs."""
    state = load_checkpoint(SHIPPED_WEIGHTS / "default.run")
    assert "training" not in state and "rng" not in state
    exported = read_model_metadata(WINDOW).config
    assert all(exported[key] == value for key, value in state["config"]["model"].items())
    past = torch.from_numpy(np.random.default_rng(0).standard_normal((2, 16, 1, 18, 20)))
    past = past.float()
    from_weights = load_predictor(SHIPPED_WEIGHTS / "default.run").predict(past)
    from_onnx = load_predictor(WINDOW).predict(past)
    np.testing.assert_allclose(np.asarray(from_weights), np.asarray(from_onnx), atol=1e-4)


@pytest.mark.slow
def test_beats_persistence_and_linear_extrapolation_at_every_horizon_on_unseen_data():
    model = load_predictor(WINDOW)
    sessions = load_spec(HELD_OUT)
    # The whole unseen session is held out; its "test" split is its last 10 %.
    windows = SessionWindows(sessions, "test", model.normalisation, stride=4)
    batches = list(torch.utils.data.DataLoader(windows, batch_size=32))
    report = evaluate({"default": model.predict}, batches)
    assert report.beats_baselines("default"), report.to_markdown()
