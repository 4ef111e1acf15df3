"""The fitted linear baseline: a spatial autoregressive predictor shared by every electrode.

What a careful user would try before a deep network: each electrode's next frame as a linear
function of its own last ``lags`` frames and of the mean of its 4 neighbours' last frame, plus
a bias, one coefficient set shared by all electrodes (``lags + 2`` parameters, 13 at the
default). Fitted by least squares on measured frames; forecasts roll the one-step model
forward, feeding its own predictions back. Used by offline evaluation, replays, the model
comparison and the daemon's live scores, so ``"ar"`` means the same model everywhere.

Hand-written because no library fits it: statsmodels' VAR would estimate a 360x360 matrix per
lag (and overfit a session); its AutoReg fits one series at a time. Here the coefficients are
shared across the grid, which 13 numbers estimated from millions of (electrode, frame) rows
pin down well.
"""

from __future__ import annotations

import functools

import numpy as np

from service.core.checks import check_int

DEFAULT_LAGS = 11
"""Own lags; with the neighbour term and the bias the model has 13 parameters."""
_CHUNK = 64
"""Frames per block of the normal equations: the block's regressors (2.4 MB at 13 parameters
on 18x20) stay in cache, and their buffers are made once per fit and reused block by block;
blocks of 256 made 9.6 MB afresh each time, and fitting took 1.2x as long."""


class FittedAutoregressive:
    """Shared-coefficient spatial AR model on a (rows, cols) electrode grid.

    Parameters
    ----------
    lags
        Own past frames each electrode is predicted from (>= 1).

    Missing frames and dead channels are NaN: a training row (one electrode at one frame) is
    used only if its target, its ``lags`` own values and at least one neighbour are finite, so
    gaps and dead electrodes drop out instead of being filled. Border electrodes average the
    neighbours they have.
    """

    def __init__(self, lags: int = DEFAULT_LAGS) -> None:
        check_int("lags", lags, 1)
        self.lags = lags
        self._coef: np.ndarray | None = None

    @property
    def coefficients(self) -> np.ndarray:
        """(lags + 2,) float64: own lags (newest first), neighbour mean, bias."""
        if self._coef is None:
            raise RuntimeError("the model is not fitted; call fit(frames) first")
        return self._coef.copy()

    @property
    def fitted(self) -> bool:
        """Whether :meth:`fit` has succeeded."""
        return self._coef is not None

    def fit(self, frames: np.ndarray, *, min_rows: int = 1000) -> FittedAutoregressive:
        """Fit by least squares on ``frames`` (T, rows, cols), NaN where not measured.

        Raises ValueError when fewer than ``min_rows`` usable (electrode, frame) rows remain
        (too short a recording, or too much of it missing).
        """
        frames = _check_grid("frames", frames, ndim=3)
        n_params = self.lags + 2
        gram = np.zeros((n_params, n_params))
        rhs = np.zeros(n_params)
        rows = 0
        blocks = np.empty((self.lags + _CHUNK, *frames.shape[1:]))
        regressors = np.empty((n_params, _CHUNK, *frames.shape[1:]))
        # Block b predicts frames [start, stop) from frames [start - lags, stop - 1).
        for start in range(self.lags, len(frames), _CHUNK):
            stop = min(start + _CHUNK, len(frames))
            block = blocks[: stop - start + self.lags]
            block[...] = frames[start - self.lags : stop]
            x = self._regressors(block, regressors[:, : stop - start])
            y = block[self.lags :].reshape(-1)
            # A sum is finite only if every term is: one pass finds the rows with a gap. They
            # are zeroed rather than cut out, which would copy every row that is kept.
            unusable = np.flatnonzero(~(np.isfinite(y) & np.isfinite(x.sum(axis=0))))
            x[:, unusable] = 0.0
            y[unusable] = 0.0
            gram += x @ x.T
            rhs += x @ y
            rows += len(y) - len(unusable)
        if rows < max(min_rows, n_params):
            raise ValueError(
                f"'frames' must hold at least {max(min_rows, n_params)} usable (electrode, "
                f"frame) rows to fit {n_params} parameters (each needs {self.lags + 1} "
                f"consecutive finite frames), got {rows} from shape {frames.shape}"
            )
        # lstsq rather than solve: a constant recording makes the normal equations singular.
        self._coef = np.linalg.lstsq(gram, rhs, rcond=None)[0]
        return self

    def predict(self, past: np.ndarray, horizons: int) -> np.ndarray:
        """(N, horizons, rows, cols) forecasts from (N, T >= lags, rows, cols) pasts.

        A non-finite past value takes its electrode's newest finite value in the window
        (a missing frame held); an electrode with none (a dead channel) is predicted as NaN
        and left out of its neighbours' means.
        """
        coef = self.coefficients
        check_int("horizons", horizons, 1)
        past = _check_grid("past", past, ndim=4)
        if past.shape[1] < self.lags:
            raise ValueError(
                f"'past' must hold at least lags={self.lags} frames, got {past.shape[1]}"
            )
        n, _, rows, cols = past.shape
        size, lags = rows * cols, self.lags
        history = past[:, -lags:].astype(np.float64)
        if not np.isfinite(history).all():
            history = _hold_last(history)
        history = history.reshape(n, lags, size)
        # Electrodes flattened, one always-zero slot after them: a neighbour index past the
        # border (or a dead neighbour, held at 0) adds nothing. The loop below runs once per
        # horizon; few, whole-array steps keep one window's forecast cheap enough to serve.
        alive = np.isfinite(history[:, -1])
        neighbours = _neighbour_index(rows, cols)
        live = np.zeros((n, size + 1))
        live[:, :size] = alive
        with np.errstate(divide="ignore"):
            around = coef[-2] / live.take(neighbours, axis=1).sum(axis=-1)
        around[np.isinf(around)] = np.nan  # no live neighbour: no forecast
        frames = np.zeros((n, lags + horizons, size + 1))  # oldest first, then the forecasts
        frames[:, :lags, :size] = np.where(alive[:, None], history, 0.0)
        own = np.ascontiguousarray(coef[:lags][::-1])  # oldest lag first, as in ``frames``
        for k in range(horizons):
            step = np.matmul(own, frames[:, k : k + lags, :size])
            step += frames[:, lags - 1 + k].take(neighbours, axis=1).sum(axis=-1) * around
            step += coef[-1]
            step *= alive
            frames[:, lags + k, :size] = step
        out = frames[:, lags:, :size]
        out[~np.broadcast_to(alive[:, None], out.shape)] = np.nan  # dead electrodes
        return out.reshape(n, horizons, rows, cols).astype(past.dtype)

    def _regressors(self, block: np.ndarray, x: np.ndarray) -> np.ndarray:
        """(lags + 2, (T - lags) * rows * cols) regressors predicting each frame of ``block``
        (T, rows, cols) from ``lags`` on, written into ``x`` (lags + 2, T - lags, rows, cols),
        one row per regressor (own values newest first, neighbour mean, 1): each row is one
        contiguous copy, and the normal equations are then two products with no transpose to
        copy."""
        lags = self.lags
        t = len(block) - lags
        for j in range(lags):
            x[j] = block[lags - 1 - j : lags - 1 - j + t]
        x[lags] = _neighbour_mean(block[lags - 1 : lags - 1 + t])
        x[lags + 1] = 1.0
        return x.reshape(lags + 2, -1)


