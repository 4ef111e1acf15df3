"""The held-out check an exported model carries is scored as the daemon scores live."""

from dataclasses import replace

import numpy as np

from bench.data.synth.config import SynthConfig
from bench.data.synth.generator import generate_session
from models.evaluation import persistence
from models.held_out_check import held_out_check
from models.loading import load_predictor
from models.windows import SplitWindows
from service.core.scores import psnr_db, squared_error

DEFAULT = "models/weights/default.onnx"


def test_the_check_leaves_out_the_channels_the_daemon_does_not_score():
    """The daemon sets the check beside its live scores, which leave out dead and noisy
    channels; scored over all of them, persistence's figure took in a flat electrode and one
    of noise (``service.core.live_channels``)."""
    clean = generate_session(SynthConfig(duration_s=8.0, seed=5))
    frames = clean.frames.copy()
    frames[:, 4, 9] = 0.0
    noise = 500 * float(np.std(frames))
    frames[:, 0, 19] += np.random.default_rng(3).normal(0.0, noise, len(frames)).astype(np.float32)
    session = replace(clean, frames=frames)

    check = held_out_check(DEFAULT, [session], max_windows=1000)

    windows = SplitWindows(session, "val", load_predictor(DEFAULT).normalisation)
    past, future = (np.stack(part) for part in zip(*list(windows), strict=True))
    kept = np.ones(frames.shape[1:], dtype=np.bool_)
    kept[4, 9] = kept[0, 19] = False
    forecast = persistence(past, 16)[:, :, 0]
    on_live = psnr_db(squared_error(forecast, future[:, :, 0], kept).mean(axis=0))
    on_all = psnr_db(squared_error(forecast, future[:, :, 0]).mean(axis=0))
    assert check["windows"] == len(windows)
    np.testing.assert_allclose(check["persistence_psnr_db"], on_live.round(3), atol=1e-3)
    assert np.abs(on_all - on_live).max() > 0.01
