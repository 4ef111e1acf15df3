"""The fitted AR baseline: recovers known coefficients, beats persistence on travelling waves,
handles borders, gaps and dead channels, and rejects bad input with a clear message."""

from __future__ import annotations

import numpy as np
import pytest

from bench.data.synth.config import SynthConfig
from bench.data.synth.generator import generate_session
from service.core.autoregressive import FittedAutoregressive, _neighbour_mean
from service.core.scores import persistence, squared_error


def _simulate(coef: np.ndarray, frames: int, shape: tuple[int, int], seed: int) -> np.ndarray:
    """A stable spatial AR process with the model's own structure and unit-variance noise."""
    rng = np.random.default_rng(seed)
    lags = len(coef) - 2
    x = np.zeros((frames, *shape))
    x[:lags] = rng.standard_normal((lags, *shape))
    for t in range(lags, frames):
        own = sum(coef[j] * x[t - 1 - j] for j in range(lags))
        x[t] = own + coef[-2] * _neighbour_mean(x[t - 1]) + coef[-1] + rng.standard_normal(shape)
    return x


def test_fit_recovers_known_coefficients() -> None:
    true = np.array([0.5, -0.2, 0.1, 0.3, 0.25])
    frames = _simulate(true, 600, (8, 9), seed=1)
    model = FittedAutoregressive(lags=3).fit(frames)
    np.testing.assert_allclose(model.coefficients, true, atol=0.03)


def test_default_has_thirteen_parameters() -> None:
    frames = _simulate(np.r_[0.5, np.zeros(10), 0.2, 0.0], 200, (6, 6), seed=2)
    assert FittedAutoregressive().fit(frames).coefficients.shape == (13,)


def test_beats_persistence_on_travelling_waves() -> None:
    session = generate_session(SynthConfig(duration_s=6.0, seed=4))
    frames = session.frames
    split = len(frames) * 2 // 3
    model = FittedAutoregressive().fit(frames[:split])
    starts = np.arange(split, len(frames) - 32, 8)
    windows = np.stack([frames[s : s + 32] for s in starts])
    past, future = windows[:, :16], windows[:, 16:]
    ar = squared_error(model.predict(past, 16), future).mean(axis=0)
    hold = squared_error(persistence(past, 16), future).mean(axis=0)
    assert ar.mean() < hold.mean()
    assert np.all(ar < hold)


def test_prediction_shape_and_recursion() -> None:
    model = FittedAutoregressive(lags=2).fit(_simulate(np.r_[0.6, 0.1, 0.2, 0.05], 300, (5, 7), 3))
    past = np.random.default_rng(0).standard_normal((3, 4, 5, 7)).astype(np.float32)
    out = model.predict(past, 5)
    assert out.shape == (3, 5, 5, 7) and out.dtype == np.float32
    # Horizon 2 is the one-step model applied to (horizon 1, last frame): recursive, not direct.
    again = model.predict(np.concatenate([past, out[:, :1]], axis=1), 1)
    np.testing.assert_allclose(out[:, 1], again[:, 0], rtol=1e-5, atol=1e-5)


def test_gaps_and_dead_channels() -> None:
    true = np.array([0.7, 0.1, 0.15, 0.0])
    frames = _simulate(true, 800, (6, 6), seed=5)
    frames[100:110] = np.nan  # a gap: rows across it drop out
    frames[:, 2, 3] = np.nan  # a dead channel: its neighbours average the others
    model = FittedAutoregressive(lags=2).fit(frames)
    np.testing.assert_allclose(model.coefficients, true, atol=0.05)
    past = frames[None, 200:204].copy()
    past[0, -1, 0, 0] = np.nan  # a missing value is held from the frame before
    out = model.predict(past, 3)
    assert np.isnan(out[0, :, 2, 3]).all()
    assert np.isfinite(np.delete(out.reshape(3, -1), 2 * 6 + 3, axis=1)).all()


@pytest.mark.parametrize("n_frames", [50, 64 + 3, 300, 1000])
def test_the_fit_by_blocks_is_one_least_squares_over_every_usable_row(n_frames: int) -> None:
    """The normal equations are summed block by block in reused buffers; whatever the length
    (shorter than a block, a partial last block) and wherever the gaps fall (across a block's
    edge, a row unusable in one block and not the next), the fit is the least-squares fit of
    every (electrode, frame) row whose lags and neighbours are all measured."""
    lags, shape = 3, (5, 6)
    frames = _simulate(np.array([0.5, -0.2, 0.1, 0.3, 0.25]), n_frames, shape, seed=6)
    frames[60:62] = np.nan  # across the first block's edge (frames 3 + 64 on)
    frames[n_frames // 2, 1, 1] = np.nan  # one value: its own and its neighbours' rows drop
    design, target = [], []
    for t in range(lags, n_frames):
        own = [frames[t - 1 - j].reshape(-1) for j in range(lags)]
        row = np.stack([*own, _neighbour_mean(frames[t - 1]).reshape(-1), np.ones(30)], axis=1)
        usable = np.isfinite(row).all(axis=1) & np.isfinite(frames[t].reshape(-1))
        design.append(row[usable])
        target.append(frames[t].reshape(-1)[usable])
    expected = np.linalg.lstsq(np.concatenate(design), np.concatenate(target), rcond=None)[0]
    fitted = FittedAutoregressive(lags=lags).fit(frames, min_rows=100)
    np.testing.assert_allclose(fitted.coefficients, expected, rtol=1e-9, atol=1e-12)


def test_bad_input_errors() -> None:
    with pytest.raises(ValueError, match="'lags' must be"):
        FittedAutoregressive(lags=0)
    with pytest.raises(RuntimeError, match="call fit"):
        FittedAutoregressive().predict(np.zeros((1, 12, 3, 3)), 2)
    with pytest.raises(ValueError, match="at least 1000 usable"):
        FittedAutoregressive().fit(np.zeros((20, 3, 3)))
    with pytest.raises(ValueError, match=r"shape \(T, rows, cols\)"):
        FittedAutoregressive().fit(np.zeros((20, 9)))
    with pytest.raises(TypeError, match="numpy array"):
        FittedAutoregressive().fit([[0.0]])
    model = FittedAutoregressive(lags=2).fit(_simulate(np.r_[0.5, 0.1, 0.1, 0.0], 200, (6, 6), 6))
    with pytest.raises(ValueError, match="at least lags=2 frames"):
        model.predict(np.zeros((1, 1, 6, 6)), 3)
    with pytest.raises(ValueError, match="'horizons' must be"):
        model.predict(np.zeros((1, 2, 6, 6)), 0)
