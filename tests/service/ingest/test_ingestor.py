"""The ingestor against real LSL outlets on loopback: a simulated rig in-process or as a
separate `corticast rig` process that the tests kill and restart."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import pylsl
import pytest
from prometheus_client import CollectorRegistry

import service.ingest.ingestor as ingestor_module
from bench.data.pattern import INDEX_MODULUS, decode_pattern
from bench.data.session import Session
from bench.data.synth import SynthConfig, generate_session
from bench.rig.frame_source import PatternSource, SessionSource
from bench.rig.rig import SimulatedRig
from service.core.thread_placement import ThreadPlacement
from service.ingest.ingestor import Ingestor, StreamFormatError, StreamNotFoundError
from service.ingest.settings import IngestSettings, StreamSettings
from service.waves.baseline import Baseline
from service.waves.estimator import WaveEstimator
from service.waves.settings import WaveSettings

FAST_RIG_INGEST = IngestSettings(ring_seconds=20, inlet_buffer_s=10)
"""For rigs pushing at 10x real time: the inlet's buffer is sized in seconds of the nominal
rate, so its default 1 s holds 0.1 s of wall time there, and an ingest thread held up that
long on a loaded machine lost the oldest samples (a run of ~260 frames marked missing)."""


def _stream(source_id: str, **overrides) -> StreamSettings:
    return StreamSettings(source_id=source_id, resolve_timeout_s=5.0, **overrides)


def _rig_info(source_id: str) -> pylsl.StreamInfo:
    """The rig's stream as these tests announce it: 360 float32 channels at the nominal rate."""
    return pylsl.StreamInfo("corticast-rig", "ECoG", 360, 277.78, pylsl.cf_float32, source_id)


def _rig_outlet(source_id: str) -> pylsl.StreamOutlet:
    """An outlet of :func:`_rig_info`'s stream."""
    return pylsl.StreamOutlet(_rig_info(source_id))


def _wait(condition, timeout: float, poll: float = 0.01) -> None:
    """Wait until ``condition()`` holds; fails the test after ``timeout``."""
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > timeout:
            pytest.fail(f"condition not met within {timeout} s")
        time.sleep(poll)


def _play(rig: SimulatedRig, ingestor: Ingestor, expected_frames: int) -> None:
    """Wait until the rig has sent everything and the ingestor has counted it: a sample is
    counted after its frame and its gap are written and counted, not before."""
    assert rig.wait_finished(30)
    assert ingestor.ring.wait_for(expected_frames - 1, timeout=10)
    _wait(lambda: ingestor.status().samples == rig.samples_sent, timeout=10)


def test_every_sample_arrives_once_in_order_on_its_electrode(source_id):
    rig = SimulatedRig(
        PatternSource(),
        source_id=source_id,
        chunk_size=7,
        speed=10,
        scramble_channels=True,
        max_samples=3000,
        wait_for_consumer=True,
    )
    with rig, Ingestor(_stream(source_id), FAST_RIG_INGEST) as ingestor:
        _play(rig, ingestor, 3000)
        window = ingestor.ring.read_since(0)
        status = ingestor.status()
    assert not np.array_equal(rig.cell_of_channel, np.arange(360)), "channels were not scrambled"
    assert len(window) == 3000
    index, cells_ok = decode_pattern(window.frames)
    np.testing.assert_array_equal(index, np.arange(3000) % INDEX_MODULUS)
    assert cells_ok.all(), "some electrode landed in the wrong cell"
    assert window.valid.all()
    assert np.all(np.diff(window.timestamps) > 0)
    assert (status.samples, status.missing_frames, status.gaps) == (3000, 0, 0)
    assert status.positions_from_metadata is True


def test_samples_dropped_at_the_rig_are_marked_exactly(source_id):
    rig = SimulatedRig(
        PatternSource(),
        source_id=source_id,
        chunk_size=5,
        speed=10,
        max_samples=2500,
        drop_indices=[3, 4, 5, 777, 1500, 1501],
        drop_probability=0.01,
        seed=7,
        wait_for_consumer=True,
    )
    with rig, Ingestor(_stream(source_id), FAST_RIG_INGEST) as ingestor:
        assert rig.wait_finished(30)
        sent = sorted(set(range(2500)) - set(rig.dropped))
        first, last = sent[0], sent[-1]
        expected_missing = [d - first for d in rig.dropped if first < d < last]
        assert ingestor.ring.wait_for(last - first, timeout=10)
        _wait(lambda: ingestor.status().samples == len(sent), timeout=10)  # gaps counted
        window = ingestor.ring.read_since(0)
        status = ingestor.status()
    assert len(rig.dropped) > 6, "the random drops did not happen"
    assert len(window) == last - first + 1
    np.testing.assert_array_equal(np.flatnonzero(~window.valid), expected_missing)
    assert status.missing_frames == len(expected_missing)
    index, cells_ok = decode_pattern(window.frames[window.valid])
    np.testing.assert_array_equal(index, np.array(sent) % INDEX_MODULUS)
    assert cells_ok.all()
    # placeholders sit at nominal times between their neighbours
    np.testing.assert_allclose(np.diff(window.timestamps), 1 / 277.78, rtol=1e-6)


def test_a_stall_shows_as_stale_then_catches_up_without_loss(source_id):
    rig = SimulatedRig(
        PatternSource(),
        source_id=source_id,
        chunk_size=4,
        speed=2,
        max_samples=600,
        stall_at_s=0.5,
        stall_s=0.3,
        wait_for_consumer=True,
    )
    with rig, Ingestor(_stream(source_id), FAST_RIG_INGEST) as ingestor:
        _wait(lambda: ingestor.ring.next_seq > 100, timeout=10)
        _wait(lambda: not ingestor.is_fresh(), timeout=5)
        stale_at = ingestor.ring.next_seq
        assert ingestor.status().connected
        _play(rig, ingestor, 600)
        window = ingestor.ring.read_since(0)
    assert 100 < stale_at < 600
    index, _ = decode_pattern(window.frames)
    np.testing.assert_array_equal(index, np.arange(600))
    assert window.valid.all()


def test_unknown_stream_is_a_clear_error(source_id):
    ingestor = Ingestor(StreamSettings(source_id=source_id, resolve_timeout_s=0.3))
    with pytest.raises(StreamNotFoundError, match=f"source_id='{source_id}' appeared within 0.3 s"):
        ingestor.start()
    assert not ingestor.running


