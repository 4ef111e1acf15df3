"""A stream stamped ahead of this host's LSL clock, from a real LSL outlet on loopback: a rig
whose clock is set wrong, or stamping on a clock of its own. Its frames arrive before the time
they are stamped with."""

from __future__ import annotations

import time

import numpy as np
import pylsl
import pytest

import service.core.stamp_lead as stamp_lead_module
from service.core.grid import NOMINAL_RATE_HZ
from service.core.stamp_lead import HOLD_OFF_S, MAX_STAMP_LEAD_S
from service.daemon.status import Readiness
from service.ingest.ingestor import Ingestor
from service.ingest.settings import IngestSettings, StreamSettings
from tests.service._loop_harness import wait_until

PERIOD = 1.0 / NOMINAL_RATE_HZ
UNTIMED = IngestSettings(lost_after_s=30, stale_after_frames=60 * 278)
"""A minute before the stream is stale or lost: no step of the test is timed."""


def _push(outlet: pylsl.StreamOutlet, count: int, ahead_s: float) -> None:
    """``count`` samples at the nominal rate, the newest stamped ``ahead_s`` after now."""
    newest = pylsl.local_clock() + ahead_s
    stamps = [newest - (count - 1 - k) * PERIOD for k in range(count)]
    outlet.push_chunk(np.zeros((count, 360), dtype=np.float32), stamps)


def _stream_reasons(ingestor: Ingestor) -> tuple[str, ...]:
    readiness = Readiness.judge(
        ingestor, None, None, started=True, stopping=False, reload_failure=None
    )
    return tuple(r for r in readiness.reasons if r.startswith("stream"))


def test_a_stream_stamped_ahead_of_the_lsl_clock_is_not_ready_naming_the_lead(source_id):
    """Every step of its timestamps keeps the rate and its data time is its arrival, so the
    stream read live, on rate and ready to arm; the first train was refused by the loop as it
    was sent. It is not ready from its first chunk on, naming the lead, with its age still
    counted from its arrival."""
    info = pylsl.StreamInfo("corticast-rig", "ECoG", 360, NOMINAL_RATE_HZ, "float32", source_id)
    outlet = pylsl.StreamOutlet(info)
    with Ingestor(StreamSettings(source_id=source_id, resolve_timeout_s=5.0), UNTIMED) as ingestor:
        assert outlet.wait_for_consumers(5)
        _push(outlet, 200, ahead_s=5.0)  # 0.72 s of stream: its rate is measured
        wait_until(lambda: ingestor.status().samples == 200, 5, "the samples")
        reasons = _stream_reasons(ingestor)
        status = ingestor.status()
        gauge = ingestor.registry.get_sample_value("corticast_ingest_stamp_lead_seconds")
    assert status.rate_problem is None and status.fresh  # what it passed on before
    assert status.newest_age_s >= 0.0, "a frame stamped ahead read younger than its arrival"
    ahead = [r for r in reasons if "ahead of this host's LSL clock" in r]
    assert ahead, f"ready to arm as far as the stream goes: {reasons}"
    assert status.stamp_lead_s == pytest.approx(5.0, abs=0.5)
    assert gauge == status.stamp_lead_s
    assert ahead[0] == status.stamp_lead_problem
    assert f"stream stamped {status.stamp_lead_s:.3f} s ahead" in ahead[0]
    assert "10 ms" in ahead[0] and "pylsl.local_clock()" in ahead[0]


def test_a_lead_alternating_about_the_limit_is_not_ready_until_it_holds_within(source_id):
    """A link whose clock-sync error sits at the limit: some chunks stamped beyond it, some
    within. Each chunk within made the stream ready again, and an operator tool re-arming
    after stream faults armed and was disarmed again and again. A lead beyond the limit is
    never honest, so one chunk makes it not ready; it is ready again only once the lead held
    within the limit for ``HOLD_OFF_S`` of chunks, the reason naming the last lead beyond it
    until then, while the lead reported (status, metric) is the newest chunk's."""
    info = pylsl.StreamInfo("corticast-rig", "ECoG", 360, NOMINAL_RATE_HZ, "float32", source_id)
    outlet = pylsl.StreamOutlet(info)
    pushed = 0

    def push(ahead_s: float) -> None:
        nonlocal pushed
        _push(outlet, 4, ahead_s)
        pushed += 4
        wait_until(lambda: ingestor.status().samples == pushed, 5, f"{pushed} samples")

    with Ingestor(StreamSettings(source_id=source_id, resolve_timeout_s=5.0), UNTIMED) as ingestor:
        assert outlet.wait_for_consumers(5)
        # Held off far longer here: a chunk within the limit that came HOLD_OFF_S after the
        # one beyond it (the test starved that long on a loaded host) would rightly end it.
        with pytest.MonkeyPatch.context() as held_off:
            held_off.setattr(stamp_lead_module, "HOLD_OFF_S", 60.0)  # only a hang reaches it
            for _ in range(3):  # beyond the limit, then within it (the link's latency only)
                before_beyond = pylsl.local_clock()
                push(ahead_s=0.5)
                beyond = ingestor.status().stamp_lead_s
                assert beyond > MAX_STAMP_LEAD_S
                push(ahead_s=0.0)
                status = ingestor.status()
                gauge = ingestor.registry.get_sample_value("corticast_ingest_stamp_lead_seconds")
                assert status.stamp_lead_s <= MAX_STAMP_LEAD_S and gauge == status.stamp_lead_s
                ahead = [r for r in _stream_reasons(ingestor) if "ahead of this host's" in r]
                assert ahead, f"ready again on one chunk within the limit (lead {gauge:.4f} s)"
                assert f"stream stamped {beyond:.3f} s ahead" in ahead[0], ahead[0]
                assert status.stamp_lead_problem == ahead[0]
        deadline = time.monotonic() + 30
        while ingestor.stamp_lead_problem() is not None:  # within the limit from now on
            assert time.monotonic() < deadline, "not ready 30 s within the limit"
            assert f"stream stamped {beyond:.3f} s ahead" in ingestor.stamp_lead_problem()
            push(ahead_s=0.0)
            time.sleep(0.05)
        held = pylsl.local_clock() - before_beyond
        reasons = _stream_reasons(ingestor)
    assert held >= HOLD_OFF_S, f"ready {held:.3f} s after the last lead beyond the limit"
    assert not [r for r in reasons if "ahead" in r], reasons
