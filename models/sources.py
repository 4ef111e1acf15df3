"""Where training and evaluation data come from: recorded session files or generated sessions.

A data spec is a string a user types after ``--data``: a session file (``.xdf``, ``.xdfz``,
``.nwb``), or ``synthetic:SEEDS@SECONDS`` for sessions from :mod:`bench.data.synth` with the
realistic artefacts the simulated rig plays (``synthetic:100-109@60`` is ten 60-s sessions,
seeds 100 to 109; ``synthetic:7@30`` one; ``synthetic:1,4,9@60`` three), or
``synthetic-mix:SEEDS@SECONDS`` for sessions of the randomised generator mixture
(:mod:`bench.data.synth.mixture`), optionally restricted by generator family:
``synthetic-mix:0-99@60/without=ou`` leaves the ``ou`` family out (each seed draws its family
from the others), ``synthetic-mix:0-9@60/only=ou`` keeps only it; several families are joined
by commas (``/without=ou,field``).

A recording made while another tool stimulated the array, its trains announced on an LSL
marker stream of its own (as the daemon's ``[ingest] stimulation_marker_streams`` reads them
live), names that stream after the file: ``session.xdf::markers=pulser`` (several joined by
commas; ``pulser@rig-2`` the one of that source id, where two of one name are in the file;
a ``,``, ``@`` or ``%`` in a name or source id percent-encoded: ``%2C``, ``%40``, ``%25``),
each marker's frames blanked for 1100 ms or ``::blank_ms=MS`` (a folder named with
``::`` is read as such: :func:`split_file`). A recording of several electrode streams (raw and
filtered, two rigs) names the one to read, ``session.xdf::stream=raw`` (an XDF stream's name,
or an NWB ElectricalSeries'), and an XDF stream of another LSL type than ``ECoG`` (an mne-lsl
player's ``eeg``) its type, ``::type=eeg``, as ``replay`` takes ``--stream-name`` and ``[stream]
type``; both percent-decoded as marker names are, so a ``::`` in one is written ``%3A%3A``. A
recording of another electrode array than the rig's that does not record which (an NWB file of
another writer: its electrodes' row and column but no pitch) names it, ``::grid=16x16@0.4mm``
(rows x columns @ pitch in mm); a file that records another array than the one named is refused.
The spec, with them, is what a run records as its data, so a held-out check reloads the same
frames. A spec that is not well formed is an error naming what is wrong, never silently read
as a file name.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated
from urllib.parse import unquote

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from bench.data.session import Session
from bench.data.stimulation import without_artefact
from service.core.grid import GRID_FORMAT, ElectrodeGrid, parse_grid
from service.core.stimulation_markers import (
    DEFAULT_MARKER_BLANK_MS,
    MarkerBlankMs,
    MarkerStream,
    MarkerStreams,
)

SYNTHETIC_PREFIX = "synthetic:"
MIXTURE_PREFIX = "synthetic-mix:"
_SEEDS_AT_SECONDS = r"(?P<seeds>[0-9,\-]+)@(?P<seconds>[0-9]+(\.[0-9]*)?)"
_SYNTHETIC = re.compile(rf"^synthetic:{_SEEDS_AT_SECONDS}$")
_MIXTURE = re.compile(rf"^synthetic-mix:{_SEEDS_AT_SECONDS}(/(?P<filter>.*))?$")
_FILTERS = ("without", "only")
_SEED_ITEM = re.compile(r"^(?P<lo>[0-9]+)(-(?P<hi>[0-9]+))?$")
FILE_OPTIONS = "::"
"""What joins a session file to its options (``session.xdf::markers=pulser``)."""
_OPTIONS = (
    f"markers=NAME[@SOURCE_ID][,...], blank_ms=MS, stream=NAME, type=TYPE, grid={GRID_FORMAT}"
)
"""What a file spec may say after its name, as a refusal lists it."""
_NAMES = ("stream", "type")
"""Options whose value is a name, percent-decoded as a marker stream's is."""
MARKER_SOURCE_ID = "@"
"""What joins a marker stream's name to its source id (``::markers=pulser@rig-2``)."""
MAX_SYNTHETIC_SESSIONS = 1000
"""More generated sessions than this in one spec is surely a typo (``1-10000``)."""