def test_a_stream_not_found_names_those_seen_that_share_a_field_with_it(source_id):
    """The rig's stream under another type than ``[stream] type`` (mne-lsl's player sends
    ``eeg``): "none appeared" alone read as no rig running; the stream that is there is named."""
    info = pylsl.StreamInfo("corticast-rig", "eeg", 360, 277.78, pylsl.cf_float32, source_id)
    outlet = pylsl.StreamOutlet(info)
    ingestor = Ingestor(StreamSettings(source_id=source_id, resolve_timeout_s=0.3))
    with pytest.raises(StreamNotFoundError) as raised:
        ingestor.start()
    assert "network? Streams seen here that share its name, type or source_id: " in str(
        raised.value
    )
    assert f"'corticast-rig' (type 'eeg', source_id '{source_id}', 360 channels" in str(
        raised.value
    )
    del outlet


def test_a_daemon_waiting_for_its_stream_says_which_it_looks_for(source_id, caplog):
    """The daemon comes up before the rig and keeps looking; its warning said "no stream yet"
    and nothing of the name, type and source id it looks for, so a [stream] setting other than
    the rig's looked like a rig that was not running."""
    stream = StreamSettings(name="rig-7", type="EEG", source_id=source_id)
    with (
        caplog.at_level(logging.WARNING, logger="corticast.ingest"),
        Ingestor(stream, wait_for_stream=True) as ingestor,
    ):
        assert ingestor.running and not ingestor.status().connected
    assert f"no LSL stream with name='rig-7', type='EEG', source_id='{source_id}' yet" in (
        caplog.text
    )
    assert "do [stream] name, type and source_id match it?" in caplog.text


def test_a_300_channel_stream_is_refused(source_id):
    info = pylsl.StreamInfo("corticast-rig", "ECoG", 300, 277.78, pylsl.cf_float32, source_id)
    outlet = pylsl.StreamOutlet(info)
    ingestor = Ingestor(_stream(source_id))
    with pytest.raises(
        StreamFormatError, match="has 300 channels; the 18x20 electrode grid needs exactly 360"
    ):
        ingestor.start()
    assert not ingestor.running
    del outlet


@pytest.mark.parametrize(
    ("channel_format", "rate", "message"),
    [
        (pylsl.cf_int16, 277.78, "carries channel format code 5; corticast reads floating"),
        (pylsl.cf_float32, 1000.0, "declares 1000 Hz; stream.sample_rate_hz is 277.78 Hz"),
    ],
)
def test_wrong_format_or_rate_is_refused(source_id, channel_format, rate, message):
    outlet = pylsl.StreamOutlet(
        pylsl.StreamInfo("corticast-rig", "ECoG", 360, rate, channel_format, source_id)
    )
    with pytest.raises(StreamFormatError, match=message):
        Ingestor(_stream(source_id)).start()
    del outlet


@pytest.mark.parametrize("pinned", [False, True], ids=["unplaced", "pinned"])
def test_a_channel_layout_that_does_not_fit_is_refused_by_start_placed_or_not(source_id, pinned):
    """The daemon's ingestor (``wait_for_stream``) with a ``[realtime]`` placement opens the
    stream on its own thread, after the placement; what the open refuses must still reach
    ``start()``, as without one (the supervisor then retries with backoff), not end the thread
    for the supervisor to restart at once, round after round."""
    info = _rig_info(source_id)
    channels = info.desc().append_child("channels")
    for _ in range(360):
        channels.append_child("channel").append_child_value("unit", "counts")
    outlet = pylsl.StreamOutlet(info)
    cpu = max(os.sched_getaffinity(0))
    placement = ThreadPlacement(None, 1, frozenset({cpu})) if pinned else None
    ingestor = Ingestor(_stream(source_id), wait_for_stream=True, placement=placement)
    try:
        with pytest.raises(StreamFormatError, match="channel 0 has unit 'counts'"):
            ingestor.start()
        assert not ingestor.running and ingestor.status().error is None
    finally:
        ingestor.stop()
        del outlet


def test_stream_without_positions_is_read_row_major(source_id):
    outlet = _rig_outlet(source_id)
    with Ingestor(_stream(source_id)) as ingestor:
        assert outlet.wait_for_consumers(5)
        samples = np.arange(2 * 360, dtype=np.float32).reshape(2, 360)
        now = pylsl.local_clock()
        outlet.push_chunk(samples, [now, now + 1 / 277.78])
        assert ingestor.ring.wait_for(1, timeout=5)
        window = ingestor.latest(2)
        assert ingestor.status().positions_from_metadata is False
    np.testing.assert_array_equal(window.frames, samples.reshape(2, 18, 20))


def test_metrics_count_what_arrived(source_id, monkeypatch):
    """Read once every sample is counted: a frame is in the ring before its sample, gap and
    chunk are counted (here the ring is slow to let go of the write of the last frame)."""
    rig = SimulatedRig(
        PatternSource(),
        source_id=source_id,
        speed=10,
        max_samples=400,
        drop_indices=[100, 101],
        wait_for_consumer=True,
    )
    # The rig quiet once it has played: not lost while the metrics are read, however slowly.
    ingest = IngestSettings(inlet_buffer_s=FAST_RIG_INGEST.inlet_buffer_s, lost_after_s=60)
    with rig, Ingestor(_stream(source_id), ingest) as ingestor:
        append = ingestor.ring.append

        def slow_append(*args, **kwargs) -> None:
            append(*args, **kwargs)
            if ingestor.ring.next_seq == 400:
                time.sleep(0.2)

        monkeypatch.setattr(ingestor.ring, "append", slow_append)
        _play(rig, ingestor, 400)
        value = ingestor.registry.get_sample_value
        # A chunk's cost is observed after its samples are counted: waited for, as read.
        _wait(lambda: value("corticast_ingest_chunk_cost_seconds_count") >= 1, timeout=10)
        assert value("corticast_ingest_samples_total") == 398
        assert value("corticast_ingest_missing_frames_total") == 2
        assert value("corticast_ingest_gaps_total") == 1
        assert value("corticast_ingest_connected") == 1
        assert 0 <= value("corticast_ingest_staleness_seconds") < 30


@contextmanager
def _rig_process(source_id: str) -> Iterator[subprocess.Popen]:
    """`corticast rig` in its own process, yielded once its outlet exists, killed on exit."""
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "service.cli.app",
            "rig",
            "--source",
            "pattern",
            "--source-id",
            source_id,
        ],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        env=os.environ | {"PYTHONUNBUFFERED": "1"},
    )
    try:
        for line in process.stderr:
            if line.startswith("rig: streaming"):
                break
        else:
            pytest.fail(f"rig process exited with {process.wait()} before streaming")
        yield process
    finally:
        process.kill()
        process.wait()
        process.stderr.close()


