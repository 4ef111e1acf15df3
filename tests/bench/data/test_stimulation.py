"""What learns from or scores a recording made in closed loop leaves its artefact out.

A recording's stimulation markers (``info["stimulation"]``, read from the daemon's marker
stream) say which frames carry a train's artefact. Training, evaluation and adaptation read
sessions through ``models.sources.load_sessions``, which leaves those frames out as a gap; a
replay reads them through ``load_spec`` and blanks them as the daemon did.
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import models
from bench.data.session_io import write_nwb, write_xdf
from bench.data.stimulation import blank_windows, on_artefact, without_artefact
from bench.data.synth import SynthConfig, generate_session
from bench.replay._input import load_replay_session
from models.sources import artefact_left_out, load_sessions, load_spec
from models.windows import WINDOW_FRAMES, window_starts
from service.cli.app import app
from service.config import Settings
from tests._tool_recording import write_tool_recording

ARTEFACT_UV = 4000.0


def _marker(time: float, blank_s: float) -> dict:
    return {
        "time": time,
        "request_id": 1,
        "sequence": 0,
        "outcome": "sent",
        "blank_s": blank_s,
        "channels": [3],
        "amplitude_ua": 150,
        "phase_width_us": 200,
        "frequency_hz": 130,
        "train_duration_ms": 50,
    }


@pytest.fixture(scope="module")
def recording(tmp_path_factory):
    """A 3 s session whose frames 400-439 carry a train's artefact, with its marker, as a
    file; and the frames' indices."""
    session = generate_session(SynthConfig(duration_s=3.0, seed=4))
    frames = session.frames.copy()
    frames[400:440] += np.float32(ARTEFACT_UV)
    stamps = session.timestamps
    blank_s = float(stamps[439] - stamps[400]) + 1e-4
    marked = dataclasses.replace(
        session, frames=frames, info={"stimulation": [_marker(float(stamps[400]), blank_s)]}
    )
    path = tmp_path_factory.mktemp("stimulation") / "closed-loop.xdf"
    write_xdf(path, marked)
    return path, np.arange(400, 440)


def test_training_and_scoring_read_a_recording_without_its_artefact(recording):
    path, artefact = recording
    (kept,) = load_sessions([str(path)])
    assert np.abs(kept.frames).max() < ARTEFACT_UV / 4
    (whole,) = load_spec(str(path))  # what a replay reads: every frame, to blank
    assert kept.n_frames == whole.n_frames - artefact.size
    assert kept.info["frames_on_artefact"] == artefact.size
    # No training window spans the artefact's place: it is a gap.
    starts = window_starts(kept.timestamps, kept.sample_rate_hz)
    first, last = whole.timestamps[artefact[0]], whole.timestamps[artefact[-1]]
    ends = kept.timestamps[starts + WINDOW_FRAMES - 1]
    spans = (kept.timestamps[starts] < first) & (ends > last)
    assert starts.size > 0 and not spans.any()


def test_a_command_that_scores_a_recording_says_what_artefact_it_left_out(recording, tmp_path):
    """``corticast evaluate`` (as ``train`` and ``adapt``) names the recording and how much of
    it was left out: a recorded marker may blank up to an hour."""
    path, artefact = recording
    (kept,) = load_sessions([str(path)])
    said = f"{path}: {artefact.size} frames (0.1 s) on stimulation artefact left out"
    assert artefact_left_out([kept]) == [said]
    assert artefact_left_out([generate_session(SynthConfig(duration_s=1.0, seed=1))]) == []
    shipped = Path(models.__file__).with_name("weights") / "default.onnx"
    args = ["evaluate", str(shipped), "--data", str(path), "--out", str(tmp_path / "eval")]
    result = CliRunner().invoke(app, [*args, "--split", "train", "--window-stride", "16"])
    assert result.exit_code == 0, result.output
    assert said in result.stderr