def load_sessions(specs: Sequence[str]) -> list[Session]:
    """Every session the specs name, in order, as training and scoring take them: the frames a
    recorded stimulation train's artefact is on left out, as a gap
    (``bench.data.stimulation.without_artefact``), so no model learns or is scored on them. A
    replay reads its session with :func:`load_spec` instead, keeping those frames to blank
    them as the daemon did.

    Raises
    ------
    ValueError
        If ``specs`` is empty, a spec is malformed, or two name the same recording.
    OSError, bench.data.session_io.SessionFileError
        If a file cannot be read.
    """
    if not specs:
        raise ValueError(
            "'--data' must name at least one session file, synthetic:SEEDS@SECONDS or "
            "synthetic-mix:SEEDS@SECONDS"
        )
    check_each_recording_once(specs)
    sessions: list[Session] = []
    for spec in specs:
        sessions.extend(without_artefact(session) for session in load_spec(spec))
    return sessions


def check_each_recording_once(
    specs: Sequence[str], consequence: str = "it would count twice"
) -> None:
    """Raise ValueError, ending in ``consequence``, where two specs name one recording (by two
    spellings of its path, or with and without options) or one generated session
    (:func:`_generated_sessions`): it would count twice in training and scoring, as a seed
    named twice would (:func:`_seeds`)."""
    named: dict[Path, str] = {}
    generated: dict[tuple, str] = {}
    for spec in specs:
        if is_generated(spec):
            for session in _generated_sessions(spec):
                if session in generated:
                    raise ValueError(
                        f"the data names the generated session {_described(session)} twice "
                        f"({generated[session]!r} and {spec!r}): {consequence}"
                    )
                generated[session] = spec
            continue
        path = Path(split_file(spec)[0]).resolve()
        if path in named:
            raise ValueError(
                f"the data names the recording {str(path)!r} twice ({named[path]!r} and "
                f"{spec!r}): {consequence}"
            )
        named[path] = spec


def _generated_sessions(spec: str) -> list[tuple]:
    """What identifies each session a generated spec names: (kind, seed, seconds) and, for the
    mixture, the family the seed draws from the families allowed (``bench.data.synth.mixture``:
    the same seed and family give the same session whatever else was allowed)."""
    if spec.startswith(MIXTURE_PREFIX):
        from bench.data.synth.mixture import family_of

        seeds, seconds, families = parse_mixture(spec)
        return [("synthetic-mix", s, seconds, family_of(s, families)) for s in seeds]
    seeds, seconds = parse_synthetic(spec)
    return [("synthetic", seed, seconds) for seed in seeds]


def generated_in_common(specs: Sequence[str], others: Sequence[str]) -> list[str]:
    """The generated sessions of ``specs`` drawn from the same generator, seed and family as
    one ``others`` names ("synthetic-mix seed 105 (ou)"), whatever their lengths: a longer
    session of a seed starts with the draws a shorter one makes. Files are left out."""

    def draws(spec: str) -> list[tuple]:
        if not is_generated(spec):
            return []
        return [(kind, seed, *family) for kind, seed, _, *family in _generated_sessions(spec)]

    theirs = {draw for spec in others for draw in draws(spec)}
    return [
        f"{kind} seed {seed}" + "".join(f" ({name})" for name in family)
        for spec in specs
        for kind, seed, *family in draws(spec)
        if (kind, seed, *family) in theirs
    ]


def _described(session: tuple) -> str:
    """A generated session's identity (:func:`_generated_sessions`) as a user reads it."""
    kind, seed, seconds, *family = session
    return f"{kind} seed {seed} of {seconds:g} s" + "".join(f" ({name})" for name in family)


def artefact_left_out(sessions: Sequence[Session]) -> list[str]:
    """One line per session :func:`load_sessions` left stimulation artefact out of, naming it
    and how much: a recorded marker may blank up to an hour, and a command that trains on or
    scores a recording must say what of it it did not use."""
    lines = []
    for session in sessions:
        left = session.info.get("frames_on_artefact", 0)
        around = session.info.get("frames_around_openings", 0)
        source, rate = session.info.get("source", "a session"), session.sample_rate_hz
        if around:
            lines.append(
                f"{source}: {left} frames ({left / rate:.1f} s) left out: {left - around} on "
                f"stimulation artefact, {around} blanked around a marker stream's opening (a "
                f"train announced before it was read is not known)"
            )
        elif left:
            lines.append(
                f"{source}: {left} frames ({left / rate:.1f} s) on stimulation artefact left out"
            )
    return lines


def is_generated(spec: str) -> bool:
    """Whether ``spec`` names generated sessions rather than a file."""
    return spec.startswith((SYNTHETIC_PREFIX, MIXTURE_PREFIX))


