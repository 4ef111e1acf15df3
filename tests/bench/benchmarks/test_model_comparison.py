"""The model comparison feeds each model what the daemon would, and scores all alike."""

import numpy as np
import pytest
import torch

from bench.benchmarks.model_comparison import _score, main
from bench.data.synth import SynthConfig, generate_session
from models.data import SessionWindows
from models.drops import DropModel
from models.evaluation import fit_autoregressive, persistence
from models.loading import LoadedModel


@pytest.fixture(scope="module")
def session():
    return generate_session(SynthConfig(duration_s=8.0, seed=4))


@pytest.fixture(scope="module")
def windows(session):
    return SessionWindows(session, "train", stride=16, extra_past=16)


@pytest.fixture(scope="module")
def scored(windows):
    """The windows and each one's live channels, as ``main`` scores them."""
    return windows, np.stack([windows.live(i) for i in range(len(windows))])


@pytest.fixture(scope="module")
def ar(session, windows):
    return fit_autoregressive(session, windows.normalisation)


class Recorder:
    """Persistence that remembers the times it was given."""

    def __init__(self) -> None:
        self.times: list[torch.Tensor] = []

    def __call__(self, past, past_times):
        self.times.append(past_times)
        return persistence(past, 16)


def _model(windows, predict, irregular):
    return LoadedModel(predict, windows.normalisation, "test", irregular=irregular)


def test_a_model_that_is_persistence_scores_as_the_baseline_under_drops(windows, scored, ar):
    regular, irregular = Recorder(), Recorder()
    models = {
        "held": _model(windows, regular, irregular=False),
        "received": _model(windows, irregular, irregular=True),
    }
    scores = _score(models, {}, scored, DropModel(random_rate=0.3), seed=1, ar=ar)
    # Fed the held window, it is the persistence baseline exactly.
    np.testing.assert_array_equal(scores["held"].mse_sum, scores["persistence"].mse_sum)
    assert scores["held"].windows == len(windows)
    # Regular models always see regular times; irregular ones the gaps.
    regular_times = torch.arange(-15, 1, dtype=torch.float32)
    assert all(torch.equal(t, regular_times.expand_as(t)) for t in regular.times)
    fed = torch.cat(irregular.times)
    assert (fed[:, 0] < -15).any() and (fed[:, -1] <= 0).all()
    # The newest received frame is what hold-last repeats: the same forecast, the same score.
    np.testing.assert_allclose(scores["received"].mse_sum, scores["held"].mse_sum, rtol=1e-6)


def test_without_drops_every_model_sees_regular_times(windows, scored, ar):
    irregular = Recorder()
    model = {"m": _model(windows, irregular, irregular=True)}
    scores = _score(model, {}, scored, DropModel(), seed=0, ar=ar)
    # The fitted AR baseline is scored on the same windows, and beats persistence on waves.
    assert list(scores) == ["m", "persistence", "linear", "ar"]
    assert scores["ar"].windows == len(windows)
    assert scores["ar"].pooled_psnr() > scores["persistence"].pooled_psnr()
    pooled_mse = np.mean(scores["ar"].mse_sum) / scores["ar"].windows
    assert scores["ar"].pooled_psnr() == pytest.approx(10 * np.log10(2.0**2 / pooled_mse))
    assert all(
        torch.equal(t[0], torch.arange(-15, 1, dtype=torch.float32)) for t in irregular.times
    )


def test_a_codec_bound_codes_the_true_future_whatever_the_drops(windows, scored, ar):
    perfect = _model(windows, lambda frames, _times: frames.clone(), irregular=False)
    scores = _score({}, {"codec bound": perfect}, scored, DropModel(burst_rate=0.3), seed=2, ar=ar)
    assert scores["codec bound"].windows == len(windows)
    assert not scores["codec bound"].mse_sum.any()  # it was given the future it is scored on
    assert scores["persistence"].mse_sum.all()


@pytest.mark.parametrize(
    "names",
    [
        ("a=models/weights/default.onnx", "a=models/weights/default.onnx"),
        ("persistence=models/weights/default.onnx",),
    ],
    ids=["twice", "a baseline's"],
)
def test_a_model_named_as_another_column_is_refused_before_anything_is_scored(
    names, monkeypatch, tmp_path
):
    """Columns are keyed by name: a second ``--model a=...`` replaced the first, and a model
    named ``persistence`` was added into the baseline's sums, its windows counted twice and
    the row a mean of the two."""
    argv = ["model_comparison", "--data", "synthetic:3@3", "--window-stride", "64"]
    argv += ["--latency-runs", "1", "--out", str(tmp_path)]
    for name in names:
        argv += ["--model", name]
    monkeypatch.setattr("sys.argv", argv)
    with pytest.raises(SystemExit, match="names two columns"):
        main()
    assert not (tmp_path / "comparison.json").exists()
