"""The daemon's stimulation marker stream in XDF files, and its form in ``Session.info``.

A recording made in closed loop holds, beside the rig's ECoG stream, the marker stream the
daemon pushed (``service.core.stimulation_markers``): one string sample per train the
stimulator may have delivered, or another tool announced. A session carries them as
``info["stimulation"]``, a JSON list of
``{"time": <stamp on the session's clock>, "blank_s": ..., <the marker's other fields>}``, so a
replay blanks the same frames the daemon blanked. Writer and reader of that form live here, so
the two do not drift apart.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import ValidationError

from bench.data.session_io._errors import SessionFileError
from bench.data.session_io._xdf_scan import XdfLayout, XdfStream
from bench.data.stimulation import INFO_KEY
from service.core.stimulation_markers import (
    ANNOUNCED_FORMAT,
    STREAM_NAME,
    STREAM_TYPE,
    MarkerStream,
    as_announced,
    corticast_marker_in,
    marker_from_fields,
    outlet_source_id,
    parse_marker,
)

Decision = tuple[XdfStream, bool, str]
"""A marker stream, whether its trains are applied to the stream read, and why."""


def marker_stream(
    path: Path, layout: XdfLayout, data: XdfStream
) -> tuple[XdfStream | None, list[Decision]]:
    """The file's corticast stimulation marker stream whose trains were delivered on ``data``
    (the stream read), if any, and what was decided of each such stream. A daemon names its
    marker stream by the source id of the rig stream it read, or by its name where it read
    it by name alone (``outlet_source_id``): one that names another stream of the file (two
    rigs recorded together) is left out, its trains never delivered on ``data``; one that
    names no stream of the file (its rig's stream not recorded, or written by a daemon that
    named none: ``[stream] source_id`` empty, before it named the rig by name) does not say
    which, and is applied, as every such stream was before. A lab's own marker streams
    (other names) are not ours and are left alone."""
    decided = [
        _decide(stream, _written_for(stream, layout, data), data)
        for stream in layout.streams.values()
        if stream.stream_type == STREAM_TYPE and stream.name == STREAM_NAME
    ]
    applied = [stream for stream, apply, _ in decided if apply]
    if len(applied) > 1:
        raise SessionFileError(
            f"{path}: {len(applied)} streams have type {STREAM_TYPE!r} and name {STREAM_NAME!r} "
            f"and may hold the stimulation markers of {data.describe()}; a recording holds one "
            f"daemon's per stream it read: "
            f"{'; '.join(f'{s.describe()} source id {s.source_id!r}' for s in applied)}"
        )
    if applied and (applied[0].channel_format != "string" or applied[0].channel_count != 1):
        raise SessionFileError(
            f"{path}: {applied[0].describe()} must have 1 string channel, as the daemon pushes it"
        )
    return (applied[0] if applied else None), decided


def _written_for(marker: XdfStream, layout: XdfLayout, data: XdfStream) -> XdfStream | None:
    """The stream of the file ``marker``'s source id names (``outlet_source_id``: by its
    source id, or by its name, whatever its source id, for a daemon that read it by name
    alone; ``data`` where it is one of two so named), None where it names none."""
    named = [stream for stream in layout.streams.values() if marker.source_id in _names_of(stream)]
    if any(stream.stream_id == data.stream_id for stream in named):
        return data
    return named[0] if named else None


def _names_of(stream: XdfStream) -> tuple[str, ...]:
    """The source ids a daemon reading ``stream`` gives its marker stream: by the stream's
    source id (configured), or by its name (``[stream] source_id`` empty)."""
    by_id = (outlet_source_id(stream.source_id, stream.name),) if stream.source_id else ()
    by_name = (outlet_source_id("", stream.name),) if stream.name else ()
    return by_id + by_name


def _how_named(rig: XdfStream, marker: XdfStream) -> str:
    """How ``marker``'s source id names ``rig``, for a decision's why."""
    if rig.source_id and marker.source_id == outlet_source_id(rig.source_id, rig.name):
        return f"its source id {rig.source_id!r} with '-stimulation'"
    return f"its name {rig.name!r}, read by name alone"


def _decide(marker: XdfStream, rig: XdfStream | None, data: XdfStream) -> Decision:
    if rig is None:
        why = (
            f"its source id {marker.source_id!r} names no stream of the file (a daemon's is "
            f"its rig stream's source id, or name, with '-stimulation'): the recording does "
            f"not say which stream its trains were delivered on, so they are applied to this one"
        )
    elif rig is data:
        why = f"written for this stream ({_how_named(data, marker)})"
    else:
        why = (
            f"written for {rig.describe()} ({_how_named(rig, marker)}), not this one: its "
            f"daemon's trains were not delivered on this stream"
        )
    return marker, rig is None or rig is data, why


def stream_records(
    decided: list[Decision], others: list[tuple[XdfStream, float]]
) -> list[dict[str, Any]]:
    """``info[STREAMS_KEY]``: per marker stream (by stream id) whose trains a read applied or
    left out, its name, source id, whether applied, and why. The corticast streams as
    :func:`marker_stream` decided them, but one read as another tool's all the same (named
    so: a daemon reading another's stream of its name blanked its trains live), and the
    other tools' streams named."""
    named = {stream.stream_id for stream, _ in others}
    entries = [entry for entry in decided if entry[0].stream_id not in named]
    entries += [
        (stream, True, "named as another tool's stimulation marker stream") for stream, _ in others
    ]
    return [
        {"stream": stream.name, "source_id": stream.source_id, "applied": apply, "why": why}
        for stream, apply, why in sorted(entries, key=lambda entry: entry[0].stream_id)
    ]


