"""The scheduler against a real ring buffer fed by a writer thread.

The predictor here is a stand-in with a chosen latency (persistence after a sleep): what is
under test is the scheduling, which must not depend on what the model computes.
"""

import threading
import time

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from service._missing_frames import prepare_window, received_frames
from service.predictor import PredictorInfo, past_times_input
from service.ring_buffer import RingBuffer
from service.scheduler import Scheduler

GRID = (18, 20)


class SlowPersistence:
    """Repeats the newest frame after ``delay_s``; records what it was given and when."""

    info = PredictorInfo("test-sleep", "cpu", "fp32", "window", "persistence", "-", "-")

    def __init__(self, ring: RingBuffer, delay_s: float) -> None:
        self._ring = ring
        self._delay_s = delay_s
        self.calls: list[dict] = []

    def predict(self, window, newest_seq=None, past_times=None):
        time.sleep(self._delay_s)
        self.calls.append(
            {"seq": newest_seq, "window": window.copy(), "ring_at_end": self._ring.next_seq}
        )
        return np.repeat(window[-1:], 16, axis=0)

    def warmup(self):
        pass

    def close(self):
        pass


def _frame(seq: int) -> np.ndarray:
    return np.full((1, *GRID), float(seq), dtype=np.float32)


class Writer(threading.Thread):
    """Writes frames whose every value is their own sequence number, one per ``period_s``."""

    def __init__(self, ring: RingBuffer, period_s: float, count: int, invalid=()) -> None:
        super().__init__(daemon=True)
        self.ring, self.period_s, self.count, self.invalid = ring, period_s, count, set(invalid)

    def run(self) -> None:
        start = time.perf_counter()
        for seq in range(self.count):
            delay = start + seq * self.period_s - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            valid = np.array([seq not in self.invalid])
            self.ring.write(_frame(seq), np.array([seq * 0.0036]), valid, time.perf_counter())


def _run(ring, predictor, count, period_s, invalid=(), **options):
    predictions, refusals = [], []
    scheduler = Scheduler(
        ring,
        predictor,
        predictions.append,
        on_refusal=refusals.append,
        registry=CollectorRegistry(),
        clock=time.perf_counter,
        **options,
    )
    writer = Writer(ring, period_s, count, invalid)
    with scheduler:
        writer.start()
        writer.join()
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline and _newest_handled(predictions, refusals) < count - 1:
            time.sleep(0.01)
    scheduler.raise_if_failed()
    return scheduler, predictions, refusals


def _newest_handled(predictions, refusals) -> int:
    return max([p.input_seq for p in predictions] + [r.input_seq for r in refusals] + [-1])


@pytest.mark.parametrize("stride", [1, 3])
def test_a_slow_predictor_skips_windows_and_always_takes_the_newest(stride):
    ring = RingBuffer(256)
    predictor = SlowPersistence(ring, delay_s=0.012)
    scheduler, predictions, _ = _run(ring, predictor, count=400, period_s=0.001, stride=stride)

    assert len(predictions) >= 5
    assert scheduler.skipped > len(predictions)  # 12 ms per prediction, a frame per ms
    seqs = [p.input_seq for p in predictions]
    assert seqs == sorted(set(seqs))
    calls = predictor.calls
    for previous, current, call in zip(calls[:-1], calls[1:], predictions[1:], strict=True):
        # Never a queued window: the next input is at least as new as everything that had
        # arrived when the previous inference ended ...
        assert current["seq"] >= previous["ring_at_end"] - 1
        # ... and every due point passed over in between is counted as skipped.
        assert call.skipped_before == (current["seq"] - previous["seq"]) // stride - 1
    assert scheduler.skipped == sum(p.skipped_before for p in predictions)
    for call in predictor.calls:  # the window is the 16 frames ending at its newest
        assert call["window"][:, 0, 0].tolist() == list(range(call["seq"] - 15, call["seq"] + 1))
    samples = scheduler.metrics.skipped._value.get()
    assert samples == scheduler.skipped


def test_a_fast_predictor_runs_every_stride_and_records_timing():
    ring = RingBuffer(256)
    predictor = SlowPersistence(ring, delay_s=0.0)
    scheduler, predictions, _ = _run(ring, predictor, count=120, period_s=0.004, stride=2)
    seqs = [p.input_seq for p in predictions]
    assert seqs[0] == 15
    assert len(seqs) >= 40  # (119 - 15) / 2 = 52 due points; a loaded machine may skip some
    for p in predictions:
        assert p.available_at <= p.started_at <= p.finished_at <= p.handed_at
        assert p.age_s >= p.inference_s >= 0
        assert p.input_timestamp == pytest.approx(p.input_seq * 0.0036)
        np.testing.assert_array_equal(p.future, np.full((16, *GRID), p.input_seq, np.float32))
    assert scheduler.metrics.latency._sum.get() > 0


