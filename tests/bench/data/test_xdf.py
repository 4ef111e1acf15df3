"""XDF session files: the writer against pyxdf and the spec, and the reader's refusals."""

from __future__ import annotations

import gzip
import re
import struct
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import pyxdf
from pyxdf.pyxdf import parse_xdf

from bench.data.ground_truth import PATTERN_LABELS, GroundTruth
from bench.data.session import Session
from bench.data.session_io import SessionFileError, read_session, read_xdf, write_xdf
from bench.data.session_io._xdf_metadata import ecog_desc, truth_desc
from bench.data.session_io._xdf_scan import XdfLayout, scan_xdf
from bench.data.session_io.xdf_writer import XdfWriter
from service.core.grid import DEFAULT_GRID, ElectrodeGrid

GRID = DEFAULT_GRID
RATE = 277.78
BOUNDARY_UUID = bytes.fromhex("43A546DCCBF5410FB30ED5467383CBE4")


def _frames(n: int) -> np.ndarray:
    """Each value encodes its sample, row and column: sample * 1000 + row * 20 + col + 0.25."""
    sample = np.arange(n, dtype=np.float32)[:, None, None]
    electrode = np.arange(GRID.n_channels, dtype=np.float32).reshape(GRID.shape)
    return sample * 1000 + electrode + np.float32(0.25)


def _truth(n: int) -> GroundTruth:
    rng = np.random.default_rng(7)
    velocity = rng.standard_normal((n, 2))
    velocity[::3] = np.nan
    return GroundTruth(
        velocity_mps=velocity,
        speed_mps=np.where(np.isnan(velocity[:, 0]), np.nan, np.hypot(*velocity.T)),
        label=rng.integers(0, len(PATTERN_LABELS), n).astype(np.int8),
        seizure=rng.random(n) < 0.3,
    )


def _session(n: int = 300, *, timestamps: np.ndarray | None = None, truth: bool = True) -> Session:
    if timestamps is None:
        timestamps = 1000.0 + np.arange(n) / RATE
    return Session(
        frames=_frames(len(timestamps)),
        timestamps=timestamps,
        sample_rate_hz=RATE,
        truth=_truth(len(timestamps)) if truth else None,
        info={"seed": 3, "episodes": [{"pattern": "plane", "start": 0.5}], "dead": []},
    )


def _assert_same(read: Session, written: Session) -> None:
    assert read.frames.dtype == np.float32
    assert np.array_equal(read.frames.view(np.uint32), written.frames.view(np.uint32))
    assert read.timestamps.dtype == np.float64
    assert np.array_equal(read.timestamps, written.timestamps)
    assert read.sample_rate_hz == written.sample_rate_hz
    assert read.grid == written.grid
    assert read.info == written.info
    if written.truth is None:
        assert read.truth is None
    else:
        assert read.truth is not None and read.truth.equals(written.truth)


def _add_rig_stream(writer: XdfWriter, **header: Any) -> None:
    """Stream 1 of ``writer``: the rig's ECoG stream of 360 float32 channels at ``RATE``."""
    writer.add_stream(
        1,
        name="rig",
        stream_type="ECoG",
        channel_count=360,
        channel_format="float32",
        nominal_srate=RATE,
        **header,
    )


def _raw_streams(path: Path) -> dict[str, dict]:
    """The file's streams as pyxdf returns them without any processing, by name."""
    streams, _ = pyxdf.load_xdf(str(path), synchronize_clocks=False, dejitter_timestamps=False)
    return {stream["info"]["name"][0]: stream for stream in streams}


# --- round trips -------------------------------------------------------------------------------


def test_round_trip_is_exact(tmp_path: Path) -> None:
    session = _session(300)
    path = tmp_path / "s.xdf"
    write_xdf(path, session, chunk_samples=64)
    _assert_same(read_xdf(path), session)


def test_round_trip_through_gzip_and_read_session(tmp_path: Path) -> None:
    session = _session(100)
    path = tmp_path / "s.xdfz"
    write_xdf(path, session)
    assert gzip.decompress(path.read_bytes())[:4] == b"XDF:"
    _assert_same(read_session(path), session)


def test_empty_session_round_trips(tmp_path: Path) -> None:
    session = _session(0, truth=False)
    path = tmp_path / "empty.xdf"
    write_xdf(path, session)
    _assert_same(read_xdf(path), session)


