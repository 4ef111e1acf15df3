"""The stimulation marker stream: each train the stimulator may have delivered, on LSL.

The daemon pushes one marker per train it had sent (``outcome`` ``sent``, or ``failed``: sent,
with no valid answer) on a marker stream of its own, stamped on the LSL clock when its
STIMULATE left.
LabRecorder records it into the same XDF file as the rig's stream, as labs record their
stimulators' events, so a recording made in closed loop says where its stimulation artefacts
are: a replay blanks the same frames the daemon blanked (``blank_s`` from the marker's stamp),
and never scores the artefact as cortex. One JSON text per marker, a single string channel,
irregular rate: the form LSL marker streams take, which every LSL tool reads.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

STREAM_NAME = "corticast-stimulation"
STREAM_TYPE = "Markers"
FORMAT = "corticast.stimulation/1"


class StimulationMarker(BaseModel):
    """One train the stimulator may have delivered, as the marker stream carries it.

    The marker's LSL timestamp is when the STIMULATE left; ``blank_s`` after it is the end of
    what the daemon blanked (the train, then ``[loop] blank_after_train_ms``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    format: Literal["corticast.stimulation/1"] = FORMAT
    request_id: Annotated[int, Field(ge=1)]
    sequence: Annotated[int, Field(ge=0)] | None
    outcome: Literal["sent", "failed"]
    blank_s: Annotated[float, Field(ge=0, le=3600, allow_inf_nan=False)]
    channels: tuple[Annotated[int, Field(ge=0)], ...]
    amplitude_ua: Annotated[int, Field(ge=0)]
    phase_width_us: Annotated[int, Field(ge=0)]
    frequency_hz: Annotated[int, Field(ge=0)]
    train_duration_ms: Annotated[int, Field(ge=0)]

    def to_text(self) -> str:
        """The marker's one string sample."""
        return self.model_dump_json()

    @classmethod
    def from_text(cls, text: str) -> StimulationMarker:
        """A marker from its string sample; ValueError naming each field that is wrong."""
        return cls.model_validate_json(text)