def test_killing_and_restarting_the_rig_reconnects(source_id):
    with _rig_process(source_id) as first, Ingestor(_stream(source_id)) as ingestor:
        _wait(lambda: ingestor.ring.next_seq > 50 and ingestor.rate_problem() is None, timeout=10)
        first.kill()
        first.wait()
        _wait(lambda: not ingestor.status().connected, timeout=5)
        assert not ingestor.is_fresh()
        frames_before = ingestor.ring.next_seq

        with _rig_process(source_id):
            # A generous deadline: how fast it reconnects is bench's to measure, not a test's.
            _wait(
                lambda: ingestor.status().fresh and ingestor.ring.next_seq > frames_before,
                timeout=60,
            )
            _wait(lambda: ingestor.rate_problem() is None, timeout=10)  # judged again
            status = ingestor.status()
    assert status.reconnects == 1
    assert status.error is None


def test_the_newest_age_is_never_negative_when_a_frame_lands_while_it_is_measured(monkeypatch):
    """The ingest thread may stamp and write a frame between the two readings the age is made
    of (the clock, the newest arrival). The age must still not come out negative: a negative
    age reads as fresh, and the staleness interlock refuses it as out of range."""
    ingestor = Ingestor(_stream("no-stream-needed"))
    frame = np.zeros((1, *ingestor.grid.shape), np.float32)
    ingestor.ring.write(frame, np.array([0.0]), np.array([True]), 100.0)

    def clock_with_a_frame_landing_just_after() -> float:
        now = 100.5
        # The ingest thread, a moment later: its own clock reading is the frame's arrival.
        ingestor.ring.write(frame, np.array([0.0036]), np.array([True]), now + 0.001)
        return now

    monkeypatch.setattr(pylsl, "local_clock", clock_with_a_frame_landing_just_after)
    assert ingestor.newest_age_s() >= 0.0


def test_a_recording_played_by_mne_lsl_is_read_row_major_in_microvolts(source_id):
    """Another LSL tool's stream: mne-lsl's player sends an MNE recording as it is, float64
    volts with channel labels, types and units but no electrode positions or grid."""
    import mne
    from mne_lsl.player import PlayerLSL

    n, rate = 560, 277.78
    uv = np.arange(n)[:, None] * 1000.0 + np.arange(360)[None, :]  # sample * 1000 + channel
    raw = mne.io.RawArray(
        uv.T * 1e-6, mne.create_info([f"E{i:03d}" for i in range(360)], rate, "ecog"), verbose=0
    )
    stream = StreamSettings(name="other-tool", type="ecog", source_id=source_id)
    with (
        PlayerLSL(raw, chunk_size=10, n_repeat=1, name="other-tool", source_id=source_id),
        Ingestor(stream, IngestSettings(ring_seconds=5)) as ingestor,
    ):
        assert ingestor.ring.wait_for(199, timeout=10)
        window = ingestor.ring.read_since(0)
        status = ingestor.status()
    assert status.positions_from_metadata is False
    assert window.valid.all()
    sample = np.rint(window.frames[:, 0, 0] / 1000).astype(int)
    np.testing.assert_array_equal(np.diff(sample), 1)  # consecutive samples, none lost
    expected = sample[:, None, None] * 1000.0 + np.arange(360).reshape(18, 20)  # row-major, µV
    np.testing.assert_allclose(window.frames, expected, atol=0.1)


def test_one_sample_chunks_are_read_one_sample_at_a_time(source_id):
    """``max_chunk_samples = 1`` is a valid setting: each pull takes one sample and drains
    nothing more (the drain of the rest of a chunk has no room; it was a ValueError that
    ended the ingest thread at the first sample, again after every restart)."""
    rig = SimulatedRig(
        PatternSource(), source_id=source_id, chunk_size=3, max_samples=300,
        wait_for_consumer=True,
    )  # fmt: skip
    settings = IngestSettings(ring_seconds=20, max_chunk_samples=1)
    with rig, Ingestor(_stream(source_id), settings) as ingestor:
        assert rig.wait_finished(30)
        _wait(lambda: ingestor.ring.next_seq >= 300 or ingestor.status().error, timeout=10)
        status = ingestor.status()
        window = ingestor.ring.read_since(0)
    assert status.error is None
    index, _ = decode_pattern(window.frames)
    np.testing.assert_array_equal(index, np.arange(300))


def test_a_few_non_finite_values_are_held_per_channel_and_a_mostly_non_finite_frame_is_missing(
    source_id,
):
    """An amplifier channel that sends NaN (or inf) must not put it in the ring: the model
    refuses a non-finite window. A value in a frame with few such channels is held at its
    channel's last finite value, the frame stays data; a frame with more than [ingest]
    max_non_finite_fraction (0.1) of its channels non-finite is missing (the missing-frames
    policy decides), the frame before held over, and counted as before. The ring knows which
    values were held (the live scores leave them out of the truth)."""
    outlet = _rig_outlet(source_id)
    samples = np.tile(np.arange(360, dtype=np.float32), (8, 1)) + np.arange(8)[:, None] * 1000
    samples[2, 7] = np.nan
    samples[3, [0, 359]] = np.inf
    samples[5, :300] = np.nan  # a connector off for one frame
    samples[6, 7] = -np.inf
    registry = CollectorRegistry()
    with Ingestor(_stream(source_id), registry=registry) as ingestor:
        assert outlet.wait_for_consumers(5)
        now = pylsl.local_clock()
        outlet.push_chunk(samples, [now + k / 277.78 for k in range(8)])
        assert ingestor.ring.wait_for(7, timeout=5)
        window = ingestor.ring.read_since(0, held=True)
        status = ingestor.status()
    assert status.error is None and ingestor.ring.next_seq == 8
    assert np.isfinite(window.frames).all()
    np.testing.assert_array_equal(window.valid, [k != 5 for k in range(8)])
    held = ~np.isfinite(samples)
    held[5] = True  # the missing frame's every value
    np.testing.assert_array_equal(window.held, held.reshape(8, 18, 20))
    assert ingestor.ring.read_since(0).held is None  # only where asked for
    expected = samples.copy()
    expected[2, 7] = samples[1, 7]
    expected[3, [0, 359]] = samples[2, [0, 359]]
    expected[5] = samples[4]
    expected[6, 7] = samples[4, 7]
    np.testing.assert_array_equal(window.frames, expected.reshape(8, 18, 20))
    counts = {
        name: registry.get_sample_value(f"corticast_ingest_{name}")
        for name in ("nonfinite_frames_total", "held_values_total", "held_channels")
    }
    assert counts == {"nonfinite_frames_total": 1, "held_values_total": 4, "held_channels": 0}
    assert status.held_electrodes == ()  # the newest frame is finite


