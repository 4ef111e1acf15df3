"""Write sessions as XDF files, the format LabRecorder writes (pyxdf can only read).

Layout of a session file: FileHeader; StreamHeader 1 (ECoG, float32, one channel per electrode,
positions in desc); StreamHeader 2 (ground truth, float64) when the session has one;
StreamHeader 3 (the daemon's stimulation markers, one string channel, irregular) when its info
has ``"stimulation"``; then, in time order, ClockOffset chunks for each stream, Samples chunks of
``chunk_samples`` samples (every sample with its own timestamp, so dropped samples and jitter
survive) with the markers up to their last sample, a Boundary chunk every
``boundary_interval_s`` of stream time; StreamFooters last.
"""

from __future__ import annotations

import struct
import xml.etree.ElementTree as ET
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import numpy as np

from bench.data.session import Session
from bench.data.session_io._checks import check_channel_order
from bench.data.session_io._xdf_format import (
    BOUNDARY_UUID,
    CHANNEL_FORMATS,
    MAGIC,
    VALUE_DTYPES,
    Tag,
    encode_varlen,
    open_xdf,
)
from bench.data.session_io._xdf_markers import INFO_KEY, marker_samples
from bench.data.session_io._xdf_metadata import TRUTH_CHANNELS, ecog_desc, truth_desc, truth_values
from service.core.atomic_write import written_atomically
from service.core.checks import check_array, check_positive, check_type
from service.core.stimulation_markers import STREAM_NAME, STREAM_TYPE, outlet_source_id

ECOG_STREAM_ID = 1
TRUTH_STREAM_ID = 2
MARKER_STREAM_ID = 3


@dataclass
class _StreamState:
    """What a StreamFooter reports, accumulated while samples are written."""

    channel_count: int
    channel_format: str
    first_timestamp: float | None = None
    last_timestamp: float | None = None
    sample_count: int = 0
    clock_offsets: list[tuple[float, float]] = field(default_factory=list)


