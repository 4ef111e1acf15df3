"""A recording made in closed loop: the replay blanks its stimulation artefact as the daemon did.

The daemon blanks the frames a delivered train's artefact may be on and pushes one marker per
train, which LabRecorder records beside the rig's stream. A replay of that file must skip the
same frames, or it scores the artefact as cortex.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import uuid
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from bench.data.session_io import read_xdf, write_xdf
from bench.data.session_io._xdf_markers import marker_samples
from bench.data.session_io.xdf_writer import XdfWriter
from bench.data.stimulation import STREAMS_KEY
from bench.data.synth import SynthConfig, generate_session
from bench.replay._input import load_replay_session
from bench.replay._models import choose_models
from bench.replay._prediction_scorer import PredictionScorer, fit_session_ar
from bench.replay.fast import _FirstScores
from bench.replay.realtime import RealtimeReplay
from bench.replay.record import ReplayRecord
from bench.replay.replay import _artefact_blanked, _log_marker_streams
from bench.replay.timeline import lay_out
from models.sources import artefact_left_out, load_sessions
from service.cli.app import app
from service.config import load_settings
from service.core.stimulation_markers import UNHEARD, AnnouncedTrain
from service.inference.predictor import StreamSpec

runner = CliRunner()

TRAINS = ((300, 30), (600, 25))
"""(first frame, frames) of each train's artefact, as the daemon blanked it."""
ARTEFACT_UV = 4000.0


def _marker(request_id: int, time: float, blank_s: float) -> dict:
    return {
        "time": time,
        "request_id": request_id,
        "sequence": request_id - 1,
        "outcome": "sent",
        "blank_s": blank_s,
        "channels": [3, 17],
        "amplitude_ua": 150,
        "phase_width_us": 200,
        "frequency_hz": 130,
        "train_duration_ms": 50,
    }


@pytest.fixture(scope="module")
def recordings(tmp_path_factory) -> dict[str, Path]:
    """One session with a large artefact in two trains' frames, written three ways: with the
    daemon's markers for the trains, without them, and with the artefact frames simply
    missing (NaN, which the daemon keeps as missing, holding the frame before)."""
    root = tmp_path_factory.mktemp("blanking")
    session = generate_session(SynthConfig(duration_s=3.0, seed=5))
    stamps, rate = session.timestamps, session.sample_rate_hz
    frames = session.frames.copy()
    invalid = session.frames.copy()
    markers = []
    decay = np.exp(-np.arange(max(n for _, n in TRAINS)) / 10.0).astype(np.float32)
    for k, (first, n) in enumerate(TRAINS, start=1):
        frames[first : first + n] += ARTEFACT_UV * decay[:n, None, None]
        invalid[first : first + n] = np.nan
        # Stamped at the request, blanking to half a period past its last frame.
        markers.append(_marker(k, float(stamps[first]), (n - 0.5) / rate))
    plain = dataclasses.replace(session, frames=frames, truth=None, info={})
    paths = {name: root / f"{name}.xdf" for name in ("marked", "unmarked", "invalid")}
    write_xdf(paths["marked"], dataclasses.replace(plain, info={"stimulation": markers}))
    write_xdf(paths["unmarked"], plain)
    write_xdf(paths["invalid"], dataclasses.replace(plain, frames=invalid))
    return paths


def _report(path: Path, out: Path, *, figures: bool = False) -> dict:
    """``corticast replay PATH --fast``'s report.json; without figures unless asked, as drawing
    them took most of each replay's time (the marked session's replay still draws them)."""
    args = ["--fast", "--report", str(out), "--no-progress", "--stride", "32"]
    result = runner.invoke(
        app, ["replay", str(path), *args, "--figures" if figures else "--no-figures"]
    )
    assert result.exit_code == 0, result.output
    assert (out / "report.html").is_file()
    assert bool(list(out.glob("*.png"))) == figures
    return json.loads((out / "report.json").read_text())


def test_the_markers_are_read_where_the_trains_were(recordings) -> None:
    session = read_xdf(recordings["marked"])
    markers = session.info["stimulation"]
    assert [m["request_id"] for m in markers] == [1, 2]
    for marker, (first, _) in zip(markers, TRAINS, strict=True):
        assert marker["time"] == session.timestamps[first]


