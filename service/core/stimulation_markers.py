"""The stimulation marker stream: each train the stimulator may have delivered, on LSL.

The daemon pushes one marker per train it had sent (``outcome`` ``sent``, or ``failed``: sent,
with no valid answer or no verdict at all) on a marker stream of its own, stamped on the LSL
clock when its STIMULATE left.
LabRecorder records it into the same XDF file as the rig's stream, as labs record their
stimulators' events, so a recording made in closed loop says where its stimulation artefacts
are: a replay blanks the same frames the daemon blanked (``blank_s`` from the marker's stamp),
and never scores the artefact as cortex. One JSON text per marker, a single string channel,
irregular rate: the form LSL marker streams take, which every LSL tool reads.

The same stream also carries the trains other tools announced on the marker streams the daemon
reads (``[ingest] stimulation_marker_streams``), as :class:`AnnouncedTrain`: so the recording
says where every artefact the daemon blanked is, whoever delivered it, and a replay, training
and scoring need to know no other stream. Both forms carry ``format``, which tells them apart.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, TypeAdapter

from service.core.checks import repeated
from service.core.settings_model import QuoteFreeText

STREAM_NAME = "corticast-stimulation"
STREAM_TYPE = "Markers"
FORMAT = "corticast.stimulation/1"
ANNOUNCED_FORMAT = "corticast.stimulation.announced/1"
LONGEST_BLANK_KEY = "longest_blank_s"
"""The key, in a corticast marker stream's description, of the longest blank any of its markers
may say: a daemon that opens the stream blanks that long around the opening, for a train
announced just before, which it never hears of (``service.ingest.stimulation_marker_inlet``)."""
MAX_BLANK_S = 3600.0
"""The longest blank a marker may say."""
UNHEARD = "stream opened: a train it announced before is not known"
"""The announcement of an :class:`AnnouncedTrain` that is the blank around the daemon's opening
of a marker stream (``service.ingest.stimulation_marker_inlet``), not a train: recorded twice
per opening (the blank before it and the one after), so a replay blanks the same frames."""
MAX_ANNOUNCEMENT_CHARS = 200
"""The most of another tool's marker text an :class:`AnnouncedTrain` keeps."""
MAX_SOURCE_ID_CHARS = 200
"""The longest source id of a stream an :class:`AnnouncedTrain` keeps (LSL bounds none)."""

MarkerStreamName = Annotated[QuoteFreeText, Field(min_length=1)]
"""Another tool's marker stream, by its LSL name: matched inside an XPath predicate, where a
quote cannot be escaped."""