def test_refuse_policy_skips_windows_with_missing_frames_and_says_why():
    ring = RingBuffer(256)
    predictor = SlowPersistence(ring, delay_s=0.0)
    _, predictions, refusals = _run(
        ring, predictor, count=60, period_s=0.004, missing_frames="refuse", invalid={30}
    )
    refused = {r.input_seq for r in refusals}
    assert refused and refused <= set(range(30, 46))  # windows that contain frame 30
    assert "1 missing frame(s) in the window and policy 'refuse'" in refusals[0].reason
    assert all(not 30 <= p.input_seq <= 45 for p in predictions)
    assert any(p.input_seq > 45 for p in predictions)


@pytest.mark.parametrize("policy", ["hold", "interpolate"])
def test_hold_and_interpolate_run_windows_with_missing_frames(policy):
    ring = RingBuffer(256)
    predictor = SlowPersistence(ring, delay_s=0.0)
    # Frame 30 "missing": the writer still writes its value, as the ingestor writes a held
    # placeholder; the policy decides what the model sees.
    _, predictions, refusals = _run(
        ring, predictor, count=60, period_s=0.004, missing_frames=policy, invalid={30}
    )
    assert not refusals
    with_gap = [p for p in predictions if 30 <= p.input_seq <= 45]
    assert with_gap and all(p.missing_frames == 1 for p in with_gap)


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
    predictor = SlowPersistence(ring, 0.0)
    with pytest.raises(ValueError, match="'stride' must be an int >= 1, got 0"):
        Scheduler(ring, predictor, print, stride=0)
    with pytest.raises(ValueError, match="'missing_frames' must be one of"):
        Scheduler(ring, predictor, print, missing_frames="zero")


class IrregularPersistence(SlowPersistence):
    """A stand-in for a model that takes the past frames' times (``info.irregular``)."""

    info = PredictorInfo("test", "cpu", "fp32", "window", "persistence", "-", "-", irregular=True)

    def predict(self, window, newest_seq=None, past_times=None):
        self.calls.append({"seq": newest_seq, "window": window.copy(), "times": past_times})
        return np.repeat(window[-1:], 16, axis=0)


def test_irregular_feeds_the_frames_received_with_their_times():
    ring = RingBuffer(256)
    predictor = IrregularPersistence(ring, 0.0)
    dropped = {30, 31, 40}
    _, predictions, refusals = _run(
        ring, predictor, count=70, period_s=0.004, missing_frames="irregular",
        max_missing_frames=4, invalid=dropped, sample_rate_hz=1 / 0.0036,
    )  # fmt: skip
    assert not refusals and predictions
    for call, prediction in zip(predictor.calls, predictions, strict=True):
        newest = call["seq"]
        # The 16 newest frames that arrived, never a placeholder, oldest first ...
        received = [s for s in range(newest, -1, -1) if s not in dropped][:16][::-1]
        assert call["window"][:, 0, 0].tolist() == received
        # ... at their times in frame periods before the newest nominal frame.
        np.testing.assert_allclose(call["times"], np.array(received) - newest, atol=1e-3)
        assert prediction.past_times is call["times"]
        assert prediction.missing_frames == len(dropped & set(range(newest - 15, newest + 1)))
    assert any(p.missing_frames == 3 for p in predictions)  # 30, 31 and 40 in one window


def test_irregular_refuses_when_too_few_frames_arrived_and_non_irregular_models():
    ring = RingBuffer(256)
    predictor = IrregularPersistence(ring, 0.0)
    _, predictions, refusals = _run(
        ring, predictor, count=60, period_s=0.004, missing_frames="irregular",
        max_missing_frames=2, invalid={30, 31, 32},
    )  # fmt: skip
    assert refusals and "15 frames received in the newest 18 < 16" in refusals[0].reason
    assert predictions
    with pytest.raises(ValueError, match="needs a model that takes irregular input"):
        Scheduler(ring, SlowPersistence(ring, 0.0), print, missing_frames="irregular")
    scheduler = Scheduler(ring, predictor, print, missing_frames="irregular")
    with pytest.raises(ValueError, match="needs a model that takes irregular input"):
        scheduler.swap_predictor(SlowPersistence(ring, 0.0))
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