def test_the_timeline_blanks_each_trains_frames_holding_the_frame_before(recordings) -> None:
    settings = load_settings(None)
    session = load_replay_session(str(recordings["marked"]), settings)
    timeline = lay_out(session, settings.stream.sample_rate_hz, 1000)
    expected = np.zeros(session.n_frames, dtype=bool)
    for first, n in TRAINS:
        expected[first : first + n] = True
        np.testing.assert_array_equal(
            timeline.frames[first : first + n], np.repeat(session.frames[first - 1][None], n, 0)
        )
    np.testing.assert_array_equal(timeline.blanked, expected)
    np.testing.assert_array_equal(timeline.valid, ~expected)
    assert (timeline.trains, timeline.blanked_frames) == (2, 55)
    assert (timeline.missing, timeline.non_finite) == (0, 0)


def test_a_replay_skips_the_artefact_as_the_daemon_did(recordings, tmp_path) -> None:
    """Scored exactly as the session with the artefact frames missing; without the markers the
    artefact is scored as cortex (and fed to the model as its input), and every figure drops."""
    marked = _report(recordings["marked"], tmp_path / "marked", figures=True)
    invalid = _report(recordings["invalid"], tmp_path / "invalid")
    unmarked = _report(recordings["unmarked"], tmp_path / "unmarked")
    session = marked["session"]
    assert (session["stimulation_trains"], session["blanked_frames"]) == (2, 55)
    assert (session["missing_frames"], session["non_finite_frames"]) == (0, 0)
    assert invalid["session"]["non_finite_frames"] == 55
    assert (unmarked["session"]["stimulation_trains"], unmarked["session"]["blanked_frames"]) == (
        0,
        0,
    )
    accuracy = marked["models"]["default"]["accuracy"]
    assert accuracy == invalid["models"]["default"]["accuracy"]
    assert accuracy["scored_windows"] > 0
    as_cortex = unmarked["models"]["default"]["accuracy"]
    assert as_cortex["scored_windows"] > accuracy["scored_windows"]
    for name in ("model", "persistence"):
        assert as_cortex["pooled_psnr_db"][name] < accuracy["pooled_psnr_db"][name] - 10
    page = (tmp_path / "marked" / "report.html").read_text()
    assert "55 blanked as the artefact of the 2 stimulation train(s)" in page
    assert "stimulation train" not in (tmp_path / "unmarked" / "report.html").read_text()


def test_a_realtime_daemon_gets_the_blanked_frames_as_its_ring_held_them(recordings) -> None:
    """A daemon cannot know a recording's markers: ``--realtime`` plays it the blanked frames
    as NaN, which its ingestor keeps as missing holding the frame before, as its ring blanked
    them live (``lay_out`` follows the ingestor's rules)."""
    settings = load_settings(None)
    rate = settings.stream.sample_rate_hz
    session = load_replay_session(str(recordings["marked"]), settings)
    timeline = lay_out(session, rate, 1000)
    played = _artefact_blanked(session, timeline)
    assert played.info == session.info
    as_daemon = lay_out(dataclasses.replace(played, info={}), rate, 1000)
    np.testing.assert_array_equal(as_daemon.frames, timeline.frames)
    np.testing.assert_array_equal(as_daemon.valid, timeline.valid)
    unmarked = load_replay_session(str(recordings["unmarked"]), settings)
    assert _artefact_blanked(unmarked, lay_out(unmarked, rate, 1000)) is unmarked