def test_an_always_nan_electrode_is_held_flat_and_masked_as_dead_while_its_frames_stay_data(
    source_id, caplog
):
    """One broken contact sends NaN in every sample. Every frame used to be kept as missing,
    so the daemon predicted nothing at all. Now the frames are data, the electrode is held
    flat (at 0: it never sent a finite value) and said (status, metrics, one log line naming
    it), and the baseline's dead-channel rule leaves it out of the wave estimate."""
    base = generate_session(SynthConfig(duration_s=3.0, seed=4))
    frames = base.frames.copy()
    frames[:, 3, 4] = np.nan
    session = Session(frames, base.timestamps, base.sample_rate_hz, base.grid)
    n = session.n_frames
    rig = SimulatedRig(
        SessionSource(session, loop=False), source_id=source_id, chunk_size=4, speed=10,
        scramble_channels=True, max_samples=n, wait_for_consumer=True,
    )  # fmt: skip
    registry = CollectorRegistry()
    caplog.set_level(logging.WARNING, logger="corticast.ingest")
    ingest = IngestSettings(ring_seconds=20)
    with rig, Ingestor(_stream(source_id), ingest, registry=registry) as ingestor:
        _play(rig, ingestor, n)
        status = ingestor.status()
    window = ingestor.ring.read_since(0)
    assert len(window) == n and window.valid.all()
    assert np.isfinite(window.frames).all() and not window.frames[:, 3, 4].any()
    live = np.ones((18, 20), dtype=np.bool_)
    live[3, 4] = False
    np.testing.assert_array_equal(window.frames[:, live], session.frames[:, live])
    assert status.held_electrodes == ((3, 4),)
    assert registry.get_sample_value("corticast_ingest_held_channels") == 1
    assert registry.get_sample_value("corticast_ingest_held_values_total") == n
    assert registry.get_sample_value("corticast_ingest_nonfinite_frames_total") == 0
    channel = int(np.flatnonzero(rig.cell_of_channel == 3 * 20 + 4)[0])
    said = [r.getMessage() for r in caplog.records if "held at their last" in r.getMessage()]
    assert said and f"electrodes (row, col) [(3, 4)] (stream channels [{channel}])" in said[0]

    estimator = WaveEstimator(WaveSettings(), sample_rate_hz=session.sample_rate_hz)
    baseline = Baseline(
        ingestor.ring, estimator, sample_rate_hz=session.sample_rate_hz, window_s=2.0,
        every_s=1.0, history_s=60.0,
    )  # fmt: skip
    background = baseline.at(n - 1 - estimator.settings.predicted_frames)
    assert background is not None and baseline.dead_electrodes == ((3, 4),)
    estimate = estimator.estimate(window.frames[-estimator.min_frames :], background.live)
    np.testing.assert_array_equal(estimate.channel_valid, live)


@pytest.mark.parametrize("stamp", [float("nan"), float("inf"), float("-inf")])
def test_a_sample_with_a_non_finite_timestamp_is_a_missing_frame_not_a_flushed_ring(
    source_id, stamp
):
    """LSL carries a NaN or infinite timestamp as sent. Such a sample cannot be placed in
    time: it is dropped, counted, and the slot it leaves is filled as any gap's. Before, a NaN
    went into the ring as a valid frame's time, and an infinite one counted 2**63 missing
    frames and flushed the whole ring with placeholders timed at +-inf or 1e16 s."""
    outlet = _rig_outlet(source_id)
    samples = np.tile(np.arange(360, dtype=np.float32), (12, 1)) + np.arange(12)[:, None] * 1000
    with Ingestor(_stream(source_id)) as ingestor:
        assert outlet.wait_for_consumers(5)
        now = pylsl.local_clock()
        stamps = [now + k / 277.78 for k in range(12)]
        outlet.push_chunk(samples[:6], [*stamps[:3], stamp, *stamps[4:6]])
        outlet.push_chunk(samples[6:], stamps[6:])
        assert ingestor.ring.wait_for(11, timeout=5)
        _wait(lambda: ingestor.status().samples == 12, timeout=5)  # its gap counted
        window = ingestor.ring.read_since(0)
        status = ingestor.status()
        bad = ingestor.registry.get_sample_value("corticast_ingest_nonfinite_frames_total")
    assert status.error is None and ingestor.ring.next_seq == 12
    np.testing.assert_allclose(
        window.timestamps - stamps, window.timestamps[0] - stamps[0], atol=1e-6
    )
    np.testing.assert_array_equal(window.valid, [k != 3 for k in range(12)])
    np.testing.assert_array_equal(window.frames[3], samples[2].reshape(18, 20))
    assert (status.missing_frames, status.gaps, status.out_of_order, bad) == (1, 1, 0, 1)


def _a_source_to_lose(source_id: str) -> tuple[IngestSettings, pylsl.StreamInfo, np.ndarray]:
    """Settings that call a stream lost after 0.2 s, the rig's stream, and 20 samples each
    told apart by its values."""
    ingest = IngestSettings(lost_after_s=0.2)
    info = _rig_info(source_id)
    samples = np.tile(np.arange(360, dtype=np.float32), (20, 1)) + np.arange(20)[:, None] * 1000
    return ingest, info, samples


def test_a_source_restarted_on_an_earlier_clock_is_not_spliced_onto_the_frames_before(source_id):
    """A source that comes back stamping from an earlier time (a new clock) was written
    straight after the last frame before the loss, every frame valid: a window across the
    seam mixed two recordings with no missing frame, and stream mode carried its state over
    it. The outage lasts at least ``lost_after_s``, as it does on the same clock, where it is
    filled as a gap: here too it is, with placeholders stamped on the new clock."""
    ingest, info, samples = _a_source_to_lose(source_id)
    outlet = pylsl.StreamOutlet(info)
    with Ingestor(_stream(source_id), ingest) as ingestor:
        assert outlet.wait_for_consumers(5)
        now = pylsl.local_clock()
        outlet.push_chunk(samples[:10], [now + k / 277.78 for k in range(10)])
        assert ingestor.ring.wait_for(9, timeout=5)
        del outlet
        _wait(lambda: not ingestor.status().connected, timeout=5)
        outlet = pylsl.StreamOutlet(info)
        assert outlet.wait_for_consumers(5)
        restart = now - 100.0  # the new clock's origin, well before the old one's
        outlet.push_chunk(samples[10:], [restart + k / 277.78 for k in range(10)])
        _wait(lambda: ingestor.status().samples == 20, timeout=5)
    window = ingestor.ring.read_since(0)  # stopped: the chunk counted is written
    status = ingestor.status()
    assert status.error is None and status.reconnects == 1
    seam = window.valid[10:-10]
    assert len(seam) >= round(ingest.lost_after_s * 277.78) - 1 and not seam.any()
    assert window.valid[:10].all() and window.valid[-10:].all()
    np.testing.assert_array_equal(window.frames[-10:], samples[10:].reshape(10, 18, 20))
    placeholders = window.timestamps[10:-10]
    assert np.all(np.diff(placeholders) > 0) and placeholders[-1] < restart
    assert status.missing_frames == len(seam) and status.gaps == 1