def load_spec(spec: str) -> list[Session]:
    """The sessions one spec names (one for a file, one per seed for a generated spec)."""
    if spec.startswith(MIXTURE_PREFIX):
        from bench.data.synth import generate_mixture_session

        seeds, seconds, families = parse_mixture(spec)
        return [generate_mixture_session(seed, seconds, families) for seed in seeds]
    if spec.startswith(SYNTHETIC_PREFIX):
        from bench.data.synth import Artefacts, SynthConfig, generate_session

        seeds, seconds = parse_synthetic(spec)
        return [
            generate_session(
                SynthConfig(duration_s=seconds, seed=seed, artefacts=Artefacts.realistic())
            )
            for seed in seeds
        ]
    from bench.data.session_io import check_rate_kept, read_session

    path, options = parse_file(spec)
    if not path.is_file():  # says which: a mistyped path, or not a file at all
        problem = "is not a file" if path.exists() else "does not exist"
        raise FileNotFoundError(
            f"data {str(path)!r} {problem}: give a session file (.xdf, .nwb), "
            f"synthetic:SEEDS@SECONDS (e.g. synthetic:100-109@60) or synthetic-mix:SEEDS@SECONDS"
        )
    options = options or FileOptions()
    session = read_session(
        path,
        options.marker_streams(),
        stream_name=options.stream,
        stream_type=options.type,
        grid=options.grid,
    )
    check_rate_kept(str(path), session)  # as replay and rig --source check it
    session.info.setdefault("source", str(path))  # named in what is said about its frames
    return [session]


class FileOptions(BaseModel):
    """What a file spec says after its name (``::markers=pulser,other@rig-2::blank_ms=500``,
    ``::stream=raw::type=eeg``, ``::grid=16x16@0.4mm``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    markers: MarkerStreams = ()
    """Other tools' LSL marker streams in the recording: each marker a train delivered."""
    blank_ms: MarkerBlankMs = DEFAULT_MARKER_BLANK_MS
    """How long after each of their markers the frames are artefact."""
    stream: Annotated[str, Field(min_length=1)] | None = None
    """The electrode stream's name (XDF) or ElectricalSeries' (NWB), where a file holds
    several; None: the file's only one."""
    type: Annotated[str, Field(min_length=1)] | None = None
    """The XDF electrode stream's LSL type; None: ``ECoG``. An NWB file has no such type."""
    grid: ElectrodeGrid | None = None
    """The electrode array the recording is on; None: the one the file records, else the
    rig's."""

    @model_validator(mode="after")
    def _blank_ms_blanks_markers(self) -> FileOptions:
        """``blank_ms`` alone would blank nothing: surely the markers were forgotten."""
        if "blank_ms" in self.model_fields_set and not self.markers:
            raise ValueError(
                "blank_ms is how long after each marker of the 'markers' streams frames are "
                "left out; without markers=NAME it blanks nothing"
            )
        return self

    def marker_streams(self) -> dict[MarkerStream, float]:
        """Stream -> seconds blanked, as ``bench.data.session_io.read_xdf`` takes them."""
        return dict.fromkeys(self.markers, self.blank_ms / 1000)


def recorded_spec(spec: str) -> str:
    """``spec`` as a run records it: a file's name made absolute (options kept as typed), so
    that an export or a resume run from another folder reloads the same file; a generated
    spec as it is."""
    if is_generated(spec):
        return spec
    name, items = split_file(spec)
    return FILE_OPTIONS.join([str(Path(name).expanduser().resolve()), *items])


def split_file(spec: str) -> tuple[str, list[str]]:
    """The file a spec names and the options written after it, unchecked: the file is the
    longest part of the spec before a ``::`` that is a file (a folder may be named with
    ``::``), or, where none is, the part before the first."""
    parts = spec.split(FILE_OPTIONS)
    cut = next((k for k in range(len(parts), 1, -1) if _is_file(FILE_OPTIONS.join(parts[:k]))), 1)
    return FILE_OPTIONS.join(parts[:cut]), parts[cut:]


def _is_file(name: str) -> bool:
    """Whether ``name`` is a file; False where it cannot be one (a name longer than the
    system allows, as a spec with its options may be), so that its options are judged."""
    try:
        return Path(name).is_file()
    except OSError:
        return False


def parse_file(spec: str) -> tuple[Path, FileOptions | None]:
    """The file a spec names and its options (None: none)."""
    name, items = split_file(spec)
    if not items:
        return Path(name), None
    fields: dict[str, object] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or key in fields:
            raise ValueError(
                f"each option of {spec!r} after {FILE_OPTIONS!r} must be KEY=VALUE, each key "
                f"once ({_OPTIONS}), got {item!r}"
            )
        if key not in FileOptions.model_fields:
            raise ValueError(f"data {spec!r}: unknown option {key!r}; options: {_OPTIONS}")
        if key == "markers":
            fields[key] = tuple(_marker_stream(stream, spec) for stream in value.split(","))
        elif key in _NAMES:
            fields[key] = _decoded(value, f"{key} {value!r}", spec)
        elif key == "grid":
            try:
                fields[key] = parse_grid(value)
            except ValueError as err:
                raise ValueError(f"data {spec!r}: {err}") from None
        else:
            fields[key] = value
    try:
        options = FileOptions.model_validate(fields)
    except ValidationError as err:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'options'}: {e['msg']}" for e in err.errors()
        )
        raise ValueError(f"data {spec!r}: {problems}") from None
    return Path(name), options