def test_a_replay_of_one_of_two_rigs_blanks_only_its_own_daemon_s_trains(
    recordings, tmp_path
) -> None:
    """LabRecorder recorded two rigs and the marker stream of the daemon that read rig A
    (source id rig A's with "-stimulation"). Replaying rig A blanks its trains; replaying
    rig B, on which none was delivered, blanks nothing, and its report and log say the
    marker stream was left out, and for which stream it was written."""
    marked = read_xdf(recordings["marked"])
    other = generate_session(SynthConfig(duration_s=3.0, seed=6))
    n = marked.n_frames
    path = tmp_path / "two-rigs.xdf"
    with XdfWriter(path) as writer:
        for stream_id, rig, frames in ((1, "a", marked.frames), (2, "b", other.frames[:n])):
            writer.add_stream(
                stream_id, name=f"rig-{rig}", stream_type="ECoG", channel_count=360,
                channel_format="float32", nominal_srate=marked.sample_rate_hz,
                source_id=f"amp-{rig}",
            )  # fmt: skip
            writer.write_samples(stream_id, marked.timestamps, frames.reshape(n, 360))
        writer.add_stream(
            3, name="corticast-stimulation", stream_type="Markers", channel_count=1,
            channel_format="string", nominal_srate=0.0, source_id="amp-a-stimulation",
        )  # fmt: skip
        writer.write_samples(3, *marker_samples(marked.info["stimulation"]))
    settings = load_settings(None)
    rig_a = load_replay_session(str(path), settings, stream_name="rig-a")
    timeline = lay_out(rig_a, settings.stream.sample_rate_hz, 1000)
    assert (timeline.trains, timeline.blanked_frames) == (2, 55)
    out = tmp_path / "rig-b"
    args = ["--fast", "--report", str(out), "--no-progress", "--stride", "32", "--no-figures"]
    result = runner.invoke(app, ["replay", str(path), *args, "--stream-name", "rig-b"])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())["session"]
    assert (report["stimulation_trains"], report["blanked_frames"]) == (0, 0), (
        "rig B's frames blanked at the trains of rig A's daemon"
    )
    (left_out,) = report["marker_streams"]
    assert (left_out["source_id"], left_out["applied"]) == ("amp-a-stimulation", False)
    assert "written for stream 1 'rig-a'" in left_out["why"]
    page = (out / "report.html").read_text()
    assert "<b>left out</b>: written for stream 1 &#39;rig-a&#39;" in page
    assert "stimulation marker stream 'corticast-stimulation'" in result.output
    assert "left out: written for stream 1 'rig-a'" in result.output


def test_the_replay_log_names_a_marker_stream_without_a_source_id_as_the_page_does(
    caplog,
) -> None:
    """A marker stream recorded without a source id (a daemon whose ``[stream] source_id`` was
    empty) was logged as "(source id '')" while the page read "(no source id)": both now say
    it in one wording, as they do a stream with one."""
    session = generate_session(SynthConfig(duration_s=0.5, seed=1))
    streams = [
        {"stream": "corticast-stimulation", "source_id": "", "applied": True, "why": "no rig"},
        {"stream": "corticast-stimulation", "source_id": "amp-a", "applied": False, "why": "A"},
    ]
    with caplog.at_level(logging.INFO, "corticast.replay"):
        _log_marker_streams("s.xdf", dataclasses.replace(session, info={STREAMS_KEY: streams}))
    assert [r.getMessage() for r in caplog.records] == [
        "replay s.xdf: stimulation marker stream 'corticast-stimulation' (no source id) "
        "applied: no rig",
        "replay s.xdf: stimulation marker stream 'corticast-stimulation' (source id 'amp-a') "
        "left out: A",
    ]


@pytest.mark.parametrize(
    "marker", [{"time": "soon", "blank_s": 0.1}, {"time": 1.0}, {"time": 1.0, "blank_s": -0.1}]
)
def test_a_session_with_a_malformed_marker_is_refused_naming_it(marker) -> None:
    session = generate_session(SynthConfig(duration_s=0.5, seed=1))
    good = {"time": 1.0, "blank_s": 0.1}
    bad = dataclasses.replace(session, info={"stimulation": [good, marker]})
    with pytest.raises(
        ValueError, match=r"\['stimulation'\]\[1\]' must have a finite 'time'"
    ) as err:
        lay_out(bad, session.sample_rate_hz, 1000)
    assert f"got {marker!r}" in str(err.value)


