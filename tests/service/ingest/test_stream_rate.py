"""The stream's measured rate against real LSL outlets on loopback: a simulated rig whose
stream declares 277.78 Hz while its clock runs at another rate, or at the nominal rate with
jitter, drift and dropped samples."""

from __future__ import annotations

import numpy as np
import pylsl
import pytest

from bench.rig.rig import SimulatedRig
from service.core.grid import NOMINAL_RATE_HZ
from service.daemon.status import Readiness
from service.ingest.ingestor import Ingestor
from service.ingest.settings import IngestSettings, StreamSettings
from tests.service._clocked_pattern import ClockedPattern
from tests.service._loop_harness import wait_until

ROOMY = IngestSettings(inlet_buffer_s=10)
"""An inlet buffer no stall of a loaded test machine overflows: a sample lost there would be a
gap the test did not make."""


def test_a_stream_stamped_at_200_hz_that_declares_277_78_is_named_and_not_ready(source_id):
    """Each step is 1.39 nominal periods, under the gap threshold: before, the ring filled with
    frames at the wrong rate and nothing said so; the daemon was ready to arm."""
    rig = SimulatedRig(
        ClockedPattern(200.0), source_id=source_id, chunk_size=4, speed=8,
        wait_for_consumer=True,
    )  # fmt: skip
    with rig, Ingestor(StreamSettings(source_id=source_id), ROOMY) as ingestor:
        wait_until(lambda: ingestor.status().samples >= 600, 10, "3 s of the stream")
        reasons = Readiness.judge(
            ingestor, None, None, started=True, stopping=False, reload_failure=None
        ).reasons
        status = ingestor.status()
        gauge = ingestor.registry.get_sample_value("corticast_ingest_rate_hz")
    rate = [reason for reason in reasons if reason.startswith("stream rate")]
    assert rate, reasons
    assert "stream rate 200.00 Hz measured from its timestamps" in rate[0]
    assert "[stream] sample_rate_hz is 277.78 Hz" in rate[0]
    assert status.rate_problem == rate[0]
    assert status.measured_rate_hz == pytest.approx(200.0, rel=1e-3)
    assert gauge == status.measured_rate_hz
    assert (status.gaps, status.missing_frames) == (0, 0)  # nothing else noticed


def test_nominal_rate_with_jitter_drift_and_drops_is_not_a_rate_problem(source_id):
    """A real amplifier's stream: its crystal 100 ppm slow, 0.3 ms of timestamp jitter, 5 %
    of samples lost and one run of 60 lost together. The drops are gaps, not a slower rate."""
    rate = NOMINAL_RATE_HZ * (1 - 100e-6)
    rig = SimulatedRig(
        ClockedPattern(rate, jitter_s=0.3e-3, seed=5), source_id=source_id,
        chunk_size=4, speed=8, max_samples=1400, drop_indices=range(600, 660),
        drop_probability=0.05, seed=5, wait_for_consumer=True,
    )  # fmt: skip
    with rig, Ingestor(StreamSettings(source_id=source_id), ROOMY) as ingestor:
        assert rig.wait_finished(30)
        sent = rig.samples_sent
        wait_until(lambda: ingestor.status().samples == sent, 10, "every sample sent")
        status = ingestor.status()
    assert len(rig.dropped) > 100, "the drops did not happen"
    assert status.gaps > 40 and status.missing_frames >= len(rig.dropped) - 1
    assert status.rate_problem is None
    assert status.measured_rate_hz == pytest.approx(rate, rel=5e-4)


def test_a_stream_too_slow_for_any_step_to_be_steady_is_measured_at_its_rate(source_id):
    """At 100 Hz every step is 2.78 nominal periods, a gap: the ingestor fills them with
    placeholders, and the rate is still what the samples arrive at, not the nominal one."""
    rig = SimulatedRig(
        ClockedPattern(100.0), source_id=source_id, chunk_size=2, speed=8,
        max_samples=300, wait_for_consumer=True,
    )  # fmt: skip
    with rig, Ingestor(StreamSettings(source_id=source_id), ROOMY) as ingestor:
        assert rig.wait_finished(30)
        wait_until(lambda: ingestor.status().samples == 300, 10, "every sample")
        status = ingestor.status()
    assert status.measured_rate_hz == pytest.approx(100.0, rel=1e-3)
    assert "stream rate 100.00 Hz" in status.rate_problem


def test_a_jittered_stream_just_slower_than_two_thirds_of_the_rate_is_measured_at_its_rate(
    source_id,
):
    """At 187 Hz with 0.5 ms of jitter, about half the steps pass 1.5 nominal periods: counted
    as gaps of 2 lost-sample slots, they made the stream read ~277 Hz and the daemon ready."""
    rig = SimulatedRig(
        ClockedPattern(187.0, jitter_s=0.5e-3, seed=3), source_id=source_id, chunk_size=4,
        speed=8, max_samples=600, wait_for_consumer=True,
    )  # fmt: skip
    with rig, Ingestor(StreamSettings(source_id=source_id), ROOMY) as ingestor:
        assert rig.wait_finished(30)
        wait_until(lambda: ingestor.status().samples >= 600, 10, "every sample")
        status = ingestor.status()
    assert status.measured_rate_hz == pytest.approx(187.0, rel=2e-3)
    assert f"stream rate {status.measured_rate_hz:.2f} Hz measured" in status.rate_problem


def test_a_stream_back_between_readiness_reads_is_not_ready_before_its_rate_is_measured(
    source_id,
):
    """Readiness read whether the stream was connected, then whether it was fresh, and looked
    at the rate only if the first read said connected: a stream that came back in between was
    judged live with its rate unchecked, though a new connection's rate is not measured yet,
    and the daemon was ready to arm on a stream that may keep the wrong time base."""
    ingest = IngestSettings(lost_after_s=0.2, stale_after_frames=60 * 278)  # a minute: no timing
    info = pylsl.StreamInfo("corticast-rig", "ECoG", 360, 277.78, pylsl.cf_float32, source_id)
    samples = np.zeros((200, 360), dtype=np.float32)
    outlet = pylsl.StreamOutlet(info)
    stream = StreamSettings(source_id=source_id, resolve_timeout_s=5.0)
    with Ingestor(stream, ingest) as ingestor:
        assert outlet.wait_for_consumers(5)
        now = pylsl.local_clock()
        outlet.push_chunk(samples, [now + k / 277.78 for k in range(200)])  # 0.72 s: measured
        wait_until(lambda: ingestor.status().samples == 200, 5, "the first connection's data")
        assert ingestor.rate_problem() is None
        del outlet
        wait_until(lambda: not ingestor.status().connected, 5, "the loss")
        read_status, back = ingestor.status, []

        def status_then_the_stream_comes_back():
            status = read_status()
            if not back:  # the stream comes back between this read and the next
                back.append(pylsl.StreamOutlet(info))
                assert back[0].wait_for_consumers(5)
                gone = ingestor.ring.newest_arrival
                later = pylsl.local_clock()
                back[0].push_chunk(samples[:10], [later + k / 277.78 for k in range(10)])
                wait_until(lambda: ingestor.ring.newest_arrival > gone, 5, "the new data")
            return status

        ingestor.status = status_then_the_stream_comes_back
        reasons = Readiness.judge(
            ingestor, None, None, started=True, stopping=False, reload_failure=None
        ).reasons
        problem = ingestor.rate_problem()
        fresh = ingestor.is_fresh()
    assert back and fresh
    assert problem is not None and "not measured yet" in problem
    assert problem in reasons, f"judged ready to arm as far as the stream goes: {reasons}"
