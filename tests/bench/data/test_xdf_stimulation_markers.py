"""The daemon's stimulation markers in XDF files: written, read back on the ECoG clock, refused
when malformed."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
import pyxdf
from pydantic import BaseModel, ConfigDict

from bench.data.session import Session
from bench.data.session_io import SessionFileError, read_xdf, write_xdf
from bench.data.session_io.xdf_writer import XdfWriter
from bench.data.stimulation import on_artefact
from bench.replay._input import load_replay_session
from models.sources import FileOptions, parse_file
from service.config import Settings
from service.core.grid import DEFAULT_GRID
from service.core.stimulation_markers import (
    ANNOUNCED_FORMAT,
    STREAM_NAME,
    STREAM_TYPE,
    AnnouncedTrain,
    MarkerStream,
    StimulationMarker,
    marker_from_fields,
    outlet_source_id,
    parse_marker,
)

RATE = 277.78
N = 600


def _marker(request_id: int, **changes: object) -> dict:
    """A marker's fields (``info`` form, without its time)."""
    fields = {
        "request_id": request_id,
        "sequence": request_id - 1,
        "outcome": "sent",
        "blank_s": 0.07,
        "channels": [3, 17],
        "amplitude_ua": 150,
        "phase_width_us": 200,
        "frequency_hz": 130,
        "train_duration_ms": 50,
    }
    return {**fields, **changes}


def _session(stimulation: list[dict]) -> Session:
    timestamps = 1000.0 + np.arange(N) / RATE
    frames = np.arange(N * 360, dtype=np.float32).reshape(N, *DEFAULT_GRID.shape)
    return Session(frames, timestamps, RATE, info={"seed": 4, "stimulation": stimulation})


def _add_rig_stream(writer: XdfWriter, stream_id: int) -> None:
    writer.add_stream(
        stream_id, name="rig", stream_type="ECoG", channel_count=360,
        channel_format="float32", nominal_srate=RATE,
    )  # fmt: skip


def _add_marker_stream(
    writer: XdfWriter, stream_id: int, name: str = STREAM_NAME, source_id: str = ""
) -> None:
    """A marker stream as LSL marker streams are: one string channel, irregular rate."""
    writer.add_stream(
        stream_id, name=name, stream_type=STREAM_TYPE, channel_count=1,
        channel_format="string", nominal_srate=0.0, source_id=source_id,
    )  # fmt: skip


def _with_markers(tmp_path: Path, texts: list[str]) -> Path:
    """A file whose corticast marker stream carries ``texts``, one sample each."""
    path = tmp_path / "bad.xdf"
    session = _session([])
    with XdfWriter(path) as writer:
        _add_rig_stream(writer, 1)
        _add_marker_stream(writer, 2)
        writer.write_samples(1, session.timestamps, session.frames.reshape(N, 360))
        writer.write_samples(2, 1000.5 + np.arange(len(texts)), [[text] for text in texts])
    return path


