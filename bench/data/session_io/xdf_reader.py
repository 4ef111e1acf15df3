"""Read a µECoG session from an XDF recording (ours, or LabRecorder's from a real rig)."""

from __future__ import annotations

import io
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pyxdf

from bench.data.ground_truth import GroundTruth
from bench.data.session import Session
from bench.data.session_io._checks import existing_file
from bench.data.session_io._errors import SessionFileError
from bench.data.session_io._xdf_format import open_xdf
from bench.data.session_io._xdf_markers import (
    INFO_KEY,
    announced_from_data,
    announcing_streams,
    marker_stream,
    marker_streams_blanked,
    markers_from_data,
    stream_records,
)
from bench.data.session_io._xdf_metadata import (
    annotated_source_id,
    info_from_header,
    truth_from_values,
)
from bench.data.session_io._xdf_scan import XdfLayout, XdfStream, read_prefix, scan_xdf
from bench.data.stimulation import STREAMS_KEY
from service.core.channel_map import ChannelMap, stream_grid
from service.core.checks import check_positive, check_type
from service.core.grid import ElectrodeGrid
from service.core.stimulation_markers import MarkerStream

TRUTH_STREAM_TYPE = "GroundTruth"


def read_xdf(
    path: str | Path,
    *,
    stream_type: str = "ECoG",
    stream_name: str | None = None,
    dejitter: bool = False,
    allow_truncated: bool = True,
    expected_rate_hz: float | None = None,
    rate_rtol: float = 1e-3,
    grid: ElectrodeGrid | None = None,
    stimulation_marker_streams: Mapping[MarkerStream | str, float] | None = None,
) -> Session:
    """Read the ECoG stream of an XDF file (and its ground truth, if any) as a Session.

    A corticast stimulation marker stream in the file (``service.core.stimulation_markers``)
    becomes ``info["stimulation"]``: per marker its stamp on the session's clock (``time``,
    synchronised from ClockOffset chunks as the ECoG stream is), ``blank_s`` and the marker's
    other fields. Other marker streams are ignored, but for ``stimulation_marker_streams``.
    Of two rigs recorded together, a daemon's marker stream is applied to the stream it read
    only (its source id is that stream's source id, or name, with ``-stimulation``); one whose
    source id names no stream of the file does not say which, and is applied.
    ``info["stimulation_streams"]`` says which marker streams were applied and which left
    out, and why.

    Parameters
    ----------
    path
        ``.xdf`` or gzip-compressed ``.xdfz`` file.
    stream_type, stream_name
        Which stream holds the electrode data; exactly one stream must match.
    dejitter
        Let pyxdf regularise timestamps. Off by default: a replay must see dropped samples and
        jitter as the rig produced them. Clocks are always synchronised from ClockOffset chunks.
    allow_truncated
        Read the intact part of a crashed recording (with a RuntimeWarning), as pyxdf and the
        tools built on it do: the samples before the crash are whole and often cannot be
        recorded again. False refuses a file that ends early. Damage anywhere else is always
        refused.
    expected_rate_hz, rate_rtol
        When given, refuse a stream whose nominal rate differs by more than ``rate_rtol``
        (relative); otherwise the file's nominal rate is taken as the session's.
    grid
        The electrode array the stream must describe (a stream on another is refused, naming
        both); None: the one its header records (``desc/grid``: rows, cols, pitch_mm, as
        :func:`~bench.data.session_io.write_xdf` writes it), the rig's ``DEFAULT_GRID`` where
        it records none, so a recording of another array reads on that array.
    stimulation_marker_streams
        Marker streams of other tools that stimulated the array (a name, or a
        ``MarkerStream`` of name and source id -> seconds blanked after each marker), as the
        daemon's ``[ingest] stimulation_marker_streams`` reads them live: each marker joins
        ``info["stimulation"]`` as an announced train (those the daemon already passed on in
        the file are not counted twice). A stream the file lacks
        is warned about.

    Raises
    ------
    SessionFileError
        The file is damaged, holds no single matching stream, does not fit ``grid``, or holds
        several corticast marker streams that may be the stream's or a marker that is not
        one.
    """
    check_type("stream_type", stream_type, str)
    check_type("stream_name", stream_name, (str, type(None)))
    if expected_rate_hz is not None:
        check_positive("expected_rate_hz", expected_rate_hz)
    check_positive("rate_rtol", rate_rtol)
    path = existing_file(path)
    layout = scan_xdf(path)
    if layout.truncation is not None and not allow_truncated:
        raise SessionFileError(
            f"{path}: {layout.truncation}; refused because allow_truncated=False"
        )
    _warn_deviations(path, layout)
    ecog = _choose_stream(path, layout, stream_type, stream_name)
    _check_rate(path, ecog, expected_rate_hz, rate_rtol)
    try:
        if grid is None:
            grid = stream_grid(ecog.header_xml)
        channel_map = ChannelMap.from_stream_xml(ecog.header_xml, grid)
        info = info_from_header(ecog.header)
    except ValueError as err:
        raise SessionFileError(f"{path}: {ecog.describe()}: {err}") from None
    truth_stream = _truth_stream(path, layout, ecog)
    markers, decided = marker_stream(path, layout, ecog)
    others = announcing_streams(
        path, layout, marker_streams_blanked(stimulation_marker_streams), markers
    )
    wanted = [ecog.stream_id] + [s.stream_id for s in (truth_stream, markers) if s is not None]
    loaded = _load(path, layout, wanted + [s.stream_id for s, _ in others], dejitter)
    # The marker streams, not the header, say where trains were.
    info.pop(INFO_KEY, None)
    info.pop(STREAMS_KEY, None)
    if records := stream_records(decided, others):
        info[STREAMS_KEY] = records
    if markers is not None:
        info[INFO_KEY] = markers_from_data(path, markers, loaded[markers.stream_id])
    if others:
        recorded = info.get(INFO_KEY, [])
        announced = [
            train
            for stream, blank_s in others
            for train in announced_from_data(
                path, stream, loaded[stream.stream_id], blank_s, recorded
            )
        ]
        info[INFO_KEY] = sorted(recorded + announced, key=lambda entry: entry["time"])
    samples = _unrounded(loaded[ecog.stream_id]["time_series"])
    timestamps = np.asarray(loaded[ecog.stream_id]["time_stamps"], dtype=np.float64)
    truth = None
    if truth_stream is not None:
        truth_data = loaded[truth_stream.stream_id]
        if layout.truncation is not None:  # the two streams' last chunks may be cut apart
            n = min(len(timestamps), len(truth_data["time_stamps"]))
            samples, timestamps = samples[:n], timestamps[:n]
        truth = _truth(path, truth_stream, truth_data, timestamps)
    if layout.truncation is not None:
        if not len(timestamps):
            raise SessionFileError(
                f"{path}: {layout.truncation}; no sample of {ecog.describe()} before the break"
            )
        warnings.warn(
            f"{path}: {layout.truncation}; read the {len(timestamps)} samples "
            f"({len(timestamps) / ecog.nominal_srate:.1f} s) of {ecog.describe()} before the "
            f"break",
            RuntimeWarning,
            stacklevel=2,
        )
    try:
        return Session(
            frames=channel_map.to_frames(samples).astype(np.float32, copy=False),
            timestamps=timestamps,
            sample_rate_hz=ecog.nominal_srate,
            grid=grid,
            truth=truth,
            info=info,
        )
    except ValueError as err:
        raise SessionFileError(f"{path}: {ecog.describe()}: {err}") from None


