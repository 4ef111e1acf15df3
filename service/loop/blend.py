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

Errors are in the running model's normalised units, as the live scores are, so the weights
minimise the very MSE whose PSNR ``/status`` shows. The weights start at 1 (the model, whose
training said it beats persistence) and move only once ``blend_min_windows`` predictions are
scored; they start again from 1 when the model changes (a hot swap or a reload), because they
describe one model. The scheduler thread fits and serves; ``/status`` and ``/metrics`` read
from other threads, so the weights are swapped under a lock.
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


class Blend:
    """Per-horizon convex blend of the model and persistence, fitted on live scores.

    Parameters
    ----------
    settings
        ``blend_enabled``, ``blend_window`` and ``blend_min_windows``.
    horizons
        Predicted frames per prediction.
    registry
        Where ``corticast_blend_weight{horizon}`` is registered.
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
        self.window = settings.blend_window
        self.min_windows = settings.blend_min_windows
        self._horizons = horizons
        self._cross = _RollingMean(self.window, horizons)  # mean over windows of Σ d·e
        self._power = _RollingMean(self.window, horizons)  # mean over windows of Σ d·d
        self._weights = np.ones(horizons)
        self._lock = threading.Lock()
        # Read at scrape time: setting 16 labelled gauges on every scored prediction would cost
        # the scheduler thread more than the fit itself.
        (registry or CollectorRegistry()).register(_WeightCollector(self))

    @property
    def weights(self) -> np.ndarray:
        """(horizons,) weights of the model now, in [0, 1] (a copy)."""
        with self._lock:
            return self._weights.copy()

    @property
    def windows(self) -> int:
        """Scored predictions the weights are fitted on now (at most ``window``)."""
        with self._lock:
            return len(self._cross)

    def observe(self, model: np.ndarray, persistence: np.ndarray, truth: np.ndarray) -> None:
        """Add one scored prediction: ``model`` and ``truth`` (horizons, rows, cols) and
        ``persistence`` (rows, cols), all in one set of units; refit the weights."""
        if not self.enabled:
            return
        if model.shape != truth.shape or model.shape[0] != self._horizons:
            raise ValueError(
                f"'model' and 'truth' must both be ({self._horizons}, rows, cols), got "
                f"{model.shape} and {truth.shape}"
            )
        d = (model - persistence).reshape(self._horizons, -1)
        e = (truth - persistence).reshape(self._horizons, -1)
        # Each window's sums in its own precision (360 terms); across windows in float64.
        cross = np.einsum("hk,hk->h", d, e).astype(np.float64)
        power = np.einsum("hk,hk->h", d, d).astype(np.float64)
        with self._lock:
            self._cross.append(cross)
            self._power.append(power)
            if len(self._cross) < self.min_windows:
                return
            self._weights = _clipped_weights(self._cross.mean(), self._power.mean())

    def serve(self, prediction: Prediction) -> tuple[Prediction, np.ndarray]:
        """The prediction to serve and the weights it was blended with: per horizon,
        ``last input + w (model - last input)``. While every weight is 1 (the start, or a model
        that beats persistence everywhere) it is ``prediction`` itself."""
        weights = self.weights
        blended = weights < 1.0  # the horizons left at 1 keep the model's frames bit for bit
        if not blended.any():
            return prediction, weights
        last = prediction.past[-1]
        future = prediction.future.copy()
        share = weights[blended, None, None].astype(np.float32)
        future[blended] = last + share * (future[blended] - last)
        return dataclasses.replace(prediction, future=future), weights

    def reset(self) -> None:
        """Forget every scored prediction and serve the model again (a new model runs)."""
        with self._lock:
            self._cross.clear()
            self._power.clear()
            self._weights = np.ones(self._horizons)

    def status(self) -> dict[str, Any]:
        """What ``/status`` shows: the settings, the windows fitted on and the weights."""
        with self._lock:
            windows, weights = len(self._cross), self._weights.copy()
        return {
            "enabled": self.enabled,
            "window": self.window,
            "min_windows": self.min_windows,
            "windows": windows,
            "fitted": self.enabled and windows >= self.min_windows,
            "weights": weights.tolist(),
        }


class _WeightCollector(Collector):
    """``corticast_blend_weight{horizon}``: the blend's weights as they are when scraped."""

    def __init__(self, blend: Blend) -> None:
        self._blend = blend

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "corticast_blend_weight",
            "Weight of the model in the served prediction per horizon (1 - it: persistence)",
            labels=["horizon"],
        )
        for k, weight in enumerate(self._blend.weights):
            family.add_metric([str(k + 1)], float(weight))
        yield family


def _clipped_weights(cross: np.ndarray, power: np.ndarray) -> np.ndarray:
    """``clip(Σ d·e / Σ d·d, 0, 1)`` per horizon; 1 where the model equals persistence (any
    weight serves the same frame then, and 1 keeps the model)."""
    weights = np.divide(cross, power, out=np.ones_like(cross), where=power > 0.0)
    return np.minimum(np.maximum(weights, 0.0, out=weights), 1.0, out=weights)