def test_markers_round_trip_on_the_sessions_clock(tmp_path: Path) -> None:
    """Markers written beside the frames come back as ``info["stimulation"]``, every field,
    their times moved by the recorder's clock offset exactly as the frames' are."""
    stamps = 1000.0 + np.arange(N) / RATE
    stimulation = [
        {"time": float(stamps[100]), **_marker(1)},
        {"time": float(stamps[350]) + 0.001, **_marker(2, outcome="failed", sequence=None)},
        # A request the bridge raised on after its STIMULATE left: no verdict to number it.
        {
            "time": float(stamps[500]),
            **_marker(3, outcome="failed"),
            "request_id": None,
            "sequence": None,
        },
        {"time": float(stamps[-1]) + 0.5, **_marker(4)},  # after the last frame
    ]
    # A train another tool announced on a marker stream the daemon read, passed on by it.
    announced = AnnouncedTrain(source="open-loop", blank_s=1.1, announcement="pulse 3")
    stimulation.insert(2, {"time": float(stamps[400]), **announced.model_dump(mode="json")})
    session = _session(stimulation)
    path = tmp_path / "s.xdf"
    write_xdf(path, session, chunk_samples=64, clock_offset=-12.345, clock_offset_interval_s=0.2)
    read = read_xdf(path)
    np.testing.assert_allclose(read.timestamps, stamps - 12.345, rtol=0, atol=1e-9)
    assert read.info["seed"] == 4
    got = read.info["stimulation"]
    assert len(got) == 5
    for read_marker, written in zip(got, stimulation, strict=True):
        assert read_marker["time"] == pytest.approx(written["time"] - 12.345, abs=1e-9)
        expected = marker_from_fields(_strip_time(written)).model_dump(mode="json")
        assert _strip_time(read_marker) == expected
    assert got[2]["format"] == ANNOUNCED_FORMAT and got[2]["source"] == "open-loop"
    assert on_artefact(read)[400 : 400 + int(1.1 * RATE)].all()
    # As LabRecorder records the daemon's outlet: one string channel, irregular rate.
    streams, _ = pyxdf.load_xdf(str(path), synchronize_clocks=False)
    (raw,) = [s for s in streams if s["info"]["name"] == [STREAM_NAME]]
    assert raw["info"]["type"] == [STREAM_TYPE]
    assert raw["info"]["channel_format"] == ["string"]
    assert float(raw["info"]["nominal_srate"][0]) == 0.0
    assert parse_marker(raw["time_series"][1][0]).outcome == "failed"
    assert parse_marker(raw["time_series"][3][0]).request_id is None
    assert on_artefact(read)[500 : 500 + int(0.07 * RATE)].all()


def _strip_time(entry: dict) -> dict:
    return {key: value for key, value in entry.items() if key != "time"}


def test_a_session_without_trains_keeps_an_empty_marker_stream(tmp_path: Path) -> None:
    path = tmp_path / "s.xdf"
    write_xdf(path, _session([]))
    assert read_xdf(path).info == {
        "seed": 4,
        "stimulation": [],
        "stimulation_streams": [
            {
                "stream": STREAM_NAME,
                "source_id": "corticast-sim-rig-stimulation",
                "applied": True,
                "why": "written for this stream (its source id 'corticast-sim-rig' with "
                "'-stimulation')",
            }
        ],
    }
    plain = Session(np.zeros((N, 18, 20), np.float32), 1000.0 + np.arange(N) / RATE, RATE)
    write_xdf(path, plain)
    assert read_xdf(path).info == {}


def test_markers_stamped_on_another_hosts_clock_land_on_the_ecog_clock(tmp_path: Path) -> None:
    """The daemon's host and the rig's have their own clocks; LabRecorder measures each
    stream's offset to its own. The rig's clock is 3 s behind the recorder's, the daemon's
    97 s ahead: a train asked at the rig's frame 200 reads at that frame's time. A lab's own
    marker stream (another name) is not ours and is ignored."""
    stamps = 50.0 + np.arange(N) / RATE
    path = tmp_path / "two-hosts.xdf"
    with XdfWriter(path) as writer:
        _add_rig_stream(writer, 1)
        _add_marker_stream(writer, 2)
        _add_marker_stream(writer, 3, name="lab-events")
        for time in (50.0, 51.0, 52.0):
            writer.write_clock_offset(1, time, 3.0)
            writer.write_clock_offset(2, time + 100.0, -97.0)
        writer.write_samples(1, stamps, np.zeros((N, 360), np.float32))
        marker = StimulationMarker.model_validate(_marker(1)).to_text()
        writer.write_samples(2, np.array([stamps[200] + 100.0]), [[marker]])
        writer.write_samples(3, np.array([51.0]), [["not json at all"]])
    read = read_xdf(path)
    (got,) = read.info["stimulation"]
    assert got["time"] == pytest.approx(read.timestamps[200], abs=1e-6)
    assert read.timestamps[200] == pytest.approx(stamps[200] + 3.0, abs=1e-9)