def test_a_source_that_resumes_its_clock_after_an_outage_is_not_spliced_onto_the_frames_before(
    source_id,
):
    """A source that stamps by its sample count (t0 + n / rate) and comes back after a loss
    stamps straight on from its last frame, or from less after it than the outage lasted (a
    new inlet's clock offset): the timestamps alone then show no gap, and the frames from
    after the reconnect were written straight after those from before it, every one valid. A
    window across the seam mixed two runs with no missing frame, and the missing-frame
    interlock never saw it. The outage, timed on the local clock, is a gap here too."""
    ingest, info, samples = _a_source_to_lose(source_id)
    outlet = pylsl.StreamOutlet(info)
    with Ingestor(_stream(source_id), ingest) as ingestor:
        assert outlet.wait_for_consumers(5)
        now = pylsl.local_clock()
        stamps = [now + k / 277.78 for k in range(20)]  # one run of the source's sample clock
        outlet.push_chunk(samples[:10], stamps[:10])
        assert ingestor.ring.wait_for(9, timeout=5)
        gone_at = ingestor.ring.newest_arrival
        del outlet
        _wait(lambda: not ingestor.status().connected, timeout=5)
        outlet = pylsl.StreamOutlet(info)
        assert outlet.wait_for_consumers(5)
        outage = pylsl.local_clock() - gone_at  # at most what the ingestor times
        outlet.push_chunk(samples[10:], stamps[10:])
        _wait(lambda: ingestor.status().samples == 20, timeout=5)
    window = ingestor.ring.read_since(0)  # stopped: the chunk counted is written
    status = ingestor.status()
    assert status.error is None and status.reconnects == 1
    seam = window.valid[10:-10]
    assert len(seam) >= max(1, round(outage * 277.78) - 1), (
        f"the frames after the reconnect follow those before it with {len(seam)} missing "
        f"between them, after an outage of at least {outage:.3f} s"
    )
    assert not seam.any()
    assert window.valid[:10].all() and window.valid[-10:].all()
    np.testing.assert_array_equal(window.frames[-10:], samples[10:].reshape(10, 18, 20))
    placeholders = window.timestamps[10:-10]
    assert np.all(np.diff(placeholders) > 0) and placeholders[-1] < stamps[10]
    assert status.missing_frames == len(seam) and status.gaps == 1


def test_a_stream_gone_between_its_resolve_and_its_open_is_looked_for_again(source_id, monkeypatch):
    """A rig that dies again just after it was found (a crash loop): the reconnect's open
    failed with LSL's LostError, which ended the ingest thread; without a supervisor to
    restart it the stream was never read again. Now the open is tried again on the next
    resolve, and the rig's next start is read."""
    info = _rig_info(source_id)
    ghost = pylsl.StreamOutlet(
        pylsl.StreamInfo("corticast-rig", "ECoG", 360, 277.78, pylsl.cf_float32, "ghost")
    )
    [gone] = pylsl.resolve_byprop("source_id", "ghost", 1, 5)
    del ghost  # found, then gone: what a resolve just before the rig died again returns
    real_resolve = ingestor_module.resolve
    served = []

    def resolve_once_too_late(stream, timeout):
        if served:
            return real_resolve(stream, timeout)
        served.append(gone)
        return gone

    outlet = pylsl.StreamOutlet(info)
    samples = np.zeros((4, 360), dtype=np.float32)
    with Ingestor(_stream(source_id), IngestSettings(lost_after_s=0.2)) as ingestor:
        monkeypatch.setattr(ingestor_module, "resolve", resolve_once_too_late)
        assert outlet.wait_for_consumers(5)
        outlet.push_chunk(samples)
        assert ingestor.ring.wait_for(3, timeout=5)
        del outlet
        _wait(lambda: served and not ingestor.status().connected, timeout=5)
        outlet = pylsl.StreamOutlet(info)
        assert outlet.wait_for_consumers(10), ingestor.status().error
        outlet.push_chunk(samples)
        _wait(lambda: ingestor.status().samples == 8, timeout=5)
        status = ingestor.status()
    assert status.running and status.error is None and status.reconnects == 1


def test_a_sample_is_counted_once_its_frame_is_in_the_ring(source_id, monkeypatch):
    """The sample count rose as a chunk was pulled, before its frames were in the ring and its
    gaps counted: a reader that waited for the count (a test, an operator reading /status
    against the ring's metrics) read the ring without them (CI read a ring short of its last
    chunk). Now a counted sample's frame is in the ring."""
    outlet = _rig_outlet(source_id)
    samples = np.tile(np.arange(360, dtype=np.float32), (5, 1))
    with Ingestor(_stream(source_id)) as ingestor:
        writing, release = threading.Event(), threading.Event()
        append = ingestor.ring.append

        def held_append(*args):
            writing.set()
            assert release.wait(10)
            append(*args)

        monkeypatch.setattr(ingestor.ring, "append", held_append)
        assert outlet.wait_for_consumers(5)
        outlet.push_chunk(samples)
        assert writing.wait(10)
        counted_while_writing = ingestor.status().samples
        release.set()
        _wait(lambda: ingestor.status().samples == 5, timeout=10)
        written = ingestor.ring.next_seq
    assert counted_while_writing == 0
    assert written == 5


def test_a_sample_dropped_for_its_timestamp_neither_lends_a_held_value_nor_counts_twice(
    source_id,
):
    """Non-finite values were held before the samples with a non-finite timestamp were
    dropped: the next sample's NaN took its value from a sample the ring never had (its slot
    holds the frame before), and a sample with both (an amplifier reset) was counted twice as
    a non-finite frame. Now the untimed sample goes first, and the rest are held as any."""
    outlet = _rig_outlet(source_id)
    samples = np.tile(np.arange(360, dtype=np.float32), (12, 1)) + np.arange(12)[:, None] * 1000
    samples[4, 7] = np.nan  # held at its value in the frame before: sample 2's, not the dropped 3's
    samples[8] = np.nan  # an amplifier reset, with no time either
    registry = CollectorRegistry()
    with Ingestor(_stream(source_id), registry=registry) as ingestor:
        assert outlet.wait_for_consumers(5)
        now = pylsl.local_clock()
        stamps = [now + k / 277.78 for k in range(12)]
        stamps[3] = stamps[8] = float("nan")
        outlet.push_chunk(samples, stamps)
        assert ingestor.ring.wait_for(11, timeout=5)
        window = ingestor.ring.read_since(0)
    assert ingestor.ring.next_seq == 12
    np.testing.assert_array_equal(window.valid, [k not in (3, 8) for k in range(12)])
    np.testing.assert_array_equal(window.frames[3], samples[2].reshape(18, 20))
    assert window.frames[4, 0, 7] == samples[2, 7]
    assert registry.get_sample_value("corticast_ingest_nonfinite_frames_total") == 2
    assert registry.get_sample_value("corticast_ingest_held_values_total") == 1


