"""A snapshot of the closed loop's health, taken when a stimulation request is made."""

from __future__ import annotations

import math
from dataclasses import dataclass

from service._checks import check_int, check_number, check_type


@dataclass(frozen=True)
class LoopHealth:
    """What the interlocks need to know about the data a request was computed from.

    Parameters
    ----------
    newest_sample_age_s
        Seconds since the newest sample arrived. NaN (no sample yet) is accepted here and
        blocks every request: the interlocks treat anything not provably fresh as stale.
    missing_frames
        Frames missing (gaps in the stream) within the window the prediction used.
    model_healthy
        Whether the predictor reports itself healthy (loaded, warm, output finite).
    """

    newest_sample_age_s: float
    missing_frames: int
    model_healthy: bool

    def __post_init__(self) -> None:
        check_number("newest_sample_age_s", self.newest_sample_age_s)
        check_int("missing_frames", self.missing_frames, 0)
        check_type("model_healthy", self.model_healthy, bool)
        object.__setattr__(self, "newest_sample_age_s", float(self.newest_sample_age_s))
        object.__setattr__(self, "missing_frames", int(self.missing_frames))

    def to_record(self) -> dict[str, float | int | bool]:
        """Plain JSON-able fields, as written to the audit log (NaN and inf as null)."""
        age = self.newest_sample_age_s
        return {
            "newest_sample_age_s": age if math.isfinite(age) else None,
            "missing_frames": self.missing_frames,
            "model_healthy": self.model_healthy,
        }