class XdfWriter:
    """Writes an XDF 1.0 file chunk by chunk.

    Closing writes a StreamFooter for every stream; leaving the context with an exception
    closes the file without footers, the way a crashed recorder leaves it.

    Parameters
    ----------
    path
        Output file; ``.xdfz`` is gzip-compressed, like pyxdf expects.
    """

    def __init__(self, path: str | Path) -> None:
        self._file = open_xdf(Path(path), "wb")
        self._streams: dict[int, _StreamState] = {}
        self._closed = False
        self._file.write(MAGIC)
        header = ET.Element("info")
        ET.SubElement(header, "version").text = "1.0"
        self._write_chunk(Tag.FILE_HEADER, _xml_bytes(header))

    def __enter__(self) -> XdfWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self._closed = True
            self._file.close()

    def add_stream(
        self,
        stream_id: int,
        *,
        name: str,
        stream_type: str,
        channel_count: int,
        channel_format: str,
        nominal_srate: float,
        source_id: str = "",
        desc: ET.Element | None = None,
    ) -> None:
        """Write a StreamHeader with the fields an LSL stream info carries."""
        self._check_open("add_stream")
        if not (isinstance(stream_id, int) and 0 <= stream_id < 2**32):
            raise ValueError(f"'stream_id' must be an int in 0..2**32-1, got {stream_id!r}")
        if stream_id in self._streams:
            raise ValueError(f"'stream_id' must be new, got {stream_id} which is already used")
        if channel_format not in CHANNEL_FORMATS:
            raise ValueError(
                f"'channel_format' must be one of {CHANNEL_FORMATS}, got {channel_format!r}"
            )
        if not (isinstance(channel_count, int) and channel_count >= 1):
            raise ValueError(f"'channel_count' must be an int >= 1, got {channel_count!r}")
        if not (np.isfinite(nominal_srate) and nominal_srate >= 0):
            raise ValueError(f"'nominal_srate' must be a finite number >= 0, got {nominal_srate!r}")
        info = ET.Element("info")
        for tag, text in (
            ("name", name),
            ("type", stream_type),
            ("channel_count", str(channel_count)),
            ("channel_format", channel_format),
            ("source_id", source_id),
            ("nominal_srate", repr(float(nominal_srate))),
            ("version", "1.1"),
        ):
            ET.SubElement(info, tag).text = text
        info.append(desc if desc is not None else ET.Element("desc"))
        self._streams[stream_id] = _StreamState(channel_count, channel_format)
        self._write_chunk(Tag.STREAM_HEADER, struct.pack("<I", stream_id) + _xml_bytes(info))

    def write_samples(
        self,
        stream_id: int,
        timestamps: np.ndarray,
        values: np.ndarray | Sequence[Sequence[str]],
    ) -> None:
        """Write one Samples chunk, every sample with an explicit timestamp.

        ``values`` is (n, channels) of the stream's dtype, or for a string stream n lists of
        ``channels`` strings.
        """
        state = self._state(stream_id, "write_samples")
        timestamps = check_array("timestamps", timestamps, ndim=1, dtype=np.float64, finite=True)
        n = timestamps.shape[0]
        if state.channel_format == "string":
            records = _string_records(timestamps, values, state.channel_count)
        else:
            dtype = np.dtype(VALUE_DTYPES[state.channel_format])
            values = check_array("values", values, shape=(n, state.channel_count), dtype=dtype)
            records = _numeric_records(timestamps, values)
        content = struct.pack("<I", stream_id) + encode_varlen(n) + records
        self._write_chunk(Tag.SAMPLES, content)
        if n:
            if state.first_timestamp is None:
                state.first_timestamp = float(timestamps[0])
            state.last_timestamp = float(timestamps[-1])
            state.sample_count += n

    def write_clock_offset(self, stream_id: int, collection_time: float, offset: float) -> None:
        """Write a ClockOffset chunk: at ``collection_time`` (stream clock) add ``offset``.

        Both must be finite: a reader refuses a file holding any other as corrupt.
        """
        state = self._state(stream_id, "write_clock_offset")
        for name, value in (("collection_time", collection_time), ("offset", offset)):
            if not np.isfinite(value):
                raise ValueError(f"'{name}' must be finite, got {value!r}")
        state.clock_offsets.append((float(collection_time), float(offset)))
        self._write_chunk(Tag.CLOCK_OFFSET, struct.pack("<Idd", stream_id, collection_time, offset))

    def write_boundary(self) -> None:
        """Write a Boundary chunk, where a reader can resynchronise after damage."""
        self._check_open("write_boundary")
        self._write_chunk(Tag.BOUNDARY, BOUNDARY_UUID)

    def close(self) -> None:
        """Write the StreamFooters and close the file; calling it again does nothing."""
        if self._closed:
            return
        try:
            for stream_id, state in self._streams.items():
                self._write_chunk(
                    Tag.STREAM_FOOTER, struct.pack("<I", stream_id) + _footer_xml(state)
                )
        finally:
            self._closed = True
            self._file.close()

    def _state(self, stream_id: int, method: str) -> _StreamState:
        self._check_open(method)
        if stream_id not in self._streams:
            raise ValueError(
                f"'stream_id' must name a stream added with add_stream(), got {stream_id!r}; "
                f"streams: {sorted(self._streams)}"
            )
        return self._streams[stream_id]

    def _check_open(self, method: str) -> None:
        if self._closed:
            raise RuntimeError(f"{method}() called after close(); open a new XdfWriter")

    def _write_chunk(self, tag: Tag, content: bytes) -> None:
        self._file.write(encode_varlen(2 + len(content)) + struct.pack("<H", tag) + content)