@pytest.mark.parametrize(
    ("rows", "cols", "pitch_mm", "message"),
    [
        ("20", "18", "0.5", "stream describes a 20x18 grid with pitch 0.5 mm; the grid is 18x20"),
        ("18", "20", "0.4", "stream describes a 18x20 grid with pitch 0.4 mm; the grid is 18x20"),
        ("18", "20", "half", "desc/grid must hold integer rows, cols and a number pitch_mm"),
    ],
    ids=["transposed", "another-pitch", "unreadable"],
)
def test_a_stream_that_describes_another_electrode_array_is_refused(
    source_id, rows, cols, pitch_mm, message
):
    """A rig's desc/grid names the array it records from. Read row-major, a 20x18 array's
    360 channels fill the 18x20 grid scrambled; at another pitch every wave speed is off by
    the ratio. A replay of the same stream's XDF file refused both, the live ingestor read
    them as the configured array."""
    info = _rig_info(source_id)
    layout = info.desc().append_child("grid")
    layout.append_child_value("rows", rows)
    layout.append_child_value("cols", cols)
    layout.append_child_value("pitch_mm", pitch_mm)
    outlet = pylsl.StreamOutlet(info)
    ingestor = Ingestor(_stream(source_id))
    with pytest.raises(StreamFormatError, match=message):
        ingestor.start()
    assert not ingestor.running
    del outlet


@pytest.mark.parametrize(
    ("jump_s", "alone"),
    [(100.0, False), (-100.0, False), (100.0, True), (-100.0, True)],
    ids=["ahead", "behind", "ahead-alone", "behind-alone"],
)
def test_a_timestamp_far_off_inside_one_connection_marks_no_more_missing_than_time_allows(
    source_id, caplog, jump_s, alone
):
    """One sample stamped 100 s off (a clock step, a glitched stamp), the rest on time. The
    step to it (ahead) or from it (behind) was taken for 27 777 lost samples: the ring's whole
    history of real frames was overwritten by placeholders, and nothing said why. Inside one
    connection no more samples can be lost than the local clock let the source make since the
    chunk before (plus the inlet's buffer): the step is marked missing up to that, the frames
    before it stay in the ring, and a warning names it. Alone in its chunk, a sample stamped
    behind is the newest the ring has (its age counts from its stamp), and the time since it
    still counts on the local clock."""
    outlet = _rig_outlet(source_id)
    samples = np.tile(np.arange(360, dtype=np.float32), (20, 1)) + np.arange(20)[:, None] * 1000
    caplog.set_level(logging.WARNING, logger="corticast.ingest")
    with Ingestor(_stream(source_id)) as ingestor:
        assert outlet.wait_for_consumers(5)
        now = pylsl.local_clock()
        stamps = [now + k / 277.78 for k in range(20)]
        outlet.push_chunk(samples[:10], stamps[:10])
        assert ingestor.ring.wait_for(9, timeout=5)
        stamps[10] += jump_s
        if alone:
            outlet.push_chunk(samples[10:11], stamps[10:11])
            _wait(lambda: ingestor.status().samples == 11, timeout=10)
            outlet.push_chunk(samples[11:], stamps[11:])
        else:
            outlet.push_chunk(samples[10:], stamps[10:])
        # The sample count goes up as a chunk is pulled, before its frames are in the ring and
        # its gap counted: wait for the newest frame and the count of missing frames instead.
        newest = samples[19].reshape(18, 20)
        _wait(
            lambda: (
                np.array_equal(ingestor.ring.latest(1).frames[0], newest)
                and ingestor.status().missing_frames > 0
            ),
            timeout=10,
        )
        window = ingestor.ring.read_since(0)
        status = ingestor.status()
    assert status.error is None and status.out_of_order == 1
    assert window.seq[0] == 0 and window.valid[:10].all()
    np.testing.assert_array_equal(window.frames[:10], samples[:10].reshape(10, 18, 20))
    np.testing.assert_array_equal(window.frames[-9:], samples[11:].reshape(9, 18, 20))
    assert window.valid[-9:].all()
    placeholders = int(np.count_nonzero(~window.valid))
    assert status.missing_frames == placeholders and 1 <= placeholders <= 2 * 278
    said = [r.getMessage() for r in caplog.records if "a bad timestamp" in r.getMessage()]
    assert said and "step 100.00" in said[0]


def test_channel_labels_that_name_other_electrodes_than_row_major_are_refused(source_id):
    """Channels 0 and 1 labelled R00C01 and R00C00, the grid's own names for those
    electrodes, and no row/col. The stream was read row-major (a warning that it had no
    positions), the two channels on each other's electrode: a scrambled grid is wrong waves.
    Given row/col, those place the channels (a rig may number its labels from 1)."""
    grid = ingestor_module.DEFAULT_GRID
    info = _rig_info(source_id)
    channels = info.desc().append_child("channels")
    for channel in range(360):
        labelled = {0: 1, 1: 0}.get(channel, channel)
        channels.append_child("channel").append_child_value(
            "label", grid.label(*divmod(labelled, grid.cols))
        )
    outlet = pylsl.StreamOutlet(info)
    ingestor = Ingestor(_stream(source_id))
    with pytest.raises(
        StreamFormatError,
        match=r"channel 0 is labelled 'R00C01' but would be read as electrode \(row=0, col=0\)",
    ):
        ingestor.start()
    assert not ingestor.running
    del outlet


def test_two_streams_that_both_match_the_configured_one_are_refused_naming_both(source_id):
    """Two sources on the network answer to [stream]'s name, type and source_id (a simulated
    rig left running beside the real one, or a field left empty that both fit). The
    ingestor read whichever answered first, and on every reconnect maybe the other: the
    loop could decide on the wrong brain. It refuses to choose, naming both."""
    info = _rig_info(source_id)
    outlets = [pylsl.StreamOutlet(info), pylsl.StreamOutlet(info)]
    uids = {outlet.get_info().uid() for outlet in outlets}
    ingestor = Ingestor(_stream(source_id))
    with pytest.raises(ingestor_module.AmbiguousStreamError) as raised:
        ingestor.start()
    assert not ingestor.running
    message = str(raised.value)
    assert f"2 LSL streams match name='corticast-rig', type='ECoG', source_id={source_id!r}" in (
        message
    )
    assert all(uid in message for uid in uids)
    del outlets