def test_a_malformed_marker_is_a_clear_error(tmp_path: Path) -> None:
    good = StimulationMarker.model_validate(_marker(1)).to_text()
    bad = (
        StimulationMarker.model_validate(_marker(2))
        .to_text()
        .replace('"blank_s":0.07', '"blank_s":-1')
    )
    path = _with_markers(tmp_path, [good, bad])
    with pytest.raises(SessionFileError, match=r"sample 1 is not a stimulation marker") as err:
        read_xdf(path)
    for expected in (str(path), STREAM_NAME, "blank_s", "greater than or equal to 0"):
        assert expected in str(err.value)
    path = _with_markers(tmp_path, ["stim on"])
    with pytest.raises(SessionFileError, match=r"sample 0 is not a stimulation marker.*JSON"):
        read_xdf(path)


@pytest.mark.parametrize("stamp", [float("nan"), float("inf"), -float("inf")])
def test_a_marker_stamped_at_no_time_is_a_clear_error_naming_the_file(
    tmp_path: Path, stamp: float
) -> None:
    """A marker whose stamp is not a time (a recorder that wrote NaN or inf: our writer
    refuses to, so the file's bytes are changed) cannot say which frames its train's artefact
    is on: refused when the file is read, naming it and the sample, not later by whatever
    lays the session out without saying which of its files it was."""
    good = StimulationMarker.model_validate(_marker(1)).to_text()
    path = _with_markers(tmp_path, [good, good])  # stamped 1000.5 and 1001.5
    second = struct.pack("<d", 1001.5)
    raw = path.read_bytes()
    assert raw.count(second) == 1
    path.write_bytes(raw.replace(second, struct.pack("<d", stamp)))
    with pytest.raises(SessionFileError, match=r"sample 1 .*time stamp") as err:
        read_xdf(path)
    assert str(path) in str(err.value) and STREAM_NAME in str(err.value)


def test_two_corticast_marker_streams_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "two.xdf"
    with XdfWriter(path) as writer:
        _add_rig_stream(writer, 1)
        _add_marker_stream(writer, 2)
        _add_marker_stream(writer, 3)
        writer.write_samples(1, np.arange(N) / RATE, np.zeros((N, 360), np.float32))
    with pytest.raises(
        SessionFileError, match=f"2 streams have type 'Markers' and name '{STREAM_NAME}'"
    ):
        read_xdf(path)


def test_two_marker_streams_that_may_both_be_the_rig_s_are_refused_naming_their_source_ids(
    tmp_path: Path,
) -> None:
    """Rig A's daemon's stream and one naming no stream of the file (a daemon's whose
    ``[stream] source_id`` was empty) may both hold rig A's trains. The source ids decide
    which stream a marker stream is applied to; the error listed the two streams without
    them, alike but for their stream ids."""
    path = _two_rigs(tmp_path, {"amp-a-stimulation": 1000.5, "-stimulation": 1001.0})
    with pytest.raises(SessionFileError, match="2 streams have type 'Markers'") as err:
        read_xdf(path, stream_name="rig-a")
    assert "source id 'amp-a-stimulation'" in str(err.value)
    assert "source id '-stimulation'" in str(err.value)


def test_the_writer_refuses_a_marker_it_cannot_write(tmp_path: Path) -> None:
    path = tmp_path / "s.xdf"
    with pytest.raises(ValueError, match=r"\['stimulation'\]\[1\]'.*outcome"):
        write_xdf(
            path,
            _session(
                [{"time": 1000.1, **_marker(1)}, {"time": 1000.2, **_marker(2, outcome="maybe")}]
            ),
        )
    with pytest.raises(
        ValueError, match=r"\['stimulation'\]\[0\]' must be a dict with a number 'time'"
    ):
        write_xdf(path, _session([_marker(1)]))
    with pytest.raises(ValueError, match="times must be finite and in order"):
        write_xdf(path, _session([{"time": 1000.2, **_marker(1)}, {"time": 1000.1, **_marker(2)}]))