def test_scrambled_channel_order_lands_on_each_electrode(tmp_path: Path) -> None:
    session = _session(40, truth=False)
    order = np.random.default_rng(1).permutation(GRID.n_channels)
    path = tmp_path / "scrambled.xdf"
    write_xdf(path, session, channel_order=order)

    raw = _raw_streams(path)["corticast-rig"]
    rows, cols = np.divmod(order, GRID.cols)
    assert np.array_equal(raw["time_series"], session.frames[:, rows, cols])  # really scrambled
    labels = [ch["label"][0] for ch in raw["info"]["desc"][0]["channels"][0]["channel"]]
    assert labels == [GRID.label(r, c) for r, c in zip(rows, cols, strict=True)]

    read = read_xdf(path)
    sample, electrode = np.divmod(read.frames, 1000)
    assert np.array_equal(sample, np.broadcast_to(np.arange(40)[:, None, None], sample.shape))
    assert np.array_equal(
        electrode - 0.25, np.broadcast_to(np.arange(360.0).reshape(18, 20), electrode.shape)
    )
    _assert_same(read, session)


@pytest.mark.parametrize("positions", ["no desc", "labels only"])
def test_stream_without_positions_falls_back_to_row_major(tmp_path: Path, positions: str) -> None:
    desc = None
    if positions == "labels only":  # e.g. a LabRecorder file from another amplifier
        desc = ET.Element("desc")
        channels = ET.SubElement(desc, "channels")
        for k in range(GRID.n_channels):
            ET.SubElement(ET.SubElement(channels, "channel"), "label").text = f"E{k}"
    samples = np.arange(3 * 360, dtype=np.float32).reshape(3, 360)
    path = tmp_path / "amp.xdf"
    with XdfWriter(path) as writer:
        writer.add_stream(
            7,
            name="amp",
            stream_type="ECoG",
            channel_count=360,
            channel_format="float32",
            nominal_srate=500.0,
            desc=desc,
        )
        writer.write_samples(7, np.array([1.0, 1.002, 1.004]), samples)
    read = read_xdf(path)
    assert np.array_equal(read.frames, samples.reshape(3, 18, 20))
    assert read.grid == DEFAULT_GRID  # no desc/grid: the rig's array
    assert read.sample_rate_hz == 500.0  # the file's nominal rate, recorded
    assert read.info == {} and read.truth is None


def test_ground_truth_labels_are_mapped_by_pattern_name(tmp_path: Path) -> None:
    truth = _truth(5)
    reversed_names = PATTERN_LABELS[::-1]
    desc = truth_desc("rig")
    names = desc.find("pattern_labels")
    for element, name in zip(names, reversed_names, strict=True):
        element.text = name
    file_label = np.array([reversed_names.index(PATTERN_LABELS[i]) for i in truth.label])
    values = np.column_stack([truth.velocity_mps, truth.speed_mps, file_label, truth.seizure])
    timestamps = np.arange(5) / RATE
    path = tmp_path / "labels.xdf"
    with XdfWriter(path) as writer:
        _add_rig_stream(writer, source_id="rig", desc=ecog_desc(GRID, np.arange(360), {}))
        writer.add_stream(
            2,
            name="truth",
            stream_type="GroundTruth",
            channel_count=5,
            channel_format="double64",
            nominal_srate=RATE,
            desc=desc,
        )
        writer.write_samples(1, timestamps, _frames(5).reshape(5, 360))
        writer.write_samples(2, timestamps, values.astype(np.float64))
    read = read_xdf(path)
    assert read.truth is not None and read.truth.equals(truth)


def test_a_recording_reads_on_the_grid_it_records_unless_the_reader_names_one(
    tmp_path: Path,
) -> None:
    """A rig with another array records it (desc/grid); read on the rig's 18x20 array, its
    recording was refused, so it could be neither replayed nor trained on. A reader that names
    an array still refuses a recording on another, naming both."""
    tall = ElectrodeGrid(rows=20, cols=18)
    session = Session(
        frames=np.arange(2 * 360, dtype=np.float32).reshape(2, 20, 18),
        timestamps=np.array([0.0, 0.1]),
        grid=tall,
    )
    path = tmp_path / "tall.xdf"
    write_xdf(path, session)
    _assert_same(read_xdf(path), session)
    _assert_same(read_session(path), session)
    _assert_same(read_xdf(path, grid=tall), session)
    named = r"describes a 20x18 grid with pitch 0.5 mm; the grid is 18x20 with pitch 0.5 mm"
    with pytest.raises(SessionFileError, match=named):
        read_xdf(path, grid=DEFAULT_GRID)
    with pytest.raises(SessionFileError, match=named):
        read_session(path, grid=DEFAULT_GRID)
    small = ElectrodeGrid(rows=8, cols=8, pitch_m=0.4e-3)
    session = Session(
        frames=np.arange(3 * 64, dtype=np.float32).reshape(3, 8, 8),
        timestamps=np.array([0.0, 0.1, 0.2]),
        grid=small,
    )
    path = tmp_path / "small.xdfz"
    write_xdf(path, session)
    _assert_same(read_session(path), session)


