"""The streaming-accuracy bench feeds both modes what the daemon's scheduler would."""

import numpy as np
import pytest

from bench.benchmarks.streaming_accuracy import compare_modes, scheduler_feed
from bench.data.session import Session
from bench.data.synth import SynthConfig, generate_session
from bench.replay.timeline import lay_out
from service.inference.batch_runner import BatchRunner
from service.inference.predictor import StreamSpec
from service.inference.scheduler import Prediction, Scheduler
from service.inference.streaming_predictor import StreamingPredictor
from service.ingest.ring_buffer import RingBuffer
from tests.data.tiny_model import copy_tiny_model

STREAM = StreamSpec()
SHORT_GAP = range(200, 202)  # 2 dropped samples: within max_missing_frames (4), held
LONG_GAP = range(400, 410)  # 10: the windows over it are refused


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    return copy_tiny_model(tmp_path_factory.mktemp("model"))


@pytest.fixture(scope="module")
def session() -> Session:
    return generate_session(SynthConfig(duration_s=3.0, seed=21))


def _with_drops(session: Session) -> Session:
    """The first 700 frames, with the two gaps' samples dropped (absent, as LSL loses them)."""
    keep = np.setdiff1d(np.arange(700), np.r_[SHORT_GAP, LONG_GAP])
    return Session(
        frames=session.frames[keep],
        timestamps=session.timestamps[keep],
        sample_rate_hz=session.sample_rate_hz,
    )


def test_a_short_gap_is_held_through_and_only_a_refused_window_restarts_the_stream(
    exported, session
):
    _, window_graph, step_graph = exported
    timeline = lay_out(_with_drops(session), STREAM.sample_rate_hz, max_fill=4096)
    assert timeline.missing == len(SHORT_GAP) + len(LONG_GAP)
    predictor = StreamingPredictor(step_graph, STREAM, threads=1, reprime_every_frames=None)
    stats = predictor.normaliser.stats_for_prediction()
    requests, refused = scheduler_feed(timeline, stats, "hold", 4)

    # Windows over the short gap are run (held frames); those with more than 4 missing are not.
    run = {request.newest_seq for request in requests}
    assert {210, 215} <= run
    missing = [np.count_nonzero(~timeline.valid[n - 15 : n + 1]) for n in range(len(timeline))]
    assert 405 not in run and refused == sum(
        1 for newest in range(15, len(timeline) - 16)
        if timeline.valid[newest] and missing[newest] > 4
    )  # fmt: skip
    # A window ends on a received frame: the ingestor writes a gap's placeholders with the
    # frame after them, so the scheduler never finds one newest (its windows are skipped).
    assert all(timeline.valid[newest] for newest in run)
    assert {199, 202} <= run

    # The daemon's own streaming predictor, fed the same calls one by one, gives the same.
    stream = BatchRunner(step_graph, "stream", STREAM, reprime_every_frames=None)
    window = BatchRunner(window_graph, "window", STREAM)
    scores = compare_modes(timeline, window, stream, stats, policy="hold", max_missing=4)
    expected = [predictor.predict(r.window, newest_seq=r.newest_seq) for r in requests]
    assert stream.plan.reprimes == 2  # at the start, and after the refused windows only
    got = BatchRunner(step_graph, "stream", STREAM, reprime_every_frames=None).run(requests)
    for ours, theirs in zip(got, expected, strict=True):
        np.testing.assert_array_equal(ours, theirs)

    # Scored only where every predicted frame was received.
    scorable = [
        r.newest_seq for r in requests if timeline.valid[r.newest_seq + 1 : r.newest_seq + 17].all()
    ]
    assert scores.run == len(requests) and scores.refused == refused
    assert scores.scored == len(scorable) < len(requests)


def test_under_interpolate_the_bench_restarts_the_stream_where_the_scheduler_does(
    exported, session
):
    """Under ``interpolate`` a run of missing frames is copied from the frame after it once
    the frame before has left the window, and the scheduler then starts the stream over
    (what the state was fed is no longer what window mode feeds): the bench's calls do too,
    so its stream mode predicts what the daemon's scheduler and predictor do."""
    _, _, step_graph = exported
    timeline = lay_out(_with_drops(session), STREAM.sample_rate_hz, max_fill=4096)
    end = 300  # the short gap only
    predictor = StreamingPredictor(step_graph, STREAM, threads=1, reprime_every_frames=None)
    stats = predictor.normaliser.stats_for_prediction()
    requests, _ = scheduler_feed(timeline, stats, "interpolate", 4)
    requests = [r for r in requests if r.newest_seq < end]

    ring = RingBuffer(256, STREAM.grid)
    runs: dict[int, Prediction] = {}
    scheduler = Scheduler(
        ring, predictor, lambda p: runs.setdefault(p.input_seq, p), missing_frames="interpolate"
    )
    first = 0
    for newest in np.flatnonzero(timeline.valid[:end]):  # placeholders with the frame after
        chunk = slice(first, newest + 1)
        stamps = timeline.times_s[chunk]
        ring.write(timeline.frames[chunk], stamps, timeline.valid[chunk], 0.0)
        first = newest + 1
        if newest >= 15:
            scheduler.run_due()
    assert [r.newest_seq for r in requests] == list(runs)
    assert predictor.reprimes == 2  # the first call, and once 199 left the window at 215
    got = BatchRunner(step_graph, "stream", STREAM, reprime_every_frames=None).run(requests)
    for request, ours in zip(requests, got, strict=True):
        np.testing.assert_array_equal(ours, runs[request.newest_seq].future)