class MarkerStream(BaseModel):
    """Another tool's marker stream: by LSL name, and by source id where streams of one name
    come from several tools or rigs on the network (two rigs running the same protocol
    software), each of which the name alone would leave ambiguous. Written in a config as the
    name alone or as ``{name = "...", source_id = "..."}``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: MarkerStreamName
    source_id: Annotated[QuoteFreeText, Field(min_length=1)] | None = None

    def matches(self, name: str, source_id: str) -> bool:
        """Whether a stream of this ``name`` and ``source_id`` is this one."""
        return name == self.name and self.source_id in (None, source_id)

    def as_config(self) -> str | dict[str, str]:
        """As a config writes it."""
        if self.source_id is None:
            return self.name
        return {"name": self.name, "source_id": self.source_id}

    def __str__(self) -> str:
        if self.source_id is None:
            return self.name
        return f"{self.name} (source id {self.source_id})"


def _as_marker_stream(value: object) -> object:
    """A name alone is the stream of that name, whatever its source id."""
    return {"name": value} if isinstance(value, str) else value


def _distinct(streams: tuple[MarkerStream, ...]) -> tuple[MarkerStream, ...]:
    twice = sorted({str(stream) for stream in repeated(streams)})
    if twice:
        raise ValueError(f"stimulation marker streams listed twice: {twice}")
    alike = sorted(repeated([str(stream) for stream in streams]))
    if alike:
        # Their metrics, /status and log lines name each by its label: two would be one.
        raise ValueError(
            f"stimulation marker streams {alike} named alike: one is a name alone that reads "
            "as another's name and source id ('NAME (source id ID)'), by which the metrics and "
            "/status tell them apart"
        )
    alone = {stream.name for stream in streams if stream.source_id is None}
    both = sorted({s.name for s in streams if s.source_id is not None and s.name in alone})
    if both:
        raise ValueError(
            f"stimulation marker streams {both} listed by name alone and with a source id: by "
            "name alone it is every stream of that name; give each one's source id"
        )
    return streams


MarkerStreams = Annotated[
    tuple[Annotated[MarkerStream, BeforeValidator(_as_marker_stream)], ...],
    AfterValidator(_distinct),
]
"""Other tools' marker streams, each named once."""
MarkerBlankMs = Annotated[int, Field(ge=1, le=60_000)]
"""How long after another tool's marker its frames are blanked, in ms."""
DEFAULT_MARKER_BLANK_MS = 1100
"""The longest train the stimulator accepts (1000 ms) and ``[loop] blank_after_train_ms``'s
default recovery."""
MarkerLatencyMs = Annotated[int, Field(ge=0, le=10_000)]
"""How late after its timestamp another tool's marker may arrive, in ms."""
DEFAULT_MARKER_LATENCY_MS = 500
"""A marker pushed as its train starts arrives within milliseconds over LSL; one pushed when a
train of up to 400 ms has been delivered (a tool that announces what it did) arrives that late,
and the rest is the inlet's pull and a loaded host's scheduling."""
DEFAULT_MARKER_UNHEARD_S = 5.0
"""``[ingest] stimulation_marker_unheard_s``'s default: ten of the resolver's rounds (0.5 s)."""


OUTLET_SUFFIX = "-stimulation"
"""What a daemon's marker stream's source id ends in, after the rig stream it names."""
BY_NAME = "name="
"""What starts the source id of the marker stream of a daemon that reads its rig stream by name
alone (``[stream] source_id`` empty), before that stream's name."""


def outlet_source_id(rig_source_id: str, rig_name: str) -> str:
    """The source id of a daemon's marker stream, naming the rig stream it reads: so a
    recording of several rigs says whose trains it holds (``bench.data.session_io``), a
    recorder finds it again after a restart, and a daemon reading another's stream of the
    same name (``[ingest] stimulation_marker_streams``) tells its own apart. By the rig
    stream's source id; a daemon with none configured reads the one stream of its
    ``rig_name`` on the network (two are refused as ambiguous), and names it by that name,
    marked (:data:`BY_NAME`) apart from a rig's source id. With neither it names no stream,
    as every such stream did before rigs were named by name; a daemon's config refuses that
    (a rig found by type alone) while it pushes markers, rather than naming the rig by its
    type: one line (the rig's name) fixes it, and recordings and their reader keep two forms."""
    if rig_source_id:
        return f"{rig_source_id}{OUTLET_SUFFIX}"
    if rig_name:
        return f"{BY_NAME}{rig_name}{OUTLET_SUFFIX}"
    return OUTLET_SUFFIX


class StimulationMarker(BaseModel):
    """One train the stimulator may have delivered, as the marker stream carries it.

    The marker's LSL timestamp is when the STIMULATE left; ``blank_s`` after it is the end of
    what the daemon blanked (the train, then ``[loop] blank_after_train_ms``). A request the
    bridge raised on after its STIMULATE left (it disarmed; the train may have been delivered)
    has no verdict: its marker is ``failed`` with no ``request_id`` or ``sequence``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    format: Literal["corticast.stimulation/1"] = FORMAT
    request_id: Annotated[int, Field(ge=1)] | None
    sequence: Annotated[int, Field(ge=0)] | None
    outcome: Literal["sent", "failed"]
    blank_s: Annotated[float, Field(ge=0, le=MAX_BLANK_S, allow_inf_nan=False)]
    channels: tuple[Annotated[int, Field(ge=0)], ...]
    amplitude_ua: Annotated[int, Field(ge=0)]
    phase_width_us: Annotated[int, Field(ge=0)]
    frequency_hz: Annotated[int, Field(ge=0)]
    train_duration_ms: Annotated[int, Field(ge=0)]

    def to_text(self) -> str:
        """The marker's one string sample."""
        return self.model_dump_json()


