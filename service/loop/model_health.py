"""Is the running model fit to trigger stimulation? Judged on its own live scores only.

A model is *unproven* until ``[loop] health_min_scored`` of its predictions have been scored
against the frames that followed them; then *healthy* while its live PSNR over all horizons is
not below persistence's by more than ``[loop] health_margin_db``, and *unhealthy* otherwise.
PSNR over all horizons is that of the MSE pooled over them (the README's definition), for the
model and for persistence alike: the mean of the per-horizon dB would call healthy a model
very good at the first horizons and far off at the last, whatever its MSE overall.
Only a healthy model passes the bridge's ``model`` interlock: a model just swapped in or
reloaded after a fault has no live record yet, and an unproven model must not stimulate.
The daemon and the replays judge through :meth:`ModelHealth.judge`, so both apply one rule.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from service.loop.live_accuracy import LiveAccuracy
from service.loop.settings import LoopSettings

HealthState = Literal["not running", "unproven", "healthy", "unhealthy"]


@dataclass(frozen=True)
class ModelHealth:
    """The judgement, with what it was based on.

    Attributes
    ----------
    state
        ``not running`` (no scheduler), ``unproven`` (too few predictions scored yet),
        ``healthy`` or ``unhealthy`` (its live PSNR against persistence's).
    scored, needed
        Predictions of this model scored so far (the rolling window's count) and how many
        must be before it is judged (``health_min_scored``).
    model_psnr_db, persistence_psnr_db
        Live PSNR over all horizons (of the MSE pooled over them), once anything is scored
        (None before).
    """

    state: HealthState
    scored: int
    needed: int
    model_psnr_db: float | None = None
    persistence_psnr_db: float | None = None

    @property
    def healthy(self) -> bool:
        """What the bridge's ``model`` interlock is told: only a proven, healthy model."""
        return self.state == "healthy"

    def describe(self) -> str:
        """One line for an operator (``/status``, refusals)."""
        if self.state == "not running":
            return "not running"
        if self.state == "unproven":
            return (
                f"unproven: {self.scored} of {self.needed} predictions scored; stimulation is "
                "blocked until the model has been scored on live data"
            )
        return (
            f"{self.state}: live PSNR over all horizons {self.model_psnr_db:.2f} dB against "
            f"persistence's {self.persistence_psnr_db:.2f} dB over the last {self.scored} "
            "scored predictions"
        )

    @classmethod
    def judge(
        cls, accuracy: LiveAccuracy | None, settings: LoopSettings, *, running: bool
    ) -> ModelHealth:
        """Judge the model ``accuracy`` scores (reset whenever the model changes).

        Parameters
        ----------
        accuracy
            Live scores of the running model's predictions (None: nothing scores them).
        settings
            ``health_min_scored`` and ``health_margin_db``.
        running
            Whether the model is running at all (its scheduler's thread is alive).
        """
        needed = settings.health_min_scored
        if not running or accuracy is None:
            return cls("not running", 0, needed)
        record = accuracy.record()
        scored = record.scored
        model, floor = (record.pooled_psnr.get(name) for name in ("model", "persistence"))
        if scored < needed:
            return cls("unproven", scored, needed, model, floor)
        state: HealthState = (
            "healthy" if model >= floor - settings.health_margin_db else "unhealthy"
        )
        return cls(state, scored, needed, model, floor)
