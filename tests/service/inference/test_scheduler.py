"""The scheduler against a real ring buffer written while it runs.

The predictor here is a stand-in (persistence): what is under test is the scheduling, which
must not depend on what the model computes, nor on how fast this machine is. So the test
writes frames in lockstep with the scheduler (each due frame, then wait until it has been
handled), or holds an inference in flight while frames arrive; every wait is on an event with
a deadline that only a hang reaches.
"""

import itertools
import os
import queue
import threading
import time

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from service.core.thread_placement import ThreadPlacement
from service.inference.missing_frames import prepare_window, received_frames
from service.inference.predictor import PredictorInfo, past_times_input
from service.inference.scheduler import Prediction, Refusal, Scheduler
from service.ingest.ring_buffer import RingBuffer

GRID = (18, 20)
PAST = 16
WAIT_S = 30.0
"""Deadline of every wait on the scheduler thread: only a hang reaches it."""


class Persistence:
    """Repeats the newest frame; records what it was given."""

    info = PredictorInfo("test", "cpu", "fp32", "window", "persistence", "-", "-")

    def __init__(self) -> None:
        self.calls: list[dict] = []

    def predict(self, window, newest_seq=None, past_times=None):
        self.calls.append({"seq": newest_seq, "window": window.copy(), "times": past_times})
        return np.repeat(window[-1:], 16, axis=0)

    def warmup(self):
        pass

    def close(self):
        pass


class IrregularPersistence(Persistence):
    """A stand-in for a model that takes the past frames' times (``info.irregular``)."""

    info = PredictorInfo("test", "cpu", "fp32", "window", "persistence", "-", "-", irregular=True)


class GatedPersistence(Persistence):
    """Holds each inference until the test opens the gate, announcing which window it runs."""

    def __init__(self) -> None:
        super().__init__()
        self.running: queue.Queue[int] = queue.Queue()
        self.gate = threading.Semaphore(0)

    def predict(self, window, newest_seq=None, past_times=None):
        self.running.put(newest_seq)
        if not self.gate.acquire(timeout=WAIT_S):
            raise RuntimeError("the test never let the inference finish")
        return super().predict(window, newest_seq, past_times)

    def next_window(self) -> int:
        """Newest frame of the window the next inference runs on (waits for it to start)."""
        return self.running.get(timeout=WAIT_S)


class Handled:
    """What the scheduler handed on or refused, with a condition the test waits on."""

    def __init__(self) -> None:
        self.predictions: list[Prediction] = []
        self.refusals: list[Refusal] = []
        self._changed = threading.Condition()

    def prediction(self, prediction: Prediction) -> None:
        with self._changed:
            self.predictions.append(prediction)
            self._changed.notify_all()

    def refusal(self, refusal: Refusal) -> None:
        with self._changed:
            self.refusals.append(refusal)
            self._changed.notify_all()

    def wait_for(self, seq: int) -> None:
        """Until the window ending at frame ``seq`` (or a later one) was run or refused."""
        with self._changed:
            if not self._changed.wait_for(lambda: self._newest() >= seq, WAIT_S):
                raise AssertionError(f"the scheduler did not handle frame {seq} in {WAIT_S} s")

    def _newest(self) -> int:
        seqs = [p.input_seq for p in self.predictions] + [r.input_seq for r in self.refusals]
        return max(seqs, default=-1)


def _write(ring: RingBuffer, seq: int, invalid=()) -> None:
    """Frame ``seq``, every value its own sequence number, stamped on the scheduler's clock."""
    frame = np.full((1, *GRID), float(seq), dtype=np.float32)
    valid = np.array([seq not in invalid])
    ring.write(frame, np.array([seq * 0.0036]), valid, time.perf_counter())


def _scheduler(ring, predictor, handled: Handled, **options) -> Scheduler:
    return Scheduler(
        ring,
        predictor,
        handled.prediction,
        on_refusal=handled.refusal,
        registry=CollectorRegistry(),
        clock=time.perf_counter,
        **options,
    )


