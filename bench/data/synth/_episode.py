"""What every scheduled episode shares: its time span, size, tapers and ground truth."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, ClassVar

import numpy as np

from service.core.checks import check_above, check_range

SPEED_RANGE_MPS = (0.05, 1.0)
"""Phase speeds the generator writes; cortical travelling waves span roughly this range."""

FREQUENCY_RANGE_HZ = (2.0, 40.0)
"""Temporal frequencies the generator writes; well below the rig's Nyquist (139 Hz)."""


@dataclass(frozen=True, kw_only=True)
class Episode:
    """One pattern laid on the background for ``[start_s, start_s + duration_s)``.

    Subclasses add the pattern's own parameters and say which ``PATTERN_LABELS`` entry they are.

    Parameters
    ----------
    start_s, duration_s
        Span in seconds from the start of the session. Frames inside it carry this episode's
        label (unless an overlapping episode is stronger there).
    amplitude_uv
        Peak amplitude in µV at full strength.
    ramp_s
        Raised-cosine onset and offset, inside the span, so episodes do not start with a step
        that no cortex produces and that would look like an artefact.
    """

    kind: ClassVar[str]
    """The episode's name in ``PATTERN_LABELS``."""
    is_seizure: ClassVar[bool] = False
    """Whether frames inside the episode carry the ground-truth seizure flag."""

    start_s: float
    duration_s: float
    amplitude_uv: float = 50.0
    ramp_s: float = 0.1

    def __post_init__(self) -> None:
        check_range(self._name("start_s"), self.start_s, 0.0)
        check_above(self._name("duration_s"), self.duration_s, 0.0)
        check_range(self._name("amplitude_uv"), self.amplitude_uv, 0.0)
        check_range(self._name("ramp_s"), self.ramp_s, 0.0, self.duration_s / 2)

    def _name(self, field: str) -> str:
        return f"{type(self).__name__}.{field}"

    @property
    def end_s(self) -> float:
        return self.start_s + self.duration_s

    @property
    def truth_velocity_mps(self) -> tuple[float, float]:
        """Ground-truth velocity ``(vx, vy)``; NaN for patterns without a single velocity."""
        return (math.nan, math.nan)

    @property
    def truth_speed_mps(self) -> float:
        """Ground-truth phase speed; NaN where it is not defined."""
        return math.nan

    def covers(self, t: np.ndarray) -> np.ndarray:
        """Boolean mask of the times inside the episode's half-open span."""
        return (t >= self.start_s) & (t < self.end_s)

    def envelope(self, t: np.ndarray) -> np.ndarray:
        """Onset/offset taper in [0, 1] at times ``t`` (zero outside the span)."""
        u = np.minimum(t - self.start_s, self.end_s - t)
        if self.ramp_s == 0:
            return np.where(u >= 0, 1.0, 0.0)
        return np.where(u >= 0, 0.5 - 0.5 * np.cos(np.pi * np.clip(u / self.ramp_s, 0, 1)), 0.0)

    def strength(self, t: np.ndarray) -> np.ndarray:
        """Nominal amplitude at times ``t``; decides which episode dominates an overlap."""
        return self.amplitude_uv * self.envelope(t)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready description: kind, span, and the remaining fields as ``params``."""
        params = asdict(self)
        head = {name: float(params.pop(name)) for name in ("start_s", "duration_s")}
        return {"kind": self.kind, **head, "params": params}