def test_samples_stamped_at_or_before_the_sample_before_are_logged_naming_them(source_id, caplog):
    """A source that stamps each block of 10 samples with one time (a driver that stamps on
    arrival) repeats every timestamp nine times. Each repeat was only counted in
    corticast_ingest_out_of_order_total, and the only line said the stream ran at a tenth of
    its rate; a warning now names the repeated (or backward) timestamps."""
    outlet = _rig_outlet(source_id)
    caplog.set_level(logging.WARNING, logger="corticast.ingest")
    with Ingestor(_stream(source_id)) as ingestor:
        assert outlet.wait_for_consumers(5)
        now = pylsl.local_clock()
        for block in range(3):
            samples = np.full((10, 360), block, dtype=np.float32)
            outlet.push_chunk(samples, [now + (10 * block + 9) / 277.78] * 10)
        _wait(lambda: ingestor.status().samples == 30, timeout=10)
        status = ingestor.status()
    assert status.error is None and status.out_of_order == 27
    said = [r.getMessage() for r in caplog.records if "repeated or backward" in r.getMessage()]
    assert said and "stamped at or before the sample before" in said[0]


def test_samples_that_arrive_long_after_their_timestamps_are_as_old_as_their_timestamps(
    source_id, caplog
):
    """A link slower than the stream (a congested network) leaves the source's outlet a
    growing backlog: samples keep arriving, each stamped seconds before. The inlet's buffer
    is drained, so the newest sample arrived just now, and its age was counted from that
    arrival: the loop (and the bridge's sample-age interlock) took 2 s old data for fresh. A
    sample is as old as the earlier of its arrival and its own (clock-corrected) timestamp,
    and a warning says so."""
    caplog.set_level(logging.WARNING, logger="corticast.ingest")
    outlet = _rig_outlet(source_id)
    samples = np.tile(np.arange(360, dtype=np.float32), (20, 1)) + np.arange(20)[:, None] * 1000
    with Ingestor(_stream(source_id)) as ingestor:
        assert outlet.wait_for_consumers(5)
        behind = pylsl.local_clock() - 2.0
        outlet.push_chunk(samples, [behind + k / 277.78 for k in range(20)])
        assert ingestor.ring.wait_for(19, timeout=5)
        window = ingestor.latest(1)
        age = ingestor.newest_age_s()
        fresh = ingestor.is_fresh()
    assert window.newest_available == window.timestamps[-1]
    assert window.newest_arrival - window.newest_available >= 1.9  # when it came: now
    assert age >= 1.9 and not fresh
    said = [r.getMessage() for r in caplog.records if "before it arrived" in r.getMessage()]
    assert said and "data queued before the inlet" in said[0]


def test_a_frame_after_a_blank_never_takes_a_value_from_a_frame_blanked_in_its_own_chunk(
    source_id,
):
    """Frames 2-4 of one chunk are stamped in a blanking interval (a train's artefact, 5000
    uV); frame 5 never came (a placeholder holds the frame before it) and frame 6's electrode
    7 sent NaN (held at its last value). Both take the frame before them as the ring holds it,
    the frame before the blank: not the artefact the chunk carried, which the ring blanked
    (the model is fed placeholders under the 'hold' policy, and frame 6 is measured data)."""
    outlet = _rig_outlet(source_id)
    samples = np.tile(np.arange(360, dtype=np.float32), (10, 1)) + np.arange(10)[:, None]
    samples[2:5] += 5000.0
    samples[6, 7] = np.nan
    sent = [k for k in range(10) if k != 5]
    with Ingestor(_stream(source_id)) as ingestor:
        assert outlet.wait_for_consumers(5)
        now = pylsl.local_clock()
        stamps = [now + k / 277.78 for k in range(10)]
        half = 0.5 / 277.78  # the inlet's clock offset on one host is microseconds
        ingestor.ring.blank(stamps[2] - half, stamps[4] + half)
        outlet.push_chunk(samples[sent], [stamps[k] for k in sent])
        assert ingestor.ring.wait_for(9, timeout=5)
        window = ingestor.ring.read_since(0)
    np.testing.assert_array_equal(window.valid, [k not in (2, 3, 4, 5) for k in range(10)])
    artefact = np.argwhere(window.frames > 1000.0)
    assert artefact.size == 0, (
        f"{len(artefact)} values of frames {sorted(set(artefact[:, 0].tolist()))} hold the artefact"
    )
    np.testing.assert_array_equal(
        window.frames[2:6], np.broadcast_to(window.frames[1], (4, 18, 20))
    )
    assert window.frames[6, 0, 7] == samples[1, 7]


@pytest.mark.parametrize(
    "marked", ["before the train", "after its first frames", "after every frame"]
)
def test_an_electrode_that_stays_nan_from_within_a_train_on_never_holds_the_artefact(
    source_id, marked
):
    """Electrode 7 sends NaN from the train's second frame on (an amplifier that marks a
    saturated channel so, and stays off): after the blank, it is held at its value before the
    train, not the artefact's. Blanked before the train (the daemon's own), or after its
    first three frames had been written (another tool's marker, a link's latency late): the
    ring re-holds those, and each later chunk's hold starts from the ring's newest frame.
    Blanked after every frame had been written (a marker later still): the measured frames
    after the blank had held the electrode at the artefact's value, and the ring re-holds
    that value too."""
    outlet = _rig_outlet(source_id)
    samples = np.tile(np.arange(360, dtype=np.float32), (12, 1)) + np.arange(12)[:, None]
    samples[2:6] += 5000.0  # the train's artefact: frames 2-5
    samples[3:, 7] = np.nan
    with Ingestor(_stream(source_id)) as ingestor:
        assert outlet.wait_for_consumers(5)
        now = pylsl.local_clock()
        stamps = [now + k / 277.78 for k in range(12)]
        half = 0.5 / 277.78  # the inlet's clock offset on one host is microseconds
        first = {"before the train": 0, "after its first frames": 5, "after every frame": 12}
        first = first[marked]
        if first:
            outlet.push_chunk(samples[:first], stamps[:first])
            assert ingestor.ring.wait_for(first - 1, timeout=5)
        ingestor.ring.blank(stamps[2] - half, stamps[6] + half)  # the train and a recovery
        if first < 12:
            outlet.push_chunk(samples[first:], stamps[first:])
        assert ingestor.ring.wait_for(11, timeout=5)
        window = ingestor.ring.read_since(0)
    np.testing.assert_array_equal(window.valid, [k not in range(2, 7) for k in range(12)])
    artefact = np.argwhere(window.frames > 1000.0)
    assert artefact.size == 0, (
        f"{len(artefact)} values of frames {sorted(set(artefact[:, 0].tolist()))} hold the artefact"
    )
    np.testing.assert_array_equal(window.frames[2:, 0, 7], np.full(10, samples[1, 7]))


