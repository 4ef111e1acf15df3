"""Stream mode's schedule alone (states that record what they are fed), then the daemon's
predictor and the batched replay following it."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.inference._batch_stream import StreamPlan
from service.inference._stream_schedule import StreamSchedule
from service.inference.batch_runner import BatchRequest, BatchRunner
from service.inference.predictor import StreamSpec
from service.inference.scheduler import Prediction, Scheduler
from service.inference.streaming_predictor import StreamingPredictor, steps_per_prediction
from service.ingest.ring_buffer import RingBuffer

WINDOW = 16


class _Record:
    """A state that records the (frame, upper_due) steps fed to it."""

    def __init__(self) -> None:
        self.steps: list[tuple[int, bool]] = []

    @property
    def seen(self) -> list[int]:
        return [seq for seq, _ in self.steps]


def _schedule(every: int | None) -> StreamSchedule[_Record]:
    return StreamSchedule(WINDOW, every, _Record)


def _call(schedule: StreamSchedule[_Record], newest: int) -> _Record:
    """Feed one call's steps to their states; the state whose future is the prediction.

    No two states fed a frame started at the same frame: a state is never built twice."""
    predicting = []
    for frame in schedule.feed(newest):
        for step in frame.steps:
            step.state.steps.append((frame.seq, step.upper_due))
            if step.rollout:
                predicting.append(step.state)
        starts = [step.state.seen[0] for step in frame.steps]
        assert len(set(starts)) == len(starts), (frame.seq, starts)
    (state,) = predicting
    return state


def test_a_first_call_feeds_its_whole_window_to_one_state_that_predicts_its_newest_frame():
    schedule = _schedule(None)
    frames = schedule.feed(40)
    assert [f.offset for f in frames] == list(range(WINDOW))
    assert [f.seq for f in frames] == list(range(25, 41))
    assert all(len(f.steps) == 1 for f in frames)
    assert len({id(f.steps[0].state) for f in frames}) == 1
    assert [s.rollout for f in frames for s in f.steps] == [False] * 15 + [True]
    # the upper layer updates at the newest frame's parity, as window mode's does
    assert [s.upper_due for f in frames for s in f.steps] == [f.seq % 2 == 0 for f in frames]
    assert (schedule.reprimes, schedule.handovers) == (1, 0)


@pytest.mark.parametrize(
    ("following", "continues"),
    [
        (41, True),  # the next frame
        (40 + WINDOW, True),  # a window later: every frame since is in the window
        (41 + WINDOW, False),  # a frame the window does not cover went unseen
        (40, False),  # the same frame again
        (30, False),  # sequence numbers went backwards (a reconnect)
    ],
)
def test_a_call_continues_the_state_only_over_frames_its_window_holds(following, continues):
    schedule = _schedule(None)
    first = _call(schedule, 40)
    frames = schedule.feed(following)
    fed = following - 40 if continues else WINDOW
    assert [f.offset for f in frames] == list(range(WINDOW - fed, WINDOW))
    assert [f.seq for f in frames] == list(range(following - fed + 1, following + 1))
    assert (frames[-1].steps[0].state is first) == continues
    assert schedule.reprimes == (1 if continues else 2)


def test_after_a_reset_the_next_call_reprimes():
    schedule = _schedule(None)
    first = _call(schedule, 40)
    schedule.reset()
    assert _call(schedule, 41) is not first
    assert len(_call(schedule, 42).seen) == WINDOW + 1
    assert schedule.reprimes == 2


def test_a_state_started_on_schedule_takes_over_once_it_has_seen_a_whole_window():
    """With N = 8 states start at multiples of 8 and take over at 8k + 15 (first call at 18,
    off the schedule), each having seen exactly the window ending there."""
    schedule = _schedule(8)
    carried, taken_over = _call(schedule, 18), []
    for newest in range(19, 50):
        state = _call(schedule, newest)
        if state is not carried:
            taken_over.append(newest)
            assert state.seen == list(range(newest - WINDOW + 1, newest + 1))
            assert state.steps[-1][1]  # at its anchor, as window mode's at its newest frame
        carried = state
    assert taken_over == [23, 31, 39, 47]
    assert (schedule.reprimes, schedule.handovers) == (1, 4)


def test_a_reprime_on_a_handover_frame_builds_only_the_next_state():
    """The state a multiple of N would start in a re-primed window is the re-primed one (the
    same frames): only later multiples start states."""
    schedule = _schedule(8)
    frames = schedule.feed(31)  # frames 16 to 31
    assert [len(f.steps) for f in frames] == [1] * 8 + [2] * 8  # the one started at 24
    assert (schedule.reprimes, schedule.handovers) == (1, 0)


@settings(max_examples=150, deadline=None)
@given(
    every=st.sampled_from([None, 1, 3, 8, 16, 40]),
    first=st.integers(15, 200),
    moves=st.lists(st.integers(-20, 40), min_size=1, max_size=40),
)
def test_every_prediction_comes_from_a_state_fed_a_whole_window_and_at_most_n_minus_1_more(
    every, first, moves
):
    """Whatever the calls (steps of 1 to 40 frames, repeats, going back): the predicting state
    was fed every frame from its first to the newest, at least a window of them and, on a
    schedule of N, fewer than a window + N; its upper layer was due at the parity of its
    window-th frame. Each state is fed each frame at most once."""
    schedule = _schedule(every)
    newest = first
    for move in [0, *moves]:
        newest = max(WINDOW - 1, newest + move)
        state = _call(schedule, newest)
        seen = state.seen
        assert seen == list(range(seen[0], newest + 1))
        assert len(seen) >= WINDOW
        if every is not None:
            assert len(seen) < WINDOW + every
        anchor = seen[0] + WINDOW - 1
        assert [due for _, due in state.steps] == [(s - anchor) % 2 == 0 for s in seen]


@pytest.mark.parametrize("every", [0, -3])
def test_a_period_below_one_is_refused_by_name(every):
    with pytest.raises(
        ValueError, match=f"'reprime_every_frames' must be >= 1 or None, got {every}"
    ):
        _schedule(every)


def test_the_batched_plan_refuses_a_window_of_another_length():
    plan = StreamPlan(WINDOW, 16)
    with pytest.raises(ValueError, match="window must have 16 frames, got 15"):
        plan.add(np.zeros((WINDOW - 1, 4, 4), np.float32), 40, 0)


def test_the_batched_plan_runs_no_step_of_a_state_that_never_predicts():
    """At a stride above the window every call re-primes, so a state started on schedule
    inside a window is dropped by the next call before it takes over: the plan runs only the
    16 steps of each call's predicting state. The last call's window starts on a multiple of
    16, so it starts no state that a later call could still continue."""
    newest = [44, 74, 104, 134, 164, 194, 224, 255]  # stride 30, then 31: each call re-primes
    plan = StreamPlan(WINDOW, 16)
    for index, seq in enumerate(newest):
        plan.add(np.zeros((WINDOW, 4, 4), np.float32), seq, index)
    rows: list[int] = []

    def run_step(frames, states, upper_due, rollout):
        rows.append(len(frames))
        return np.ones((len(frames), 16, 4, 4), np.float32), [np.zeros((len(frames), 2))]

    outputs: list = [None] * len(newest)
    plan.execute(run_step, outputs, max_batch=16)
    assert plan.reprimes == len(newest)
    assert all(output is not None for output in outputs)
    assert sum(rows) == WINDOW * len(newest)


@pytest.mark.parametrize(
    ("starts", "every", "expected_handovers"),
    [
        # Another rule, out of the shipped phase: states start at 16k + 5 and take over at
        # 16k + 20 (20, 36, 52, 68, and 100, 116 after the re-prime at 90); the shipped one
        # would hand over at 16k + 15 (31, 47, 63, 95, 111).
        (lambda self, seq: seq % 16 == 5, 16, 6),
        (None, 5, 16),  # the shipped rule, three states being built at once: every 5 from 20
    ],
)
def test_the_predictor_and_the_batched_replay_follow_the_one_schedule(
    exported, session, monkeypatch, starts, every, expected_handovers
):
    """The schedule is consulted by both paths, not copied: a different rule for when a state
    starts moves the daemon's predictor and the batched replay alike, bitwise, and what they
    predict differs from what the shipped rule gives."""
    _, _, step_graph = exported
    frames = session.frames[:120].astype(np.float32)
    newest = [*range(15, 73), *range(90, 120)]  # a gap longer than a window: a re-prime
    stream = StreamSpec()

    def serve() -> tuple[list[np.ndarray], list[np.ndarray], StreamingPredictor, BatchRunner]:
        predictor = StreamingPredictor(step_graph, stream, threads=1, reprime_every_frames=every)
        stats = predictor.normaliser.stats_for_prediction()
        alone = [predictor.predict(frames[s - 15 : s + 1], newest_seq=s) for s in newest]
        runner = BatchRunner(step_graph, "stream", stream, reprime_every_frames=every)
        batched = runner.run([BatchRequest(frames[s - 15 : s + 1], s, None, stats) for s in newest])
        return alone, batched, predictor, runner

    shipped = None
    if starts is not None:
        shipped = serve()[0]
        monkeypatch.setattr(StreamSchedule, "starts_rebuild", starts)
    alone, batched, predictor, runner = serve()

    for ours, theirs in zip(batched, alone, strict=True):
        np.testing.assert_array_equal(ours, theirs)
    assert (predictor.reprimes, predictor.handovers) == (2, expected_handovers)
    assert (runner.plan.reprimes, runner.plan.handovers) == (2, expected_handovers)
    if shipped is not None:
        differ = [
            s for s, a, b in zip(newest, alone, shipped, strict=True) if not np.allclose(a, b)
        ]
        assert differ and min(differ) == 20  # the same up to the first handover the rules move


@pytest.mark.parametrize("every", [None, 16, 4])
def test_steps_per_prediction_are_the_step_graph_runs_the_predictor_makes(
    exported, monkeypatch, every
):
    """Counted from the schedule alone, checked against a real predictor's session runs per
    prediction at stride 1, by their rollout flag."""
    import onnxruntime

    _, _, step_graph = exported
    predictor = StreamingPredictor(step_graph, StreamSpec(), threads=1, reprime_every_frames=every)
    window = np.zeros((WINDOW, 18, 20), dtype=np.float32)
    predictor.predict(window, newest_seq=WINDOW - 1)  # primes from zeros: not counted
    rollouts: list[bool] = []
    run = onnxruntime.InferenceSession.run

    def counted(session, names, feeds, *args, **kwargs):
        rollouts.append(bool(feeds["rollout"][0]))
        return run(session, names, feeds, *args, **kwargs)

    monkeypatch.setattr(onnxruntime.InferenceSession, "run", counted)
    calls = 64
    for seq in range(WINDOW, WINDOW + calls):
        predictor.predict(window, newest_seq=seq)
    made = {flag: rollouts.count(flag) / calls for flag in (True, False)}
    assert made == pytest.approx(steps_per_prediction(WINDOW, every))
    assert made[False] == (0 if every is None else pytest.approx((WINDOW - 1) / every))


def test_a_window_the_scheduler_refuses_is_not_fed_to_the_carried_state(exported, session):
    """Six frames kept as missing (a connector off, each written as it came) with
    max_missing_frames 4: the windows holding five or six are refused, and the first one run
    after them (four missing) was continued from the state fed the first four, then the other
    two, all six invented. A refusal now resets the state: that window re-primes, and predicts
    what a predictor that never saw the run predicts from it; the batched replay, told of the
    reset, predicts the same."""
    _, _, step_graph = exported
    stream = StreamSpec()
    frames = session.frames[:120].astype(np.float32)
    valid = np.ones(len(frames), dtype=np.bool_)
    valid[100:106] = False
    frames[100:106] = frames[99]  # held, as the ingestor holds a frame kept as missing
    ring = RingBuffer(256, stream.grid)
    predictor = StreamingPredictor(step_graph, stream, threads=1)
    runs: dict[int, Prediction] = {}
    refused: list[int] = []
    scheduler = Scheduler(
        ring, predictor, lambda p: runs.setdefault(p.input_seq, p), max_missing_frames=4,
        on_refusal=lambda r: refused.append(r.input_seq),
    )  # fmt: skip
    for seq in range(len(frames)):
        ring.write(frames[seq : seq + 1], np.array([seq / 277.78]), valid[seq : seq + 1], 0.0)
        if ring.next_seq > scheduler.next_due():
            scheduler.run_due()
    assert refused == list(range(104, 117)) and 117 in runs
    fresh = StreamingPredictor(step_graph, stream, threads=1)
    np.testing.assert_array_equal(runs[117].future, fresh.predict(frames[102:118], newest_seq=117))
    assert predictor.reprimes == 2
    stats = predictor.normaliser.stats_for_prediction()
    runner = BatchRunner(step_graph, "stream", stream)
    batched = runner.run([BatchRequest(p.past, s, None, stats, s == 117) for s, p in runs.items()])
    for ours, theirs in zip(batched, runs.values(), strict=True):
        np.testing.assert_array_equal(ours, theirs.future)
    assert runner.plan.reprimes == 2


@pytest.mark.parametrize(
    ("blanked", "every"),
    [
        ((60, 61), 16),  # in the next window: window mode holds them
        ((50, 51), 16),  # older than the next window, but fed to the carried state
        ((60, 61), None),  # a state carried indefinitely
    ],
)
def test_frames_blanked_after_the_carried_state_was_fed_them_start_it_over(
    exported, session, blanked, every
):
    """A late marker: frames already run through the carried state are blanked afterwards
    (the ring holds the frame before them in their place). The state fed their artefact
    must not predict on: the next window re-primes, and predicts what window mode (a fresh
    predictor) predicts from the window as the scheduler fed it."""
    _, _, step_graph = exported
    stream = StreamSpec()
    frames = session.frames[:120].astype(np.float32)
    first, last = blanked
    frames[first : last + 1] += 500.0  # the stimulation artefact the marker announces
    ring = RingBuffer(256, stream.grid)
    predictor = StreamingPredictor(step_graph, stream, threads=1, reprime_every_frames=every)
    runs: dict[int, Prediction] = {}
    scheduler = Scheduler(ring, predictor, lambda p: runs.setdefault(p.input_seq, p))
    valid = np.ones(1, dtype=np.bool_)
    for seq in range(72):
        ring.write(frames[seq : seq + 1], np.array([seq / 277.78]), valid, 0.0)
        if ring.next_seq > scheduler.next_due():
            scheduler.run_due()
        if seq == 70:  # the marker arrives after frame 70 was predicted from
            assert ring.blank(first / 277.78, last / 277.78) == 2
    reprimes = predictor.reprimes
    window = runs[71].past
    assert np.count_nonzero(window[:, 0, 0] > 400) == 0  # the artefact is not in the window
    fresh = StreamingPredictor(step_graph, stream, threads=1, reprime_every_frames=every)
    np.testing.assert_array_equal(runs[71].future, fresh.predict(window, newest_seq=71))
    assert reprimes == 2


def test_a_frame_interpolated_after_the_state_was_fed_it_held_starts_the_state_over(
    exported, session
):
    """Under ``interpolate`` a missing newest frame is fed held (no later frame yet); once the
    next one comes, window mode feeds it interpolated. The state fed the held copy starts
    over, so the prediction at the next handover frame is window mode's, as the schedule
    promises (before, the state built over the held copy handed over and predicted on)."""
    _, _, step_graph = exported
    stream = StreamSpec()
    frames = session.frames[:70].astype(np.float32)
    frames[60] = frames[59]  # held, as the ingestor keeps a frame it marks missing
    ring = RingBuffer(256, stream.grid)
    predictor = StreamingPredictor(step_graph, stream, threads=1, reprime_every_frames=16)
    runs: dict[int, Prediction] = {}
    scheduler = Scheduler(
        ring, predictor, lambda p: runs.setdefault(p.input_seq, p), missing_frames="interpolate"
    )
    for seq in range(64):
        valid = np.array([seq != 60])
        ring.write(frames[seq : seq + 1], np.array([seq / 277.78]), valid, 0.0)
        if ring.next_seq > scheduler.next_due():
            scheduler.run_due()
    np.testing.assert_array_equal(runs[60].past[-1], frames[59])  # fed held
    assert not np.array_equal(runs[61].past[-2], frames[59])  # then interpolated
    fresh = StreamingPredictor(step_graph, stream, threads=1)
    np.testing.assert_array_equal(runs[63].future, fresh.predict(runs[63].past, newest_seq=63))
