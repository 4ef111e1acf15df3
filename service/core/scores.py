"""The project's prediction scores on numpy arrays, and the only copy of each: MSE, PSNR, SSIM,
and the persistence and linear-extrapolation baselines.

Used by the daemon's live scores (``service.loop.live_accuracy``), offline evaluation
(``models.evaluation``), replays and the benchmarks, so that a number means the same wherever it
is printed. MSE is over pixels, PSNR ``10 log10(R² / MSE)`` of a pooled MSE with the one fixed
R of :data:`DATA_RANGE`, SSIM scikit-image's with a uniform ``SSIM_WIN_SIZE`` window, sample
covariance, K1 = 0.01, K2 = 0.03 and the same R, averaged over the interior of full windows;
scikit-image itself is a training-only dependency, so these run where only the daemon is
installed (``tests/service/core/test_scores.py`` checks them against it). ``models.evaluation``
scores with these too, on numpy copies of its batches, so an exported model is scored where
torch is not installed.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from scipy.ndimage import uniform_filter1d

DATA_RANGE = 2.0
"""R of every PSNR and SSIM the project reports, in normalised units: the one scale.

Frames are scored in a model's normalised units (per electrode ``(x - mean) / scale``, scale =
4 training standard deviations), where a model's tanh output spans [-1, 1]: R = 2 is that
span, ±4 standard deviations on every electrode. It is fixed, not measured (a peak-to-peak of
the scored targets), because the daemon's live scores see one window at a time and cannot
measure a peak-to-peak, and because a fixed R makes every tool's figure comparable: the same
model on the same windows gives the same dB in ``corticast evaluate``, a replay, the live
metrics and the benchmarks. Pooled over several sessions or families, PSNR is
``10 log10(R² / mean MSE)`` with the MSE weighted by windows."""
PSNR_SCALE = f"PSNR at R = {DATA_RANGE:g} normalised units"
"""The scale, as every table, plot and report states it in its caption."""

SSIM_WIN_SIZE = 7
"""Side of SSIM's uniform window (skimage's default). Odd, and on 18x20 frames it leaves a
12x14 interior of full windows over which SSIM is averaged; the 11x11 Gaussian window of
Wang et al. would leave only 8x10."""
_K1, _K2 = 0.01, 0.03
"""SSIM's stabilising constants (Wang et al. 2004; scikit-image's defaults)."""


def persistence(past: np.ndarray, horizons: int) -> np.ndarray:
    """(N, horizons, H, W): the last observed frame of each (N, T, H, W) past, repeated."""
    return np.repeat(past[:, -1:], horizons, axis=1)


def linear_extrapolation(past: np.ndarray, horizons: int) -> np.ndarray:
    """(N, horizons, H, W): ``x_t + k (x_t - x_{t-1})``, each electrode's last change continued."""
    last, before = past[:, -1:], past[:, -2:-1]
    steps = np.arange(1, horizons + 1, dtype=past.dtype).reshape(1, -1, 1, 1)
    return last + steps * (last - before)


def squared_error(
    prediction: np.ndarray, target: np.ndarray, channels: np.ndarray | None = None
) -> np.ndarray:
    """(N, T) mean squared error over the pixels of each predicted frame, in float64: over
    the ``channels`` only where given, (H, W) bool for every frame or (N, T, H, W) each
    frame's own (the values it measured: a value held over from an earlier frame is no
    truth). Each frame must keep at least one."""
    error = prediction.astype(np.float64) - target.astype(np.float64)
    if channels is None:
        return np.square(error).mean(axis=(2, 3))
    if channels.ndim == 2:
        return np.square(error[..., channels]).mean(axis=-1)
    return np.where(channels, np.square(error), 0.0).sum(axis=(2, 3)) / np.count_nonzero(
        channels, axis=(2, 3)
    )


def ssim(prediction: np.ndarray, target: np.ndarray) -> np.ndarray:
    """(N, T) SSIM of each predicted frame against its target, each frame scored on its own,
    with R = :data:`DATA_RANGE` in its constants.

    Frames must be at least ``SSIM_WIN_SIZE`` pixels on each side (18x20 leaves a 12x14
    interior of full windows, over which the SSIM map is averaged).
    """
    return ssims({"": prediction}, target)[""]


def ssims(predictions: Mapping[str, np.ndarray], target: np.ndarray) -> dict[str, np.ndarray]:
    """:func:`ssim` of each of ``predictions`` against the one ``target``, by name. The target's
    local means and variances are filtered once for all of them (a third of the work when
    four predictors are scored, as a replay's report does)."""
    count = SSIM_WIN_SIZE**2
    cov_norm = count / (count - 1)
    c1, c2 = (_K1 * DATA_RANGE) ** 2, (_K2 * DATA_RANGE) ** 2
    x = target.astype(np.float64)
    ux = _local_mean(x)
    vx = cov_norm * (_local_mean(x * x) - ux * ux)
    scored = {}
    for name, prediction in predictions.items():
        y = prediction.astype(np.float64)
        uy = _local_mean(y)
        vy = cov_norm * (_local_mean(y * y) - uy * uy)
        vxy = cov_norm * (_local_mean(x * y) - ux * uy)
        index = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
        scored[name] = index.mean(axis=(2, 3))
    return scored


def _local_mean(x: np.ndarray) -> np.ndarray:
    """(N, T, H - 6, W - 6): ``uniform_filter(x, (1, 1, 7, 7))`` on the interior of full
    windows, the only part SSIM averages. The same two passes (rows, then columns) give the
    same numbers; the column pass runs on the interior rows only, and nothing after it on the
    border."""
    pad = (SSIM_WIN_SIZE - 1) // 2
    rows = uniform_filter1d(x, SSIM_WIN_SIZE, axis=2)[:, :, pad:-pad]
    return uniform_filter1d(rows, SSIM_WIN_SIZE, axis=3)[:, :, :, pad:-pad]


def psnr_db(mse: np.ndarray | float) -> np.ndarray:
    """``10 log10(R² / MSE)`` in dB with R = :data:`DATA_RANGE`; an MSE of exactly 0 gives +inf."""
    with np.errstate(divide="ignore"):
        return 10.0 * np.log10(DATA_RANGE**2 / np.asarray(mse, dtype=np.float64))