def served_forecast(model: FittedAutoregressive, past: np.ndarray, horizons: int) -> np.ndarray:
    """One window's forecast, made safe to serve: (horizons, rows, cols) float32 from a
    (T >= lags, rows, cols) past in normalised units (scale = 4 standard deviations).

    A 13-coefficient fit on seconds of data can be unstable (a root outside the unit circle),
    and rolled forward 16 frames it can then grow far past anything measured; a served frame
    feeds the wave stage and the stimulation policy. So each value is clipped to the largest
    magnitude of the window's own past, and never below 1 (the ±4 sd a model's output spans).
    An electrode it cannot forecast (dead in the whole past) keeps its last value.
    """
    forecast = model.predict(past[None], horizons)[0]
    recent = np.abs(past[-model.lags :])
    bound = max(1.0, float(recent.max(initial=0.0, where=np.isfinite(recent))))
    np.clip(forecast, -bound, bound, out=forecast)
    return np.where(np.isfinite(forecast), forecast, past[-1]).astype(np.float32)


@functools.lru_cache(maxsize=4)
def _neighbour_index(rows: int, cols: int) -> np.ndarray:
    """(rows * cols, 4) flat indices of each electrode's 4-neighbours; ``rows * cols`` (one
    past the last electrode) where the grid ends."""
    size = rows * cols
    flat = np.arange(size).reshape(rows, cols)
    index = np.full((rows, cols, 4), size)
    index[1:, :, 0], index[:-1, :, 1] = flat[:-1], flat[1:]
    index[:, 1:, 2], index[:, :-1, 3] = flat[:, :-1], flat[:, 1:]
    index.flags.writeable = False
    return index.reshape(size, 4)


def _neighbour_mean(frames: np.ndarray) -> np.ndarray:
    """Mean of each electrode's finite 4-neighbours over the last two axes; NaN if none (the
    same neighbours as :meth:`FittedAutoregressive.predict`'s, from one index)."""
    *lead, rows, cols = frames.shape
    size = rows * cols
    flat = np.full((*lead, size + 1), np.nan)  # the slot past the grid: no neighbour
    flat[..., :size] = frames.reshape(*lead, size)
    around = flat[..., _neighbour_index(rows, cols)]
    finite = np.isfinite(around)
    count = finite.sum(axis=-1)
    total = np.where(finite, around, 0.0).sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / count, np.nan).reshape(*lead, rows, cols)


def _hold_last(past: np.ndarray) -> np.ndarray:
    """(N, T, rows, cols) with each non-finite value replaced by the newest finite one before
    it in the window, or after it when there is none before; all-NaN electrodes stay NaN."""
    finite = np.isfinite(past)
    index = np.where(finite, np.arange(past.shape[1]).reshape(1, -1, 1, 1), -1)
    index = np.maximum.accumulate(index, axis=1)
    first = np.argmax(finite, axis=1)[:, None]
    index = np.where(index < 0, first, index)
    return np.take_along_axis(past, index, axis=1)


def _check_grid(name: str, frames: object, *, ndim: int) -> np.ndarray:
    """A real array of ``ndim`` axes whose last two (the grid) are at least 1x1."""
    if not isinstance(frames, np.ndarray):
        raise TypeError(f"'{name}' must be a numpy array, got {type(frames).__name__}")
    if frames.ndim != ndim or min(frames.shape) < 1 or not np.issubdtype(frames.dtype, np.floating):
        axes = "(T, rows, cols)" if ndim == 3 else "(N, T, rows, cols)"
        raise ValueError(
            f"'{name}' must be a non-empty float array of shape {axes}, "
            f"got {frames.dtype} {frames.shape}"
        )
    return frames
