"""``PredictionScorer`` with ``channels``: the MSE is the mean over the live channels alone,
for every predictor; checked against a sum written here over random windows and masks."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from bench.data.synth import PlaneWave, SynthConfig, generate_session
from bench.replay._prediction_scorer import PredictionScorer, fit_session_ar
from bench.replay.timeline import Timeline, lay_out
from service.core.autoregressive import FittedAutoregressive

GRID = (18, 20)
PAST = HORIZONS = 16


def _timeline(rng: np.random.Generator, frames: int) -> Timeline:
    slow = np.cumsum(rng.standard_normal((frames, *GRID)), axis=0) * 5.0
    return Timeline(
        frames=(slow + rng.standard_normal((frames, *GRID))).astype(np.float32),
        times_s=np.arange(frames) / 277.78,
        valid=np.ones(frames, dtype=bool),
        source_index=np.arange(frames),
        sample_rate_hz=277.78,
        truth=None,
        held=np.zeros(GRID, dtype=np.int64),
        blanked=np.zeros(frames, dtype=bool),
        trains=0,
    )


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_mse_is_the_mean_over_the_live_channels(seed):
    rng = np.random.default_rng(seed)
    timeline = _timeline(rng, 400)
    live = rng.random(GRID) < rng.uniform(0.2, 0.95)
    mean = rng.normal(0.0, 3.0, GRID)
    scale = rng.uniform(1.0, 20.0, GRID)
    ar = fit_session_ar(timeline, mean, scale, channels=live)
    scorer = PredictionScorer(timeline, mean, scale, ar, channels=live)
    seqs = np.arange(PAST - 1, len(timeline) - HORIZONS, 7)
    futures = timeline.frames[seqs[:, None] + np.arange(1, HORIZONS + 1)]
    futures = futures + rng.normal(0.0, 50.0, futures.shape).astype(np.float32)
    for seq, future in zip(seqs, futures, strict=True):
        scorer.add(int(seq), future)
    scores = scorer.scores()

    # In float32 as the scorer normalises: the check is of the mean over channels.
    units = (timeline.frames - mean.astype(np.float32)) / scale.astype(np.float32)
    target = units[seqs[:, None] + np.arange(1, HORIZONS + 1)]
    model = (futures - mean.astype(np.float32)) / scale.astype(np.float32)
    last = units[seqs][:, None]
    past = units[seqs[:, None] + np.arange(-PAST + 1, 1)]
    expected = {
        "model": model,
        "persistence": np.broadcast_to(last, target.shape),
        "ar": ar.predict(past, HORIZONS),
    }
    for name, output in expected.items():
        error = output[..., live].astype(np.float64) - target[..., live]
        mse = np.square(error).mean(axis=-1)
        np.testing.assert_allclose(scores.mse[name], mse, rtol=1e-9, err_msg=name)
    # SSIM sees the channels left out as right: a predictor right on the live ones is perfect.
    exact = PredictionScorer(timeline, mean, scale, ar, channels=live)
    for seq in seqs[:4]:
        future = timeline.frames[seq + 1 : seq + 1 + HORIZONS].copy()
        future[:, ~live] += 1e4
        exact.add(int(seq), future)
    assert np.allclose(exact.scores().ssim["model"], 1.0)


def test_channels_leaving_none_are_refused():
    """No channel to score: every MSE was 0 x inf = NaN, silently."""
    timeline = _timeline(np.random.default_rng(4), 200)
    mean, scale = np.zeros(GRID), np.ones(GRID)
    ar = fit_session_ar(timeline, mean, scale)
    with pytest.raises(ValueError, match="'channels' must leave at least one channel"):
        PredictionScorer(timeline, mean, scale, ar, channels=np.zeros(GRID, dtype=bool))


def test_predictions_whose_input_or_true_frames_were_blanked_are_not_scored():
    """As the daemon's live scores leave them out (``service.loop.live_accuracy``): a train's
    artefact in a prediction's input is no test of the model. Before, only blanked true frames
    (invalid) left a prediction out, and those made from blanked input were scored."""
    rng = np.random.default_rng(5)
    timeline = _timeline(rng, 200)
    artefact = slice(100, 113)
    timeline.blanked[artefact] = True
    timeline.valid[artefact] = False
    mean, scale = np.zeros(GRID), np.ones(GRID)
    scorer = PredictionScorer(timeline, mean, scale, fit_session_ar(timeline, mean, scale))
    seqs = np.arange(PAST - 1, len(timeline) - HORIZONS)
    for seq in seqs:
        scorer.add(int(seq), timeline.frames[seq + 1 : seq + 1 + HORIZONS])
    scores = scorer.scores()

    window = seqs[:, None] + np.arange(-PAST + 1, HORIZONS + 1)  # input and true frames
    clear = ~timeline.blanked[window].any(axis=1)
    np.testing.assert_array_equal(scores.input_seq, seqs[clear])
    assert scores.unscorable == np.count_nonzero(~clear)


def test_values_the_session_held_are_not_scored_as_the_truth():
    """A broken contact sends NaN on one electrode from frame 300 on, after 3 dropped samples;
    the replay holds its last finite value as the ingest does. An oracle of what the cortex
    did (the generator's frames) is right there and persistence, repeating the held value,
    is not: scored against the held value the oracle erred (MSE above 0) on every window
    reaching past frame 300. Left out, as the daemon leaves them out, it is perfect, and the
    values left out are counted."""
    session = generate_session(SynthConfig(duration_s=2.0, seed=3, episodes=(
        PlaneWave(start_s=0.0, duration_s=2.0, amplitude_uv=80.0, frequency_hz=8.0,
                  speed_mps=0.3, direction_deg=30.0),
    )))  # fmt: skip
    kept = np.r_[0:200, 203 : session.n_frames]  # frames 200-202 dropped
    cortex = session.frames[kept]
    frames = cortex.copy()
    frames[300:, 4, 7] = np.nan
    broken = dataclasses.replace(
        session, frames=frames, timestamps=session.timestamps[kept], truth=None
    )
    timeline = lay_out(broken, session.sample_rate_hz, 4096)
    slots = np.flatnonzero(timeline.source_index >= 0)
    assert timeline.missing == 3 and timeline.valid[slots].all()
    held = np.zeros(timeline.frames.shape, dtype=bool)
    held[slots[300:], 4, 7] = True
    np.testing.assert_array_equal(timeline.held_values, held)

    mean, scale = np.zeros(GRID), np.full(GRID, 50.0)
    scorer = PredictionScorer(timeline, mean, scale, fit_session_ar(timeline, mean, scale))
    seqs = np.arange(PAST - 1, len(timeline) - HORIZONS, 5)
    truth = np.zeros(timeline.frames.shape, dtype=np.float32)
    truth[slots] = cortex
    for seq in seqs:
        scorer.add(int(seq), truth[seq + 1 : seq + 1 + HORIZONS])
    scores = scorer.scores()
    assert scores.input_seq.size == np.count_nonzero(
        timeline.valid[seqs[:, None] + np.arange(1, HORIZONS + 1)].all(axis=1)
    )
    assert scores.input_seq.size > 0 and scores.input_seq[-1] > slots[300]
    np.testing.assert_array_equal(scores.mse["model"], 0.0)
    target = scores.input_seq[:, None] + np.arange(1, HORIZONS + 1)
    assert scores.held_values_not_scored == np.count_nonzero(held[target])
    assert scores.held_values_not_scored > 0


def test_the_session_ar_is_fitted_without_the_values_the_session_held():
    """A held value repeats the one before it: a contact broken over most of the fit's frames
    gave the AR rows of pure persistence. Left out as unmeasured, the fit is the one with
    them NaN, as the daemon's live AR leaves them out."""
    session = generate_session(SynthConfig(duration_s=2.0, seed=3, episodes=(
        PlaneWave(start_s=0.0, duration_s=2.0, amplitude_uv=80.0, frequency_hz=8.0,
                  speed_mps=0.3, direction_deg=30.0),
    )))  # fmt: skip
    frames = session.frames.copy()
    frames[50:300, 4, 7] = np.nan
    broken = dataclasses.replace(session, frames=frames, truth=None)
    timeline = lay_out(broken, session.sample_rate_hz, 4096)
    mean, scale = np.zeros(GRID), np.full(GRID, 50.0)
    ar = fit_session_ar(timeline, mean, scale, fraction=1.0)
    without = (timeline.frames - mean) / scale
    without[timeline.held_values] = np.nan
    expected = FittedAutoregressive(ar.lags).fit(without.astype(np.float32))
    np.testing.assert_allclose(ar.coefficients, expected.coefficients, rtol=1e-9)