def test_another_tool_s_marker_stream_is_read_as_the_daemon_reads_it_live(tmp_path: Path) -> None:
    """A recording with another tool's marker stream "open-loop": named (as ``[ingest]
    stimulation_marker_streams`` names it), each of its markers is an announced train; one the
    daemon already passed on in its own stream is not counted twice; unnamed, it is ignored."""
    session = _session([])
    passed_on = AnnouncedTrain(source="open-loop", blank_s=0.3, announcement="pulse")
    path = tmp_path / "s.xdf"
    with XdfWriter(path) as writer:
        _add_rig_stream(writer, 1)
        _add_marker_stream(writer, 2)
        _add_marker_stream(writer, 3, name="open-loop")
        writer.write_samples(1, session.timestamps, session.frames.reshape(N, 360))
        writer.write_samples(
            2, np.array([1000.5]), [[passed_on.to_text()]]
        )  # the daemon ran for one
        writer.write_samples(
            3, np.array([1000.2, 1000.5, 1001.0]), [["pulse"], ["pulse"], ["x" * 300]]
        )
    assert [m["time"] for m in read_xdf(path).info["stimulation"]] == [1000.5]
    read = read_xdf(path, stimulation_marker_streams={"open-loop": 0.3})
    trains = read.info["stimulation"]
    assert [m["time"] for m in trains] == [1000.2, 1000.5, 1001.0]
    assert {m["source"] for m in trains} == {"open-loop"} and {m["blank_s"] for m in trains} == {
        0.3
    }
    assert trains[2]["announcement"] == "x" * 200
    blanked = (read.timestamps >= 1000.2) & (read.timestamps <= 1000.5 + 0.3)
    blanked |= (read.timestamps >= 1001.0) & (read.timestamps <= 1001.3)
    np.testing.assert_array_equal(on_artefact(read), blanked)
    # The replay reads it as the daemon configured so would.
    settings = Settings(ingest={"stimulation_marker_streams": ["open-loop"]})
    replayed = load_replay_session(str(path), settings)
    assert [m["time"] for m in replayed.info["stimulation"]] == [1000.2, 1000.5, 1001.0]
    # The configured 1100 ms; the one the daemon passed on keeps what it blanked live.
    assert [m["blank_s"] for m in replayed.info["stimulation"]] == [1.1, 0.3, 1.1]
    with pytest.warns(RuntimeWarning, match="no stimulation marker stream named 'absent'"):
        read_xdf(path, stimulation_marker_streams={"absent": 0.3})


def test_a_train_the_daemon_passed_on_is_told_from_another_stream_of_its_name_by_source_id(
    tmp_path: Path,
) -> None:
    """Two rigs' "open-loop" streams fire within a few ms; the daemon read rig-2's and passed
    its train on. Read by name alone, both streams are read: rig-2's train is the daemon's
    record of it, and rig-1's is a train of its own. Matched by name only, rig-1's was taken
    for the daemon's record and dropped: its frames were not blanked."""
    session = _session([])
    passed_on = AnnouncedTrain(
        source="open-loop", source_id="rig-2-stim", blank_s=0.3, announcement="ours"
    )
    path = tmp_path / "s.xdf"
    with XdfWriter(path) as writer:
        _add_rig_stream(writer, 1)
        _add_marker_stream(writer, 2)
        for stream_id, rig in ((3, "rig-1-stim"), (4, "rig-2-stim")):
            _add_marker_stream(writer, stream_id, name="open-loop", source_id=rig)
        writer.write_samples(1, session.timestamps, session.frames.reshape(N, 360))
        writer.write_samples(2, np.array([1000.5]), [[passed_on.to_text()]])
        writer.write_samples(3, np.array([1000.502]), [["theirs"]])
        writer.write_samples(4, np.array([1000.5]), [["ours"]])
    read = read_xdf(path, stimulation_marker_streams={"open-loop": 0.3})
    trains = [(m["time"], m["source_id"], m["announcement"]) for m in read.info["stimulation"]]
    assert trains == [(1000.5, "rig-2-stim", "ours"), (1000.502, "rig-1-stim", "theirs")]


