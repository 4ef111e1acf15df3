"""Never serve worse than persistence: per horizon, blend the model with the last frame.

The served prediction at horizon ``h`` is ``persistence + w_h (model - persistence)``, with
``w_h`` in [0, 1] fitted online on the last ``blend_window`` scored predictions (the frames
that followed each one, as :mod:`service.loop.live_accuracy` scores them). With
``d = model - persistence`` and ``e = truth - persistence`` summed over the electrodes and
the scored windows, the squared error of the blend, ``Σ (e - w d)²``, is a convex quadratic
in ``w`` whose minimum is at ``Σ d·e / Σ d·d``; over [0, 1] the minimum of a one-dimensional
convex quadratic is that point clipped to the interval, so the clipped least-squares weight is
the exact MSE-optimal convex combination (each horizon's frame depends on its own weight
only, so the horizons are fitted independently). ``w = 1`` serves the model unchanged, ``w =
0`` serves persistence: where the model is worse than repeating the last frame, the blend
converges to repeating it.

The live fitted AR baseline joins the blend as a third source (``[loop] blend_ar``): once the
daemon has fitted it on the recording's own recent past, each prediction also carries the AR
forecast ``a``, and the served frame is ``persistence + w_h d + v_h (a - persistence)`` with
``w_h, v_h >= 0`` and ``w_h + v_h <= 1``: a convex combination of model, AR and persistence.
The squared error is a convex quadratic in ``(w, v)``; its minimum over that triangle is at the
unconstrained minimum when it lies inside, else on an edge, where each edge is the
one-dimensional clipped case above; all are computed and the least error kept (ties go to the
model-and-persistence edge, so without AR forecasts the weights are exactly the two-way ones).
Why: on recordings from generators the model never saw, an AR fitted on the session itself
predicts the first frames better than the model (by about 1 dB at frame 1 in
``models/weights/README.md``), while the model wins further out; the blend takes each where
it is better, per horizon, from the live scores.

Errors are in the running model's normalised units, as the live scores are, so the weights
minimise the very MSE whose PSNR ``/status`` shows. The weights start at the model alone
(the model, whose training said it beats persistence) and move only once
``blend_min_windows`` predictions are scored; they start again from there when the model
changes (a hot swap or a reload), because they describe one model. The scheduler thread fits
and serves; ``/status`` and ``/metrics`` read from other threads, so the weights are swapped
under a lock.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Iterator
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from service.inference.scheduler import Prediction
from service.loop.live_accuracy import _RollingMean
from service.loop.settings import LoopSettings

_TERMS = 5
"""Per horizon and window, the sums the fit needs: d·e, a·e, d·d, a·a, d·a."""


@dataclasses.dataclass(frozen=True)
class BlendWeights:
    """Per horizon, the shares of the served frame: ``model`` and ``ar`` (each (horizons,),
    in [0, 1], summing to at most 1); persistence has the rest."""

    model: np.ndarray
    ar: np.ndarray


class Blend:
    """Per-horizon convex blend of the model, the live AR baseline and persistence, fitted on
    live scores.

    Parameters
    ----------
    settings
        ``blend_enabled``, ``blend_ar``, ``blend_window`` and ``blend_min_windows``.
    horizons
        Predicted frames per prediction.
    registry
        Where ``corticast_blend_weight{horizon}`` and ``corticast_blend_ar_weight{horizon}``
        are registered.
    """

    def __init__(
        self,
        settings: LoopSettings,
        *,
        horizons: int = 16,
        registry: CollectorRegistry | None = None,
    ) -> None:
        if horizons < 1:
            raise ValueError(f"'horizons' must be >= 1, got {horizons!r}")
        self.enabled = settings.blend_enabled
        self.wants_ar = settings.blend_enabled and settings.blend_ar
        """Whether predictions should come with the AR forecast (``serve``'s ``ar``)."""
        self.window = settings.blend_window
        self.min_windows = settings.blend_min_windows
        self._horizons = horizons
        # Mean over windows of each term in _TERMS, one row each.
        self._sums = _RollingMean(self.window, _TERMS * horizons)
        self._weights = _start(horizons)
        self._lock = threading.Lock()
        # Read at scrape time: setting 32 labelled gauges on every scored prediction would cost
        # the scheduler thread more than the fit itself.
        (registry or CollectorRegistry()).register(_WeightCollector(self))

    @property
    def weights(self) -> np.ndarray:
        """(horizons,) weights of the model now, in [0, 1] (a copy)."""
        with self._lock:
            return self._weights.model.copy()

    @property
    def shares(self) -> BlendWeights:
        """The model's and the AR baseline's weights now (copies)."""
        with self._lock:
            return BlendWeights(self._weights.model.copy(), self._weights.ar.copy())

    @property
    def windows(self) -> int:
        """Scored predictions the weights are fitted on now (at most ``window``)."""
        with self._lock:
            return len(self._sums)

    def observe(
        self,
        model: np.ndarray,
        persistence: np.ndarray,
        truth: np.ndarray,
        ar: np.ndarray | None = None,
        channels: np.ndarray | None = None,
    ) -> None:
        """Add one scored prediction: ``model``, ``truth`` and the AR forecast ``ar`` served
        beside it (horizons, rows, cols; None: there was none) and ``persistence`` (rows,
        cols), all in one set of units; refit the weights. Only the scored ``channels``
        ((rows, cols) or (horizons, rows, cols) bool; None: all) count: outside them every
        predictor is taken to equal persistence and the truth, so a dead or noisy channel
        neither errs nor weighs in the fit, as it is not scored."""
        if not self.enabled:
            return
        shape = (self._horizons, *persistence.shape)
        if model.shape != shape or truth.shape != shape or (ar is not None and ar.shape != shape):
            got = [x.shape for x in (model, truth, ar) if x is not None]
            raise ValueError(
                f"'model', 'truth' and 'ar' must each be ({self._horizons}, rows, cols) with "
                f"persistence's (rows, cols) {persistence.shape}, got {got}"
            )
        if channels is not None:
            model, truth = (np.where(channels, x, persistence) for x in (model, truth))
            ar = None if ar is None else np.where(channels, ar, persistence)
        d = (model - persistence).reshape(self._horizons, -1)
        e = (truth - persistence).reshape(self._horizons, -1)
        terms = np.zeros((_TERMS, self._horizons))
        # Each window's sums in its own precision (360 terms); across windows in float64.
        terms[0] = np.einsum("hk,hk->h", d, e)
        terms[2] = np.einsum("hk,hk->h", d, d)
        if ar is not None:  # none: as if the AR had said persistence, a = 0
            a = (ar - persistence).reshape(self._horizons, -1)
            terms[1] = np.einsum("hk,hk->h", a, e)
            terms[3] = np.einsum("hk,hk->h", a, a)
            terms[4] = np.einsum("hk,hk->h", d, a)
        with self._lock:
            self._sums.append(terms.ravel())
            if len(self._sums) < self.min_windows:
                return
            self._weights = _simplex_weights(*self._sums.mean().reshape(_TERMS, self._horizons))

    def serve(
        self, prediction: Prediction, ar: np.ndarray | None = None
    ) -> tuple[Prediction, BlendWeights]:
        """The prediction to serve and the shares it was blended with: per horizon,
        ``last input + w (model - last input) + v (ar - last input)``. Without ``ar``
        (horizons, rows, cols; not fitted yet, or not wanted) its share goes to persistence.
        While the model has every share (the start, or a model that beats both elsewhere) it
        is ``prediction`` itself."""
        shares = self.shares
        if ar is None:
            shares = BlendWeights(shares.model, np.zeros(self._horizons))
        blended = (shares.model < 1.0) | (shares.ar > 0.0)  # the rest keep the model's frames
        if not blended.any():
            return prediction, shares
        last = prediction.past[-1]
        future = prediction.future.copy()
        share = shares.model[blended, None, None].astype(np.float32)
        future[blended] = last + share * (future[blended] - last)
        if ar is not None:
            ar_share = shares.ar[blended, None, None].astype(np.float32)
            future[blended] += ar_share * (ar[blended] - last)
        return dataclasses.replace(prediction, future=future), shares

    def reset(self) -> None:
        """Forget every scored prediction and serve the model again (a new model runs)."""
        with self._lock:
            self._sums.clear()
            self._weights = _start(self._horizons)

    def status(self) -> dict[str, Any]:
        """What ``/status`` shows: the settings, the windows fitted on and the weights."""
        with self._lock:
            windows, weights = len(self._sums), self._weights
        return {
            "enabled": self.enabled,
            "ar": self.wants_ar,
            "window": self.window,
            "min_windows": self.min_windows,
            "windows": windows,
            "fitted": self.enabled and windows >= self.min_windows,
            "weights": weights.model.tolist(),
            "ar_weights": weights.ar.tolist(),
        }


class _WeightCollector(Collector):
    """``corticast_blend_weight{horizon}`` and ``corticast_blend_ar_weight{horizon}``: the
    blend's weights as they are when scraped."""

    def __init__(self, blend: Blend) -> None:
        self._blend = blend

    def collect(self) -> Iterator[GaugeMetricFamily]:
        shares = self._blend.shares
        for name, text, weights in (
            ("corticast_blend_weight",
             "Weight of the model in the served prediction per horizon", shares.model),
            ("corticast_blend_ar_weight",
             "Weight of the live AR baseline in the served prediction per horizon (persistence "
             "has what the model and it leave)", shares.ar),
        ):  # fmt: skip
            family = GaugeMetricFamily(name, text, labels=["horizon"])
            for k, weight in enumerate(weights):
                family.add_metric([str(k + 1)], float(weight))
            yield family


def _start(horizons: int) -> BlendWeights:
    """The model alone, until enough is scored."""
    return BlendWeights(np.ones(horizons), np.zeros(horizons))


def _simplex_weights(
    de: np.ndarray, ae: np.ndarray, dd: np.ndarray, aa: np.ndarray, da: np.ndarray
) -> BlendWeights:
    """Per horizon, the ``(w, v)`` with ``w, v >= 0``, ``w + v <= 1`` that minimise
    ``w² dd + v² aa + 2 w v da - 2 w de - 2 v ae`` (the blend's squared error less a constant).

    Candidates: the model-persistence edge (``v = 0``, the clipped two-way weight; 1 where the
    model equals persistence), the AR-persistence edge (``w = 0``), the model-AR edge (``w + v
    = 1``) and the unconstrained minimum where it lies inside; the first with the least error
    wins, so with no AR terms (all zero) the two-way weight is chosen exactly.
    """
    zero = np.zeros_like(de)
    # Each quotient only where its denominator is positive; elsewhere the default given.
    model_edge = np.clip(np.divide(de, dd, out=np.ones_like(de), where=dd > 0.0), 0.0, 1.0)
    ar_edge = np.clip(np.divide(ae, aa, out=zero.copy(), where=aa > 0.0), 0.0, 1.0)
    across = dd + aa - 2.0 * da
    mix = np.divide(de - ae + aa - da, across, out=np.ones_like(de), where=across > 0.0)
    mix = np.clip(mix, 0.0, 1.0)
    det = dd * aa - da * da
    w_in = np.divide(de * aa - ae * da, det, out=zero.copy(), where=det > 0.0)
    v_in = np.divide(ae * dd - de * da, det, out=zero.copy(), where=det > 0.0)
    inside = (det > 0.0) & (w_in >= 0.0) & (v_in >= 0.0) & (w_in + v_in <= 1.0)
    w = np.stack([model_edge, zero, mix, np.where(inside, w_in, model_edge)])
    v = np.stack([zero, ar_edge, 1.0 - mix, np.where(inside, v_in, zero)])
    error = w * w * dd + v * v * aa + 2.0 * w * v * da - 2.0 * w * de - 2.0 * v * ae
    best = np.argmin(error, axis=0)[None]
    return BlendWeights(
        np.take_along_axis(w, best, axis=0)[0], np.take_along_axis(v, best, axis=0)[0]
    )