def markers_from_data(path: Path, stream: XdfStream, data: dict[str, Any]) -> list[dict[str, Any]]:
    """The stream's samples (as pyxdf loaded them, clocks synchronised) in ``info`` form."""
    stamps = np.asarray(data["time_stamps"], dtype=np.float64).tolist()
    markers = []
    for index, (stamp, sample) in enumerate(zip(stamps, data["time_series"], strict=True)):
        _check_stamped(path, stream, index, stamp)
        try:
            marker = parse_marker(sample[0])
        except ValueError as err:
            raise SessionFileError(
                f"{path}: {stream.describe()}: sample {index} is not a stimulation marker: "
                f"{_one_line(err)}"
            ) from None
        markers.append({"time": stamp, **marker.model_dump(mode="json")})
    return markers


def marker_streams_blanked(
    streams: Mapping[MarkerStream | str, float] | None,
) -> dict[MarkerStream, float]:
    """Other tools' marker streams -> seconds blanked after each marker; a name alone is the
    stream of that name, whatever its source id (as in ``[ingest] stimulation_marker_streams``)."""
    return {
        MarkerStream(name=key) if isinstance(key, str) else key: blank_s
        for key, blank_s in (streams or {}).items()
    }


def announcing_streams(
    path: Path, layout: XdfLayout, named: Mapping[MarkerStream, float], own: XdfStream | None
) -> list[tuple[XdfStream, float]]:
    """The streams ``named`` (other tools' stimulation marker
    streams, as ``[ingest] stimulation_marker_streams`` names them) the file holds, but the
    daemon's ``own`` (read as its own, once: a daemon reading another's of its name skips its
    own live); each one named and absent is warned about: that tool's trains, if it ran, are
    not known. One at a regular rate (the rig's, a trigger channel) is refused, as the daemon
    refuses it live: its every sample is no train. Each with the seconds its markers blank."""
    found = {
        stream.stream_id: (stream, blank_s)
        for stream in layout.streams.values()
        for wanted, blank_s in named.items()
        if wanted.matches(stream.name, stream.source_id)
        and (own is None or stream.stream_id != own.stream_id)
    }
    for stream, _ in found.values():
        if stream.nominal_srate != 0:
            raise SessionFileError(
                f"{path}: {stream.describe()}, named as another tool's stimulation marker "
                f"stream, has a nominal rate of {stream.nominal_srate:g} Hz: a marker stream "
                f"has none (every sample a train); is it the rig's stream or a trigger channel?"
            )
    for wanted in named:
        if not any(wanted.matches(s.name, s.source_id) for s, _ in found.values()):
            which = f" with source id {wanted.source_id!r}" if wanted.source_id else ""
            warnings.warn(
                f"{path}: no stimulation marker stream named {wanted.name!r}{which}; no train "
                f"of that tool is blanked",
                RuntimeWarning,
                stacklevel=3,
            )
    return list(found.values())