@pytest.fixture(scope="module")
def tool_recording(tmp_path_factory):
    """A 3 s session whose frames 400-439 carry the artefact of a train another tool delivered,
    announced on its own marker stream "pulser" (a bare text, as such tools write), as a file
    made without the daemon; and the frames' indices."""
    session = generate_session(SynthConfig(duration_s=3.0, seed=4))
    frames = session.frames.copy()
    frames[400:440] += np.float32(ARTEFACT_UV)
    path = tmp_path_factory.mktemp("tool") / "open-loop.xdf"
    write_tool_recording(path, session, frames, [400])
    return path, session.timestamps


def test_a_recording_names_another_tool_s_marker_stream_and_its_trains_are_left_out(
    tool_recording, tmp_path
):
    """A recording made without the daemon, beside a tool that announced its trains on a
    marker stream of its own: named after the file (``::markers=``), each marker's frames are
    left out of training and scoring for 1100 ms or ``::blank_ms``; not named, the artefact is
    read as cortex."""
    path, stamps = tool_recording
    (unnamed,) = load_sessions([str(path)])
    assert np.abs(unnamed.frames).max() > ARTEFACT_UV / 2
    (kept,) = load_sessions([f"{path}::markers=pulser::blank_ms=142"])  # frames 400-439
    assert np.abs(kept.frames).max() < ARTEFACT_UV / 4
    assert kept.info["frames_on_artefact"] == 40 and kept.n_frames == stamps.size - 40
    with pytest.warns(RuntimeWarning, match="no stimulation marker stream named 'absent'"):
        (kept,) = load_sessions([f"{path}::markers=pulser,absent"])
    by_default = np.count_nonzero((stamps >= stamps[400]) & (stamps <= stamps[400] + 1.1))
    assert kept.info["frames_on_artefact"] == by_default
    said = f"{path}: {by_default} frames (1.1 s) on stimulation artefact left out"
    assert artefact_left_out([kept]) == [said]
    shipped = Path(models.__file__).with_name("weights") / "default.onnx"
    spec = f"{path}::markers=pulser"
    args = ["evaluate", str(shipped), "--data", spec, "--out", str(tmp_path / "eval")]
    result = CliRunner().invoke(app, [*args, "--split", "train", "--window-stride", "16"])
    assert result.exit_code == 0, result.output
    assert said in result.stderr


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ("::markers", r"must be KEY=VALUE, each key once .* got 'markers'"),
        ("::markers=a::markers=b", "each key once"),
        ("::blank_ms=500", "without markers=NAME it blanks nothing"),
        ("::markers=pulser::colour=red", "unknown option 'colour'; options: markers=NAME"),
        ("::stream=", "stream: String should have at least 1 character"),
        ("::type=", "type: String should have at least 1 character"),
        ("::stream=r%E9", r"stream 'r%E9' percent-encodes bytes that are not UTF-8 text"),
        ("::markers=pulser,pulser", r"listed twice: \['pulser'\]"),
        ("::markers=", "markers.0.name: String should have at least 1 character"),
        ("::markers=pul'ser", "markers.0.name: String should match pattern"),
        ("::markers=pulser::blank_ms=0", "blank_ms: Input should be greater than or equal to 1"),
        ("::markers=pulser::blank_ms=soon", "blank_ms: Input should be a valid integer"),
        ("::markers=" + "p" * 300, "markers.0.name: String should have at most 200 characters"),
        ("::markers=pulser@", "markers.0.source_id: String should have at least 1 character"),
        ("::markers=pulser,pulser@a", r"\['pulser'\] listed by name alone and with a source id"),
        # Bytes that are no UTF-8 were read as U+FFFD: a name no stream has, only warned of.
        ("::markers=puls%E9r", r"'puls%E9r' percent-encodes bytes that are not UTF-8 text"),
    ],
)
def test_a_file_spec_s_malformed_options_are_refused_naming_the_problem(
    tool_recording, options, message
):
    path, _ = tool_recording
    with pytest.raises(ValueError, match=message) as raised:
        load_sessions([f"{path}{options}"])
    assert str(path) in str(raised.value)


def test_a_replay_is_told_where_it_reads_other_tools_marker_streams_from(tool_recording):
    """A replay runs the daemon's configuration, which names them: a spec naming them after
    the file is refused, saying where they go, not read as a file of another suffix."""
    path, _ = tool_recording
    with pytest.raises(ValueError, match=r"name them in \[ingest\] stimulation_marker_streams"):
        load_replay_session(f"{path}::markers=pulser", Settings())
    settings = Settings(ingest={"stimulation_marker_streams": ["pulser"]})
    assert len(load_replay_session(str(path), settings).info["stimulation"]) == 1


