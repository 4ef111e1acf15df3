import numpy as np
import pytest

from bench.data.pattern import INDEX_MODULUS, decode_pattern, encode_pattern
from bench.data.session import Session
from bench.data.session_io import write_xdf
from bench.rig.frame_source import PatternSource, SessionSource, source_from_settings
from bench.rig.rig import SimulatedRig
from service.config import RigSettings
from service.core.channel_map import ChannelMap, stream_grid
from service.core.grid import ElectrodeGrid
from service.ingest.ingestor import Ingestor
from service.ingest.settings import IngestSettings, StreamSettings


def _session(n: int = 5) -> Session:
    frames = np.arange(n * 360, dtype=np.float32).reshape(n, 18, 20)
    timestamps = np.array([0.0, 0.0036, 0.0108, 0.0144, 0.0180][:n])  # one dropped sample
    return Session(frames=frames, timestamps=timestamps)


def test_pattern_round_trip_and_detects_misplaced_cells():
    index = np.array([0, 1, INDEX_MODULUS - 1, INDEX_MODULUS, 123456])
    frames = encode_pattern(index)
    decoded, ok = decode_pattern(frames)
    np.testing.assert_array_equal(decoded, index % INDEX_MODULUS)
    assert ok.all()
    frames[2, 3, 4], frames[2, 4, 3] = frames[2, 4, 3], frames[2, 3, 4]
    assert decode_pattern(frames)[1].tolist() == [True, True, False, True, True]


def test_session_source_loops_with_continuing_time():
    session = _session()
    source = SessionSource(session, loop=True)
    frames, times = source.read(3, 4)
    np.testing.assert_array_equal(frames, session.frames[[3, 4, 0, 1]])
    duration = session.duration_s
    np.testing.assert_allclose(times, [0.0144, 0.0180, duration, duration + 0.0036])
    assert np.all(np.diff(times) > 0)


def test_session_source_without_loop_ends():
    source = SessionSource(_session(), loop=False)
    frames, times = source.read(3, 10)
    assert frames.shape[0] == times.shape[0] == 2
    assert source.read(5, 3)[1].shape == (0,)


def test_empty_session_cannot_be_played():
    empty = Session(frames=np.zeros((0, 18, 20), np.float32), timestamps=np.zeros(0))
    with pytest.raises(ValueError, match="empty session"):
        SessionSource(empty)


def test_stream_metadata_describes_the_scrambled_channel_order():
    rig = SimulatedRig(PatternSource(), scramble_channels=True, seed=3)
    channel_map = ChannelMap.from_stream_xml(rig.stream_info().as_xml())
    np.testing.assert_array_equal(channel_map.source_of_cell, np.argsort(rig.cell_of_channel))
    assert channel_map.from_metadata and not channel_map.is_identity


def test_stream_metadata_gives_the_pitch_of_the_array_it_plays_to_the_last_place():
    """The rig wrote pitch_mm to 6 significant digits: an array of 0.1234567 mm pitch was
    described 2.4e-6 off, and a daemon configured with it refused the rig's stream as another
    array ('... with pitch 0.123457 mm; the grid is 4x5 with pitch 0.123457 mm')."""
    grid = ElectrodeGrid(rows=4, cols=5, pitch_m=0.1234567e-3)
    xml = SimulatedRig(PatternSource(grid)).stream_info().as_xml()
    assert stream_grid(xml).same_array(grid)
    assert ChannelMap.from_stream_xml(xml, grid).grid == grid


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"chunk_size": 0}, "'chunk_size' must be an integer >= 1, got 0"),
        ({"speed": 0.0}, "'speed' must be a finite number > 0, got 0.0"),
        ({"speed": float("nan")}, "'speed' must be a finite number > 0"),
        ({"drop_probability": 1.0}, r"'drop_probability' must be in \[0, 1\), got 1.0"),
        ({"stall_s": -1.0}, "'stall_s' must be >= 0, got -1.0"),
    ],
)
def test_bad_rig_settings_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SimulatedRig(PatternSource(), **kwargs)


def test_a_session_file_plays_through_lsl_into_the_ring_exactly(tmp_path, source_id):
    """XDF file -> rig -> LSL -> ingestor: frames bitwise equal, the file's gaps marked."""
    rng = np.random.default_rng(5)
    n = 800
    kept = np.setdiff1d(np.arange(n), [100, 101, 102, 400])  # samples the recording lost
    frames = rng.normal(0, 50, (kept.size, 18, 20)).astype(np.float32)
    session = Session(frames=frames, timestamps=kept / 277.78 + 12.5)
    path = tmp_path / "session.xdf"
    write_xdf(path, session)

    source = source_from_settings(RigSettings(source=path, loop=False))
    rig = SimulatedRig(source, source_id=source_id, speed=10, wait_for_consumer=True)
    stream = StreamSettings(source_id=source_id)
    with rig, Ingestor(stream, IngestSettings(ring_seconds=10)) as ingestor:
        assert rig.wait_finished(30)
        assert ingestor.ring.wait_for(n - 1, timeout=30)
        window = ingestor.ring.read_since(0)
    assert len(window) == n
    np.testing.assert_array_equal(np.flatnonzero(~window.valid), [100, 101, 102, 400])
    np.testing.assert_array_equal(window.frames[window.valid], frames)
    np.testing.assert_allclose(np.diff(window.timestamps[window.valid]), np.diff(kept) / 277.78)


def test_the_push_log_says_when_each_sample_went_out(source_id):
    """A stall's backlog goes out late: the log says by how much, where it kept a record."""
    rate = PatternSource().sample_rate_hz
    rig = SimulatedRig(
        PatternSource(), source_id=source_id, chunk_size=1, max_samples=40,
        stall_at_s=20 / rate, stall_s=0.1, wait_for_consumer=True, push_log=30,
    )  # fmt: skip
    with rig, Ingestor(StreamSettings(source_id=source_id)) as ingestor:
        assert rig.wait_finished(30)
        assert ingestor.ring.wait_for(39, timeout=30)
        stamps = ingestor.ring.read_since(0).timestamps
    late = rig.pushed_at(stamps) - stamps
    assert np.isfinite(late[:30]).all() and np.isnan(late[30:]).all()  # 30 logged
    # The stall starts after sample 19 went out; the backlog then catches up a period a sample.
    assert (late[20:30] >= 0.1 - np.arange(1.5, 11) / rate).all()
    assert np.isnan(rig.pushed_at(np.array([stamps[0] - 1.0, stamps[-1] + 1.0]))).all()
    # The one stall is the one pause longer than 50 ms, counted where its end falls.
    pushed = rig.pushed_at(stamps[:30])
    assert rig.push_stalls(pushed[0], pushed[29] + 1.0, 0.05) == 1
    assert rig.push_stalls(pushed[21], pushed[29] + 1.0, 0.05) == 0
    assert rig.push_stalls(pushed[0], pushed[29] + 1.0, 0.2) == 0
    with pytest.raises(ValueError, match="'push_log' must be an integer >= 0, got -1"):
        SimulatedRig(PatternSource(), push_log=-1)