def _run_in_lockstep(predictor, count: int, *, stride: int = 1, invalid=(), **options):
    """Write ``count`` frames; after each due one, wait until the scheduler has handled it:
    every due window is then run (or refused) whatever the machine's speed."""
    ring = RingBuffer(256)
    handled = Handled()
    scheduler = _scheduler(ring, predictor, handled, stride=stride, **options)
    with scheduler:
        for seq in range(count):
            _write(ring, seq, invalid)
            if seq >= PAST - 1 and (seq - (PAST - 1)) % stride == 0:
                handled.wait_for(seq)
    scheduler.raise_if_failed()
    return scheduler, handled


class _Writer:
    """Writes the ring's frames in order, each once: ``writer(n)`` writes up to frame ``n``."""

    def __init__(self, ring: RingBuffer, invalid: frozenset[int] | set[int] = frozenset()):
        self._ring, self._invalid, self._next = ring, invalid, 0

    def __call__(self, newest: int) -> None:
        while self._next <= newest:
            _write(self._ring, self._next, invalid=self._invalid)
            self._next += 1


@pytest.mark.parametrize("stride", [1, 3])
def test_a_busy_predictor_skips_windows_and_always_takes_the_newest(stride):
    ring = RingBuffer(256)
    predictor = GatedPersistence()
    handled = Handled()
    write_up_to = _Writer(ring)

    with _scheduler(ring, predictor, handled, stride=stride) as scheduler:
        try:
            write_up_to(PAST - 1)
            previous = predictor.next_window()
            assert previous == PAST - 1
            for arrived in (10, 7, 4, stride):  # frames that arrive while an inference runs
                newest = previous + arrived
                write_up_to(newest)
                predictor.gate.release()
                # Never a queued window: the next inference takes the newest frame there is.
                assert predictor.next_window() == newest
                previous = newest
        finally:
            predictor.gate.release()  # the last inference (or the one a failure left waiting)
        handled.wait_for(previous)
    scheduler.raise_if_failed()
    seqs = [p.input_seq for p in handled.predictions]
    assert seqs == [15, 25, 32, 36, 36 + stride]
    # Every due point passed over while an inference ran is counted as skipped.
    skipped = [(b - a) // stride - 1 for a, b in itertools.pairwise(seqs)]
    assert [p.skipped_before for p in handled.predictions] == [0, *skipped]
    assert scheduler.skipped == sum(skipped) > 0
    assert scheduler.metrics.skipped._value.get() == scheduler.skipped
    for call in predictor.calls:  # the window is the 16 frames ending at its newest
        assert call["window"][:, 0, 0].tolist() == list(range(call["seq"] - 15, call["seq"] + 1))


def test_a_predictor_that_keeps_up_runs_every_stride_and_records_timing():
    predictor = Persistence()
    scheduler, handled = _run_in_lockstep(predictor, count=120, stride=2)
    assert [p.input_seq for p in handled.predictions] == list(range(15, 120, 2))
    assert scheduler.skipped == 0
    for p in handled.predictions:
        assert p.available_at <= p.started_at <= p.finished_at <= p.handed_at
        assert p.age_s >= p.inference_s >= 0
        assert p.input_timestamp == pytest.approx(p.input_seq * 0.0036)
        assert p.first_input_seq == p.input_seq - 15
        np.testing.assert_array_equal(p.future, np.full((16, *GRID), p.input_seq, np.float32))
    assert scheduler.metrics.latency._sum.get() > 0


def test_a_swap_with_a_stride_paces_the_new_predictor_from_its_first_window():
    """Driven window by window (``run_due``): the window due under the old stride is the new
    predictor's first, and the next is due the new stride after it; the skips passed over
    before the switch are counted at the old stride."""
    ring = RingBuffer(256)
    old, new, handled = Persistence(), Persistence(), Handled()
    scheduler = _scheduler(ring, old, handled, stride=2)
    write_up_to = _Writer(ring)
    for _ in range(3):  # windows ending at 15, 17, 19
        write_up_to(scheduler.next_due())
        scheduler.run_due()
    assert scheduler.swap_predictor(new, stride=5) is old
    assert scheduler.stride == 5
    assert scheduler.next_due() == 21  # due under the old stride
    write_up_to(25)  # late: the windows due at 21 and 23 are passed over at stride 2
    scheduler.run_due()
    assert scheduler.next_due() == 30
    write_up_to(30)
    scheduler.run_due()
    assert [c["seq"] for c in old.calls] == [15, 17, 19]
    assert [c["seq"] for c in new.calls] == [25, 30]
    assert [p.skipped_before for p in handled.predictions] == [0, 0, 0, 2, 0]
    assert scheduler.swap_predictor(old) is new  # no stride: the one in force stays
    assert scheduler.stride == 5
    for bad in (0, 2.0):
        with pytest.raises(ValueError, match="'stride' must be an int >= 1"):
            scheduler.swap_predictor(new, stride=bad)
    assert scheduler.predictor is old


def test_before_inference_sees_each_window_before_the_model_and_nothing_refused():
    """The loop starts its AR forecast from this hook, to run beside the model: it must get
    the very frames the model is fed (the prediction's ``past``), before the model does."""
    predictor = Persistence()
    seen: list[tuple[int, np.ndarray, int]] = []

    def before(frames: np.ndarray, newest: int, times: np.ndarray | None) -> None:
        assert times is None  # a regular window's
        seen.append((newest, frames, len(predictor.calls)))

    _, handled = _run_in_lockstep(
        predictor, count=60, missing_frames="refuse", invalid={30}, before_inference=before
    )
    assert [seq for seq, _, _ in seen] == [p.input_seq for p in handled.predictions]
    for (_, frames, calls_before), prediction, call in zip(
        seen, handled.predictions, predictor.calls, strict=True
    ):
        assert frames is prediction.past  # the same array, not a copy
        np.testing.assert_array_equal(frames, call["window"])
        assert calls_before == predictor.calls.index(call)  # called before this inference


def test_refuse_policy_skips_windows_with_missing_frames_and_says_why():
    _, handled = _run_in_lockstep(Persistence(), count=60, missing_frames="refuse", invalid={30})
    # Exactly the windows that contain frame 30 are refused, every other one is run.
    assert [r.input_seq for r in handled.refusals] == list(range(30, 46))
    assert "1 missing frame(s) in the window and policy 'refuse'" in handled.refusals[0].reason
    assert [p.input_seq for p in handled.predictions] == [*range(15, 30), *range(46, 60)]


def test_windows_skipped_before_a_refusal_reach_the_next_predictions_header():
    """``skipped_before`` counts the due windows passed over since the previous prediction,
    a refusal in between or not: summed over the predictions it is the scheduler's count
    (a subscriber and the replay report read it from the headers)."""
    ring = RingBuffer(256)
    predictor = GatedPersistence()
    handled = Handled()
    write_up_to = _Writer(ring, invalid={25})

    with _scheduler(ring, predictor, handled, missing_frames="refuse") as scheduler:
        try:
            write_up_to(PAST - 1)
            assert predictor.next_window() == PAST - 1
            write_up_to(25)  # arrive while that inference runs; 25 is missing
            predictor.gate.release()
            handled.wait_for(25)  # 16..24 passed over, 25 refused
            for seq in range(26, 41):  # every window holding frame 25 is refused
                write_up_to(seq)
                handled.wait_for(seq)
            write_up_to(41)
            assert predictor.next_window() == 41
        finally:
            predictor.gate.release()
        handled.wait_for(41)
    scheduler.raise_if_failed()
    assert [r.input_seq for r in handled.refusals] == list(range(25, 41))
    assert [p.input_seq for p in handled.predictions] == [15, 41]
    assert scheduler.skipped == 9
    assert [p.skipped_before for p in handled.predictions] == [0, 9]


@pytest.mark.parametrize("policy", ["hold", "interpolate"])
def test_hold_and_interpolate_run_windows_with_missing_frames(policy):
    # Frame 30 "missing": the writer still writes its value, as the ingestor writes a held
    # placeholder; the policy decides what the model sees.
    _, handled = _run_in_lockstep(Persistence(), count=60, missing_frames=policy, invalid={30})
    assert not handled.refusals
    assert [p.input_seq for p in handled.predictions] == list(range(15, 60))
    for p in handled.predictions:
        assert p.missing_frames == (1 if 30 <= p.input_seq <= 45 else 0)
        assert p.first_input_seq == p.input_seq - 15


def test_prepare_window_policies():
    frames = np.arange(8, dtype=np.float32)[:, None, None] * np.ones((1, *GRID), np.float32)
    valid = np.array([True, True, False, False, True, True, True, False])
    held = frames.copy()
    held[2:4] = frames[1]  # what the ingestor writes: the last frame before the gap
    held[7] = frames[6]
    out, reason = prepare_window(held, valid, "interpolate", 4)
    assert reason is None
    # Frames 2 and 3 lie on the line from frame 1 to frame 4; frame 7 has no later frame.
    assert out[:, 0, 0].tolist() == [0, 1, 2, 3, 4, 5, 6, 6]
    out, _ = prepare_window(held, valid, "hold", 4)
    assert out is held
    out, reason = prepare_window(held, valid, "hold", 2)
    assert out is None and "3 missing frames in the window > max_missing_frames 2" in reason
    leading = np.array([False, False, True, True, True, True, True, True])
    out, _ = prepare_window(frames, leading, "interpolate", 4)
    assert out[:, 0, 0].tolist() == [2, 2, 2, 3, 4, 5, 6, 7]
    out, reason = prepare_window(frames, np.zeros(8, bool), "hold", 8)
    assert out is None and "every frame" in reason
    with pytest.raises(ValueError, match="'policy' must be one of"):
        prepare_window(frames, valid, "guess", 4)


def test_bad_scheduler_settings_are_refused():
    ring = RingBuffer(64)
    predictor = Persistence()
    with pytest.raises(ValueError, match="'stride' must be an int >= 1, got 0"):
        Scheduler(ring, predictor, print, stride=0)
    with pytest.raises(ValueError, match="'missing_frames' must be one of"):
        Scheduler(ring, predictor, print, missing_frames="zero")


def test_irregular_feeds_the_frames_received_with_their_times():
    predictor = IrregularPersistence()
    dropped = {30, 31, 40}
    _, handled = _run_in_lockstep(
        predictor, count=70, missing_frames="irregular", max_missing_frames=4, invalid=dropped,
        sample_rate_hz=1 / 0.0036,
    )  # fmt: skip
    assert not handled.refusals
    assert [p.input_seq for p in handled.predictions] == list(range(15, 70))
    for call, prediction in zip(predictor.calls, handled.predictions, strict=True):
        newest = call["seq"]
        # The 16 newest frames that arrived, never a placeholder, oldest first ...
        received = [s for s in range(newest, -1, -1) if s not in dropped][:16][::-1]
        assert call["window"][:, 0, 0].tolist() == received
        # ... at their times in frame periods before the newest nominal frame ...
        np.testing.assert_allclose(call["times"], np.array(received) - newest, atol=1e-3)
        assert prediction.past_times is call["times"]
        assert prediction.missing_frames == len(dropped & set(range(newest - 15, newest + 1)))
        # ... reaching back past the nominal window by as many frames as are missing in it.
        assert prediction.first_input_seq == received[0]
    by_seq = {p.input_seq: p for p in handled.predictions}
    assert by_seq[45].missing_frames == 3 and by_seq[45].first_input_seq == 27


def test_irregular_refuses_when_too_few_frames_arrived_and_non_irregular_models():
    predictor = IrregularPersistence()
    _, handled = _run_in_lockstep(
        predictor, count=60, missing_frames="irregular", max_missing_frames=2,
        invalid={30, 31, 32},
    )  # fmt: skip
    # A window reaches back 18 frames for 16 received: those holding all three gaps fail.
    assert [r.input_seq for r in handled.refusals] == list(range(32, 48))
    assert "15 frames received in the newest 18 < 16" in handled.refusals[0].reason
    assert [p.input_seq for p in handled.predictions] == [*range(15, 32), *range(48, 60)]
    ring = RingBuffer(64)
    with pytest.raises(ValueError, match="needs a model that takes irregular input"):
        Scheduler(ring, Persistence(), print, missing_frames="irregular")
    scheduler = Scheduler(ring, predictor, print, missing_frames="irregular")
    with pytest.raises(ValueError, match="needs a model that takes irregular input"):
        scheduler.swap_predictor(Persistence())
    assert scheduler.predictor is predictor


def test_past_times_are_checked_before_they_reach_a_model():
    metadata = type("Meta", (), {"irregular": True, "past_frames": 4})()
    regular = past_times_input(None, metadata)
    assert regular.tolist() == [-3, -2, -1, 0]
    times = np.array([-6, -3, -1, 0], np.float32)
    assert past_times_input(times, metadata) is times
    for bad in ([-3, -2, -2, 0], [-3, -2, -1, 0.5]):
        with pytest.raises(ValueError, match="strictly increasing and <= 0"):
            past_times_input(np.array(bad, np.float32), metadata)
    with pytest.raises(ValueError, match="past_times"):
        past_times_input(np.array([-1, np.nan, 0, 0], np.float32), metadata)
    assert past_times_input(times, type("Meta", (), {"irregular": False})()) is None


def test_irregular_refuses_timestamps_that_do_not_increase():
    frames = np.zeros((18, *GRID), np.float32)
    valid = np.ones(18, bool)
    timestamps = np.arange(18) * 0.0036
    out, times, reason = received_frames(frames, valid, timestamps, 16, 1 / 0.0036)
    assert reason is None and times[0] == pytest.approx(-15, abs=1e-4)
    timestamps[10] = timestamps[9]
    out, times, reason = received_frames(frames, valid, timestamps, 16, 1 / 0.0036)
    assert out is None and times is None and "not strictly increasing" in reason


_FIFO = ThreadPlacement("fifo", 1, frozenset())


def _back_to_back(predictor, placement, during_first) -> Scheduler:
    """A first window held until ``during_first`` has run, ending with the second already
    due (``idle_share`` 0.2), and that second window run; returns the stopped scheduler."""
    ring = RingBuffer(256)
    handled = Handled()
    write_up_to = _Writer(ring)
    with _scheduler(ring, predictor, handled, idle_share=0.2, placement=placement) as scheduler:
        try:
            write_up_to(PAST - 1)
            assert predictor.next_window() == PAST - 1
            during_first()
            write_up_to(PAST + 5)  # the next window is due before this one ends
            predictor.gate.release()
            assert predictor.next_window() == PAST + 5
        finally:
            predictor.gate.release()
        handled.wait_for(PAST + 5)
    scheduler.raise_if_failed()
    return scheduler


class _BusyAfterTheGate(GatedPersistence):
    """Once let through, uses ``busy_s`` of its thread's CPU before it predicts: the work a
    rest is measured on (time the thread only waited was idle for its CPU already)."""

    def __init__(self, busy_s: float) -> None:
        super().__init__()
        self.busy_s = busy_s

    def predict(self, window, newest_seq=None, past_times=None):
        self.running.put(newest_seq)
        if not self.gate.acquire(timeout=WAIT_S):
            raise RuntimeError("the test never let the inference finish")
        began = time.thread_time()
        while time.thread_time() - began < self.busy_s:
            pass
        return Persistence.predict(self, window, newest_seq, past_times)


@pytest.mark.parametrize(
    "placement",
    [
        pytest.param(
            _FIFO,
            marks=pytest.mark.skipif(
                not _FIFO.realtime_permitted(), reason="SCHED_FIFO is not permitted here"
            ),
            id="fifo",
        ),
        pytest.param(None, id="normal"),
    ],
)
def test_a_real_time_scheduler_rests_after_a_window_run_back_to_back_and_only_then(placement):
    """The kernel stops a real-time thread that fills its CPU for ~50 ms a second, so under a
    real-time policy a window whose end finds the next already due is followed by a rest of
    ``idle_share / (1 - idle_share)`` of the CPU it used; under the normal policy, never."""
    busy_s = 0.05  # short: a real-time spinner holds its CPU from the other test worker
    predictor = _BusyAfterTheGate(busy_s)
    # The thread waits 0.2 s blocked in the window too: not counted as its work.
    scheduler = _back_to_back(predictor, placement, during_first=lambda: time.sleep(0.2))
    if placement is None:
        assert scheduler.rested_s == 0.0
    else:
        # 0.2 / (1 - 0.2) of the CPU the window used, not of the wait before it
        assert 0.25 * busy_s <= scheduler.rested_s < 0.25 * (busy_s + 0.2)
    assert scheduler.metrics.rested._value.get() == pytest.approx(scheduler.rested_s)


@pytest.mark.skipif(not _FIFO.realtime_permitted(), reason="SCHED_FIFO is not permitted here")
def test_a_real_time_scheduler_that_keeps_up_never_rests():
    scheduler, handled = _run_in_lockstep(
        Persistence(), count=60, stride=2, idle_share=0.5, placement=_FIFO
    )
    assert [p.input_seq for p in handled.predictions] == list(range(15, 60, 2))
    assert scheduler.rested_s == 0.0


def test_an_idle_share_outside_0_to_1_is_refused():
    with pytest.raises(ValueError, match=r"'idle_share' must be in \[0, 1\), got 1.0"):
        Scheduler(RingBuffer(64), Persistence(), print, idle_share=1.0)


class _PolicyChangedMidRun(GatedPersistence):
    """Notes the scheduler thread's id from inside its first inference, so the test can
    change that thread's policy while it runs, as ``chrt -p`` or tuned would."""

    def __init__(self) -> None:
        super().__init__()
        self.tid: int | None = None

    def predict(self, window, newest_seq=None, past_times=None):
        self.tid = threading.get_native_id()
        return super().predict(window, newest_seq, past_times)


@pytest.mark.skipif(not _FIFO.realtime_permitted(), reason="SCHED_FIFO is not permitted here")
@pytest.mark.parametrize(
    ("placement", "changed_to", "rests"),
    [(None, os.SCHED_FIFO, True), (_FIFO, os.SCHED_OTHER, False)],
    ids=["raised to fifo", "lowered to normal"],
)
def test_the_rest_follows_a_policy_changed_after_the_scheduler_started(
    placement, changed_to, rests
):
    """The policy is read at each rest: the rest used to be decided once, as the thread
    started, so a scheduler raised to a real-time policy afterwards filled its CPU (and one
    lowered to the normal policy rested for nothing). The first window runs; the thread's
    policy changes; the second window is already due when the first ends."""
    predictor = _PolicyChangedMidRun()

    def change_policy() -> None:
        priority = 1 if changed_to == os.SCHED_FIFO else 0
        os.sched_setscheduler(predictor.tid, changed_to, os.sched_param(priority))

    scheduler = _back_to_back(predictor, placement, during_first=change_policy)
    assert (scheduler.rested_s > 0.0) is rests, scheduler.rested_s


def test_a_swap_s_stride_paces_the_new_predictor_from_a_refused_first_window_on():
    """A window refused after a swap is the new predictor's (its state is the one reset):
    the next is due the new stride after it, as ``stride`` says, not the old one's. Before,
    a run of refused windows (a train's blank under ``refuse``) kept the old stride until the
    new model first ran, so its first prediction after the blank came up to a stride late."""
    ring = RingBuffer(256)
    old, new, handled = Persistence(), Persistence(), Handled()
    scheduler = _scheduler(ring, old, handled, stride=5, missing_frames="refuse")
    write_up_to = _Writer(ring, invalid={22})
    for _ in range(2):  # windows ending at 15, 20
        write_up_to(scheduler.next_due())
        scheduler.run_due()
    scheduler.swap_predictor(new, stride=1)
    assert scheduler.next_due() == 25  # due under the old stride
    write_up_to(25)
    scheduler.run_due()  # holds frame 22: refused
    assert [r.input_seq for r in handled.refusals] == [25]
    assert scheduler.next_due() == 26
    write_up_to(38)  # the first window without frame 22
    scheduler.run_due()
    assert [c["seq"] for c in new.calls] == [38]
    assert [p.skipped_before for p in handled.predictions] == [0, 0, 12]


class _ResetHeld(Persistence):
    """A stateful stand-in whose reset, once the test arms it, waits for the test's gate."""

    def __init__(self, events: list[str]) -> None:
        super().__init__()
        self.events = events
        self.armed = False
        self.entered = threading.Event()
        self.gate = threading.Event()

    @property
    def reset(self):
        if self.armed:
            self.entered.set()
            if not self.gate.wait(WAIT_S):
                raise RuntimeError("the test never let the reset finish")
        return lambda: self.events.append("reset")


def _swap_during_the_reset(scheduler: Scheduler, old: _ResetHeld) -> None:
    """The due window run in a thread of its own, held in ``old``'s reset while another
    thread swaps the predictor; both let finish. ``old.events`` ends "reset", "swapped" where
    the swap waited for the reset."""
    old.armed = True
    running = threading.Thread(target=scheduler.run_due)
    running.start()
    assert old.entered.wait(WAIT_S)

    def swap() -> None:
        scheduler.swap_predictor(Persistence())
        old.events.append("swapped")

    swapping = threading.Thread(target=swap)
    swapping.start()
    swapping.join(0.5)  # a swap that need not wait for the reset is done by then
    old.gate.set()
    running.join(WAIT_S)
    swapping.join(WAIT_S)


def test_a_refused_window_s_reset_is_done_before_a_swap_hands_the_predictor_back():
    """``swap_predictor`` returns the previous predictor for the caller to close: a refusal
    must not still be resetting it then. Before, the refusal read the predictor and reset it
    outside the swap's lock, so a swap in between handed back a predictor about to be reset."""
    ring = RingBuffer(256)
    events: list[str] = []
    old, handled = _ResetHeld(events), Handled()
    scheduler = _scheduler(ring, old, handled, missing_frames="refuse")
    write_up_to = _Writer(ring, invalid={16})
    write_up_to(scheduler.next_due())
    scheduler.run_due()
    write_up_to(scheduler.next_due())  # holds frame 16: refused
    _swap_during_the_reset(scheduler, old)
    assert [r.input_seq for r in handled.refusals] == [16]
    assert events[-2:] == ["reset", "swapped"]


def test_a_blank_s_reset_is_done_before_a_swap_hands_the_predictor_back():
    """As a refusal's: the reset of a state fed frames blanked since is done under the swap's
    lock, so never on a predictor a swap has already handed back to be closed."""
    ring = RingBuffer(256)
    events: list[str] = []
    old, handled = _ResetHeld(events), Handled()
    scheduler = _scheduler(ring, old, handled)
    write_up_to = _Writer(ring)
    write_up_to(scheduler.next_due())
    scheduler.run_due()
    assert ring.blank(10 * 0.0036, 10 * 0.0036) == 1  # a frame the state was fed
    write_up_to(scheduler.next_due())
    _swap_during_the_reset(scheduler, old)
    assert [p.input_seq for p in handled.predictions] == [15, 16]
    assert events[-2:] == ["reset", "swapped"]