def test_ground_truth_must_match_the_samples(tmp_path: Path) -> None:
    path = tmp_path / "short-truth.xdf"
    with XdfWriter(path) as writer:
        _add_rig_stream(writer, source_id="rig")
        writer.add_stream(
            2,
            name="truth",
            stream_type="GroundTruth",
            channel_count=5,
            channel_format="double64",
            nominal_srate=RATE,
            desc=truth_desc("rig"),
        )
        writer.write_samples(1, np.arange(3) / RATE, np.zeros((3, 360), np.float32))
        writer.write_samples(2, np.arange(2) / RATE, np.zeros((2, 5)))
    with pytest.raises(SessionFileError, match=r"one sample per ECoG sample .*got 2 samples for 3"):
        read_xdf(path)


# --- what the file holds, checked with pyxdf and by hand against the spec ----------------------


def test_chunks_follow_the_spec(tmp_path: Path) -> None:
    session = _session(300)  # 1.08 s
    path = tmp_path / "s.xdf"
    write_xdf(
        path,
        session,
        chunk_samples=50,
        clock_offset=0.5,
        clock_offset_interval_s=0.25,
        boundary_interval_s=0.5,
    )
    tags = [chunk["tag"] for chunk in parse_xdf(str(path))]
    assert tags[:3] == [1, 2, 2]
    assert tags[-2:] == [6, 6]
    assert tags.count(3) == 2 * 6  # 300 samples in chunks of 50, for both streams
    assert tags.count(4) == 2 * 5  # offsets at 0, 0.25, ..., 1.0 s for both streams
    assert tags.count(5) == 2  # boundaries at 0.5 and 1.0 s

    data = path.read_bytes()
    assert data[:4] == b"XDF:"
    size, length, tag = struct.unpack_from("<BBH", data, 4)  # FileHeader: 1 length byte
    assert (size, tag) == (1, 1)
    assert ET.fromstring(data[8 : 4 + 2 + length]).findtext("version") == "1.0"
    boundary = data.index(BOUNDARY_UUID)
    assert struct.unpack_from("<BBH", data, boundary - 4) == (1, 18, 5)
    first_samples = next(c for c in scan_xdf(path).chunks if c.tag == 3)
    size, length, tag, stream_id = struct.unpack_from("<BIHI", data, first_samples.start)
    assert (size, tag, stream_id) == (4, 3, 1)
    assert length == first_samples.end - first_samples.start - 5
    n_size, n_samples, stamp_bytes, stamp = struct.unpack_from(
        "<BBBd", data, first_samples.start + 11
    )
    assert (n_size, n_samples, stamp_bytes, stamp) == (1, 50, 8, session.timestamps[0])
    values = np.frombuffer(data, "<f4", 360, first_samples.start + 11 + 2 + 9)
    assert np.array_equal(values, session.frames[0].ravel())

    raw = _raw_streams(path)["corticast-rig"]
    assert np.array_equal(raw["time_stamps"], session.timestamps)  # stream clock, unshifted
    assert raw["clock_times"] == pytest.approx(1000.0 + np.arange(5) * 0.25, abs=1e-12)
    assert raw["clock_values"] == [0.5] * 5
    footer = raw["footer"]["info"]
    assert footer["sample_count"] == ["300"]
    assert float(footer["first_timestamp"][0]) == session.timestamps[0]
    assert float(footer["last_timestamp"][0]) == session.timestamps[-1]
    assert len(footer["clock_offsets"][0]["offset"]) == 5


def test_constant_clock_offset_shifts_timestamps(tmp_path: Path) -> None:
    session = _session(300)
    path = tmp_path / "s.xdf"
    write_xdf(path, session, clock_offset=-12.345, clock_offset_interval_s=0.2)
    read = read_xdf(path)
    np.testing.assert_allclose(read.timestamps, session.timestamps - 12.345, rtol=0, atol=1e-9)
    assert np.array_equal(read.frames, session.frames)
    assert read.truth is not None and read.truth.equals(session.truth)


def test_drifting_clock_offset_is_applied_as_pyxdf_does(tmp_path: Path) -> None:
    session = _session(300, truth=False)
    path = tmp_path / "s.xdf"
    write_xdf(path, session, clock_offset=lambda t: 0.3 + 2e-4 * t, clock_offset_interval_s=0.1)
    read = read_xdf(path)
    expected = session.timestamps + 0.3 + 2e-4 * session.timestamps  # pyxdf's linear fit
    np.testing.assert_allclose(read.timestamps, expected, rtol=0, atol=1e-9)
    assert not np.allclose(read.timestamps - session.timestamps, 0.3 + 2e-4 * 1000.0, atol=1e-6)


