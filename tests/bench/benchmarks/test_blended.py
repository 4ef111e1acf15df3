"""The bench's blended column: the daemon's real Blend, fitted causally per held-out session."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from bench.benchmarks.blended import ServedColumns
from bench.data.synth import SynthConfig, generate_session
from models.evaluation import evaluate
from models.loading import LoadedModel
from models.windows import Normalisation, SplitWindows
from service.loop.settings import LoopSettings

SETTINGS = LoopSettings(blend_window=200, blend_min_windows=20)
"""Smaller than the daemon's (1000, 200), so two 4 s sessions at stride 4 (270 windows each)
fit the weights after a tenth of each session."""
NOISE = np.minimum(0.05 * np.arange(1, 17), 0.5)
"""Noise (normalised units) the fake model adds to the truth at frames 1..16: persistence's
error grows from 0.15 to 0.37 on these sessions, so the model beats it at frames 1-6 and loses
from frame 8 on (at frame 7 they are about even)."""


@pytest.fixture(scope="module")
def windows() -> SplitWindows:
    sessions = [generate_session(SynthConfig(duration_s=4.0, seed=seed)) for seed in (3, 4)]
    return SplitWindows(sessions, "train", fractions=(1.0, 0.0, 0.0), guard=0, stride=4)


def _noisy_truth(windows: SplitWindows, wrong_at: tuple[int, int] | None = None) -> LoadedModel:
    """A fake model that predicts each window's true future plus :data:`NOISE`, in its own
    normalisation (not the windows'), so the blend's units are mapped as for a real model;
    ``wrong_at``: an electrode where it is 2 of the windows' units off besides."""
    frames = windows.normalisation
    assert isinstance(frames, Normalisation)
    own = Normalisation(frames.mean + 0.5, frames.scale * 3.0)
    rng = np.random.default_rng(0)
    answers = {}
    for index in range(len(windows)):
        past, future = (own.normalise(frames.denormalise(part)) for part in windows[index])
        noise = rng.standard_normal(future.shape).astype(np.float32) * NOISE[:, None, None, None]
        if wrong_at is not None:
            noise[(..., *wrong_at)] += 6.0  # 2 in the windows' units, as NOISE below
        answers[past.tobytes()] = future + noise / 3.0  # NOISE in the windows' units
    model = LoadedModel(
        lambda past, _times: np.stack([answers[p.tobytes()] for p in past]), own, "noisy truth"
    )
    model.use_frame_normalisation(frames)
    return model


def test_blended_is_as_good_as_the_better_of_model_and_persistence(windows):
    columns = ServedColumns(_noisy_truth(windows), windows, SETTINGS)
    report = evaluate({"model": columns.model, "blended": columns.blended}, windows.batches(32))
    columns.finish()
    psnr = report.psnr
    worse, better = psnr["model"] < psnr["persistence"], psnr["model"] > psnr["persistence"]
    assert worse[7:].all() and better[:6].all()  # the fake model is what it says
    # Where the model loses, the blend leans to persistence and beats both; where it wins, the
    # blend keeps it (the noise is independent of persistence's error, so the best blend of the
    # two is better than either, by more than the warm-up windows cost).
    assert (psnr["blended"] >= np.maximum(psnr["model"], psnr["persistence"])).all()
    assert (psnr["blended"][7:] > psnr["model"][7:] + 1.0).all()
    # One blend per session, reset between them: each ended with weights of its own, near 1
    # where the noise is small and well below where it swamps the model.
    assert len(columns.final_weights) == 2
    for weights in np.array(columns.final_weights):
        assert ((weights >= 0.0) & (weights <= 1.0)).all()
        assert weights[0] > 0.8 and weights[-1] < 0.5


def test_the_live_ar_joins_the_blend_as_the_daemons_does_and_can_be_left_out(windows):
    """These sessions' travelling waves are what a 13-parameter AR forecasts well at the
    first frames, where the fake model is close too: fitted on each session's first frames,
    as the daemon's first rounds fit it, the AR takes a share somewhere; with ``blend_ar``
    off it never does, and the served column is then the two-way blend's."""
    model = _noisy_truth(windows)
    with_ar = ServedColumns(model, windows, SETTINGS)
    without = ServedColumns(model, windows, SETTINGS.model_copy(update={"blend_ar": False}))
    report = evaluate(
        {"with": with_ar.blended, "without": without.blended, "model": with_ar.model},
        windows.batches(32),
    )
    with_ar.finish()
    without.finish()
    assert len(with_ar.final_ar_weights) == 2
    assert max(max(w) for w in with_ar.final_ar_weights) > 0.05
    assert all(w == [0.0] * 16 for w in without.final_ar_weights)
    for weights, ar_weights in zip(with_ar.final_weights, with_ar.final_ar_weights, strict=True):
        assert all(w + v <= 1.0 + 1e-3 for w, v in zip(weights, ar_weights, strict=True))
    # The third source can only lower the blend's own fitting error; scored, it stays level or
    # better wherever the two-way blend did well (the warm-up windows are the same in both).
    assert (report.psnr["with"] > report.psnr["without"] - 0.3).all()


def test_the_blend_is_fitted_on_the_channels_scored_as_the_daemons_is():
    """The daemon fits its blend on the channels it scores (``LiveAccuracy``): a model far off
    on an electrode of noise only, which neither the daemon nor ``evaluate`` scores, keeps its
    weights where it is good. Fitted on every channel, that one electrode pulled them toward
    persistence."""
    session = generate_session(SynthConfig(duration_s=4.0, seed=3))
    frames = session.frames.copy()
    noise = 500 * float(np.std(frames))
    frames[:, 17, 0] += np.random.default_rng(1).normal(0.0, noise, len(frames)).astype(np.float32)
    windows = SplitWindows(
        replace(session, frames=frames), "train", fractions=(1.0, 0.0, 0.0), guard=0, stride=4
    )
    assert not windows.live(len(windows) - 1)[17, 0]
    columns = ServedColumns(_noisy_truth(windows, wrong_at=(17, 0)), windows, SETTINGS)
    report = evaluate(
        {"model": columns.model, "blended": columns.blended}, windows.iter_batches(32, live=True)
    )
    columns.finish()
    assert report.scored_fraction < 1.0
    assert columns.final_weights[0][0] > 0.8
    assert report.pooled_psnr["blended"] >= report.pooled_psnr["model"] - 0.05


def test_windows_out_of_order_are_refused(windows):
    columns = ServedColumns(_noisy_truth(windows), windows, SETTINGS)
    (first, _), (second, _) = windows.batches(8)[:2]
    with pytest.raises(ValueError, match="batch item 0 is not window 0's"):
        columns.blended(second)
    columns.blended(first)
    with pytest.raises(ValueError, match="batch item 0 is not window 8's"):
        columns.blended(first)


def test_each_window_is_served_with_what_had_been_scored_before_it_and_sessions_start_afresh(
    windows,
):
    columns = ServedColumns(_noisy_truth(windows), windows, SETTINGS)
    batches = windows.batches(8)
    columns.blended(batches[0][0])
    # Window 7's newest frame is 43; windows 0-2 (newest frames 15, 19, 23) had their 16
    # futures by frames 31, 35 and 39 < 43; window 3's last future frame is 43 itself, which
    # the daemon scores only after serving the prediction made at it.
    assert columns.blend.windows == 3
    first_of_second = int(np.flatnonzero(windows.origins[:, 0] == 1)[0])
    past = np.stack([windows[index][0] for index in range(8, first_of_second + 1)])
    columns.blended(past)
    assert columns.blend.windows == 0  # reset for the new recording
    assert len(columns.final_weights) == 1