@pytest.mark.parametrize("carried", ["a NaN held", "a gap's placeholder"])
def test_a_blank_landing_between_the_read_of_the_newest_frame_and_the_write_leaves_no_artefact(
    source_id, monkeypatch, carried
):
    """Frames 2-5 carry a train's artefact and were written before its marker came. The next
    chunk's carried values (electrode 7's NaN held, or frame 6 lost and its placeholder) take
    the ring's newest frame, frame 5: the blank lands just after the ingestor read it (made
    certain here by landing it from inside the hold, at that very point), before the write.
    The ring re-held what it held; the values the chunk carried held the artefact."""
    _blank_racing_the_write(source_id, monkeypatch, carried, artefact=range(2, 6))


@pytest.mark.parametrize("carried", ["a NaN held", "a gap's placeholder"])
def test_a_blank_landing_before_the_write_on_frames_of_that_chunk_only_leaves_no_artefact(
    source_id, monkeypatch, carried
):
    """Frames 7-8 carry a train's artefact and come in one chunk with frames 6-11. Its marker
    lands after the ingestor saw no blank (so it writes the chunk whole) and before the write:
    it covers none of the frames written, so the ring rewrote none, and the chunk's carried
    values (electrode 7's NaN held from frame 9 on, or frame 9 lost and its placeholder) took
    frame 8 from within the chunk. The ring blanks frames 7-8 as it writes them; what the
    chunk carried from them held the artefact."""
    _blank_racing_the_write(source_id, monkeypatch, carried, artefact=range(7, 9))


def _blank_racing_the_write(
    source_id: str, monkeypatch: pytest.MonkeyPatch, carried: str, artefact: range
) -> None:
    """Frames 0-5, then 6-11 in a second chunk, pushed through a real outlet; the ``artefact``
    frames carry a train's artefact, and the frames after them carry values (electrode 7's
    NaN held, or the first one lost and its placeholder). The train's blank lands from inside
    the second chunk's hold or gap fill: none of the artefact may be left in the ring, the
    carried values held from the frame before the artefact."""
    outlet = _rig_outlet(source_id)
    after = artefact.stop
    samples = np.tile(np.arange(360, dtype=np.float32), (12, 1)) + np.arange(12)[:, None]
    samples[artefact] += 5000.0
    later = list(range(6, 12))
    if carried == "a NaN held":
        samples[after:, 7] = np.nan
        name = "hold_non_finite"
    else:
        later.remove(after)
        name = "fill_gaps"
    with Ingestor(_stream(source_id)) as ingestor:
        assert outlet.wait_for_consumers(5)
        now = pylsl.local_clock()
        stamps = [now + k / 277.78 for k in range(12)]
        outlet.push_chunk(samples[:6], stamps[:6])
        assert ingestor.ring.wait_for(5, timeout=5)
        half = 0.5 / 277.78  # the inlet's clock offset on one host is microseconds
        original, landed = getattr(ingestor_module, name), threading.Event()
        hooked: list[int] = []  # the frames of the hold or gap fill the blank landed in

        def blank_first(*args, **kwargs):
            if not landed.is_set():
                landed.set()
                hooked.append(args[0].shape[0])
                ingestor.ring.blank(stamps[artefact.start] - half, stamps[after - 1] + half)
            return original(*args, **kwargs)

        monkeypatch.setattr(ingestor_module, name, blank_first)
        in_the_inlet = _whole_chunk_pulled(ingestor, monkeypatch, len(later))
        outlet.push_chunk(samples[later], [stamps[k] for k in later])
        in_the_inlet.set()
        assert ingestor.ring.wait_for(11, timeout=5)
        window = ingestor.ring.read_since(0)
    assert landed.is_set()
    assert hooked == [len(later)], f"the second chunk was written in parts: {hooked}"
    found = np.argwhere(window.frames > 1000.0)
    assert found.size == 0, (
        f"{len(found)} values of frames {sorted(set(found[:, 0].tolist()))} hold the artefact"
    )
    before = artefact.start - 1
    if carried == "a NaN held":
        np.testing.assert_array_equal(
            window.frames[after:, 0, 7], np.full(12 - after, samples[before, 7])
        )
    else:
        np.testing.assert_array_equal(window.frames[after], window.frames[before])


def _whole_chunk_pulled(
    ingestor: Ingestor, monkeypatch: pytest.MonkeyPatch, count: int
) -> threading.Event:
    """Hold the ingestor's next wait for data until the test sets the event returned and
    ``count`` samples are in its inlet, so the chunk pushed meanwhile is pulled in one piece.
    liblsl hands samples over as they are decoded: a pull woken by the first may drain only
    some, and the chunk is then written in parts, none of which is the case a test means.
    Returns once the ingestor's wait in progress has ended (before the chunk is pushed)."""
    puller, pushed, gated = ingestor._puller, threading.Event(), threading.Event()
    pull = puller.pull

    def whole(offset: int, max_samples: int, timeout: float) -> int:
        if offset == 0 and not gated.is_set():
            gated.set()
            deadline = time.monotonic() + 30.0  # only a hang reaches it
            while time.monotonic() < deadline and not (
                pushed.is_set() and ingestor._inlet.samples_available() >= count
            ):
                time.sleep(0.001)
        return pull(offset, max_samples, timeout)

    monkeypatch.setattr(puller, "pull", whole)
    assert gated.wait(30.0), "the ingestor never waited for data again"
    return pushed


def test_a_sample_stamped_far_ahead_does_not_end_a_blank_before_its_frames_have_come(source_id):
    """A blank given its end (a train's, at its verdict) covers samples 5-15, which carry the
    artefact. Sample 4 is stamped 100 s ahead (a glitched stamp): a frame stamped after the
    blank's end had been written, so the ring dropped the interval, and the artefact frames
    that came after it were measured. The local clock has not passed the end: it is kept."""
    outlet = _rig_outlet(source_id)
    samples = np.tile(np.arange(360, dtype=np.float32), (20, 1)) + np.arange(20)[:, None]
    samples[5:16] += 5000.0
    with Ingestor(_stream(source_id)) as ingestor:
        assert outlet.wait_for_consumers(5)
        now = pylsl.local_clock() + 5.0  # the samples and the blank are still to come
        stamps = [now + k / 277.78 for k in range(20)]
        half = 0.5 / 277.78
        ingestor.ring.blank(stamps[5] - half, stamps[15] + half)
        stamps[4] += 100.0
        outlet.push_chunk(samples[:10], stamps[:10])
        assert ingestor.ring.wait_for(9, timeout=5)
        outlet.push_chunk(samples[10:], stamps[10:])
        newest = samples[19].reshape(18, 20)
        _wait(lambda: np.array_equal(ingestor.ring.latest(1).frames[0], newest), timeout=10)
        window = ingestor.ring.read_since(0)
    measured = window.frames[window.valid]
    artefact = np.flatnonzero(measured.max(axis=(1, 2)) > 1000.0)
    assert artefact.size == 0, f"{artefact.size} measured frames carry the artefact"
