"""The one copy of PSNR and SSIM, checked against scikit-image at the one R on random frames."""

from __future__ import annotations

import numpy as np
import pytest
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from service.core.scores import DATA_RANGE, SSIM_WIN_SIZE, psnr_db, squared_error, ssim, ssims


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_psnr_and_ssim_match_scikit_image_frame_by_frame(seed):
    rng = np.random.default_rng(seed)
    target = rng.normal(scale=float(rng.uniform(0.1, 1.0)), size=(3, 4, 18, 20))
    prediction = target + rng.normal(scale=0.1 + 0.3 * seed, size=target.shape)
    psnr = psnr_db(squared_error(prediction, target))
    index = ssim(prediction, target)
    for n in range(target.shape[0]):
        for k in range(target.shape[1]):
            expected_psnr = peak_signal_noise_ratio(
                target[n, k], prediction[n, k], data_range=DATA_RANGE
            )
            expected_ssim = structural_similarity(
                target[n, k], prediction[n, k], data_range=DATA_RANGE, win_size=SSIM_WIN_SIZE
            )
            assert psnr[n, k] == pytest.approx(expected_psnr, rel=1e-12)
            assert index[n, k] == pytest.approx(expected_ssim, rel=1e-9)


def test_several_predictions_against_one_target_score_as_each_alone():
    """``ssims`` filters the target once for all predictions: each score is still the one
    ``ssim`` gives that prediction, bit for bit, and each also matches scikit-image."""
    rng = np.random.default_rng(3)
    target = rng.normal(size=(2, 3, 18, 20)).astype(np.float32)
    predictions = {
        name: target + rng.normal(scale=scale, size=target.shape).astype(np.float32)
        for name, scale in (("model", 0.2), ("persistence", 0.9), ("ar", 0.5))
    }
    scored = ssims(predictions, target)
    assert list(scored) == list(predictions)
    for name, prediction in predictions.items():
        np.testing.assert_array_equal(scored[name], ssim(prediction, target))
        expected = structural_similarity(
            target[1, 2].astype(np.float64), prediction[1, 2].astype(np.float64),
            data_range=DATA_RANGE, win_size=SSIM_WIN_SIZE,
        )  # fmt: skip
        assert scored[name][1, 2] == pytest.approx(expected, rel=1e-9)
    assert len({float(s[0, 0]) for s in scored.values()}) == 3  # scored apart, not one copy


def test_a_perfect_prediction_has_infinite_psnr_not_an_error():
    frames = np.ones((1, 2, 18, 20))
    assert np.isposinf(psnr_db(squared_error(frames, frames))).all()
