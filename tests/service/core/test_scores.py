"""The one copy of PSNR and SSIM, checked against scikit-image at the one R on random frames."""

from __future__ import annotations

import numpy as np
import pytest
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from service.core.scores import DATA_RANGE, SSIM_WIN_SIZE, psnr_db, squared_error, ssim


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


def test_a_perfect_prediction_has_infinite_psnr_not_an_error():
    frames = np.ones((1, 2, 18, 20))
    assert np.isposinf(psnr_db(squared_error(frames, frames))).all()