def test_a_stream_at_a_regular_rate_named_as_another_tool_s_markers_is_a_clear_error(
    tmp_path: Path,
) -> None:
    """The rig's stream (or a trigger channel sampled at a rate) named by mistake: its every
    sample is no train; the daemon refuses to read it live, and so does the reader."""
    session = _session([])
    path = tmp_path / "s.xdf"
    with XdfWriter(path) as writer:
        _add_rig_stream(writer, 1)
        writer.write_samples(1, session.timestamps, session.frames.reshape(N, 360))
    with pytest.raises(SessionFileError, match=r"'rig'.*nominal rate of 277.78 Hz"):
        read_xdf(path, stimulation_marker_streams={"rig": 0.3})


def test_another_tool_s_marker_stream_with_no_marker_is_read_as_none(tmp_path: Path) -> None:
    session = _session([])
    path = tmp_path / "s.xdf"
    with XdfWriter(path) as writer:
        _add_rig_stream(writer, 1)
        _add_marker_stream(writer, 2, name="open-loop")
        writer.add_stream(
            3, name="open-loop-codes", stream_type="Markers", channel_count=2,
            channel_format="int32", nominal_srate=0.0,
        )  # fmt: skip
        writer.write_samples(1, session.timestamps, session.frames.reshape(N, 360))
        writer.write_samples(3, np.array([1000.5]), np.array([[7, 1]], dtype=np.int32))
    read = read_xdf(path, stimulation_marker_streams={"open-loop": 0.3, "open-loop-codes": 0.2})
    assert [(m["source"], m["time"], m["announcement"]) for m in read.info["stimulation"]] == [
        ("open-loop-codes", 1000.5, "7")
    ]


def test_a_corticast_marker_on_another_tool_s_stream_keeps_its_own_blank(tmp_path: Path) -> None:
    """As the daemon reads it live: another daemon's marker is blanked for its own blank_s, and
    a train it already announced (a third tool's) for the blank_s it announced, not for the
    configured one: a replay must blank no less than the daemon did."""
    session = _session([])
    theirs = StimulationMarker.model_validate(_marker(1, blank_s=2.0))
    relayed = AnnouncedTrain(source="third-tool", blank_s=0.5, announcement="on")
    path = tmp_path / "s.xdf"
    with XdfWriter(path) as writer:
        _add_rig_stream(writer, 1)
        _add_marker_stream(writer, 2, name="other-daemon")
        writer.write_samples(1, session.timestamps, session.frames.reshape(N, 360))
        writer.write_samples(
            2, np.array([1000.2, 1000.9]), [[theirs.to_text()], [relayed.to_text()]]
        )
    read = read_xdf(path, stimulation_marker_streams={"other-daemon": 0.3})
    assert [(m["time"], m["blank_s"]) for m in read.info["stimulation"]] == [
        (1000.2, 2.0),
        (1000.9, 0.5),
    ]
    blanked = (read.timestamps >= 1000.2) & (read.timestamps <= 1002.2)
    np.testing.assert_array_equal(on_artefact(read), blanked)


def test_the_daemon_s_own_marker_stream_is_not_read_again_as_another_daemon_s(
    tmp_path: Path,
) -> None:
    """Configured to read another daemon's corticast-stimulation, a daemon's own recording
    holds its own stream of that name: read once, as its own, not once more as the other's."""
    session = _session([])
    path = tmp_path / "s.xdf"
    relayed = AnnouncedTrain(source="lab", blank_s=0.4, announcement="on")
    with XdfWriter(path) as writer:
        _add_rig_stream(writer, 1)
        _add_marker_stream(writer, 2)
        writer.write_samples(1, session.timestamps, session.frames.reshape(N, 360))
        writer.write_samples(
            2,
            np.array([1000.2, 1000.9]),
            [[StimulationMarker.model_validate(_marker(1)).to_text()], [relayed.to_text()]],
        )
    with pytest.warns(RuntimeWarning, match=f"no stimulation marker stream named '{STREAM_NAME}'"):
        read = read_xdf(path, stimulation_marker_streams={STREAM_NAME: 1.1})
    assert [(m["time"], m["blank_s"]) for m in read.info["stimulation"]] == [
        (1000.2, 0.07),
        (1000.9, 0.4),
    ]


