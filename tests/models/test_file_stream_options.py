"""A data spec picks a recording's electrode stream: ``FILE::stream=NAME`` (an XDF stream's name,
an NWB ElectricalSeries') and ``FILE::type=TYPE`` (an XDF stream's LSL type), in ``replay`` as in
``train``, ``evaluate``, ``adapt`` and ``rig --source`` (``replay`` also takes ``--stream-name``,
and ``[stream] type`` by default); these could read no file of two electrode streams, nor one of
another type, and ``replay`` took no option after the file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from bench.data.session_io import SessionFileError, write_nwb
from bench.data.session_io.xdf_writer import XdfWriter
from bench.data.synth import SynthConfig, generate_session
from bench.replay._input import load_replay_session
from bench.rig.frame_source import source_from_settings
from models.sources import load_sessions, load_spec, recorded_spec
from models.training import load_checkpoint
from service.cli.app import app
from service.config import RigSettings, load_settings

RATE = 277.78
OFFSET = 10_000.0
"""What the ``filtered`` stream adds to the ``raw`` one's frames: far beyond either's values."""


def _write(path: Path, streams: dict[str, tuple[str, np.ndarray]]) -> None:
    """An XDF file of electrode streams, name -> (LSL type, frames), on one clock."""
    with XdfWriter(path) as writer:
        for stream_id, (name, (kind, _)) in enumerate(streams.items(), start=1):
            writer.add_stream(
                stream_id,
                name=name,
                stream_type=kind,
                channel_count=360,
                channel_format="float32",
                nominal_srate=RATE,
                source_id=name,
            )
        for stream_id, (_, frames) in enumerate(streams.values(), start=1):
            stamps = 100.0 + np.arange(len(frames)) / RATE
            writer.write_samples(stream_id, stamps, frames.reshape(len(frames), 360))


@pytest.fixture(scope="module")
def two_rigs(tmp_path_factory) -> tuple[Path, np.ndarray]:
    """A 5-s recording of two ECoG streams, ``raw`` and ``filtered`` (raw + OFFSET)."""
    raw = generate_session(SynthConfig(duration_s=5.0, seed=3)).frames
    path = tmp_path_factory.mktemp("two") / "two.xdf"
    _write(path, {"raw": ("ECoG", raw), "filtered": ("ECoG", raw + np.float32(OFFSET))})
    return path, raw


def test_a_recording_of_two_ecog_streams_is_read_by_the_stream_it_names(two_rigs):
    path, raw = two_rigs
    with pytest.raises(SessionFileError, match="2 streams have type 'ECoG'") as err:
        load_spec(str(path))
    assert "FILE::stream=NAME for replay, train, evaluate, adapt and rig --source" in str(err.value)
    assert "replay also takes --stream-name NAME" in str(err.value)
    (read,) = load_spec(f"{path}::stream=raw")
    np.testing.assert_array_equal(read.frames, raw)
    (read,) = load_sessions([f"{path}::stream=filtered"])
    np.testing.assert_array_equal(read.frames, raw + np.float32(OFFSET))
    with pytest.raises(SessionFileError, match="no stream has type 'ECoG' and name 'lfp'"):
        load_spec(f"{path}::stream=lfp")


def test_a_replay_reads_the_stream_its_file_spec_names_as_train_does(two_rigs):
    """``replay FILE::stream=NAME`` took nothing after the file ("name ... its stream by
    --stream-name"); it picks the stream as the other commands do. Named twice otherwise, or
    followed by other tools' marker streams (a replay reads those from the configuration, as
    the daemon does), it is refused, naming why."""
    path, raw = two_rigs
    settings = load_settings(None)
    read = load_replay_session(f"{path}::stream=filtered", settings)
    np.testing.assert_array_equal(read.frames, raw + np.float32(OFFSET))
    also = load_replay_session(f"{path}::stream=raw", settings, stream_name="raw")
    np.testing.assert_array_equal(also.frames, raw)
    with pytest.raises(ValueError, match="names stream 'raw' and --stream-name 'filtered'"):
        load_replay_session(f"{path}::stream=raw", settings, stream_name="filtered")
    with pytest.raises(ValueError, match=r"name them in \[ingest\] stimulation_marker_streams"):
        load_replay_session(f"{path}::stream=raw::markers=pulser", settings)


def test_a_stream_of_another_type_is_read_by_the_type_it_names(tmp_path):
    """An mne-lsl player streams ``eeg``; a name with ``::`` in it is percent-encoded."""
    path = tmp_path / "player.xdf"
    frames = np.arange(4 * 360, dtype=np.float32).reshape(4, 18, 20)
    _write(path, {"amp::1": ("ecog", frames), "other": ("EEG", frames + 1)})
    with pytest.raises(SessionFileError, match="no stream has type 'ECoG'") as err:
        load_spec(str(path))
    assert "as FILE::type=TYPE" in str(err.value)
    (read,) = load_spec(f"{path}::type=ecog")
    np.testing.assert_array_equal(read.frames, frames)
    (read,) = load_spec(f"{path}::type=ecog::stream=amp%3A%3A1")
    np.testing.assert_array_equal(read.frames, frames)
    (read,) = load_spec(f"{path}::type=EEG")
    np.testing.assert_array_equal(read.frames, frames + 1)
    # replay reads [stream] type (ECoG) unless the spec names another, as the others do
    with pytest.raises(SessionFileError, match="no stream has type 'ECoG'"):
        load_replay_session(str(path), load_settings(None))
    with pytest.raises(ValueError, match="too short to replay"):  # read: 4 frames
        load_replay_session(f"{path}::type=ecog", load_settings(None))


def test_an_nwb_series_is_named_by_stream_and_a_type_is_refused_saying_why(tmp_path):
    path = tmp_path / "s.nwb"
    session = generate_session(SynthConfig(duration_s=1.0, seed=1))
    write_nwb(path, session)  # one ElectricalSeries, "ECoG"
    (read,) = load_spec(f"{path}::stream=ECoG")
    np.testing.assert_allclose(read.frames, session.frames, rtol=1e-6)
    with pytest.raises(SessionFileError, match="got 'raw' which matches 0"):
        load_spec(f"{path}::stream=raw")
    with pytest.raises(ValueError, match="an NWB file's ElectricalSeries have none") as err:
        load_spec(f"{path}::type=ECoG")
    with pytest.raises(ValueError, match="an NWB file's ElectricalSeries have none"):
        load_replay_session(f"{path}::type=ECoG", load_settings(None))
    assert "'s.nwb': a stream type ('ECoG') picks an LSL stream of an XDF recording" in str(
        err.value
    )


def test_the_recorded_spec_keeps_the_stream_it_names(two_rigs, monkeypatch):
    path, raw = two_rigs
    monkeypatch.chdir(path.parent)
    recorded = recorded_spec("two.xdf::stream=filtered::type=ECoG")
    assert recorded == f"{path}::stream=filtered::type=ECoG"
    monkeypatch.chdir(path.parent.parent)  # a resume or a held-out check from elsewhere
    (read,) = load_spec(recorded)
    np.testing.assert_array_equal(read.frames, raw + np.float32(OFFSET))


def test_train_reads_the_stream_its_data_names(two_rigs, tmp_path):
    """The run's normalisation is fitted on the frames it read: the ``filtered`` stream's,
    OFFSET above the ``raw`` one's."""
    path, raw = two_rigs
    run_dir = tmp_path / "run"
    args = ["train", "mr_layer_lstm", "--data", f"{path}::stream=filtered", "--run", str(run_dir)]
    args += ["--steps", "2", "--hidden", "3,4", "--batch-size", "2", "--window-stride", "16"]
    result = CliRunner().invoke(app, [*args, "--no-adversarial"])
    assert result.exit_code == 0, result.output
    state = load_checkpoint(run_dir)
    assert state["config"]["data"] == (f"{path}::stream=filtered",)
    mean = np.array(state["normalisation"]["mean"])
    assert np.all(mean > OFFSET + raw.min()) and np.all(mean < OFFSET + raw.max())


def test_rig_plays_the_stream_its_source_names(two_rigs):
    path, raw = two_rigs
    source = source_from_settings(RigSettings(source=f"{path}::stream=filtered", loop=False))
    frames, _ = source.read(0, len(raw))
    np.testing.assert_array_equal(frames, raw + np.float32(OFFSET))
    with pytest.raises(ValueError, match=r"a rig plays the recording's electrode stream only"):
        source_from_settings(RigSettings(source=f"{path}::stream=raw::markers=pulser"))