def test_a_frame_after_a_train_never_takes_a_value_from_its_blanked_artefact() -> None:
    """As the ingestor now holds them: the placeholder of a sample dropped just after a
    train's blanking window, and a NaN electrode in the measured frame after that, hold the
    frame before as blanked (the frame before the train), not the artefact it replaced."""
    session = generate_session(SynthConfig(duration_s=1.0, seed=5))
    rate, first, n = session.sample_rate_hz, 100, 20
    frames = session.frames.copy()
    frames[first : first + n] += ARTEFACT_UV
    frames[first + n + 1, 0, 7] = np.nan
    kept = np.arange(session.n_frames) != first + n  # the sample after the window never came
    marker = _marker(1, float(session.timestamps[first]), (n - 0.5) / rate)
    recorded = dataclasses.replace(
        session,
        frames=frames[kept],
        timestamps=session.timestamps[kept],
        truth=None,
        info={"stimulation": [marker]},
    )
    timeline = lay_out(recorded, rate, 1000)
    assert (timeline.blanked_frames, timeline.missing) == (n, 1)
    assert not timeline.valid[first : first + n + 1].any()
    artefact = np.argwhere(timeline.frames > ARTEFACT_UV / 2)
    assert artefact.size == 0, (
        f"{len(artefact)} values of frames {sorted(set(artefact[:, 0].tolist()))} hold the artefact"
    )
    np.testing.assert_array_equal(timeline.frames[first + n], session.frames[first - 1])
    assert timeline.frames[first + n + 1, 0, 7] == session.frames[first - 1, 0, 7]


def test_the_blank_around_a_marker_stream_s_opening_is_said_to_be_no_train(tmp_path) -> None:
    """The daemon opened another tool's marker stream and recorded the blank around the
    opening (two announced blanks: a train announced before it was read is not known). A
    replay blanks those frames as the daemon did, but counts no stimulation train; training
    and scoring leave them out, saying what they were, not calling them stimulation artefact."""
    session = generate_session(SynthConfig(duration_s=3.0, seed=5))
    stamps = session.timestamps
    opened, blank_s = float(stamps[500]) + 0.0005, 0.2
    unheard = AnnouncedTrain(source="pulser", blank_s=blank_s, announcement=UNHEARD)
    markers = [
        {"time": stamp, **unheard.model_dump(mode="json")} for stamp in (opened - blank_s, opened)
    ]
    path = tmp_path / "opened.xdf"
    write_xdf(path, dataclasses.replace(session, truth=None, info={"stimulation": markers}))
    settings = load_settings(None)
    timeline = lay_out(
        load_replay_session(str(path), settings), settings.stream.sample_rate_hz, 1000
    )
    around = np.count_nonzero((stamps >= opened - blank_s) & (stamps <= opened + blank_s))
    assert around > 100 and timeline.blanked_frames == around
    assert timeline.trains == 0, f"the opening's blank counted as {timeline.trains} trains"
    assert timeline.stream_openings == 1
    report = _report(path, tmp_path / "report")["session"]
    assert (report["stimulation_trains"], report["marker_stream_openings"]) == (0, 1)
    html = (tmp_path / "report" / "report.html").read_text()
    assert "around the 1 opening(s) of a marker stream" in html
    (kept,) = load_sessions([str(path)])
    assert artefact_left_out([kept]) == [
        f"{path}: {around} frames ({around / session.sample_rate_hz:.1f} s) left out: 0 on "
        f"stimulation artefact, {around} blanked around a marker stream's opening (a train "
        f"announced before it was read is not known)"
    ]