def test_the_replay_command_says_where_other_tools_marker_streams_go(tool_recording, tmp_path):
    """Through the command line too: the file exists, so the refusal is the configuration's
    place, not a missing file named with the options."""
    path, _ = tool_recording
    result = CliRunner().invoke(
        app, ["replay", f"{path}::markers=pulser", "-r", str(tmp_path / "r"), "--no-progress"]
    )
    assert result.exit_code == 1, result.output
    assert "name them in [ingest] stimulation_marker_streams" in result.output
    assert "does not exist" not in result.output


def test_the_replay_command_says_a_file_in_a_folder_named_with_the_separator_is_missing(tmp_path):
    """A folder may be named with '::': a file missing from it is said to be missing, not read
    as options after a file and answered with where marker streams go."""
    folder = tmp_path / "rig-2::day-1"
    folder.mkdir()
    missing = folder / "absent.xdf"
    result = CliRunner().invoke(
        app, ["replay", str(missing), "-r", str(tmp_path / "r"), "--no-progress"]
    )
    assert result.exit_code == 1, result.output
    assert "does not exist" in result.output
    assert "stimulation_marker_streams" not in result.output


def test_marker_streams_named_after_a_file_that_cannot_hold_them_are_refused(tmp_path):
    session = generate_session(SynthConfig(duration_s=1.0, seed=1))
    write_nwb(tmp_path / "s.nwb", session)
    with pytest.raises(ValueError, match=r"'s\.nwb': .* an NWB file holds none"):
        load_sessions([f"{tmp_path / 's.nwb'}::markers=pulser"])
    with pytest.raises(FileNotFoundError, match=r"data '\S*absent.xdf' does not exist"):
        load_sessions([f"{tmp_path / 'absent.xdf'}::markers=pulser"])


def test_a_session_file_in_a_folder_whose_name_holds_the_options_separator_is_read(
    tool_recording, tmp_path
):
    """A folder may be named with '::' (a rig's and a day's name joined): the file in it is
    the session, read as before options were written after a file's name, by training and by
    a replay, and options after its full name still apply."""
    path, _ = tool_recording
    folder = tmp_path / "rig-2::day-1"
    folder.mkdir()
    copy = folder / path.name
    shutil.copyfile(path, copy)
    (whole,) = load_sessions([str(copy)])
    assert np.abs(whole.frames).max() > ARTEFACT_UV / 2
    (kept,) = load_sessions([f"{copy}::markers=pulser::blank_ms=142"])
    assert kept.info["frames_on_artefact"] == 40
    assert load_replay_session(str(copy), Settings()).n_frames == whole.n_frames
    with pytest.raises(ValueError, match=r"name them in \[ingest\] stimulation_marker_streams"):
        load_replay_session(f"{copy}::markers=pulser", Settings())


def test_the_frames_on_a_train_s_artefact_are_those_stamped_in_its_window(recording):
    path, artefact = recording
    (whole,) = load_spec(str(path))
    np.testing.assert_array_equal(np.flatnonzero(on_artefact(whole)), artefact)
    assert without_artefact(dataclasses.replace(whole, info={})).n_frames == whole.n_frames


def test_a_session_without_markers_is_kept_as_it_is():
    session = generate_session(SynthConfig(duration_s=1.0, seed=1))
    assert without_artefact(session) is session


@pytest.mark.parametrize(
    ("markers", "message"),
    [
        ({"time": 1.0}, "must be a list of markers"),
        ([{"time": 1.0}], r"\[0\]' must have a finite 'time' and a finite 'blank_s' >= 0"),
        ([_marker(1.0, 0.1), _marker(2.0, -0.1)], r"\[1\]' must have a finite"),
        ([_marker(float("nan"), 0.1)], r"\[0\]' must have a finite"),
    ],
)
def test_markers_that_are_not_markers_are_refused_naming_the_entry(markers, message):
    with pytest.raises(ValueError, match=message):
        blank_windows(markers)