def _unrounded(values: Any) -> np.ndarray:
    """A stream's samples, float32 only if stored so: scaled to µV in float64, then rounded.

    Rounding a double64 stream in volts to float32 before scaling it rounds twice, and a
    quarter of the values come out one float32 step from their µV value.
    """
    values = np.asarray(values)
    return values if values.dtype == np.float32 else values.astype(np.float64, copy=False)


def _warn_deviations(path: Path, layout: XdfLayout) -> None:
    """One warning per kind of departure from the spec that pyxdf reads past."""
    for what, starts in layout.deviations.items():
        at = f"byte {starts[0]}"
        if len(starts) > 1:
            at = f"bytes {', '.join(map(str, starts[:3]))}{', ...' if len(starts) > 3 else ''}"
            at += f" ({len(starts)} chunks)"
        warnings.warn(
            f"{path}: {what} at {at}; read as pyxdf reads it", RuntimeWarning, stacklevel=3
        )


_ANOTHER_TYPE = (
    " (a stream of another type is read as FILE::type=TYPE by replay, train, evaluate, adapt "
    "and rig --source; replay's default is [stream] type)"
)


def _choose_stream(
    path: Path, layout: XdfLayout, stream_type: str, stream_name: str | None
) -> XdfStream:
    matches = [
        stream
        for stream in layout.streams.values()
        if stream.stream_type == stream_type and stream_name in (None, stream.name)
    ]
    wanted = f"type {stream_type!r}" + ("" if stream_name is None else f" and name {stream_name!r}")
    found = "; ".join(stream.describe() for stream in layout.streams.values()) or "none"
    if not matches:
        # A crashed recording's prefix may end before the stream's header: say so, or the
        # refusal reads as a wrong stream type.
        cut = "" if layout.truncation is None else f" before the break ({layout.truncation})"
        types = {stream.stream_type for stream in layout.streams.values()}
        hint = _ANOTHER_TYPE if types and stream_type not in types else ""
        raise SessionFileError(f"{path}: no stream has {wanted}{cut}; streams found: {found}{hint}")
    if len(matches) > 1:
        raise SessionFileError(
            f"{path}: {len(matches)} streams have {wanted}; pick one by its name ('stream_name'"
            f": FILE::stream=NAME for replay, train, evaluate, adapt and rig --source; replay "
            f"also takes --stream-name NAME). Streams found: {found}"
        )
    stream = matches[0]
    if stream.channel_format == "string":
        raise SessionFileError(f"{path}: {stream.describe()} holds strings, not samples")
    return stream