class AnnouncedTrain(BaseModel):
    """A train another tool announced on one of the marker streams the daemon reads; its
    frames were blanked from the marker's stamp for ``blank_s``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    format: Literal["corticast.stimulation.announced/1"] = ANNOUNCED_FORMAT
    source: Annotated[str, Field(min_length=1, max_length=200)]
    """The marker stream it was announced on."""
    source_id: Annotated[str, Field(min_length=1, max_length=MAX_SOURCE_ID_CHARS)] | None = None
    """That stream's source id, which tells two streams of one name apart (None: it had
    none, one longer than kept, or the record was written before it was kept;
    :func:`recorded_source_id`)."""
    blank_s: Annotated[float, Field(ge=0, le=MAX_BLANK_S, allow_inf_nan=False)]
    announcement: Annotated[str, Field(max_length=MAX_ANNOUNCEMENT_CHARS)]
    """The tool's own marker (its text, or its numbers as text), cut to the first
    ``MAX_ANNOUNCEMENT_CHARS`` characters."""

    def to_text(self) -> str:
        """The marker's one string sample; without a source id, as before source ids were
        kept, so a reader of then (another rig's older daemon reading this one's stream, an
        older corticast reading a recording; extra fields refused) still reads it."""
        return self.model_dump_json(exclude_none=True)


Marker = Annotated[StimulationMarker | AnnouncedTrain, Field(discriminator="format")]
_MARKER = TypeAdapter(Marker)


def parse_marker(text: str) -> StimulationMarker | AnnouncedTrain:
    """Either form from its string sample (told apart by ``format``); ValueError naming each
    field that is wrong."""
    return _MARKER.validate_json(text)


def corticast_marker_in(text: str) -> StimulationMarker | AnnouncedTrain | None:
    """The corticast marker a sample of another tool's marker stream is (another daemon's),
    None for any other text. ValueError (naming each wrong field) for JSON that is none."""
    return parse_marker(text) if text.lstrip().startswith("{") else None


def recorded_source_id(source_id: str | None) -> str | None:
    """What a record of a train keeps of the source id of the stream it came on: None for
    none (empty) and for one longer than ``MAX_SOURCE_ID_CHARS``, which LSL allows: such a
    train is matched by its stream's name alone, as a record made before source ids were
    kept, rather than not recorded (nor blanked, where the daemon reads it)."""
    if not source_id or len(source_id) > MAX_SOURCE_ID_CHARS:
        return None
    return source_id


def as_announced(
    source: str,
    text: str,
    blank_s: float,
    marker: StimulationMarker | AnnouncedTrain | None,
    source_id: str | None = None,
) -> AnnouncedTrain:
    """The train a sample ``text`` of another tool's stream ``source`` (of ``source_id``, as
    :func:`recorded_source_id` keeps it) announces, as the daemon blanks it live and a replay
    of its recording does: an :class:`AnnouncedTrain` (another daemon's record) as it is,
    another daemon's own ``marker`` for its ``blank_s``, anything else for ``blank_s``."""
    if isinstance(marker, AnnouncedTrain):
        return marker
    return AnnouncedTrain(
        source=source,
        source_id=recorded_source_id(source_id),
        blank_s=blank_s if marker is None else marker.blank_s,
        announcement=text[:MAX_ANNOUNCEMENT_CHARS],
    )


def marker_from_fields(fields: dict) -> StimulationMarker | AnnouncedTrain:
    """Either form from its fields (as ``model_dump`` gave them; without ``format``, a
    :class:`StimulationMarker`'s); ValueError as above."""
    return _MARKER.validate_python({"format": FORMAT, **fields})