@pytest.mark.filterwarnings("ignore:.*no stimulation marker stream named 'tool':RuntimeWarning")
@pytest.mark.parametrize("marker_streams", [False, True], ids=["own trains", "another tool's"])
def test_the_replay_s_live_scores_leave_out_a_prediction_on_a_train_as_the_daemon_s_do(
    recordings, tmp_path, monkeypatch, marker_streams
) -> None:
    """The daemon's live scores (the model-health interlock's record, the blend's fit) leave
    out every prediction whose input or true frames its ring blanked as a train's artefact
    (``RingBuffer.blanked_among``). The replay's ring must say which those are: written as
    plain missing frames, a prediction whose input only was on a train (newest input 344 at
    stride 47: input 329..344, its first frame the last of train 300..329, within
    ``[scheduler] max_missing_frames``) was scored in the replay and not live. Configured to
    read another tool's marker stream, the daemon scores a prediction only
    ``[ingest] stimulation_marker_latency_ms`` after its true frames: the replay scored each
    at once, and so scored the session's last predictions, which the daemon had not."""
    seen: dict = {"inputs": []}
    add, update = _FirstScores.add, _FirstScores.update

    def adding(self, prediction, *args, **kwargs):
        seen["inputs"].append((prediction.first_input_seq, prediction.input_seq))
        return add(self, prediction, *args, **kwargs)

    def updating(self, ring):
        seen["accuracy"], seen["ring"] = self, ring
        return update(self, ring)

    monkeypatch.setattr(_FirstScores, "add", adding)
    monkeypatch.setattr(_FirstScores, "update", updating)
    config = tmp_path / "corticast.toml"
    config.write_text(
        '[ingest]\nstimulation_marker_streams = ["tool"]\n' if marker_streams else "",
        encoding="utf-8",
    )
    settle = load_settings(config).marker_settle_frames
    assert (settle > 0) == marker_streams
    result = runner.invoke(app, ["replay", str(recordings["marked"]), "--fast", "--report",
                                 str(tmp_path / "report"), "--no-progress", "--stride", "47",
                                 "--config", str(config), "--no-figures"])  # fmt: skip
    assert result.exit_code == 0, result.output
    ring, accuracy = seen["ring"], seen["accuracy"]
    on_train = np.zeros(ring.next_seq + 16, dtype=bool)
    for first, n in TRAINS:
        on_train[first : first + n] = True
    daemon_scores = [
        newest
        for first, newest in seen["inputs"]
        if newest + 16 + settle < ring.next_seq and not on_train[first : newest + 17].any()
    ]
    assert (329, 344) in seen["inputs"]
    assert accuracy.scored == len(daemon_scores)
    for first, n in TRAINS:  # as the daemon's ring says, for the artefact interlock too
        assert ring.blanked_among(first, first + n - 1) == n


def test_a_realtime_daemon_reads_other_tools_marker_streams_as_the_recording_announced_them(
    tmp_path,
) -> None:
    """A configuration naming another tool's marker stream: the replay's daemon is not ready
    (nor armed) until it reads it, and a replay with no such stream never armed it. The
    replay plays the recording's trains on that stream, each when the rig plays its time:
    the daemon reads them (not the daemon's own train, nor the blank around its opening)
    and arms."""
    tool = f"tool-{uuid.uuid4().hex[:8]}"
    session = generate_session(SynthConfig(duration_s=4.0, seed=5))
    stamps = session.timestamps
    announced = [
        {"time": float(stamps[k]), **AnnouncedTrain(source=tool, blank_s=0.05,
                                                    announcement=f"train {k}").model_dump()}
        for k in (500, 800)
    ]  # fmt: skip
    opening = {
        "time": float(stamps[100]),
        **AnnouncedTrain(source=tool, blank_s=0.5, announcement=UNHEARD).model_dump(),
    }
    own = _marker(1, float(stamps[650]), 0.05)
    session = dataclasses.replace(session, info={"stimulation": [opening, *announced, own]})
    config = tmp_path / "corticast.toml"  # what the daemon loads too
    config.write_text(f'[ingest]\nstimulation_marker_streams = ["{tool}"]\n', encoding="utf-8")
    settings = load_settings(config)
    rate = settings.stream.sample_rate_hz
    (model,) = choose_models([], settings, StreamSpec(sample_rate_hz=rate))
    timeline = lay_out(session, rate, 2048)
    ar = fit_session_ar(timeline, *model.normalisation)
    record = ReplayRecord("realtime", PredictionScorer(timeline, *model.normalisation, ar), [])
    RealtimeReplay(settings, config, stride=None, log_dir=tmp_path).run(session, model, record)
    assert record.counters["bridge_armed"] == 1
    assert record.counters["marker_stream_trains_played"] == 2
    assert record.counters["marker_stream_trains_read"] == 2
    # What the daemon counted (0 unless a marker was pulled late on a loaded host).
    assert isinstance(record.counters.get("trains_decided_on_late_artefact"), int)
    assert isinstance(record.counters.get("marker_stream_late_markers"), int)