def _check_rate(
    path: Path, stream: XdfStream, expected_rate_hz: float | None, rate_rtol: float
) -> None:
    rate = stream.nominal_srate
    if rate == 0:
        raise SessionFileError(
            f"{path}: {stream.describe()} declares nominal_srate 0 (irregular); electrode "
            f"frames need a regular rate"
        )
    if expected_rate_hz is not None and abs(rate - expected_rate_hz) > rate_rtol * expected_rate_hz:
        raise SessionFileError(
            f"{path}: {stream.describe()} declares nominal_srate {rate!r} Hz; "
            f"'expected_rate_hz' is {expected_rate_hz!r} Hz (within rate_rtol={rate_rtol!r})"
        )


def _truth_stream(path: Path, layout: XdfLayout, ecog: XdfStream) -> XdfStream | None:
    matches = [
        stream
        for stream in layout.streams.values()
        if stream.stream_type == TRUTH_STREAM_TYPE
        and annotated_source_id(stream.header) == ecog.source_id
    ]
    if len(matches) > 1:
        raise SessionFileError(
            f"{path}: {len(matches)} ground-truth streams annotate source_id "
            f"{ecog.source_id!r}: {'; '.join(s.describe() for s in matches)}"
        )
    return matches[0] if matches else None


def _truth(
    path: Path, stream: XdfStream, data: dict[str, Any], timestamps: np.ndarray
) -> GroundTruth:
    values = np.asarray(data["time_series"], dtype=np.float64)[: len(timestamps)]
    stamps = np.asarray(data["time_stamps"], dtype=np.float64)[: len(timestamps)]
    if len(stamps) != len(timestamps) or not np.array_equal(stamps, timestamps):
        raise SessionFileError(
            f"{path}: {stream.describe()} must carry one sample per ECoG sample at the same "
            f"timestamps, got {len(data['time_stamps'])} samples for {len(timestamps)}"
        )
    try:
        return truth_from_values(stream.header, values)
    except ValueError as err:
        raise SessionFileError(f"{path}: {stream.describe()}: {err}") from None


def _load(
    path: Path, layout: XdfLayout, stream_ids: list[int], dejitter: bool
) -> dict[int, dict[str, Any]]:
    """Load the chosen streams with pyxdf, from the intact prefix when the file is truncated."""
    if layout.truncation is None:
        source = open_xdf(path, "rb")
    else:
        source = io.BytesIO(read_prefix(path, layout.intact_end))
    with source:
        try:
            streams, _ = pyxdf.load_xdf(
                source,
                select_streams=stream_ids,
                synchronize_clocks=True,
                dejitter_timestamps=dejitter,
            )
        except Exception as err:  # pyxdf raises bare Exceptions of many kinds
            raise SessionFileError(f"{path}: pyxdf could not read it: {err!r}") from err
    return {stream["info"]["stream_id"]: stream for stream in streams}