def _marker_stream(item: str, spec: str) -> str | dict[str, str]:
    """One stream of a ``markers=`` option of ``spec``: ``NAME`` or ``NAME@SOURCE_ID`` (where
    two of one name are in the recording), each percent-decoded, so that a ``,``, ``@`` or
    ``%`` in either is written ``%2C``, ``%40`` or ``%25``."""
    name, sep, source_id = item.partition(MARKER_SOURCE_ID)
    what = f"marker stream {item!r}"
    if not sep:
        return _decoded(name, what, spec)
    return {"name": _decoded(name, what, spec), "source_id": _decoded(source_id, what, spec)}


def _decoded(text: str, what: str, spec: str) -> str:
    """``text`` percent-decoded. Bytes that are no UTF-8 text are an error: decoded as U+FFFD
    they named a stream no recording has (a marker stream's only warned of, and that tool's
    trains were learnt as cortex)."""
    try:
        return unquote(text, errors="strict")
    except UnicodeDecodeError:
        raise ValueError(
            f"data {spec!r}: {what} percent-encodes bytes that are not UTF-8 text, as LSL names "
            "and source ids are (write a ',', '@', '%' or ':' as %2C, %40, %25, %3A)"
        ) from None


def parse_synthetic(spec: str) -> tuple[list[int], float]:
    """Seeds and session length of a ``synthetic:SEEDS@SECONDS`` spec."""
    match = _SYNTHETIC.match(spec)
    if match is None:
        raise ValueError(
            f"synthetic data spec must look like synthetic:SEEDS@SECONDS with SEEDS a list "
            f"of seeds or ranges (synthetic:100-109@60, synthetic:1,4,9@30), got {spec!r}"
        )
    return _seeds(match["seeds"], spec), _seconds(match["seconds"], spec)


def parse_mixture(spec: str) -> tuple[list[int], float, tuple[str, ...]]:
    """Seeds, session length and allowed generator families of a ``synthetic-mix:`` spec."""
    from bench.data.synth.mixture import FAMILIES

    match = _MIXTURE.match(spec)
    if match is None:
        raise ValueError(
            f"mixture data spec must look like synthetic-mix:SEEDS@SECONDS, optionally "
            f"followed by /without=FAMILY or /only=FAMILY (synthetic-mix:0-99@60/without=ou), "
            f"got {spec!r}"
        )
    seeds, seconds = _seeds(match["seeds"], spec), _seconds(match["seconds"], spec)
    if match["filter"] is None:
        return seeds, seconds, FAMILIES
    key, sep, value = match["filter"].partition("=")
    if key not in _FILTERS or not sep:
        raise ValueError(
            f"filter {match['filter']!r} of {spec!r} must be without=FAMILY or only=FAMILY "
            f"(families: {', '.join(FAMILIES)})"
        )
    named = value.split(",")
    for name in named:
        if name not in FAMILIES:
            raise ValueError(
                f"unknown generator family {name!r} in {spec!r}; valid families: "
                f"{', '.join(FAMILIES)}"
            )
    kept = tuple(f for f in FAMILIES if (f in named) == (key == "only"))
    if not kept:
        raise ValueError(f"{spec!r} leaves out every generator family ({', '.join(FAMILIES)})")
    return seeds, seconds, kept


def _seeds(text: str, spec: str) -> list[int]:
    """The seeds of a SEEDS field: comma-separated N or N-M, no seed twice."""
    seeds: list[int] = []
    for item in text.split(","):
        part = _SEED_ITEM.match(item)
        if part is None:
            raise ValueError(f"seed item {item!r} of {spec!r} must be N or N-M")
        lo = int(part["lo"])
        hi = int(part["hi"]) if part["hi"] is not None else lo
        if hi < lo:
            raise ValueError(f"seed range {item!r} of {spec!r} must not run backwards")
        seeds.extend(range(lo, hi + 1))
        if len(seeds) > MAX_SYNTHETIC_SESSIONS:
            raise ValueError(
                f"{spec!r} asks for more than {MAX_SYNTHETIC_SESSIONS} generated sessions"
            )
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"{spec!r} names a seed twice: the same session would count twice")
    return seeds


def _seconds(text: str, spec: str) -> float:
    seconds = float(text)
    if seconds <= 0:
        raise ValueError(f"session length of {spec!r} must be > 0 s, got {seconds:g}")
    return seconds