def test_of_two_tools_marker_streams_of_one_name_the_one_named_by_source_id_is_read(
    tmp_path: Path,
) -> None:
    """Two rigs' protocol software, recorded together, both announcing on "open-loop": the
    configuration names this rig's by its source id, and only its trains are blanked, by the
    reader and by the replay; by name alone both are."""
    session = _session([])
    path = tmp_path / "s.xdf"
    with XdfWriter(path) as writer:
        _add_rig_stream(writer, 1)
        for stream_id, rig in ((2, "rig-1-stim"), (3, "rig-2-stim")):
            _add_marker_stream(writer, stream_id, name="open-loop", source_id=rig)
        writer.write_samples(1, session.timestamps, session.frames.reshape(N, 360))
        writer.write_samples(2, np.array([1000.2]), [["theirs"]])
        writer.write_samples(3, np.array([1001.0]), [["ours"]])
    ours = MarkerStream(name="open-loop", source_id="rig-2-stim")
    read = read_xdf(path, stimulation_marker_streams={ours: 0.3})
    assert [(m["time"], m["announcement"]) for m in read.info["stimulation"]] == [(1001.0, "ours")]
    settings = Settings(
        ingest={"stimulation_marker_streams": [{"name": "open-loop", "source_id": "rig-2-stim"}]}
    )
    replayed = load_replay_session(str(path), settings)
    assert [m["announcement"] for m in replayed.info["stimulation"]] == ["ours"]
    spec = f"{path}::markers=open-loop@rig-2-stim::blank_ms=300"  # as train and evaluate take it
    assert parse_file(spec) == (path, FileOptions(markers=(ours,), blank_ms=300))
    read = read_xdf(path, stimulation_marker_streams=parse_file(spec)[1].marker_streams())
    assert [(m["time"], m["announcement"]) for m in read.info["stimulation"]] == [(1001.0, "ours")]
    both = read_xdf(path, stimulation_marker_streams={"open-loop": 0.3})
    assert [m["announcement"] for m in both.info["stimulation"]] == ["theirs", "ours"]
    with pytest.warns(RuntimeWarning, match="named 'open-loop' with source id 'rig-3-stim'"):
        elsewhere = MarkerStream(name="open-loop", source_id="rig-3-stim")
        read_xdf(path, stimulation_marker_streams={elsewhere: 0.3})


def test_a_marker_stream_s_name_and_source_id_are_percent_decoded_in_a_file_spec() -> None:
    """A name or source id holding the spec's own separators (``,`` between streams, ``@``
    before a source id) is written percent-encoded, as a URL writes them."""
    _, options = parse_file("s.xdf::markers=a%2Cb@x%40y%25,c%40d")
    assert options is not None
    assert options.markers == (
        MarkerStream(name="a,b", source_id="x@y%"),
        MarkerStream(name="c@d"),
    )


def test_another_tool_s_stream_of_a_source_id_longer_than_a_record_keeps_is_read(
    tmp_path: Path,
) -> None:
    """LSL bounds no source id: a stream named by name alone whose source id is longer than
    a train's record keeps is read as the daemon reads it live, its trains with none, not
    refused by the record's own bounds (a pydantic error, the recording unreadable)."""
    session = _session([])
    path = tmp_path / "s.xdf"
    with XdfWriter(path) as writer:
        _add_rig_stream(writer, 1)
        writer.add_stream(
            2, name="open-loop", stream_type="Markers", channel_count=1,
            channel_format="string", nominal_srate=0.0, source_id="rig-" + "x" * 300,
        )  # fmt: skip
        writer.write_samples(1, session.timestamps, session.frames.reshape(N, 360))
        writer.write_samples(2, np.array([1000.5]), [["theirs"]])
    read = read_xdf(path, stimulation_marker_streams={"open-loop": 0.3})
    trains = [(m["time"], m["source_id"], m["announcement"]) for m in read.info["stimulation"]]
    assert trains == [(1000.5, None, "theirs")]


