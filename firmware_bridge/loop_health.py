"""A snapshot of the closed loop's health, taken when a stimulation request is made."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from service.core.checks import check_int, check_number, check_type


@dataclass(frozen=True)
class LoopHealth:
    """What the interlocks need to know about the data a request was computed from.

    Parameters
    ----------
    newest_sample_age_s
        Age of the data the request was computed from, at the moment of the request: seconds
        from the newest measured frame the decision rests on (the prediction's newest input
        frame: its arrival, or its timestamp where that is earlier, ``Prediction.available_at``)
        to the request, both on the local clock (``pylsl.local_clock``). Not the stream's
        newest sample: every lag between the input and the request (inference, the wave
        stage's wait and work) counts, and the bridge adds its own waits (:meth:`aged_by`).
        NaN is accepted here and blocks every request, as does a negative age: the interlocks
        treat anything not provably fresh as stale.
    missing_frames
        Frames the stream never delivered (held placeholders) among every measured frame the
        decision used: the wave estimate's past frames and the predictor's input window,
        whichever reaches further back (48 frames by default).
    model_healthy
        Whether the predictor reports itself healthy (loaded, warm, output finite).
    artefact_frames
        Frames among those same measured frames that are blanked as a stimulation train's
        artefact, counted when the request is made: those blanked before the decision read them
        (held, and counted in ``missing_frames`` too) and those a train's marker blanked after
        (read as cortex: another tool's marker reaches the daemon a link's latency late).
    input_seq, input_timestamp
        Which data the decision rests on: the ring sequence number and the LSL timestamp (local
        clock) of its newest measured frame, or None where unknown. The interlocks do not judge
        them; they go to the audit log with the decision, so that an audit from outside the daemon
        (``bench.benchmarks.chaos.soak``) can link a delivered train to the frame it was decided on
        and measure that frame's age at delivery on the same clock.
    """

    newest_sample_age_s: float
    missing_frames: int
    model_healthy: bool
    artefact_frames: int = 0
    input_seq: int | None = None
    input_timestamp: float | None = None

    def __post_init__(self) -> None:
        check_number("newest_sample_age_s", self.newest_sample_age_s)
        check_int("missing_frames", self.missing_frames, 0)
        check_type("model_healthy", self.model_healthy, bool)
        check_int("artefact_frames", self.artefact_frames, 0)
        if self.input_seq is not None:
            check_int("input_seq", self.input_seq, 0)
            object.__setattr__(self, "input_seq", int(self.input_seq))
        if self.input_timestamp is not None:
            check_number("input_timestamp", self.input_timestamp)
            object.__setattr__(self, "input_timestamp", float(self.input_timestamp))
        object.__setattr__(self, "newest_sample_age_s", float(self.newest_sample_age_s))
        object.__setattr__(self, "missing_frames", int(self.missing_frames))
        object.__setattr__(self, "artefact_frames", int(self.artefact_frames))

    def aged_by(self, seconds: float) -> LoopHealth:
        """The same snapshot ``seconds`` later: the data are that much older."""
        return dataclasses.replace(self, newest_sample_age_s=self.newest_sample_age_s + seconds)

    def to_record(self) -> dict[str, float | int | bool | None]:
        """Plain JSON-able fields, as written to the audit log (NaN and inf as null)."""
        return {
            "newest_sample_age_s": _finite_or_none(self.newest_sample_age_s),
            "missing_frames": self.missing_frames,
            "model_healthy": self.model_healthy,
            "artefact_frames": self.artefact_frames,
            "input_seq": self.input_seq,
            "input_timestamp": _finite_or_none(self.input_timestamp),
        }


def _finite_or_none(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None