def test_dropped_samples_and_jitter_survive(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    regular = 50.0 + np.arange(400) / RATE
    kept = np.ones(400, bool)
    kept[[17, 18, 19, 200, 333]] = False  # dropped samples
    timestamps = regular[kept] + rng.uniform(-0.4e-3, 0.4e-3, kept.sum())  # jitter
    session = _session(timestamps=timestamps)
    path = tmp_path / "drops.xdf"
    write_xdf(path, session, chunk_samples=32)
    read = read_xdf(path)
    _assert_same(read, session)
    assert np.max(np.diff(read.timestamps)) > 3.5 / RATE  # the 3-sample gap is still there

    dejittered = read_xdf(path, dejitter=True)
    assert np.ptp(np.diff(dejittered.timestamps)) < 1e-9  # pyxdf made them even
    assert np.array_equal(dejittered.frames, session.frames)


def test_a_stamp_that_does_not_advance_is_refused_naming_the_sample(tmp_path: Path) -> None:
    """A repeated stamp has no place in time for its frame; the refusal names the file, the
    sample and both stamps as plain numbers (numpy's repr read 'np.float64(...)')."""
    stamps = np.arange(20) / RATE
    stamps[10] = stamps[9]
    path = tmp_path / "repeated.xdf"
    with XdfWriter(path) as writer:
        _add_rig_stream(writer)
        writer.write_samples(1, stamps, np.zeros((20, 360), np.float32))
    with pytest.raises(SessionFileError) as err:
        read_xdf(path)
    message = str(err.value)
    assert message.startswith(f"{path}: stream 1 'rig' "), message
    stamp = float(stamps[9])
    assert message.endswith(
        f"'timestamps' must be strictly increasing; sample 10 ({stamp!r}) does not follow {stamp!r}"
    ), message


# --- choosing the stream -------------------------------------------------------------------------


def _two_rigs_and_markers(path: Path) -> tuple[np.ndarray, np.ndarray]:
    a = np.full((4, 360), 1.0, np.float32)
    b = np.arange(4 * 360, dtype=np.float32).reshape(4, 360)
    stamps = np.arange(4) / RATE
    with XdfWriter(path) as writer:
        for stream_id, name in ((1, "rig-A"), (2, "rig-B")):
            writer.add_stream(
                stream_id,
                name=name,
                stream_type="ECoG",
                channel_count=360,
                channel_format="float32",
                nominal_srate=RATE,
                source_id=name,
            )
        writer.add_stream(
            3,
            name="events",
            stream_type="Markers",
            channel_count=1,
            channel_format="string",
            nominal_srate=0.0,
        )
        writer.write_samples(3, np.array([0.001]), [["stim on"]])
        writer.write_samples(1, stamps, a)
        writer.write_samples(2, stamps, b)
        writer.write_samples(3, np.array([0.005, 0.006]), [["stim off"], ["µ-note"]])
    return a, b


def test_stream_is_chosen_by_name(tmp_path: Path) -> None:
    path = tmp_path / "three.xdf"
    _, b = _two_rigs_and_markers(path)
    read = read_xdf(path, stream_name="rig-B")
    assert np.array_equal(read.frames, b.reshape(4, 18, 20))
    markers = _raw_streams(path)["events"]
    assert markers["time_series"] == [["stim on"], ["stim off"], ["µ-note"]]


def test_ambiguous_or_missing_stream_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "three.xdf"
    _two_rigs_and_markers(path)
    with pytest.raises(SessionFileError, match="2 streams have type 'ECoG'") as err:
        read_xdf(path)
    for expected in (str(path), "'stream_name'", "'rig-A'", "'rig-B'", "'events'", "360"):
        assert expected in str(err.value)
    with pytest.raises(SessionFileError, match="no stream has type 'ECoG' and name 'rig-C'"):
        read_xdf(path, stream_name="rig-C")
    with pytest.raises(SessionFileError, match=r"'events'.*holds strings"):
        read_xdf(path, stream_type="Markers")


def test_wrong_channel_count_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "300.xdf"
    with XdfWriter(path) as writer:
        writer.add_stream(
            1,
            name="small",
            stream_type="ECoG",
            channel_count=300,
            channel_format="float32",
            nominal_srate=RATE,
        )
        writer.write_samples(1, np.array([0.0]), np.zeros((1, 300), np.float32))
    with pytest.raises(SessionFileError, match=r"300 channels.*exactly 360") as err:
        read_xdf(path)
    assert str(path) in str(err.value)


def test_rate_is_checked_only_when_expected(tmp_path: Path) -> None:
    session = _session(10, truth=False)
    path = tmp_path / "s.xdf"
    write_xdf(path, session)
    assert read_xdf(path, expected_rate_hz=277.7778).sample_rate_hz == RATE
    with pytest.raises(
        SessionFileError, match=r"nominal_srate 277.78 Hz; 'expected_rate_hz' is 1000"
    ):
        read_xdf(path, expected_rate_hz=1000.0)


# --- damaged files -------------------------------------------------------------------------------


@pytest.fixture
def recording(tmp_path: Path) -> tuple[Path, Session, XdfLayout]:
    session = _session(300)
    path = tmp_path / "rec.xdf"
    write_xdf(path, session, chunk_samples=50, clock_offset_interval_s=0.5)
    return path, session, scan_xdf(path)


def _cut(path: Path, at: int) -> Path:
    cut = path.with_name(f"cut-{at}.xdf")
    cut.write_bytes(path.read_bytes()[:at])
    return cut


def _points(layout: XdfLayout) -> dict[str, int]:
    chunks = layout.chunks
    samples = [c for c in chunks if c.tag == 3]
    footers = [c for c in chunks if c.tag == 6]
    return {
        "after magic": 4,
        "after file header": chunks[0].end,
        "inside the length field": chunks[1].start + 2,
        "after stream headers": chunks[2].end,
        "inside first samples": (samples[0].start + samples[0].end) // 2,
        "inside last samples": (samples[-1].start + samples[-1].end) // 2,
        "before footers": footers[0].start,
        "inside last footer": footers[-1].end - 3,
        "one byte short": footers[-1].end - 1,
    }


@pytest.mark.parametrize(
    "where",
    [
        "after magic",
        "after file header",
        "inside the length field",
        "after stream headers",
        "inside first samples",
        "inside last samples",
        "before footers",
        "inside last footer",
        "one byte short",
    ],
)
def test_truncated_file_is_refused_when_not_allowed(recording, where: str) -> None:
    path, _, layout = recording
    cut = _cut(path, _points(layout)[where])
    with pytest.raises(SessionFileError, match="truncated recording") as err:
        read_xdf(cut, allow_truncated=False)
    assert str(err.value).startswith(f"{cut}: file ends at byte ")
    assert str(err.value).endswith("refused because allow_truncated=False")


def test_truncation_mid_chunk_names_the_byte(recording) -> None:
    path, _, layout = recording
    at = _points(layout)["inside first samples"]
    start = next(c.start for c in layout.chunks if c.tag == 3)
    with pytest.raises(
        SessionFileError, match=f"ends at byte {at} inside the chunk that starts at byte {start}"
    ):
        read_xdf(_cut(path, at), allow_truncated=False)


@pytest.mark.parametrize(
    ("where", "n_read"), [("inside last samples", 250), ("before footers", 300)]
)
def test_truncated_file_is_read_up_to_the_break(recording, where: str, n_read: int) -> None:
    path, session, layout = recording
    cut = _cut(path, _points(layout)[where])
    seconds = n_read / RATE
    with pytest.warns(
        RuntimeWarning,
        match=rf"{re.escape(str(cut))}: .* read the {n_read} samples \({seconds:.1f} s\)",
    ):
        read = read_xdf(cut)
    prefix = Session(
        frames=session.frames[:n_read],
        timestamps=session.timestamps[:n_read],
        sample_rate_hz=RATE,
        truth=session.truth.take(slice(0, n_read)),
        info=session.info,
    )
    _assert_same(read, prefix)


@pytest.mark.parametrize("where", ["after magic", "after file header", "inside the length field"])
def test_a_recording_cut_before_its_stream_header_says_it_was_cut(recording, where: str) -> None:
    """Read as a crashed recording's prefix, it holds no ECoG stream; said without the cut
    ('no stream has type ...; streams found: none'), that reads as a wrong [stream] type."""
    path, _, layout = recording
    cut = _cut(path, _points(layout)[where])
    with pytest.raises(SessionFileError, match="no stream has type 'ECoG'") as err:
        read_xdf(cut)
    assert str(err.value).startswith(f"{cut}: ")
    assert "truncated recording" in str(err.value)


def test_every_command_reads_a_crashed_recording_as_replay_does(recording) -> None:
    """``rig --source`` and ``train``/``evaluate --data`` read files through read_session."""
    path, session, layout = recording
    cut = _cut(path, _points(layout)["before footers"])
    with pytest.warns(RuntimeWarning, match="read the 300 samples"):
        read = read_session(cut)
    assert np.array_equal(read.frames, session.frames)


def test_allow_truncated_trims_ground_truth_cut_apart_from_its_samples(recording) -> None:
    path, session, layout = recording
    third_ecog = [c for c in layout.chunks if c.tag == 3 and c.stream_id == 1][2]
    cut = _cut(path, third_ecog.end + 5)  # 150 ECoG samples whole, truth cut after 100
    with pytest.warns(RuntimeWarning, match="read the 100 samples"):
        read = read_xdf(cut, allow_truncated=True)
    assert read.n_frames == 100 and len(read.truth) == 100
    assert np.array_equal(read.frames, session.frames[:100])
    assert read.truth.equals(session.truth.take(slice(0, 100)))


def test_allow_truncated_reads_a_cut_gzip_file(tmp_path: Path) -> None:
    session = _session(2000, truth=False)
    path = tmp_path / "s.xdfz"
    write_xdf(path, session, chunk_samples=100)
    cut = tmp_path / "cut.xdfz"
    cut.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(SessionFileError, match="truncated recording"):
        read_xdf(cut, allow_truncated=False)
    with pytest.warns(RuntimeWarning, match="before the break"):
        read = read_xdf(cut)
    assert 0 < read.n_frames < 2000 and read.n_frames % 100 == 0
    assert np.array_equal(read.frames, session.frames[: read.n_frames])


def _damage(recording, how: str) -> Path:
    path, _, layout = recording
    data = bytearray(path.read_bytes())
    samples = next(c for c in layout.chunks if c.tag == 3)
    boundary = layout.chunks[3].start  # a chunk boundary after the headers
    if how == "bad magic":
        data[:4] = b"XDF?"
    elif how == "garbage inserted":
        data[boundary:boundary] = b"\xde\xad\xbe\xef garbage"
    elif how == "garbage over samples":
        data[samples.start + 13 : samples.start + 22] = b"\x07" * 9  # from a TimestampBytes
    elif how == "length too long":
        struct.pack_into("<I", data, samples.start + 1, samples.end - samples.start - 5 + 7)
    elif how == "length too short":
        struct.pack_into("<I", data, samples.start + 1, samples.end - samples.start - 5 - 2000)
    elif how == "length huge":
        data[samples.start : samples.start + 5] = b"\x08" + struct.pack("<Q", 2**60)
    elif how == "clock offset NaN":
        offset = next(c for c in layout.chunks if c.tag == 4)
        struct.pack_into("<d", data, offset.end - 8, float("nan"))
    elif how == "bad header XML":
        data[layout.chunks[1].start + 12 : layout.chunks[1].start + 20] = b"<<<<>>>>"
    elif how == "text file":
        data = bytearray(b"session notes, not a recording\n")
    elif how == "empty":
        data = bytearray()
    damaged = path.with_name(f"damaged-{how.replace(' ', '-')}.xdf")
    damaged.write_bytes(bytes(data))
    return damaged


_PROBLEMS = {
    "bad magic": r"not an XDF file: it starts with b'XDF\?'",
    "garbage inserted": r"corrupt chunk at byte \d+: its length field size is 222",
    "garbage over samples": r"corrupt chunk at byte \d+: Samples chunk of stream 1 .*Bytes 7 at",
    "length too long": r"corrupt chunk at byte \d+: Samples chunk .*samples end at offset",
    "length too short": r"corrupt chunk at byte \d+: Samples chunk .*run past the end",
    "clock offset NaN": r"corrupt chunk at byte \d+: ClockOffset chunk of stream 1 holds offset "
    r"nan at time",
    "bad header XML": r"StreamHeader of stream 1 is not valid XML",
    "text file": r"not an XDF file: it starts with b'sess'",
    "empty": r"not an XDF file: it is empty",
}
"""What each kind of damage must be reported as."""


@pytest.mark.parametrize("how", list(_PROBLEMS))
def test_corrupt_file_is_refused(recording, how: str) -> None:
    damaged = _damage(recording, how)
    with pytest.raises(SessionFileError, match=_PROBLEMS[how]) as err:
        read_xdf(damaged)
    assert str(err.value).startswith(f"{damaged}: ")


def test_huge_chunk_length_reads_as_a_truncation(recording) -> None:
    """A length past the end of the file cannot be told from a cut-off file (nor by pyxdf)."""
    damaged = _damage(recording, "length huge")
    with pytest.raises(SessionFileError, match=r"inside the chunk .*corrupt chunk length"):
        read_xdf(damaged, allow_truncated=False)
    with pytest.raises(SessionFileError, match=r"corrupt chunk length\); no sample of stream 1"):
        read_xdf(damaged)


def test_corrupt_file_is_refused_even_when_truncation_is_allowed(recording) -> None:
    with pytest.raises(SessionFileError, match="samples end at offset"):
        read_xdf(_damage(recording, "length too long"), allow_truncated=True)


def test_corrupt_gzip_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "fake.xdfz"
    path.write_bytes(b"XDF: not compressed at all")
    with pytest.raises(SessionFileError, match=f"{re.escape(str(path))}: not a valid gzip"):
        read_xdf(path)


# --- arguments -----------------------------------------------------------------------------------


def test_missing_file_and_unknown_suffix(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="'path' must name an existing file"):
        read_xdf(tmp_path / "absent.xdf")
    with pytest.raises(
        ValueError, match=r"'path' must end in one of .xdf, .xdfz, .nwb, got 'x.edf'"
    ):
        read_session(tmp_path / "x.edf")


def test_writer_refuses_bad_arguments(tmp_path: Path) -> None:
    session = _session(5, truth=False)
    path = tmp_path / "s.xdf"
    with pytest.raises(ValueError, match="'chunk_samples' must be an int >= 1, got 0"):
        write_xdf(path, session, chunk_samples=0)
    with pytest.raises(ValueError, match=r"'channel_order' must be a permutation of 0\.\.359"):
        write_xdf(path, session, channel_order=np.zeros(360, int))
    with pytest.raises(TypeError, match="'clock_offset' must be int or float, got str"):
        write_xdf(path, session, clock_offset="0.1")
    bad_info = Session(session.frames, session.timestamps, info={"when": object()})
    with pytest.raises(TypeError, match=r"'session\.info' must be JSON-serialisable"):
        write_xdf(path, bad_info)
    with XdfWriter(path) as writer:
        writer.add_stream(
            1,
            name="x",
            stream_type="ECoG",
            channel_count=2,
            channel_format="float32",
            nominal_srate=RATE,
        )
        with pytest.raises(TypeError, match="'values' must have dtype float32, got float64"):
            writer.write_samples(1, np.zeros(1), np.zeros((1, 2)))
        with pytest.raises(ValueError, match="'stream_id' must name a stream added"):
            writer.write_samples(2, np.zeros(1), np.zeros((1, 2), np.float32))
    with pytest.raises(RuntimeError, match=r"write_boundary\(\) called after close\(\)"):
        writer.write_boundary()


# --- files from other writers: what pyxdf reads, read with a warning ------------------------------


def _spec_chunk(tag: int, content: bytes) -> bytes:
    """One chunk per the XDF 1.0 spec: NumLengthBytes 4, Length (tag + content), Tag, content."""
    return struct.pack("<BIH", 4, 2 + len(content), tag) + content


def _spec_samples(stream_id: int, values: np.ndarray, stamps: np.ndarray) -> bytes:
    """A Samples chunk: StreamId, NumSampleBytes 4 + count, each sample stamped (8 bytes)."""
    body = b"".join(
        b"\x08" + struct.pack("<d", stamp) + row.astype("<f4").tobytes()
        for stamp, row in zip(stamps, values, strict=True)
    )
    return _spec_chunk(3, struct.pack("<IBI", stream_id, 4, len(values)) + body)


def _foreign_recording(tmp_path: Path, n: int, change: str) -> tuple[Path, Session, int]:
    """A recording written byte by byte as another recorder might: a header with only the
    channel count and labels (no rows, cols or grid), boundaries, and one departure from the
    spec that pyxdf reads past. Returns the file, what it holds, and where the departure is."""
    session = _session(n, truth=False)
    labels = "".join(f"<channel><label>E{i:03d}</label></channel>" for i in range(GRID.n_channels))
    header = (
        "<?xml version='1.0'?><info><name>OtherRecorder</name><type>ECoG</type>"
        f"<channel_count>{GRID.n_channels}</channel_count><nominal_srate>{RATE}</nominal_srate>"
        "<channel_format>float32</channel_format><source_id>other-amp</source_id>"
        f"<desc><channels>{labels}</channels></desc></info>"
    ).encode()
    boundary = b"not the boundary UUID" if change == "foreign boundary" else BOUNDARY_UUID
    footer = b"<info><first_timestamp>" if change == "footer not XML" else b"<info/>"
    values = session.frames.reshape(n, -1)  # row-major: the channel-map fallback's order
    half = n // 2
    chunks = [
        _spec_chunk(1, b"<?xml version='1.0'?><info><version>1.0</version></info>"),
        _spec_chunk(2, struct.pack("<I", 7) + header),
        _spec_samples(7, values[:half], session.timestamps[:half]),
        _spec_chunk(5, boundary),
        _spec_samples(7, values[half:], session.timestamps[half:]),
        _spec_chunk(6, struct.pack("<I", 7) + footer),
    ]
    changed = {"foreign boundary": 3, "unknown tag": 3, "footer not XML": 5}.get(change, 0)
    if change == "unknown tag":
        chunks.insert(3, _spec_chunk(42, b"a vendor's own chunk"))
    if change == "no FileHeader":
        chunks.pop(0)
    path = tmp_path / f"{change.replace(' ', '-')}.xdf"
    path.write_bytes(b"XDF:" + b"".join(chunks))
    at = 4 + sum(len(chunk) for chunk in chunks[:changed])
    return path, Session(session.frames, session.timestamps, sample_rate_hz=RATE), at


_TOLERATED = {
    "foreign boundary": "Boundary chunk without the spec's boundary UUID",
    "unknown tag": "chunk with unknown tag 42 (skipped)",
    "footer not XML": "StreamFooter that is not valid XML (ignored)",
    "no FileHeader": "STREAM_HEADER chunk where the FileHeader should be first",
}


@pytest.mark.parametrize("change", list(_TOLERATED))
def test_departure_pyxdf_reads_is_read_with_a_warning(tmp_path: Path, change: str) -> None:
    path, written, at = _foreign_recording(tmp_path, 40, change)
    message = f"{path}: {_TOLERATED[change]} at byte {at}; read as pyxdf reads it"
    with pytest.warns(RuntimeWarning, match=re.escape(message)):
        read = read_xdf(path)
    _assert_same(read, written)
    assert scan_xdf(path).truncation is None
    raw = _raw_streams(path)["OtherRecorder"]  # pyxdf, the reference, reads the same samples
    assert np.array_equal(raw["time_series"], written.frames.reshape(40, -1))


def test_spec_file_without_departures_reads_silently(tmp_path: Path) -> None:
    path, written, _ = _foreign_recording(tmp_path, 40, "none")
    _assert_same(read_xdf(path), written)  # warnings are errors in this suite


def test_a_write_that_fails_half_way_leaves_no_file_and_the_old_one_intact(tmp_path: Path) -> None:
    session = _session(300, truth=True)
    kept = tmp_path / "kept.xdf"
    write_xdf(kept, session)
    before = kept.read_bytes()

    def offset_fails_late(time: float) -> float:
        if time > session.timestamps[0]:
            raise RuntimeError("clock went away")
        return 0.0

    for path in (kept, tmp_path / "new.xdf"):
        with pytest.raises(RuntimeError, match="clock went away"):
            write_xdf(
                path,
                session,
                chunk_samples=16,
                clock_offset=offset_fails_late,
                clock_offset_interval_s=0.1,
            )
    bad_info = Session(session.frames, session.timestamps, info={"when": object()})
    with pytest.raises(TypeError, match=r"'session\.info' must be JSON-serialisable"):
        write_xdf(kept, bad_info)
    assert kept.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kept.xdf"]


def test_the_writer_refuses_a_clock_offset_its_reader_would_call_corrupt(tmp_path: Path) -> None:
    session = _session(50, truth=False)
    path = tmp_path / "s.xdf"
    with pytest.raises(ValueError, match=r"'offset' must be finite, got nan"):
        write_xdf(path, session, clock_offset=lambda _time: float("nan"))
    assert not path.exists()


def test_a_double_stream_in_volts_reads_as_the_nearest_float32_microvolts(tmp_path: Path) -> None:
    grid, n = DEFAULT_GRID, 50
    volts = np.random.default_rng(1).normal(0.0, 100e-6, (n, grid.n_channels))
    desc = ecog_desc(grid, np.arange(grid.n_channels), {})
    for unit in desc.iter("unit"):
        unit.text = "volts"
    path = tmp_path / "volts.xdf"
    with XdfWriter(path) as writer:
        writer.add_stream(
            1,
            name="amp",
            stream_type="ECoG",
            channel_count=grid.n_channels,
            channel_format="double64",
            nominal_srate=RATE,
            desc=desc,
        )
        writer.write_samples(1, np.arange(n) / RATE, volts)
    expected = (volts * 1e6).astype(np.float32).reshape(n, *grid.shape)
    np.testing.assert_array_equal(read_xdf(path).frames, expected)


def test_a_header_of_another_array_without_its_pitch_is_refused_unless_the_reader_names_it(
    tmp_path: Path,
) -> None:
    """A header giving another array's rows and cols but no pitch_mm was read at the rig's
    0.5 mm pitch, every wave speed off by the ratio of the pitches; refused, naming what to
    pass. Named, it is read on the array named."""
    grid = ElectrodeGrid(rows=8, cols=12, pitch_m=0.4e-3)
    desc = ecog_desc(grid, np.arange(grid.n_channels), {})
    pitch = desc.find("grid/pitch_mm")
    desc.find("grid").remove(pitch)
    path = tmp_path / "no-pitch.xdf"
    with XdfWriter(path) as writer:
        writer.add_stream(
            1,
            name="amp",
            stream_type="ECoG",
            channel_count=grid.n_channels,
            channel_format="float32",
            nominal_srate=RATE,
            desc=desc,
        )
        writer.write_samples(1, np.arange(3) / RATE, np.zeros((3, grid.n_channels), np.float32))
    with pytest.raises(
        SessionFileError,
        match=r"describes a 8x12 array \(rows x cols\) but no pitch_mm .*"
        r"FILE::grid=ROWSxCOLS@PITCHmm",
    ):
        read_xdf(path)
    assert read_xdf(path, grid=grid).grid == grid