class _AnnouncedTrainBeforeSourceIds(BaseModel):
    """The announced train as a reader made before source ids were kept reads it (corticast
    of a day ago on another rig, or a lab's script): extra fields refused."""

    model_config = ConfigDict(extra="forbid")

    format: str
    source: str
    blank_s: float
    announcement: str


def test_a_train_of_a_stream_without_a_source_id_is_recorded_as_before_source_ids_were(
    tmp_path: Path,
) -> None:
    """A train from a stream with no source id (an empty one is none) is recorded as before
    source ids were kept, so a reader of then (another rig's daemon reading this one's stream,
    a recording read by an older corticast) still reads it: with ``"source_id": null``
    written, it refused every announced train (``extra_forbidden``), and a daemon of then
    blanked it for its own default instead of the train's blank. One with a source id says
    it."""
    train = AnnouncedTrain(source="open-loop", blank_s=2.5, announcement="train")
    kept = train.model_copy(update={"source_id": "rig-2-stim"})
    path = tmp_path / "s.xdf"
    write_xdf(
        path,
        _session([{"time": 1000.5, **train.model_dump()}, {"time": 1001.0, **kept.model_dump()}]),
    )
    streams, _ = pyxdf.load_xdf(str(path), synchronize_clocks=False)
    (raw,) = [s for s in streams if s["info"]["name"] == [STREAM_NAME]]
    old = _AnnouncedTrainBeforeSourceIds.model_validate_json(raw["time_series"][0][0])
    assert old.blank_s == 2.5 and old.source == "open-loop"
    assert parse_marker(raw["time_series"][1][0]) == kept
    read = read_xdf(path)
    assert [m["source_id"] for m in read.info["stimulation"]] == [None, "rig-2-stim"]


def _two_rigs(tmp_path: Path, markers: dict[str, float], *, amps: bool = True) -> Path:
    """Two rigs' streams ("rig-a", source id "amp-a"; "rig-b", "amp-b"; without ``amps``, no
    source ids) recorded together, with a corticast marker stream of each source id in
    ``markers``, one train at its time."""
    session = _session([])
    path = tmp_path / "two-rigs.xdf"
    with XdfWriter(path) as writer:
        for stream_id, rig in ((1, "a"), (2, "b")):
            writer.add_stream(
                stream_id, name=f"rig-{rig}", stream_type="ECoG", channel_count=360,
                channel_format="float32", nominal_srate=RATE,
                source_id=f"amp-{rig}" if amps else "",
            )  # fmt: skip
            writer.write_samples(stream_id, session.timestamps, session.frames.reshape(N, 360))
        for stream_id, (source_id, time) in enumerate(markers.items(), start=3):
            _add_marker_stream(writer, stream_id, source_id=source_id)
            text = StimulationMarker.model_validate(_marker(stream_id)).to_text()
            writer.write_samples(stream_id, np.array([time]), [[text]])
    return path


def test_of_two_rigs_recorded_together_only_the_one_the_daemon_read_is_blanked(
    tmp_path: Path,
) -> None:
    """One daemon read rig A (its marker stream's source id is rig A's with "-stimulation",
    as ``MarkerOutlet`` writes it); LabRecorder recorded rig B beside them. Rig A's frames
    are blanked at its train; rig B's, on which no train was delivered, are not, and the
    session says which marker stream was applied and which left out, and why."""
    path = _two_rigs(tmp_path, {"amp-a-stimulation": 1000.5})
    rig_a = read_xdf(path, stream_name="rig-a")
    assert [m["time"] for m in rig_a.info["stimulation"]] == [1000.5]
    assert on_artefact(rig_a).any()
    rig_b = read_xdf(path, stream_name="rig-b")
    assert "stimulation" not in rig_b.info, (
        f"rig B's frames blanked at rig A's trains: {rig_b.info['stimulation']}"
    )
    assert not on_artefact(rig_b).any()
    ((applied,), (left_out,)) = (
        rig_a.info["stimulation_streams"],
        rig_b.info["stimulation_streams"],
    )
    assert (applied["source_id"], applied["applied"]) == ("amp-a-stimulation", True)
    assert "written for this stream" in applied["why"]
    assert (left_out["source_id"], left_out["applied"]) == ("amp-a-stimulation", False)
    assert "'rig-a'" in left_out["why"] and "amp-a" in left_out["why"]
    settings = Settings(stream={"name": "rig-b", "source_id": "amp-b"})
    replayed = load_replay_session(str(path), settings, stream_name="rig-b")
    assert "stimulation" not in replayed.info


