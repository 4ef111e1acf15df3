import json
import math
import os
from dataclasses import replace

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from models.data import SessionWindows
from models.evaluation import (
    BASELINES,
    METRICS,
    SSIM_WIN_SIZE,
    EvaluationReport,
    evaluate,
    fit_autoregressive,
    linear_extrapolation,
    per_horizon,
    persistence,
)
from models.registry import build_model
from models.windows import SplitWindows
from service.core.scores import DATA_RANGE, squared_error

PAST, FUTURE, ROWS, COLS = 4, 16, 18, 20
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _batches(n_batches=3, batch_size=4, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return [
        (
            torch.randn(batch_size, PAST, 1, ROWS, COLS, generator=generator) * 0.2,
            torch.randn(batch_size, FUTURE, 1, ROWS, COLS, generator=generator) * 0.2,
        )
        for _ in range(n_batches)
    ]


def _oracle(batches):
    """Returns the true future of the batch whose past it is given (evaluate passes it as is)."""
    return lambda past: next(future for p, future in batches if p is past).clone()


def _ramp_batches():
    """Frames rising by 0.25 per step from per-pixel offsets: exact in float32."""
    time = torch.arange(PAST + FUTURE, dtype=torch.float32).view(1, -1, 1, 1, 1)
    offsets = torch.arange(ROWS * COLS, dtype=torch.float32).view(1, 1, 1, ROWS, COLS) / 64
    frames = (offsets + 0.25 * time).expand(2, -1, -1, -1, -1).contiguous()
    return [(frames[:, :PAST], frames[:, PAST:])]


@pytest.fixture(scope="module")
def batches():
    return _batches()


@pytest.fixture(scope="module")
def report(batches):
    return evaluate(
        {
            "oracle": _oracle(batches),
            "biased": lambda past: persistence(past, FUTURE) + 0.5,
        },
        batches,
    )


@pytest.mark.parametrize("kind", ["numpy", "torch"])
def test_baselines_by_hand(kind):
    past = np.broadcast_to(np.array([1.0, 3.0], np.float32).reshape(1, 2, 1, 1, 1), (1, 2, 1, 2, 2))
    past = past.copy() if kind == "numpy" else torch.from_numpy(past.copy())
    assert persistence(past, 3)[0, :, 0, 0, 0].tolist() == [3.0, 3.0, 3.0]
    assert linear_extrapolation(past, 3)[0, :, 0, 0, 0].tolist() == [5.0, 7.0, 9.0]
    assert persistence(past, 3).shape == (1, 3, 1, 2, 2)


def test_baselines_reject_bad_input():
    with pytest.raises(
        ValueError, match=r"'past' must have shape .*frames >= 2.*got \(1, 1, 1, 4, 4\)"
    ):
        linear_extrapolation(torch.zeros(1, 1, 1, 4, 4), 3)
    with pytest.raises(TypeError, match="'past' must be ndarray or Tensor, got list"):
        persistence([[[[[0.0]]]]], 3)
    with pytest.raises(ValueError, match="'future_frames' must be an int >= 1, got 0"):
        persistence(torch.zeros(1, 2, 1, 4, 4), 0)


def test_a_predictor_that_is_persistence_scores_exactly_the_baseline(batches):
    result = evaluate({"copy": lambda past: persistence(past, FUTURE)}, batches)
    assert result.predictors == ["copy", *BASELINES]
    for scores in (result.mse, result.psnr, result.ssim):
        np.testing.assert_array_equal(scores["copy"], scores["persistence"])
    assert result.pooled_psnr["copy"] == result.pooled_psnr["persistence"]
    assert not result.beats_baselines("copy")


def test_linear_extrapolation_is_exact_on_a_ramp_and_json_stays_valid(tmp_path):
    result = evaluate({}, _ramp_batches())
    assert np.all(result.mse["linear"] == 0)
    assert np.all(np.isposinf(result.psnr["linear"])) and result.pooled_psnr["linear"] == math.inf
    assert np.all(np.isfinite(result.psnr["persistence"]))
    data = result.to_dict()["predictors"]["linear"]
    assert data["psnr"] == [None] * FUTURE and data["pooled_psnr"] is None
    path = tmp_path / "ramp.json"
    result.write_json(path)
    json.loads(path.read_text(), parse_constant=lambda token: pytest.fail(f"non-JSON {token}"))
    assert np.all(np.isposinf(EvaluationReport.read_json(path).psnr["linear"]))
    rows = result.to_markdown().splitlines()
    assert rows[4].startswith("| 1 | ") and rows[4].endswith(" | inf |")
    result.plot_psnr(tmp_path / "ramp.png")
    assert (tmp_path / "ramp.png").read_bytes().startswith(PNG_SIGNATURE)


def test_psnr_matches_a_hand_computation_at_the_fixed_range():
    target = torch.zeros(2, FUTURE, 1, ROWS, COLS)
    target[0, :, 0, 0, 0] = 7.0  # a peak-to-peak of 7: R stays 2 whatever the targets span
    offsets = [0.1, 0.3]
    batches = [(torch.zeros(2, PAST, 1, ROWS, COLS), target) for _ in offsets]
    calls = iter(offsets)
    result = evaluate({"offset": lambda past: target + next(calls)}, batches)
    # 2 batches x 2 windows: squared errors 0.01 (2 windows) and 0.09 (2 windows) at every pixel
    expected = 10 * math.log10(2.0**2 / ((0.01 + 0.09) / 2))
    np.testing.assert_allclose(result.psnr["offset"], expected, rtol=1e-6)
    assert result.pooled_psnr["offset"] == pytest.approx(expected, rel=1e-6)
    by_batch = per_horizon("psnr", target + 0.1, target)
    np.testing.assert_allclose(by_batch, 10 * math.log10(4.0 / 0.01), rtol=1e-6)


def test_pooled_psnr_pools_mse_not_psnr(report):
    mse = report.mse["biased"]
    expected = 10 * np.log10(DATA_RANGE**2 / mse.mean())
    assert report.pooled_psnr["biased"] == pytest.approx(expected)
    assert report.pooled_psnr["biased"] != pytest.approx(report.psnr["biased"].mean(), abs=1e-9)


def test_ssim_of_identical_frames_is_one(batches, report):
    frames = batches[0][1]
    np.testing.assert_allclose(per_horizon("ssim", frames, frames), 1.0)
    np.testing.assert_allclose(report.ssim["oracle"], 1.0)
    assert np.all(report.ssim["biased"] < 0.5)
    assert SSIM_WIN_SIZE % 2 == 1 and min(ROWS, COLS) >= SSIM_WIN_SIZE


def test_unknown_metric_is_rejected_with_the_valid_names(batches):
    frames = batches[0][1]
    with pytest.raises(
        ValueError, match=r"unknown metric 'lpips'; valid metrics are \['mse', 'psnr', 'ssim'\]"
    ):
        per_horizon("lpips", frames, frames)
    assert METRICS == ("mse", "psnr", "ssim")


def test_beats_baselines_true_for_an_oracle_false_for_a_bad_predictor(report):
    assert report.beats_baselines("oracle")
    assert not report.beats_baselines("biased")
    with pytest.raises(
        ValueError, match=r"'name' must be one of \('oracle', 'biased'\), got 'linear'"
    ):
        report.beats_baselines("linear")


def test_json_round_trip(report, tmp_path):
    path = tmp_path / "report.json"
    report.write_json(path)
    data = json.loads(path.read_text())
    assert data["data_range"] == DATA_RANGE and data["n_windows"] == 12
    assert f"R = data_range = {DATA_RANGE:g} normalised units" in data["definitions"]["psnr"]
    assert list(data["predictors"]) == ["oracle", "biased", *BASELINES]
    restored = EvaluationReport.read_json(path)
    assert restored.to_dict() == report.to_dict()
    np.testing.assert_array_equal(restored.psnr["biased"], report.psnr["biased"])


def test_from_dict_rejects_unknown_keys(report):
    data = report.to_dict()
    data["extra"] = 1
    with pytest.raises(ValueError, match=r"'data' must have exactly the keys .*got .*'extra'"):
        EvaluationReport.from_dict(data)


def test_from_dict_rejects_a_report_at_another_range(report):
    """A report of another scale (a peak-to-peak R, format 1) would mix scales, and one of
    format 2 scored every channel, dead and noisy ones too: refused."""
    data = report.to_dict()
    for earlier in ("corticast.evaluation/1", "corticast.evaluation/2"):
        with pytest.raises(ValueError, match=r"format.* must be 'corticast.evaluation/3'"):
            EvaluationReport.from_dict(data | {"format": earlier})
    with pytest.raises(ValueError, match=r"data_range.* must be 2.0 .*got 5.68"):
        EvaluationReport.from_dict(data | {"data_range": 5.68})


def test_psnr_plot_is_a_png(report, tmp_path):
    path = tmp_path / "psnr.png"
    report.plot_psnr(path)
    content = path.read_bytes()
    assert len(content) > len(PNG_SIGNATURE) and content.startswith(PNG_SIGNATURE)


def test_markdown_table_has_a_row_per_horizon_and_pooled(report):
    lines = report.to_markdown().splitlines()
    assert "PSNR at R = 2 normalised units" in lines[0] and "12 windows" in lines[0]
    assert lines[2] == "| frame | oracle | biased | persistence | linear |"
    assert [line.split(" | ")[0] for line in lines[4:]] == [f"| {k}" for k in range(1, 17)] + [
        "| all"
    ]


def test_empty_batches_are_a_clear_error():
    message = r"'batches' must yield at least one \(past, future\) batch, got none"
    with pytest.raises(ValueError, match=message):
        evaluate({}, [])
    with pytest.raises(ValueError, match=message):
        evaluate({}, iter([]))


def test_a_one_shot_iterator_is_scored_like_a_list(batches, report):
    """One pass is all evaluate needs now that R is fixed: a generator scores like the list."""
    result = evaluate({}, (batch for batch in batches))
    assert result.n_windows == 12
    np.testing.assert_array_equal(result.mse["linear"], report.mse["linear"])


def test_bad_predictors_and_batches_are_rejected(batches):
    with pytest.raises(ValueError, match=r"not a baseline's .* got 'linear'"):
        evaluate({"linear": lambda past: past}, batches)
    with pytest.raises(ValueError, match=r"predictor 'short'.* must have the target's shape"):
        evaluate({"short": lambda past: persistence(past, 3)}, batches)
    with pytest.raises(ValueError, match=r"predictor 'nan'.* must be finite"):
        evaluate({"nan": lambda past: persistence(past, FUTURE) * math.nan}, batches)
    with pytest.raises(
        TypeError, match=r"'batches\[0\]' must be a \(past, future\) pair or .*dict"
    ):
        evaluate({}, [{"past": batches[0][0], "future": batches[0][1]}])
    with pytest.raises(ValueError, match=r"'batches\[1\]' future must hold 16 frames"):
        evaluate({}, [batches[0], (batches[1][0], batches[1][1][:, :8])])


def test_predictors_run_without_gradients(batches):
    seen = []

    def predict(past):
        seen.append(torch.is_grad_enabled())
        return persistence(past, FUTURE)

    evaluate({"probe": predict}, batches)
    assert seen == [False] * len(batches)


def test_a_model_on_session_windows(session, train_set):
    torch.manual_seed(0)
    model = build_model("convlstm", {"hidden": (4, 4), "kernel_size": 3}).eval()
    test_set = SessionWindows(session, "test", train_set.normalisation, stride=32)
    result = evaluate({"convlstm": model.predict}, DataLoader(test_set, batch_size=len(test_set)))
    assert result.n_windows == len(test_set)
    assert result.horizons == 16 and result.predictors == ["convlstm", *BASELINES]
    assert all(np.all(np.isfinite(values)) for values in result.psnr.values())


def test_fitted_ar_is_scored_beside_the_baselines_and_must_be_beaten(tmp_path):
    from bench.data.synth.config import SynthConfig
    from bench.data.synth.generator import generate_session

    session = generate_session(SynthConfig(duration_s=4.0, seed=2))
    train = SessionWindows(session, "train", stride=16)
    ar = fit_autoregressive(session, train.normalisation, lags=4)
    assert ar.coefficients.shape == (6,)
    test = list(DataLoader(SessionWindows(session, "test", train.normalisation, stride=8), 16))
    result = evaluate({"copy": lambda past: persistence(past, FUTURE)}, test, ar=ar)
    assert result.predictors == ["copy", *BASELINES, "ar"]
    assert result.baselines == [*BASELINES, "ar"]
    assert result.pooled_psnr["ar"] > result.pooled_psnr["persistence"]
    assert "| copy | persistence | linear | ar |" in result.to_markdown()
    path = tmp_path / "report.json"
    result.write_json(path)
    again = EvaluationReport.read_json(path)
    assert again.baselines == result.baselines and again.to_dict()["baselines"][-1] == "ar"
    with pytest.raises(ValueError, match="not a baseline's"):
        evaluate({"ar": lambda past: persistence(past, FUTURE)}, test, ar=ar)


def test_a_report_is_replaced_whole_never_rewritten_in_place(report, tmp_path):
    """A run killed while writing its report must leave the last one whole: the new report is
    written beside it and renamed over it, so a hard link to the old file still reads the old
    report (a write in place changes the one file both names share)."""
    path = tmp_path / "report.json"
    path.write_text('{"earlier": "report"}\n')
    os.link(path, tmp_path / "earlier.json")
    report.write_json(path)
    assert (tmp_path / "earlier.json").read_text() == '{"earlier": "report"}\n'
    assert EvaluationReport.read_json(path).to_dict() == report.to_dict()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["earlier.json", "report.json"]


def test_windows_are_scored_on_the_channels_the_daemon_would_score():
    """A dead electrode and one of noise are left out of every predictor's MSE, as the
    daemon's live scores and a replay leave them out (``service.core.live_channels``): scored
    over all channels, an offline figure meant something else than a live one."""
    from bench.data.synth.config import SynthConfig
    from bench.data.synth.generator import generate_session

    clean = generate_session(SynthConfig(duration_s=8.0, seed=2))
    frames = clean.frames.copy()
    frames[:, 2, 3] = 0.0  # a broken contact
    noise = 500 * float(np.std(clean.frames))
    frames[:, 17, 0] += np.random.default_rng(7).normal(0.0, noise, len(frames)).astype(np.float32)
    session = replace(clean, frames=frames)
    train = SplitWindows(session, "train", stride=16)
    test = SplitWindows(session, "test", train.normalisation, stride=4)
    damped = {"damped": lambda past: 0.5 * persistence(past, FUTURE)}

    result = evaluate(damped, test.iter_batches(16, live=True))

    kept = np.ones((ROWS, COLS), dtype=np.bool_)
    kept[2, 3] = kept[17, 0] = False
    past, future = (
        np.stack(part) for part in zip(*(test[i] for i in range(len(test))), strict=True)
    )
    for name, prediction in (
        ("damped", 0.5 * persistence(past, FUTURE)),
        ("persistence", persistence(past, FUTURE)),
        ("linear", linear_extrapolation(past, FUTURE)),
    ):
        on_live = squared_error(prediction[:, :, 0], future[:, :, 0], kept).mean(axis=0)
        on_all = squared_error(prediction[:, :, 0], future[:, :, 0]).mean(axis=0)
        np.testing.assert_allclose(result.mse[name], on_live, rtol=1e-9)
        assert not np.allclose(on_all, on_live)
    assert result.scored_fraction == pytest.approx((ROWS * COLS - 2) / (ROWS * COLS))
    assert EvaluationReport.from_dict(result.to_dict()).scored_fraction == result.scored_fraction
    assert "over 99.4% of the channels" in result.to_markdown()
    unmasked = evaluate(damped, test.iter_batches(16))
    assert unmasked.scored_fraction == 1.0 and unmasked.pooled_psnr != result.pooled_psnr


def test_live_channels_must_be_a_mask_leaving_each_window_one(batches):
    past, future = batches[0]
    none = np.zeros((len(future), ROWS, COLS), dtype=np.bool_)
    with pytest.raises(ValueError, match="live must leave each window a channel, window 0 none"):
        evaluate({}, [(past, future, none)])
    with pytest.raises(ValueError, match=r"live must be bool of shape \(4, 18, 20\)"):
        evaluate({}, [(past, future, np.ones((len(future), ROWS), dtype=np.bool_))])
    with pytest.raises(ValueError, match="'channels' must be None for SSIM"):
        per_horizon("ssim", future, future, ~none)