def announced_from_data(
    path: Path,
    stream: XdfStream,
    data: dict[str, Any],
    blank_s: float,
    recorded: list[dict[str, Any]],
) -> list[dict[str, Any]]:
    """Another tool's markers (as pyxdf loaded them, clocks synchronised), in ``info`` form as
    the trains the daemon would have blanked; those the daemon already passed on in
    ``recorded`` (the corticast markers of the same file: it ran and read that stream) are
    not counted twice."""
    passed_on = [
        entry["time"]
        for entry in recorded
        if entry.get("format") == ANNOUNCED_FORMAT
        and entry.get("source") == stream.name
        # Recorded before source ids were: by name alone.
        and entry.get("source_id") in (None, stream.source_id or None)
    ]
    trains = []
    stamps = np.asarray(data["time_stamps"], dtype=np.float64).tolist()
    for index, (stamp, sample) in enumerate(zip(stamps, data["time_series"], strict=True)):
        _check_stamped(path, stream, index, stamp)
        if any(abs(stamp - other) < _SAME_TRAIN_S for other in passed_on):
            continue
        text = sample[0] if isinstance(sample[0], str) else str(sample[0])
        trains.append({"time": stamp, **_as_announced(stream, text, blank_s)})
    return trains


def _as_announced(stream: XdfStream, text: str, blank_s: float) -> dict[str, Any]:
    """One marker of another tool's stream as the daemon blanks it live
    (``service.ingest.stimulation_marker_inlet``)."""
    marker = None
    with contextlib.suppress(ValueError):  # not a corticast marker: a train all the same
        marker = corticast_marker_in(text)
    train = as_announced(stream.name, text, blank_s, marker, stream.source_id)
    return train.model_dump(mode="json")


def marker_samples(entries: Sequence[Any]) -> tuple[np.ndarray, list[list[str]]]:
    """``info["stimulation"]`` as the marker stream's timestamps and string samples.

    Raises ValueError naming the entry and what is wrong with it."""
    if not isinstance(entries, (list, tuple)):
        raise TypeError(
            f"'session.info[{INFO_KEY!r}]' must be a list of markers, got {type(entries).__name__}"
        )
    times, texts = [], []
    for index, entry in enumerate(entries):
        time = entry.get("time") if isinstance(entry, dict) else None
        if isinstance(time, bool) or not isinstance(time, (int, float)):
            raise ValueError(
                f"'session.info[{INFO_KEY!r}][{index}]' must be a dict with a number 'time', "
                f"got {entry!r}"
            )
        fields = {key: value for key, value in entry.items() if key != "time"}
        try:
            marker = marker_from_fields(fields)
        except ValueError as err:
            raise ValueError(f"'session.info[{INFO_KEY!r}][{index}]': {_one_line(err)}") from None
        times.append(float(time))
        texts.append([marker.to_text()])
    stamps = np.asarray(times, dtype=np.float64)
    if not np.isfinite(stamps).all() or np.any(np.diff(stamps) < 0):
        raise ValueError(
            f"'session.info[{INFO_KEY!r}]' times must be finite and in order, got {times!r}"
        )
    return stamps, texts


def _check_stamped(path: Path, stream: XdfStream, index: int, stamp: float) -> None:
    """A marker without a finite time has no frames its artefact could be placed on."""
    if not math.isfinite(stamp):
        raise SessionFileError(
            f"{path}: {stream.describe()}: sample {index} has time stamp {stamp!r}; a "
            f"stimulation marker must be stamped at a finite time"
        )


_SAME_TRAIN_S = 0.005
"""A tool's marker and the daemon's record of it lie this close (the daemon keeps its stamp;
two recorded clocks' synchronisation moves them by µs)."""


def _one_line(err: ValueError) -> str:
    """Pydantic's message per wrong field on one line (a log line, a report's error)."""
    if not isinstance(err, ValidationError):
        return str(err)
    return "; ".join(
        f"{'.'.join(map(str, e['loc'])) or 'marker'}: {e['msg']} (got {e['input']!r})"
        for e in err.errors(include_url=False)
    )