def write_xdf(
    path: str | Path,
    session: Session,
    *,
    stream_name: str = "corticast-rig",
    source_id: str = "corticast-sim-rig",
    chunk_samples: int = 256,
    clock_offset: float | Callable[[float], float] = 0.0,
    clock_offset_interval_s: float = 5.0,
    boundary_interval_s: float = 10.0,
    channel_order: np.ndarray | None = None,
) -> None:
    """Write ``session`` as an XDF file, as LabRecorder would have recorded it from the rig.

    Parameters
    ----------
    path
        Output file (``.xdf``, or ``.xdfz`` for gzip); replaced only once it is whole.
    session
        The session; its ground truth, if any, becomes a second stream with the same timestamps,
        and its ``info["stimulation"]``, if any, the daemon's marker stream (on the ECoG
        stream's clock, with the same clock offsets).
    stream_name, source_id
        The ECoG stream's LSL name and source_id.
    chunk_samples
        Samples per Samples chunk.
    clock_offset
        Offset (s) from the stream's clock to the recorder's, or a function of the stream time
        returning it; written every ``clock_offset_interval_s`` from the first sample, so a
        reader that synchronises clocks (pyxdf) returns timestamps shifted by it.
    boundary_interval_s
        Stream time between Boundary chunks (LabRecorder writes one every 10 s).
    channel_order
        Electrode (row-major index) carried by each stream channel; default row-major. Lets
        fixtures mimic amplifiers that wire channels in another order.
    """
    check_type("session", session, Session)
    if not (isinstance(chunk_samples, int) and chunk_samples >= 1):
        raise ValueError(f"'chunk_samples' must be an int >= 1, got {chunk_samples!r}")
    check_positive("clock_offset_interval_s", clock_offset_interval_s)
    check_positive("boundary_interval_s", boundary_interval_s)
    offset_at = _offset_function(clock_offset)
    grid = session.grid
    order = check_channel_order(channel_order, grid.n_channels)
    streams = {ECOG_STREAM_ID: session.frames.reshape(session.n_frames, grid.n_channels)[:, order]}
    info = {key: value for key, value in session.info.items() if key != INFO_KEY}
    markers = marker_samples(session.info[INFO_KEY]) if INFO_KEY in session.info else None
    # A write that fails half-way (a bad info, a clock offset function that raises, a full disk)
    # must not leave a header-only file at ``path`` nor destroy the one already there.
    with written_atomically(path) as scratch, XdfWriter(scratch) as writer:
        writer.add_stream(
            ECOG_STREAM_ID,
            name=stream_name,
            stream_type="ECoG",
            channel_count=grid.n_channels,
            channel_format="float32",
            nominal_srate=session.sample_rate_hz,
            source_id=source_id,
            desc=ecog_desc(grid, order, info),
        )
        if session.truth is not None:
            writer.add_stream(
                TRUTH_STREAM_ID,
                name=f"{stream_name}-truth",
                stream_type="GroundTruth",
                channel_count=len(TRUTH_CHANNELS),
                channel_format="double64",
                nominal_srate=session.sample_rate_hz,
                source_id=f"{source_id}-truth",
                desc=truth_desc(source_id),
            )
            streams[TRUTH_STREAM_ID] = truth_values(session.truth)
        if markers is not None:
            writer.add_stream(
                MARKER_STREAM_ID,
                name=STREAM_NAME,
                stream_type=STREAM_TYPE,
                channel_count=1,
                channel_format="string",
                nominal_srate=0.0,
                source_id=outlet_source_id(source_id, stream_name),
            )
        if session.n_frames:
            _write_data(
                writer,
                session.timestamps,
                streams,
                markers,
                chunk_samples=chunk_samples,
                offset_at=offset_at,
                offset_interval=clock_offset_interval_s,
                boundary_interval=boundary_interval_s,
            )
        elif markers is not None:
            writer.write_samples(MARKER_STREAM_ID, *markers)


