"""A stream stamped ahead of this host's LSL clock, from a real LSL outlet on loopback: a rig
whose clock is set wrong, or stamping on a clock of its own. Its frames arrive before the time
they are stamped with."""

from __future__ import annotations

import numpy as np
import pylsl
import pytest

from service.core.grid import NOMINAL_RATE_HZ
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
    counted from its arrival; a chunk stamped on the LSL clock again lifts it."""
    info = pylsl.StreamInfo("corticast-rig", "ECoG", 360, NOMINAL_RATE_HZ, "float32", source_id)
    outlet = pylsl.StreamOutlet(info)
    with Ingestor(StreamSettings(source_id=source_id, resolve_timeout_s=5.0), UNTIMED) as ingestor:
        assert outlet.wait_for_consumers(5)
        _push(outlet, 200, ahead_s=5.0)  # 0.72 s of stream: its rate is measured
        wait_until(lambda: ingestor.status().samples == 200, 5, "the samples")
        reasons = _stream_reasons(ingestor)
        status = ingestor.status()
        gauge = ingestor.registry.get_sample_value("corticast_ingest_stamp_lead_seconds")

        _push(outlet, 4, ahead_s=0.0)  # the rig's clock set right
        wait_until(lambda: ingestor.status().samples == 204, 5, "the samples stamped right")
        after = _stream_reasons(ingestor), ingestor.status()
    assert status.rate_problem is None and status.fresh  # what it passed on before
    assert status.newest_age_s >= 0.0, "a frame stamped ahead read younger than its arrival"
    ahead = [r for r in reasons if "ahead of this host's LSL clock" in r]
    assert ahead, f"ready to arm as far as the stream goes: {reasons}"
    assert status.stamp_lead_s == pytest.approx(5.0, abs=0.5)
    assert gauge == status.stamp_lead_s
    assert ahead[0] == status.stamp_lead_problem
    assert f"stream stamped {status.stamp_lead_s:.3f} s ahead" in ahead[0]
    assert "10 ms" in ahead[0] and "pylsl.local_clock()" in ahead[0]
    stream_reasons, back = after
    assert back.stamp_lead_problem is None and back.stamp_lead_s <= 0.01
    assert not [r for r in stream_reasons if "ahead" in r], stream_reasons
