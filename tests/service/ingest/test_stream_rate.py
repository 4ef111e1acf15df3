"""The stream's measured rate against real LSL outlets on loopback: a simulated rig whose
stream declares 277.78 Hz while its clock runs at another rate, or at the nominal rate with
jitter, drift and dropped samples."""

from __future__ import annotations

import time

import pytest

from bench.rig.rig import SimulatedRig
from service.core.grid import NOMINAL_RATE_HZ
from service.daemon.status import Readiness
from service.ingest.ingestor import Ingestor
from service.ingest.settings import IngestSettings, StreamSettings
from tests.service._clocked_pattern import ClockedPattern

ROOMY = IngestSettings(inlet_buffer_s=10)
"""An inlet buffer no stall of a loaded test machine overflows: a sample lost there would be a
gap the test did not make."""


def wait_until(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.01)


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