def _write_data(
    writer: XdfWriter,
    timestamps: np.ndarray,
    streams: dict[int, np.ndarray],
    markers: tuple[np.ndarray, list[list[str]]] | None,
    *,
    chunk_samples: int,
    offset_at: Callable[[float], float],
    offset_interval: float,
    boundary_interval: float,
) -> None:
    """Write all streams' samples chunk by chunk, interleaved as a recorder interleaves them.

    Clock offsets measured up to a chunk's last sample precede it; the markers stamped up to it
    follow it (those after the last sample come last), then the boundaries passed during it.
    """
    offset_times = _ticks(timestamps, offset_interval, first=0)
    boundary_times = _ticks(timestamps, boundary_interval, first=1)
    offsets_done = boundaries_done = markers_done = 0
    marker_times, marker_texts = markers if markers is not None else (np.empty(0), [])
    offset_streams = [*streams, *([MARKER_STREAM_ID] if markers is not None else [])]
    for start in range(0, len(timestamps), chunk_samples):
        chunk = slice(start, start + chunk_samples)
        last = timestamps[chunk][-1]
        offsets_due = int(np.searchsorted(offset_times, last, side="right"))
        for time in offset_times[offsets_done:offsets_due].tolist():
            for stream_id in offset_streams:
                writer.write_clock_offset(stream_id, time, offset_at(time))
        offsets_done = offsets_due
        for stream_id, values in streams.items():
            writer.write_samples(stream_id, timestamps[chunk], values[chunk])
        last_chunk = start + chunk_samples >= len(timestamps)
        markers_due = (
            len(marker_times)
            if last_chunk
            else int(np.searchsorted(marker_times, last, side="right"))
        )
        if markers_due > markers_done:
            due = slice(markers_done, markers_due)
            writer.write_samples(MARKER_STREAM_ID, marker_times[due], marker_texts[due])
            markers_done = markers_due
        boundaries_due = int(np.searchsorted(boundary_times, last, side="right"))
        for _ in range(boundaries_done, boundaries_due):
            writer.write_boundary()
        boundaries_done = boundaries_due


def _ticks(timestamps: np.ndarray, interval: float, *, first: int) -> np.ndarray:
    """Times ``t0 + k * interval`` for ``k >= first`` up to the last timestamp."""
    count = int((timestamps[-1] - timestamps[0]) // interval) + 1
    return timestamps[0] + np.arange(first, count) * interval


def _offset_function(clock_offset: float | Callable[[float], float]) -> Callable[[float], float]:
    if callable(clock_offset):
        return clock_offset
    check_type("clock_offset", clock_offset, (int, float))
    if not np.isfinite(clock_offset):
        raise ValueError(f"'clock_offset' must be finite, got {clock_offset!r}")
    value = float(clock_offset)
    return lambda _time: value


def _numeric_records(timestamps: np.ndarray, values: np.ndarray) -> bytes:
    """Samples as packed records: TimestampBytes (8), timestamp, values, all little-endian."""
    record = np.dtype(
        [
            ("stamp_bytes", "u1"),
            ("stamp", "<f8"),
            ("values", values.dtype.newbyteorder("<"), values.shape[1:]),
        ]
    )
    records = np.empty(timestamps.shape[0], dtype=record)
    records["stamp_bytes"] = 8
    records["stamp"] = timestamps
    records["values"] = values
    return records.tobytes()


def _string_records(
    timestamps: np.ndarray, values: Sequence[Sequence[str]], channel_count: int
) -> bytes:
    if len(values) != timestamps.shape[0]:
        raise ValueError(
            f"'values' must hold one sample per timestamp ({timestamps.shape[0]}), "
            f"got {len(values)}"
        )
    parts = []
    for stamp, sample in zip(timestamps.tolist(), values, strict=True):
        if len(sample) != channel_count or not all(isinstance(v, str) for v in sample):
            raise ValueError(
                f"each sample of 'values' must be {channel_count} strings, got {sample!r}"
            )
        parts.append(struct.pack("<Bd", 8, stamp))
        for value in sample:
            encoded = value.encode("utf-8")
            parts.append(encode_varlen(len(encoded)) + encoded)
    return b"".join(parts)


def _footer_xml(state: _StreamState) -> bytes:
    info = ET.Element("info")
    if state.sample_count:
        ET.SubElement(info, "first_timestamp").text = repr(state.first_timestamp)
        ET.SubElement(info, "last_timestamp").text = repr(state.last_timestamp)
    ET.SubElement(info, "sample_count").text = str(state.sample_count)
    offsets = ET.SubElement(info, "clock_offsets")
    for time, value in state.clock_offsets:
        offset = ET.SubElement(offsets, "offset")
        ET.SubElement(offset, "time").text = repr(time)
        ET.SubElement(offset, "value").text = repr(value)
    return _xml_bytes(info)


def _xml_bytes(element: ET.Element) -> bytes:
    return b'<?xml version="1.0"?>' + ET.tostring(element, encoding="utf-8", xml_declaration=False)
