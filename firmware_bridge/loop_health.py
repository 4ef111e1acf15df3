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
        Age of the data the request was computed from, at the moment of the request: seconds
        from the arrival of the newest measured frame the decision rests on (the prediction's
        newest input frame, stamped when the ingestor wrote it, ``Prediction.available_at``)
        to the request, both on the local clock (``pylsl.local_clock``). Not the stream's
        newest sample: every lag between the input and the request (inference, the wave
        stage's wait and work) counts. NaN is accepted here and blocks every request, as does
        a negative age: the interlocks treat anything not provably fresh as stale.
    missing_frames
        Frames the stream never delivered (held placeholders) among every measured frame the
        decision used: the wave estimate's past frames and the predictor's input window,
        whichever reaches further back (48 frames by default).
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