def test_of_two_rigs_each_daemon_s_markers_blank_its_own_rig_only(tmp_path: Path) -> None:
    """Two daemons, one per rig, recorded together: each rig is blanked at its own daemon's
    trains (a file of two corticast marker streams was refused outright). Rig A's daemon
    configured to read rig B's daemon's stream as well blanked its trains live: read so,
    they are applied as announced trains."""
    path = _two_rigs(tmp_path, {"amp-a-stimulation": 1000.5, "amp-b-stimulation": 1001.0})
    for rig, time in (("rig-a", 1000.5), ("rig-b", 1001.0)):
        read = read_xdf(path, stream_name=rig)
        assert [m["time"] for m in read.info["stimulation"]] == [time]
        assert [s["applied"] for s in read.info["stimulation_streams"]] == [
            rig == "rig-a",
            rig == "rig-b",
        ]
    theirs = MarkerStream(name=STREAM_NAME, source_id="amp-b-stimulation")
    read = read_xdf(path, stream_name="rig-a", stimulation_marker_streams={theirs: 1.1})
    assert [(m["time"], m["format"]) for m in read.info["stimulation"]] == [
        (1000.5, "corticast.stimulation/1"),
        (1001.0, ANNOUNCED_FORMAT),
    ]
    assert [(s["applied"], s["why"]) for s in read.info["stimulation_streams"]][1] == (
        True,
        "named as another tool's stimulation marker stream",
    )


@pytest.mark.parametrize("amps", [False, True], ids=["rigs-without-source-ids", "rigs-with"])
def test_of_two_rigs_a_daemon_reading_its_rig_by_name_blanks_that_rig_only(
    tmp_path: Path, amps: bool
) -> None:
    """A daemon whose ``[stream] source_id`` is empty reads the one stream of its name; its
    marker stream names that rig by name (``outlet_source_id``). It was named '-stimulation',
    which names no stream, and its trains were applied to every rig of the recording. Rig A
    is blanked at its train; rig B, whatever the rigs' own source ids, is not."""
    path = _two_rigs(tmp_path, {outlet_source_id("", "rig-a"): 1000.5}, amps=amps)
    rig_a = read_xdf(path, stream_name="rig-a")
    assert [m["time"] for m in rig_a.info["stimulation"]] == [1000.5]
    rig_b = read_xdf(path, stream_name="rig-b")
    assert "stimulation" not in rig_b.info, (
        f"rig B's frames blanked at rig A's trains: {rig_b.info['stimulation_streams']}"
    )
    ((applied,), (left_out,)) = (
        rig_a.info["stimulation_streams"],
        rig_b.info["stimulation_streams"],
    )
    assert applied["applied"] and "written for this stream (its name 'rig-a'" in applied["why"]
    assert not left_out["applied"] and "written for stream 1 'rig-a'" in left_out["why"]


@pytest.mark.parametrize("source_id", ["", "-stimulation", "amp-c-stimulation", "lab-markers"])
def test_a_marker_stream_that_names_no_stream_of_the_file_is_applied_as_before(
    tmp_path: Path, source_id: str
) -> None:
    """A marker stream whose source id names no stream of the file (the daemon's
    ``[stream] source_id`` empty, or its rig's stream not recorded) does not say which rig it
    was written for: applied to whichever is read, as it always was."""
    path = _two_rigs(tmp_path, {source_id: 1000.5})
    for rig in ("rig-a", "rig-b"):
        read = read_xdf(path, stream_name=rig)
        assert [m["time"] for m in read.info["stimulation"]] == [1000.5]
        ((record,),) = (read.info["stimulation_streams"],)
        assert record["applied"] and "names no stream of the file" in record["why"]
