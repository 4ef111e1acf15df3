"""``ClosedLoop`` with real parts: what the interlocks are told about each decision.

A real ring buffer holds a synthetic session (a seizure-like discharge sweeping toward the
target region), the real wave estimator and policy decide on it, and a real bridge sends to
the real firmware emulator over UDP on loopback; predictions go out on a real ZeroMQ
publisher and are scored live. The predictions themselves are the session's true next frames
(an oracle): the model is not under test here, the stamps it carries are. The loop's clock is
a hand-driven one, so the data age the bridge sees is exact.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pylsl
import pytest
from prometheus_client import CollectorRegistry

from bench.data.session import Session
from bench.data.synth import Seizure, SynthConfig, generate_session
from firmware_bridge import (
    BridgeSettings,
    EmulatorSettings,
    FirmwareEmulator,
    InterlockSettings,
    StimulationBridge,
    UdpTransport,
    read_audit_log,
)
from firmware_bridge.errors import AuditLogError
from service.core.grid import DEFAULT_GRID, NOMINAL_RATE_HZ
from service.core.stimulation_markers import StimulationMarker, parse_marker
from service.core.thread_placement import ThreadPlacement
from service.inference.predictor import PredictorInfo
from service.inference.scheduler import Prediction
from service.ingest.ring_buffer import RingBuffer
from service.loop.closed_loop import ClosedLoop
from service.loop.live_accuracy import LiveAccuracy
from service.loop.marker_outlet import VERDICT_MARGIN_S, MarkerOutlet, longest_marker_blank_s
from service.loop.model_health import ModelHealth
from service.loop.settings import LoopSettings
from service.policy.settings import PolicySettings
from service.policy.stimulation_policy import StimulationPolicy
from service.waves.estimator import WaveEstimate, WaveEstimator
from service.waves.settings import WaveSettings
from service.zmq_api.publisher import ZmqPublisher
from service.zmq_api.settings import ZmqSettings

RATE = NOMINAL_RATE_HZ
TARGET = tuple((row, col) for row in range(8, 10) for col in range(17, 20))
"""The demo's target region (right edge, mid rows); the discharge travels toward it (+x)."""
WAVES = WaveSettings(low_hz=2.0, high_hz=12.0, extension_frames=35)
"""The demo's band: the discharge's rhythm is 3-6 Hz."""
POLICY = PolicySettings(
    target_electrodes=TARGET, min_pgd=0.3, min_lead_ms=0.0, persistence_frames=2
)
"""Looser than the demo's thresholds, so the discharge's fronts make the policy request."""
PAST = WAVES.past_frames
PREDICTOR_PAST = 16
INFO = PredictorInfo("oracle", "cpu", "fp32", "window", "oracle", "-", "-")
MAX_AGE_S = InterlockSettings().max_sample_age_s
MAX_MISSING = InterlockSettings().max_missing_frames
T0 = 1000.0
"""Local-clock time at which the ring's newest frame arrives in every test."""
CANDIDATES = range(700, 800, 2)
"""Newest input frames searched for a request: the discharge's first fronts (onset 2.2 s)."""


class Clock:
    """The loop's local clock, moved by hand."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def session() -> Session:
    seizure = Seizure(
        start_s=2.2,
        duration_s=1.3,
        amplitude_uv=220.0,
        start_freq_hz=6.0,
        end_freq_hz=3.0,
        speed_mps=0.12,
        direction_deg=0.0,
        onset_fraction=0.3,
    )
    return generate_session(SynthConfig(duration_s=3.5, seed=5, episodes=(seizure,)))


@dataclass
class Device:
    """The emulated stimulator and the bridge armed against it over UDP."""

    emulator: FirmwareEmulator
    bridge: StimulationBridge
    audit_log: Path

    def decisions(self) -> list[dict]:
        return [r for r in read_audit_log(self.audit_log) if r["event"] == "decision"]


@pytest.fixture
def device(tmp_path) -> Iterator[Device]:
    with _device(tmp_path) as armed:
        yield armed


STRICT_AGE_S = 0.002
"""A staleness limit below the lead of the session's requests (8.6 ms at the first): the
bridge's refusal of old data is reached before the policy's lead window is."""


@pytest.fixture
def strict_device(tmp_path) -> Iterator[Device]:
    with _device(tmp_path, InterlockSettings(max_sample_age_s=STRICT_AGE_S)) as armed:
        yield armed


@contextmanager
def _device(
    tmp_path: Path,
    interlocks: InterlockSettings | None = None,
    *,
    emulator_type: type[FirmwareEmulator] = FirmwareEmulator,
    limits: dict | None = None,
    ack_timeout_s: float = 1.0,  # generous: only a hang would reach it
    **emulator_args,
) -> Iterator[Device]:
    """The emulator (``emulator_type``, with the device's own ``limits`` and any further
    ``emulator_args``) and the bridge armed against it over UDP."""
    server = UdpTransport.bind("127.0.0.1", 0)
    emulator = emulator_type(
        BridgeSettings(transport="udp"),
        # Heartbeats every 0.1 s; a loaded machine must not make the device disarm itself.
        EmulatorSettings(
            heartbeat_timeout_s=10.0, pulse_log=tmp_path / "pulses.jsonl", **(limits or {})
        ),
        transport=server,
        **emulator_args,
    )
    link = BridgeSettings(
        transport="udp",
        port=server.local_address[1],
        dry_run=False,
        ack_timeout_s=ack_timeout_s,
        audit_log=tmp_path / "audit.jsonl",
    )
    try:
        with emulator, StimulationBridge(link, interlocks or InterlockSettings()) as bridge:
            bridge.arm()
            yield Device(emulator, bridge, link.audit_log)
    finally:
        server.close()


@pytest.fixture
def zmq_registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def publisher(zmq_registry) -> Iterator[ZmqPublisher]:
    publisher = _publisher(zmq_registry)
    yield publisher
    publisher.stop()


def _publisher(registry: CollectorRegistry) -> ZmqPublisher:
    endpoints = {"pub_endpoint": "tcp://127.0.0.1:*", "query_endpoint": "tcp://127.0.0.1:*"}
    return ZmqPublisher(ZmqSettings(**endpoints), registry=registry).start()


def _ring(session: Session, newest: int, *, invalid: tuple[int, ...] = ()) -> RingBuffer:
    """The session's frames 0..``newest`` in a ring, the newest arriving at ``T0``; ``invalid``
    marked missing (values kept: what the interlocks are told is under test, not the
    estimate)."""
    ring = RingBuffer(2048)
    valid = np.ones(newest + 1, dtype=bool)
    valid[list(invalid)] = False
    ring.write(session.frames[: newest + 1], session.timestamps[: newest + 1], valid, T0)
    return ring


def _prediction(
    session: Session, seq: int, *, available_at: float = T0, first_input_seq: int | None = None
) -> Prediction:
    """The oracle's prediction from the window ending at ``seq`` (reaching back to
    ``first_input_seq``, by default a 16-frame window), its input arrived at ``available_at``
    and handed on 2 ms later."""
    if first_input_seq is None:
        first_input_seq = seq - PREDICTOR_PAST + 1
    return Prediction(
        future=session.frames[seq + 1 : seq + 17],
        past=session.frames[seq - PREDICTOR_PAST + 1 : seq + 1],
        input_seq=seq,
        first_input_seq=first_input_seq,
        input_timestamp=float(session.timestamps[seq]),
        available_at=available_at,
        started_at=available_at,
        finished_at=available_at + 0.002,
        handed_at=available_at + 0.002,
        missing_frames=0,
        skipped_before=0,
        predictor=INFO,
    )


def _loop(
    ring: RingBuffer,
    bridge: StimulationBridge | None,
    publisher: ZmqPublisher,
    clock: Clock,
    *,
    policy: StimulationPolicy | None = None,
    settings: LoopSettings | None = None,
    model_healthy: bool = True,
    registry: CollectorRegistry | None = None,
    bridge_ref: Callable[[], StimulationBridge | None] | None = None,
    idle_share: float = 0.0,
    accuracy: LiveAccuracy | None = None,
    markers: MarkerOutlet | None = None,
    late_after_frames: int | None = None,
) -> ClosedLoop:
    zeros = np.zeros(ring.grid.shape, np.float32)
    return ClosedLoop(
        ring,
        WaveEstimator(WAVES, grid=ring.grid, sample_rate_hz=RATE),
        policy or StimulationPolicy(POLICY, grid=ring.grid, sample_rate_hz=RATE),
        bridge_ref or (lambda: bridge),
        publisher,
        accuracy or LiveAccuracy(zeros, zeros + 100.0, registry=CollectorRegistry()),
        settings or LoopSettings(),
        sample_rate_hz=RATE,
        model_healthy=lambda: model_healthy,
        registry=registry or CollectorRegistry(),
        clock=clock,
        idle_share=idle_share,
        markers=markers,
        late_after_frames=late_after_frames,
    )


LATE_AFTER_FRAMES = 20
"""The latency another tool's marker may have, in frames, in the tests of late artefact."""


def _requesting(session: Session, late_after_frames: int | None) -> list[int]:
    """Newest input frames whose (fresh, complete) prediction makes the policy request, and
    so do those of the candidates either side: the tests that mark a few frames missing
    change the baseline a little, which must not tip the decision. ``late_after_frames``:
    the loop's (its baseline reads no frame that recent)."""
    publisher = _publisher(CollectorRegistry())
    found = []
    try:
        for seq in CANDIDATES:
            ring = _ring(session, seq)
            loop = _loop(ring, None, publisher, Clock(T0), late_after_frames=late_after_frames)
            loop.process(_prediction(session, seq))
            if loop.latest_decision is not None:
                found.append(seq)
    finally:
        publisher.stop()
    step = CANDIDATES.step
    inside = [seq for seq in found if seq - step in found and seq + step in found]
    assert len(inside) >= 2, f"the session no longer makes the policy request in {CANDIDATES}"
    return inside


@pytest.fixture(scope="module")
def requesting(session) -> list[int]:
    """:func:`_requesting` of a loop reading no other tool's marker stream."""
    return _requesting(session, None)


@pytest.fixture(scope="module")
def requesting_late(session) -> list[int]:
    """:func:`_requesting` of a loop allowing markers ``LATE_AFTER_FRAMES`` late."""
    return _requesting(session, LATE_AFTER_FRAMES)


def _request_once(
    session: Session,
    seq: int,
    device: Device,
    publisher: ZmqPublisher,
    *,
    available_at: float = T0,
    now: float,
    invalid: tuple[int, ...] = (),
    first_input_seq: int | None = None,
    model_healthy: bool = True,
) -> tuple[dict, dict]:
    """Drive one prediction through the loop; returns the ``stim`` record and the audit log's
    decision (the interlock inputs the bridge saw). The ring is fresh: the frames the
    prediction predicted have arrived since, the newest at ``T0``."""
    clock = Clock(now)
    ring = _ring(session, seq + 16, invalid=invalid)
    loop = _loop(ring, device.bridge, publisher, clock, model_healthy=model_healthy)
    loop.process(
        _prediction(session, seq, available_at=available_at, first_input_seq=first_input_seq)
    )
    assert loop.latest_decision is not None, "the policy did not request"
    (decision,) = device.decisions()
    return loop.latest_decision, decision


# -- what the bridge is told -----------------------------------------------------------------


def test_a_fresh_complete_prediction_is_sent_with_the_age_measured_at_the_request(
    session, requesting, device, publisher
):
    record, decision = _request_once(
        session, requesting[0], device, publisher, available_at=T0, now=T0 + 0.004
    )
    assert decision["outcome"] == "sent", decision["reason"]
    # The bridge judged the loop's age plus its own wait for the lock since the request.
    health = dict(decision["health"])
    assert health.pop("newest_sample_age_s") >= 0.004
    assert health == {
        "missing_frames": 0,
        "model_healthy": True,
        "artefact_frames": 0,
        "input_seq": requesting[0],
        "input_timestamp": float(session.timestamps[requesting[0]]),
    }
    assert len(device.emulator.pulses) == 1
    # The request is the policy's train on its channels (the target region), as indices.
    train = StimulationPolicy(POLICY).parameters
    assert decision["request"] == train.to_request(DEFAULT_GRID.cols).to_record()
    assert decision["request"]["channels"] == [row * 20 + col for row, col in TARGET]
    # The stim record carries the bridge's verdict and the lead time left after the age the
    # loop measured at the request, exactly.
    assert record["bridge"]["outcome"] == "sent"
    policy = record["policy"]
    assert policy["lead_time_left_s"] == pytest.approx(policy["lead_time_s"] - 0.004, abs=1e-9)


@pytest.mark.parametrize(
    ("available_at", "now"),
    [
        (T0 - 0.003, T0),  # the review's case: a fresh ring, a prediction on old input
        # Fresh at hand-off, too old by the time the wave stage requests.
        (T0 - 0.0015, T0 + 0.002),
    ],
    ids=["old-input", "late-request"],
)
def test_a_prediction_on_old_data_is_blocked_as_stale_though_the_ring_is_fresh(
    session, requesting, strict_device, publisher, available_at, now
):
    device = strict_device
    record, decision = _request_once(
        session, requesting[0], device, publisher, available_at=available_at, now=now
    )
    assert decision["outcome"] == "blocked"
    assert decision["interlocks"] == ["stale_data"], decision["reason"]
    age = now - available_at
    assert decision["health"]["newest_sample_age_s"] >= age  # plus the bridge's own wait
    assert record["policy"]["lead_time_left_s"] == pytest.approx(
        record["policy"]["lead_time_s"] - age, abs=1e-9
    )
    assert device.emulator.pulses == ()


def test_a_prediction_whose_lead_the_datas_age_has_used_up_is_not_requested(
    session, requesting, device, publisher
):
    """The policy counts the predicted arrival from the newest measured frame (8.6 ms here).
    On data 10 ms old, well inside the bridge's staleness limit, that wave has arrived by the
    time of the request, so none is made: the lead window (here [0, 100] ms) is judged on what
    is left of the lead once the data's age is counted. Judged on the whole lead, the train
    was sent after the arrival it was meant to precede."""
    seq = requesting[0]
    assert MAX_AGE_S > 0.010
    clock = Clock(T0)
    ring = _ring(session, seq + 16)
    loop = _loop(ring, device.bridge, publisher, clock, model_healthy=True)
    loop.process(_prediction(session, seq, available_at=T0 - 0.010))
    assert loop.latest_decision is None  # no request
    assert device.decisions() == []
    assert device.emulator.pulses == ()
    fresh = _loop(_ring(session, seq + 16), None, publisher, Clock(T0))
    fresh.process(_prediction(session, seq, available_at=T0))
    assert fresh.latest_decision is not None  # the same prediction on fresh data requests


def test_the_data_age_each_decision_is_judged_on_is_measured(session, requesting, publisher):
    """Where decisions stop at ``lead_time``, the first question on call is how old the data
    was when the policy judged it: the age each decision was judged on goes to
    ``corticast_decision_data_age_seconds`` and to ``/status`` (``latency_ms``), the request
    and the blocked decision alike."""
    seq = requesting[0]
    registry = CollectorRegistry()
    loop = _loop(_ring(session, seq + 16), None, publisher, Clock(T0), registry=registry)
    loop.process(_prediction(session, seq, available_at=T0 - 0.010))  # lead used up
    loop.process(_prediction(session, seq, available_at=T0 - 0.001))  # requested
    assert _sample(registry, "corticast_policy_decisions_total", check="lead_time") == 1
    assert _sample(registry, "corticast_policy_decisions_total", check="ok") == 1
    assert list(loop.recent_decision_age) == pytest.approx([0.010, 0.001], abs=1e-9)
    assert _sample(registry, "corticast_decision_data_age_seconds_count") == 2
    assert _sample(registry, "corticast_decision_data_age_seconds_sum") == pytest.approx(0.011)
    assert _sample(registry, "corticast_decision_data_age_seconds_bucket", le="0.005") == 1


@pytest.mark.parametrize(
    ("missing", "outcome"), [(MAX_MISSING, "sent"), (MAX_MISSING + 1, "blocked")]
)
def test_missing_frames_anywhere_in_the_wave_window_are_counted(
    session, requesting, device, publisher, missing, outcome
):
    seq = requesting[0]
    # Older than the predictor's 16 frames, inside the wave estimate's 48.
    invalid = tuple(range(seq - PAST + 2, seq - PAST + 2 + missing))
    assert invalid[-1] < seq - PREDICTOR_PAST + 1
    _, decision = _request_once(session, seq, device, publisher, now=T0 + 0.004, invalid=invalid)
    assert decision["health"]["missing_frames"] == missing
    assert decision["outcome"] == outcome, decision["reason"]
    if outcome == "blocked":
        assert decision["interlocks"] == ["missing_frames"]


def test_missing_frames_a_predictor_reached_back_to_past_the_wave_window_are_counted(
    session, requesting, device, publisher
):
    # A 64-frame model, or ``irregular`` reaching back over missing frames: its input starts
    # before the wave estimate's 48 frames.
    seq = requesting[0]
    first_input_seq = seq - 63
    invalid = tuple(range(first_input_seq, first_input_seq + MAX_MISSING + 1))
    assert invalid[-1] < seq - PAST + 1
    _, decision = _request_once(
        session,
        seq,
        device,
        publisher,
        now=T0 + 0.004,
        invalid=invalid,
        first_input_seq=first_input_seq,
    )
    assert decision["health"]["missing_frames"] == MAX_MISSING + 1
    assert decision["interlocks"] == ["missing_frames"]


def test_an_unhealthy_model_is_reported_and_blocks(session, requesting, device, publisher):
    _, decision = _request_once(
        session, requesting[0], device, publisher, now=T0 + 0.004, model_healthy=False
    )
    assert decision["health"]["model_healthy"] is False
    assert decision["interlocks"] == ["model"]
    assert device.emulator.pulses == ()


# -- blanking the stimulation artefact -------------------------------------------------------

ARTEFACT_UV = 5000.0
"""What the frames after a train carry in these tests: far above the session's background."""


def _ring_on_the_loop_clock(session: Session, newest: int, newest_stamp: float) -> RingBuffer:
    """The session's frames 0..``newest`` in a ring, stamped on the loop's clock with the
    newest at ``newest_stamp``: blanking is by the frames' own stamps."""
    ring = RingBuffer(2048)
    stamps = session.timestamps[: newest + 1] - session.timestamps[newest] + newest_stamp
    ring.write(session.frames[: newest + 1], stamps, np.ones(newest + 1, bool), T0)
    return ring


def _artefact_after(ring: RingBuffer, session: Session, count: int) -> None:
    """``count`` frames after the ring's newest, each a session frame plus the artefact,
    written one per chunk as the ingestor would."""
    newest = ring.latest(1)
    stamps = newest.timestamps[0] + np.arange(1, count + 1) / RATE
    first = int(newest.seq[0]) + 1
    for k, stamp in enumerate(stamps):
        frame = session.frames[(first + k) % len(session.frames)] + np.float32(ARTEFACT_UV)
        ring.write(frame[None], np.array([stamp]), np.ones(1, bool), stamp)


def test_a_delivered_train_s_frames_are_blanked_from_its_sending_to_the_recovery_after_it(
    session, requesting, device, publisher
):
    """The frames the train's artefact is on never reach a stage as measured: those stamped
    after its STIMULATE left that are already in the ring, and those still to come, to
    ``[loop] blank_after_train_ms`` after the train; the frames before the sending and after
    the recovery are measured as ever (the loop's clock stands still here: the request, the
    sending and the verdict are at one time)."""
    seq = requesting[0]
    now = T0 + 0.004
    # The newest frame arrived while the bridge was being asked: stamped after the request.
    ring = _ring_on_the_loop_clock(session, seq + 16, newest_stamp=now + 0.001)
    loop = _loop(ring, device.bridge, publisher, Clock(now), settings=LoopSettings())
    loop.process(_prediction(session, seq, available_at=T0))
    (decision,) = device.decisions()
    assert decision["outcome"] == "sent", decision["reason"]
    # From the sending on: the newest frame; the one before it, stamped before, is measured.
    start, end = now, now + decision["request"]["train_duration_ms"] / 1000 + 0.1
    assert ring.blanked_frames == 1
    # The stim topic's record says what was blanked (subscribers mark the same frames).
    assert loop.latest_decision["blanked"] == {
        "from_timestamp": start,
        "to_timestamp": pytest.approx(end, abs=1e-9),
    }
    held = ring.read_since(seq + 15, max_frames=1).frames[0]
    _artefact_after(ring, session, count=150)
    window = ring.read_since(0)
    inside = (window.timestamps >= start) & (window.timestamps <= end)
    assert window.timestamps[-1] > end + 0.01, "the frames must reach past the recovery"
    assert not window.valid[inside].any()
    assert np.all(window.frames[inside] == held), "blanked frames hold the frame before them"
    assert window.valid[~inside].all()
    assert np.all(window.frames[window.timestamps > end] > ARTEFACT_UV / 2)  # as written
    assert ring.blanked_frames == np.count_nonzero(inside)


class _RecordingEmulator(FirmwareEmulator):
    """The emulator that also plays the rig recording its train: on delivering one, before
    its ACK leaves, it writes three frames carrying the artefact into the ring and notes
    whether the ring holds them as measured."""

    def __init__(self, *args, ring: RingBuffer, recorded: Session, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.ring, self.recorded = ring, recorded
        self.valid_while_acked: np.ndarray | None = None

    def _deliver(self, *args, **kwargs) -> None:
        super()._deliver(*args, **kwargs)
        _artefact_after(self.ring, self.recorded, count=3)
        self.valid_while_acked = self.ring.latest(3).valid.copy()


def test_frames_arriving_while_the_train_is_acknowledged_are_never_read_as_measured(
    session, requesting, publisher, tmp_path
):
    """Blanking starts when the STIMULATE leaves, not at the verdict: a frame the rig
    recorded during the device's answer is missing from the moment it is written (a
    prediction or a score made meanwhile never reads the artefact)."""
    seq, now = requesting[0], T0 + 0.004
    ring = _ring_on_the_loop_clock(session, seq + 16, newest_stamp=now - 0.001)
    with _device(tmp_path, emulator_type=_RecordingEmulator, ring=ring, recorded=session) as device:
        loop = _loop(ring, device.bridge, publisher, Clock(now))
        loop.process(_prediction(session, seq, available_at=T0))
    emulator = device.emulator
    assert loop.latest_decision["bridge"]["outcome"] == "sent"
    assert emulator.valid_while_acked is not None
    assert not emulator.valid_while_acked.any()
    assert ring.blanked_frames == 3


def test_a_bridge_closed_since_the_loop_read_it_is_a_request_with_no_bridge_not_a_crash(
    session, requesting, device, publisher
):
    """The supervisor closes a bridge whose heartbeat died and opens another; a request made
    on the one read just before (or as the daemon stops) reaches a closed bridge, which
    records and sends nothing. It is counted as one with no bridge: the wave stage ending on
    it counted a second fault ("waves") beside the bridge's own and restarted the stage."""
    seq = requesting[0]
    registry = CollectorRegistry()
    ring = _ring(session, seq + 16)
    loop = _loop(ring, device.bridge, publisher, Clock(T0 + 0.004), registry=registry)
    device.bridge.close()
    loop.process(_prediction(session, seq, available_at=T0))
    assert loop.latest_decision is not None and loop.latest_decision["bridge"] is None
    assert loop.latest_decision["blanked"] is None
    assert _sample(registry, "corticast_loop_stimulation_requests_total", outcome="no bridge") == 1
    assert device.decisions() == [] and device.emulator.pulses == ()
    assert ring.blanked_frames == 0


def test_a_train_the_device_refused_ends_its_blank_at_the_refusal(
    session, requesting, publisher, tmp_path
):
    """Sent, then refused by the device (a NACK: here its own amplitude limit, below the
    policy's train): nothing was delivered, so the blank opened at the sending ends at the
    verdict; the frame that arrived meanwhile stays blanked, the ones after are measured."""
    seq, now = requesting[0], T0 + 0.004
    ring = _ring_on_the_loop_clock(session, seq + 16, newest_stamp=now + 0.001)
    with _device(tmp_path, limits={"max_amplitude_ua": 1}) as device:
        loop = _loop(ring, device.bridge, publisher, Clock(now))
        loop.process(_prediction(session, seq, available_at=T0))
    assert loop.latest_decision["bridge"]["outcome"] == "rejected"
    assert loop.latest_decision["blanked"] is None
    assert ring.blanked_frames == 1  # stamped after the sending, before the verdict
    _artefact_after(ring, session, count=20)
    assert ring.blanked_frames == 1
    assert ring.latest(20).valid.all()


class _LogLostEmulator(FirmwareEmulator):
    """The emulator that, on delivering a train, also has the bridge's audit log taken away
    before its ACK leaves (its path left pointing into a folder that is gone: a cleaner, a
    disk unmounted): the bridge cannot record the verdict of a train it has sent."""

    def __init__(self, *args, audit_log: Path, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.audit_log = audit_log

    def _deliver(self, *args, **kwargs) -> None:
        super()._deliver(*args, **kwargs)
        self.audit_log.unlink()
        self.audit_log.symlink_to(self.audit_log.parent / "gone" / self.audit_log.name)


def test_a_train_sent_whose_verdict_raised_still_ends_its_blank(
    session, requesting, publisher, tmp_path
):
    """The bridge raised after the STIMULATE left (here: the verdict could not be recorded):
    the device may have delivered the train, so its frames stay blanked to the recovery after
    it, and the blank still ends there: never left open, blanking every frame to come (a
    stream the wave stage, restarted by the supervisor, would find dead for good). Its
    marker goes out (``failed``, unnumbered: there is no verdict), so that a recording says
    where the artefact may be and a replay or training leaves it out."""
    seq, now = requesting[0], T0 + 0.004
    ring = _ring_on_the_loop_clock(session, seq + 16, newest_stamp=now - 0.001)
    audit_log = tmp_path / "audit.jsonl"
    markers = MarkerOutlet(
        f"raised-{os.getpid()}-{time.monotonic_ns()}", longest_blank_s=2.5, rig_name="rig"
    )
    (info,) = pylsl.resolve_byprop("source_id", markers.source_id, minimum=1, timeout=30)
    inlet = pylsl.StreamInlet(info)
    inlet.open_stream(timeout=30)
    with _device(tmp_path, emulator_type=_LogLostEmulator, audit_log=audit_log) as device:
        loop = _loop(ring, device.bridge, publisher, Clock(now), markers=markers)
        with pytest.raises(AuditLogError):
            loop.process(_prediction(session, seq, available_at=T0))
        assert not device.bridge.armed
    text, stamp = inlet.pull_sample(timeout=30)
    markers.close()
    assert text is not None, "no marker of the train that may have been delivered"
    marker = parse_marker(text[0])
    assert isinstance(marker, StimulationMarker) and stamp == now
    assert (marker.outcome, marker.request_id, marker.sequence) == ("failed", None, None)
    assert marker.train_duration_ms == POLICY.stimulation.train_duration_ms
    _artefact_after(ring, session, count=300)
    window = ring.latest(300)
    # The loop's clock stands still: the sending and the failed verdict are at `now`.
    end = now + (POLICY.stimulation.train_duration_ms + LoopSettings().blank_after_train_ms) / 1000
    assert window.timestamps[-1] > end + 0.5, "the frames must reach past the recovery"
    after = window.timestamps > end
    assert window.valid[after].all(), (
        f"{np.count_nonzero(~window.valid[after])} of {np.count_nonzero(after)} frames after "
        f"the train's recovery blanked"
    )
    assert not window.valid[window.timestamps <= end].any()
    assert marker.blank_s == pytest.approx(end - now)


class _SilentAfterDeliveringEmulator(FirmwareEmulator):
    """The emulator that delivers a train, then answers nothing (its link broke as the train
    started): neither the STIMULATE's ACK nor the DISARM the bridge sends on missing it."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.silent = False
        self.delivered_at = 0.0

    def _deliver(self, *args, **kwargs) -> None:
        super()._deliver(*args, **kwargs)
        self.delivered_at = time.monotonic()
        self.silent = True

    def process(self, data: bytes, *, connection: int = 0) -> list[bytes]:
        replies = super().process(data, connection=connection)
        return [] if self.silent else replies


def test_a_train_sent_whose_verdict_raised_is_checked_for_artefact_blanked_afterwards(
    session, requesting_late, publisher, tmp_path, caplog
):
    """The bridge raised after the STIMULATE left: the device may have delivered the train
    (its marker says ``failed``), so it is checked as a delivered one is: another tool's
    marker that came after the decision blanks a frame it rested on, and once the latency has
    passed the wave stage's next decision (the stage restarted) counts and says it."""
    seq, now = requesting_late[0], T0 + 0.004
    ring = _ring_on_the_loop_clock(session, seq + 16, newest_stamp=now - 0.001)
    audit_log = tmp_path / "audit.jsonl"
    with _device(tmp_path, emulator_type=_LogLostEmulator, audit_log=audit_log) as device:
        loop = _loop(
            ring, device.bridge, publisher, Clock(now), late_after_frames=LATE_AFTER_FRAMES
        )
        with pytest.raises(AuditLogError):
            loop.process(_prediction(session, seq, available_at=T0))
        assert len(device.emulator.pulses) == 1, "the device did not deliver the train"
        stamp = float(ring.read_since(seq - 5, max_frames=1).timestamps[0])
        ring.blank(stamp, stamp)  # the other tool's marker, late
        _artefact_after(ring, session, count=20)
        caplog.set_level(logging.ERROR, logger="corticast.loop")
        loop.process(_prediction(session, seq + 16))
    assert loop.trains_decided_on_late_artefact == 1
    (said,) = [
        r.getMessage() for r in caplog.records if "only after the decision" in r.getMessage()
    ]
    assert "sent without a verdict" in said and f"-{seq}, of which 1 were blanked" in said, said


def test_a_failed_train_s_marker_blanks_no_longer_than_the_marker_stream_says(
    session, requesting, publisher, tmp_path
):
    """The device delivered the train, then answered nothing: the bridge waits out the ACK
    deadline for the STIMULATE, then again for the DISARM it sends on missing it, and only
    then is the verdict (``failed``) known. The train's marker blanks from its sending to the
    recovery after that verdict; the longest blank the daemon's marker stream describes
    (another daemon opening it blanks that long around the opening, for a train it missed)
    must be at least that long."""
    ack_timeout_s = 1.5
    seq, now = requesting[0], T0 + 0.004
    ring = _ring_on_the_loop_clock(session, seq + 16, newest_stamp=now - 0.001)
    markers = MarkerOutlet(
        f"silent-{os.getpid()}-{time.monotonic_ns()}", longest_blank_s=1.0, rig_name="rig"
    )
    (info,) = pylsl.resolve_byprop("source_id", markers.source_id, minimum=1, timeout=30)
    inlet = pylsl.StreamInlet(info)
    inlet.open_stream(timeout=30)
    settings = LoopSettings()
    # The policy's train is the longest the interlocks let through.
    interlocks = InterlockSettings(max_train_duration_ms=POLICY.stimulation.train_duration_ms)
    with _device(
        tmp_path,
        interlocks,
        emulator_type=_SilentAfterDeliveringEmulator,
        ack_timeout_s=ack_timeout_s,
    ) as device:
        emulator = device.emulator

        def clock() -> float:  # the loop's clock: standing still, then moving from delivery
            return now + (time.monotonic() - emulator.delivered_at if emulator.silent else 0)

        loop = _loop(ring, device.bridge, publisher, clock, markers=markers)
        loop.process(_prediction(session, seq, available_at=T0))
        assert not device.bridge.armed
        assert len(device.emulator.pulses) == 1, "the device did not deliver the train"
    text, _ = inlet.pull_sample(timeout=30)
    markers.close()
    assert text is not None, "no marker of the train that may have been delivered"
    marker = parse_marker(text[0])
    assert isinstance(marker, StimulationMarker) and marker.outcome == "failed"
    described = longest_marker_blank_s(
        ack_timeout_s=ack_timeout_s,
        max_train_duration_ms=interlocks.max_train_duration_ms,
        blank_after_train_ms=settings.blank_after_train_ms,
        announced_blank_ms=1100,
    )
    recovery_s = (interlocks.max_train_duration_ms + settings.blank_after_train_ms) / 1000
    # The loop's clock stands still till the delivery, after the sending by the link's
    # latency (0.7 ms seen on a loaded machine), where the bridge's deadlines begin: the
    # transmit record is stamped on its clock (monotonic) just before the STIMULATE leaves.
    (transmit,) = [r for r in read_audit_log(tmp_path / "audit.jsonl") if r["event"] == "transmit"]
    waited = marker.blank_s - recovery_s + (emulator.delivered_at - transmit["clock"])
    assert waited >= 2 * ack_timeout_s, "the verdict did not wait out both ACK deadlines"
    # What the verdict waits for, beside the margin for the audit log and the loop's turn
    # (not asserted here: a loaded machine may take longer, as a stalled disk may).
    assert described - recovery_s - VERDICT_MARGIN_S >= 2 * ack_timeout_s, (
        f"the failed train's marker blanks {marker.blank_s:.3f} s, its verdict having waited "
        f"two ACK deadlines ({2 * ack_timeout_s:g} s); its stream describes its longest "
        f"blank as {described:.3f} s, {VERDICT_MARGIN_S:g} s of it the margin"
    )


def test_a_train_is_not_sent_on_a_stream_stamped_ahead_of_the_lsl_clock(
    session, requesting, device, publisher
):
    """The rig's frames are stamped 5 s after they arrived: a source stamping on a clock of
    its own (time.time() instead of the LSL clock). The artefact of a train sent now would be
    on frames stamped 5 s after the blank, which would find none of them: measured as cortex.
    Nothing is sent; it is a fault (the bridge disarms), naming the lead."""
    seq, now = requesting[0], T0 + 0.004
    ring = _ring_on_the_loop_clock(session, seq + 16, newest_stamp=now + 5.0)  # arrived at T0
    loop = _loop(ring, device.bridge, publisher, Clock(now))
    with pytest.raises(RuntimeError, match=r"stamped 5\.00\d s after it arrived"):
        loop.process(_prediction(session, seq, available_at=T0))
    assert not device.bridge.armed
    assert device.decisions() == []
    (disarm,) = [r for r in read_audit_log(device.audit_log) if r["event"] == "disarm"]
    assert disarm["cause"] == "fault" and "after it arrived" in disarm["reason"]
    assert device.emulator.pulses == ()
    assert ring.blanked_frames == 0


def test_no_frame_is_blanked_after_a_train_that_was_not_delivered(
    session, requesting, device, publisher
):
    """A request the bridge blocked (here: the model is unhealthy) sent nothing: no artefact,
    nothing blanked."""
    seq = requesting[0]
    now = T0 + 0.004
    ring = _ring_on_the_loop_clock(session, seq + 16, newest_stamp=now + 0.001)
    loop = _loop(ring, device.bridge, publisher, Clock(now), model_healthy=False)
    loop.process(_prediction(session, seq, available_at=T0))
    (decision,) = device.decisions()
    assert decision["outcome"] == "blocked"
    assert loop.latest_decision["blanked"] is None
    _artefact_after(ring, session, count=20)
    assert ring.read_since(0).valid.all()
    assert ring.blanked_frames == 0


class _BlankingPolicy(StimulationPolicy):
    """The real policy, and just before it decides, the frame stamped ``stamp`` is blanked as
    a stimulation artefact: another tool's marker arriving a moment after the loop read the
    frames it covers."""

    def __init__(self, ring: RingBuffer, stamp: float) -> None:
        super().__init__(POLICY, grid=ring.grid, sample_rate_hz=RATE)
        self._ring, self._stamp = ring, stamp

    def decide(self, *args, **kwargs):
        self._ring.blank(self._stamp, self._stamp)
        return super().decide(*args, **kwargs)


@pytest.mark.parametrize("when", ["before the read", "after the read"])
def test_no_train_is_asked_on_frames_a_stimulation_artefact_is_on(
    session, requesting, device, publisher, when
):
    """An input frame is blanked as a stimulation train's artefact: before the loop read it
    (held, 1 missing frame: within the missing-frames limit of 2) or after (read as cortex;
    none missing when read). Either way the request is blocked by the artefact interlock."""
    seq = requesting[0]
    ring = _ring(session, seq + 16)
    stamp = float(session.timestamps[seq - 5])
    policy = None
    if when == "before the read":
        ring.blank(stamp, stamp)
    else:
        policy = _BlankingPolicy(ring, stamp)
    loop = _loop(ring, device.bridge, publisher, Clock(T0 + 0.004), policy=policy)
    loop.process(_prediction(session, seq))
    (decision,) = device.decisions()
    assert decision["health"]["artefact_frames"] == 1
    assert decision["health"]["missing_frames"] == (1 if when == "before the read" else 0)
    assert decision["outcome"] == "blocked" and decision["interlocks"] == ["artefact"]
    assert device.emulator.pulses == ()


@pytest.mark.parametrize("late", [True, False], ids=["blanked after", "never blanked"])
def test_a_delivered_train_decided_on_frames_blanked_only_afterwards_is_counted_and_said(
    session, requesting_late, device, publisher, late, caplog
):
    """Another tool's marker that came after the decision blanks a frame it rested on: the
    train it asked for answered that tool's train, not cortex. Checked once the latency a
    marker may have (here 20 frames) has passed, at the wave stage's next prediction: counted
    (``/status``, the metric) and said. A train whose frames stay measured is not."""
    seq = requesting_late[0]
    now = T0 + 0.004
    ring = _ring_on_the_loop_clock(session, seq + 16, newest_stamp=now + 0.001)
    registry = CollectorRegistry()
    loop = _loop(
        ring,
        device.bridge,
        publisher,
        Clock(now),
        registry=registry,
        late_after_frames=LATE_AFTER_FRAMES,
    )
    loop.process(_prediction(session, seq))
    (decision,) = device.decisions()
    assert decision["outcome"] == "sent", decision["reason"]
    if late:  # the marker of a train on frame seq - 5
        stamp = float(ring.read_since(seq - 5, max_frames=1).timestamps[0])
        ring.blank(stamp, stamp)
    _artefact_after(ring, session, count=3)  # 19 frames after its newest, seq
    caplog.set_level(logging.ERROR, logger="corticast.loop")
    loop.process(_prediction(session, seq + 16))  # its frames not settled yet: not checked
    assert loop.trains_decided_on_late_artefact == 0
    _artefact_after(ring, session, count=1)
    loop.process(_prediction(session, seq + 16))
    assert loop.trains_decided_on_late_artefact == (1 if late else 0)
    name = "corticast_loop_trains_decided_on_late_artefact_total"
    assert _sample(registry, name) == (1 if late else 0)
    said = [r.getMessage() for r in caplog.records if "only after the decision" in r.getMessage()]
    assert len(said) == (1 if late else 0)
    if late:
        assert f"-{seq}, of which 1 were blanked" in said[0], said


def test_a_train_s_own_blank_over_the_frames_it_was_decided_on_is_no_late_artefact(
    session, requesting_late, device, publisher, caplog
):
    """The rig stamps its frames a few ms after they arrive (within the 10 ms the loop
    allows): the newest frames a decision rested on are stamped after its STIMULATE left,
    and the train's own blank, opened at the sending, covers them. That is the daemon's own
    train, blanked as it was sent, not another tool's marker that came late: the train is
    not counted nor said to answer one."""
    seq, now = requesting_late[0], T0 + 0.004
    ring = _ring_on_the_loop_clock(session, seq, newest_stamp=now + 0.005)
    loop = _loop(ring, device.bridge, publisher, Clock(now), late_after_frames=LATE_AFTER_FRAMES)
    loop.process(_prediction(session, seq, available_at=T0))
    (decision,) = device.decisions()
    assert decision["outcome"] == "sent", decision["reason"]
    assert ring.blanked_among(seq - 15, seq) > 0, "the train's blank did not reach its frames"
    _artefact_after(ring, session, count=40)
    caplog.set_level(logging.ERROR, logger="corticast.loop")
    loop.process(_prediction(session, seq + 16))
    assert loop.trains_decided_on_late_artefact == 0, [r.getMessage() for r in caplog.records]


class _MarkerWhileWaiting:
    """The bridge, with another tool's late marker blanking the frame stamped ``stamp`` while
    the request waits for the bridge's lock (behind a heartbeat's exchange): after the loop
    counted the artefact frames the interlocks are told of, before the STIMULATE leaves."""

    def __init__(self, bridge: StimulationBridge, ring: RingBuffer, stamp: float) -> None:
        self._bridge, self._ring, self._stamp = bridge, ring, stamp

    def request_stimulation(self, *args, **kwargs):
        self._ring.blank(self._stamp, self._stamp)
        return self._bridge.request_stimulation(*args, **kwargs)


def test_a_late_marker_s_blank_while_the_request_waits_is_no_part_of_the_train_s_own(
    session, requesting_late, device, publisher
):
    """Another tool's marker blanks a frame the decision rested on while its request waits
    for the bridge: the interlocks were told of no artefact, and the train is delivered. That
    frame is not the train's own blank (none of its frames is stamped after the sending), so
    the check once the latency has passed counts the train as decided on late artefact."""
    seq, now = requesting_late[0], T0 + 0.004
    ring = _ring_on_the_loop_clock(session, seq + 16, newest_stamp=now + 0.001)
    stamp = float(ring.read_since(seq - 5, max_frames=1).timestamps[0])
    waiting = _MarkerWhileWaiting(device.bridge, ring, stamp)
    loop = _loop(
        ring,
        None,
        publisher,
        Clock(now),
        bridge_ref=lambda: waiting,
        late_after_frames=LATE_AFTER_FRAMES,
    )
    loop.process(_prediction(session, seq))
    (decision,) = device.decisions()
    assert decision["outcome"] == "sent", decision["reason"]
    assert decision["health"]["artefact_frames"] == 0
    _artefact_after(ring, session, count=4)
    loop.process(_prediction(session, seq + 16))
    assert loop.trains_decided_on_late_artefact == 1


def test_a_train_delivered_too_recently_to_be_checked_is_checked_as_the_wave_stage_stops(
    session, requesting_late, device, publisher
):
    """A train delivered within the latency a marker may have before the wave stage stops
    (the daemon's stop, a restart) would never be checked by a later decision: it is checked
    as the stage stops, on what has been blanked by then."""
    seq = requesting_late[0]
    now = T0 + 0.004
    ring = _ring_on_the_loop_clock(session, seq + 16, newest_stamp=now + 0.001)
    loop = _loop(ring, device.bridge, publisher, Clock(now), late_after_frames=LATE_AFTER_FRAMES)
    loop.process(_prediction(session, seq))
    (decision,) = device.decisions()
    assert decision["outcome"] == "sent", decision["reason"]
    stamp = float(ring.read_since(seq - 5, max_frames=1).timestamps[0])
    ring.blank(stamp, stamp)  # a late marker's
    loop.process(_prediction(session, seq + 16))
    assert loop.trains_decided_on_late_artefact == 0  # LATE_AFTER_FRAMES have not passed
    loop.start()
    assert loop.stop(timeout=30)
    assert loop.trains_decided_on_late_artefact == 1


# -- the wave stage's mailbox ----------------------------------------------------------------


def _sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels) or 0.0


def test_a_newer_prediction_supersedes_one_not_yet_taken_and_is_counted(
    session, requesting, device, publisher, zmq_registry
):
    first, second = requesting[0], requesting[1]
    registry = CollectorRegistry()
    ring = _ring(session, second)
    loop = _loop(ring, device.bridge, publisher, Clock(T0 + 0.004), registry=registry)
    # The wave stage is not running yet: the first prediction waits in the mailbox ...
    loop.handle(_prediction(session, first))
    loop.handle(_prediction(session, second))
    assert loop.superseded == 1
    assert _sample(registry, "corticast_waves_superseded_predictions_total") == 1
    # ... and once it runs, it decides on the newer one only.
    with loop:
        deadline = time.monotonic() + 30.0
        while not device.decisions():
            assert time.monotonic() < deadline, "the wave stage made no request"
            time.sleep(0.01)
    loop.raise_if_failed()
    assert loop.latest_decision["input_seq"] == second
    assert len(device.decisions()) == 1
    # Both were published and scored in the scheduler's part; one wave estimate was made.
    assert _sample(zmq_registry, "corticast_zmq_messages_total", topic="prediction") == 2
    assert _sample(zmq_registry, "corticast_zmq_messages_total", topic="wave") == 1


_FIFO = ThreadPlacement("fifo", 1, frozenset())


_NEEDS_FIFO = pytest.mark.skipif(
    not _FIFO.realtime_permitted(), reason="SCHED_FIFO is not permitted here"
)


@pytest.mark.parametrize(
    ("policy", "mid_run"),
    [
        pytest.param(os.SCHED_FIFO, False, marks=_NEEDS_FIFO, id="fifo"),
        pytest.param(os.SCHED_FIFO, True, marks=_NEEDS_FIFO, id="fifo given mid-run"),
        pytest.param(None, False, id="normal"),
    ],
)
def test_a_real_time_wave_stage_rests_after_a_decision_that_finds_a_newer_one_waiting(
    session, requesting, device, publisher, policy, mid_run
):
    """The kernel stops a real-time thread that fills its CPU for ~50 ms a second: under a
    real-time policy (the drop-in's, inherited from the thread that starts the stage, or one
    given to the running thread, as ``chrt -p`` does: the rest used to be decided at start
    only) a decision that ends with the next prediction already in the mailbox is followed
    by a rest; under the normal policy, never."""
    first, second = requesting[0], requesting[1]
    registry = CollectorRegistry()
    loop: ClosedLoop | None = None
    handed: list[int] = []

    def bridge_ref() -> StimulationBridge:
        if not handed:  # the first decision asks the bridge: a newer prediction arrives now
            if mid_run:  # this is the stage's thread, running under the normal policy
                os.sched_setscheduler(0, policy, os.sched_param(1))
            handed.append(second)
            loop.handle(_prediction(session, second))
        return device.bridge

    loop = _loop(_ring(session, second), None, publisher, Clock(T0 + 0.004),
                 registry=registry, bridge_ref=bridge_ref, idle_share=0.2)  # fmt: skip
    loop.handle(_prediction(session, first))

    def start() -> None:  # the stage's thread inherits the starting thread's policy
        if policy is not None and not mid_run:
            os.sched_setscheduler(0, policy, os.sched_param(1))
        loop.start()

    starter = threading.Thread(target=start)
    starter.start()
    starter.join()
    try:
        deadline = time.monotonic() + 30.0
        while len(device.decisions()) < 2:
            assert time.monotonic() < deadline, "the wave stage did not decide on both"
            time.sleep(0.01)
    finally:
        loop.stop()
    loop.raise_if_failed()
    rested = _sample(registry, "corticast_waves_rested_seconds_total")
    assert (rested > 0.0) if policy is not None else (rested == 0.0)
    assert loop.rested_s == pytest.approx(rested)  # what /status says


# -- when there is nothing to decide on ------------------------------------------------------------


def test_no_decision_before_the_baseline_but_the_wave_is_published(
    session, requesting, publisher, zmq_registry
):
    seq = requesting[0]
    ring = _ring(session, seq)
    policy = RecordingPolicy(POLICY, grid=ring.grid, sample_rate_hz=RATE)
    # The background's first estimate needs more stream than there is.
    settings = LoopSettings(robust_sd_seconds=(seq + 2) / RATE)
    loop = _loop(ring, None, publisher, Clock(T0), policy=policy, settings=settings)
    loop.process(_prediction(session, seq))
    assert loop.latest_wave is not None
    assert _sample(zmq_registry, "corticast_zmq_messages_total", topic="wave") == 1
    assert policy.seen == []  # with no amplitude unit, nothing is decided
    assert loop.latest_decision is None


@pytest.mark.parametrize("capacity", [None, PAST - 8], ids=["stream-too-short", "overwritten"])
def test_no_wave_and_no_decision_without_every_measured_frame(
    session, requesting, publisher, zmq_registry, capacity
):
    seq = requesting[0]
    if capacity is None:  # fewer frames than the wave estimate's past
        seq = PAST - 2
        ring = _ring(session, seq)
    else:  # the loop fell so far behind that the ring overwrote its frames
        ring = RingBuffer(capacity)
        ring.write(
            session.frames[: seq + 1], session.timestamps[: seq + 1], np.ones(seq + 1, bool), T0
        )
    loop = _loop(ring, None, publisher, Clock(T0))
    loop.process(_prediction(session, seq))
    assert _sample(zmq_registry, "corticast_zmq_messages_total", topic="prediction") == 1
    assert _sample(zmq_registry, "corticast_zmq_messages_total", topic="wave") == 0
    assert (loop.latest_wave, loop.latest_decision) == (None, None)


def test_process_refuses_a_running_loop(session, requesting, publisher):
    loop = _loop(_ring(session, requesting[0]), None, publisher, Clock(T0))
    with loop, pytest.raises(RuntimeError, match=r"call stop\(\) first"):
        loop.process(_prediction(session, requesting[0]))


# -- the baseline ----------------------------------------------------------------------------


class RecordingPolicy(StimulationPolicy):
    """The real policy, noting the amplitude unit and live-channel mask it was given."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.seen: list[tuple[float, np.ndarray]] = []

    def decide(self, estimate: WaveEstimate, robust_sd_uv: float, **kwargs):
        self.seen.append((robust_sd_uv, estimate.channel_valid.copy()))
        return super().decide(estimate, robust_sd_uv, **kwargs)


def test_the_baseline_is_the_lower_quartile_of_robust_sds_over_live_channels(session, publisher):
    dead = [(0, 0), (3, 7), (17, 19)]
    frames = session.frames.copy()
    for row, col in dead:
        frames[:, row, col] = 0.0  # a broken contact: flat
    flat = Session(frames, session.timestamps, session.sample_rate_hz, session.grid)
    settings = LoopSettings(robust_sd_seconds=0.5, robust_sd_every_s=0.25)
    every, count = round(0.25 * RATE), round(0.5 * RATE)
    newest = [300 + k * every for k in range(7)]  # quiet background, then the discharge
    ring = _ring(flat, newest[-1])
    policy = RecordingPolicy(POLICY, grid=ring.grid, sample_rate_hz=RATE)
    registry = CollectorRegistry()
    loop = _loop(
        ring, None, publisher, Clock(T0), policy=policy, settings=settings, registry=registry
    )
    live = np.ones(ring.grid.shape, dtype=bool)
    for row, col in dead:
        live[row, col] = False
    estimator = WaveEstimator(WAVES, grid=ring.grid, sample_rate_hz=RATE)
    history = []
    for seq in newest:
        loop.process(_prediction(flat, seq))
        stretch = frames[seq - count + 1 : seq + 1]
        history.append(estimator.robust_sd(stretch, live))
        unit, mask = policy.seen[-1]
        assert unit == pytest.approx(np.percentile(history, 25), rel=1e-12)
        np.testing.assert_array_equal(mask, live)  # dead channels out of every estimate
    # The discharge raised the spread; the unit stays with the quiet background.
    assert history[-1] > 2 * unit
    assert estimator.robust_sd(frames[newest[-1] - count + 1 : newest[-1] + 1]) != history[-1]
    assert _sample(registry, "corticast_waves_dead_channels") == len(dead)


@pytest.mark.parametrize("late_after_frames", [None, 120])
def test_the_baseline_reads_no_frame_another_tool_s_marker_may_still_blank(
    session, publisher, late_after_frames
):
    """Another tool's train (alternating 5 mV on the left 12 columns) fills the newest 100
    frames, its marker not yet come. Read at once, its artefact was most of the refresh's
    window: the columns it spared measured as flat beside it, were found dead and left out
    of the decision (with no other tool's marker stream read, the daemon's own trains are
    blanked before they are sent, and this is the rule still: ``None``). While the marker
    may still come (``late_after_frames``, the latency), the refresh leaves those frames
    unread; the marker then blanks them, and no later refresh sees them either."""
    train = np.arange(201, 301)
    frames = session.frames.copy()
    sign = np.where(train % 2, 1.0, -1.0).astype(np.float32)
    frames[train, :, :12] += 5000.0 * sign[:, None, None]
    artefact = Session(frames, session.timestamps, session.sample_rate_hz, session.grid)
    settings = LoopSettings(robust_sd_seconds=0.5, robust_sd_every_s=0.25)
    every, count = round(0.25 * RATE), round(0.5 * RATE)
    later = [300 + k * every for k in range(1, 4)]
    ring = _ring(artefact, later[-1])
    policy = RecordingPolicy(POLICY, grid=ring.grid, sample_rate_hz=RATE)
    loop = _loop(
        ring,
        None,
        publisher,
        Clock(T0),
        policy=policy,
        settings=settings,
        late_after_frames=late_after_frames,
    )
    loop.process(_prediction(artefact, 300))
    spared = [(row, col) for row in range(18) for col in range(12, 20)]
    if late_after_frames is None:
        assert loop.dead_electrodes == tuple(spared)
        return
    estimator = WaveEstimator(WAVES, grid=ring.grid, sample_rate_hz=RATE)
    settled = 300 - late_after_frames
    assert policy.seen[-1][0] == estimator.robust_sd(frames[settled - count + 1 : settled + 1])
    assert policy.seen[-1][1].all()
    ring.blank(float(session.timestamps[train[0]]), float(session.timestamps[train[-1]]))
    for seq in later:  # each a refresh, the last reading frames after the train
        loop.process(_prediction(artefact, seq))
        assert loop.dead_electrodes == ()
        assert policy.seen[-1][1].all()
    quiet = estimator.robust_sd(frames[: train[0]])
    assert max(unit for unit, _ in policy.seen) < 1.5 * quiet


def test_a_contact_gone_noisy_since_the_baseline_s_refresh_is_left_out_of_the_next_estimate(
    session, publisher
):
    """The refresh at frame 300 read a clean window and kept electrode (5, 5); it went bad at
    frame 301, with noise 500 times the background. The next refresh would keep it until over
    half its window were bad: 0.25-0.5 s of decisions on an estimate it dominates. It is left
    out of the next decision's estimate at once, from the block's own measured frames, and
    counted; the baseline's own count is unchanged until its refresh sees it."""
    frames = session.frames.copy()
    frames[301:, 5, 5] += np.random.default_rng(3).normal(0.0, 1e4, len(frames) - 301)
    noisy = Session(frames, session.timestamps, session.sample_rate_hz, session.grid)
    settings = LoopSettings(robust_sd_seconds=0.5, robust_sd_every_s=0.25)
    ring = _ring(noisy, 340)
    policy = RecordingPolicy(POLICY, grid=ring.grid, sample_rate_hz=RATE)
    registry = CollectorRegistry()
    loop = _loop(
        ring, None, publisher, Clock(T0), policy=policy, settings=settings, registry=registry
    )
    loop.process(_prediction(noisy, 300))  # the refresh: every channel live
    loop.process(_prediction(noisy, 340))  # 40 of its 48 measured frames are noisy
    (_, before), (_, after) = policy.seen
    assert before.all()
    expected = np.ones(ring.grid.shape, dtype=bool)
    expected[5, 5] = False
    np.testing.assert_array_equal(after, expected)
    assert _sample(registry, "corticast_waves_noisy_blocks_total") == 1
    assert _sample(registry, "corticast_waves_noisy_channels") == 0


def test_a_model_gone_wrong_is_unhealthy_even_beside_a_noisy_channel(session, publisher):
    """Electrode (5, 5) carries noise 500 times the background: no predictor can follow it,
    and persistence, which repeats it, errs twice as much there as any prediction of modest
    size. Scored over every channel, that one channel was most of each score: a model gone
    wrong (its predictions another moment's frames, three times too loud) beat persistence by
    about 3 dB and was judged healthy, so the model interlock never blocked it. Scored on the
    wave stage's live channels, it is unhealthy."""
    frames = session.frames.copy()
    frames[:, 5, 5] += np.random.default_rng(4).normal(0.0, 1e4, len(frames))
    noisy = Session(frames, session.timestamps, session.sample_rate_hz, session.grid)
    newest = 320  # the quiet background before the discharge
    ring = _ring(noisy, newest)
    zeros = np.zeros(ring.grid.shape, np.float32)
    accuracy = LiveAccuracy(zeros, zeros + 100.0, registry=CollectorRegistry())
    settings = LoopSettings(robust_sd_seconds=0.5, robust_sd_every_s=0.25, health_min_scored=20)
    loop = _loop(ring, None, publisher, Clock(T0), settings=settings, accuracy=accuracy)
    for seq in range(150, newest - 16, 4):
        wrong = 3 * session.frames[seq + 401 : seq + 417]
        loop.process(dataclasses.replace(_prediction(noisy, seq), future=wrong))
    assert loop.noisy_electrodes == ((5, 5),)
    health = ModelHealth.judge(accuracy, settings, running=True)
    assert health.scored >= 20
    assert health.state == "unhealthy", health


def test_too_few_live_channels_is_no_decision_not_a_wave_stage_crash(
    session, publisher, zmq_registry
):
    """A connector off: 200 of 360 channels flat, more than the wave estimate's
    ``min_live_fraction`` allows dead. The baseline's refresh handed that mask on and the
    estimator refused it with a ValueError that ended the wave stage, on every prediction:
    the supervisor restarted it (and logged a fault) every round. It is a state of the data,
    like a missing frame: no wave estimate and no decision (the dead channels counted), and
    the stage runs on."""
    frames = session.frames.copy()
    frames[:, :10, :] = 0.0
    off = Session(frames, session.timestamps, session.sample_rate_hz, session.grid)
    seq = CANDIDATES[0]
    ring = _ring(off, seq)
    policy = RecordingPolicy(POLICY, grid=ring.grid, sample_rate_hz=RATE)
    registry = CollectorRegistry()
    loop = _loop(ring, None, publisher, Clock(T0), policy=policy, registry=registry)

    def dead() -> float:
        return _sample(registry, "corticast_waves_dead_channels")

    with loop:
        loop.handle(_prediction(off, seq))
        deadline = 3000  # polls of 10 ms: a generous bound, not a timed assert
        while dead() == 0 and loop.running and deadline:
            time.sleep(0.01)
            deadline -= 1
        loop.raise_if_failed()
        assert loop.running
    assert dead() == 200
    assert (loop.latest_wave, loop.latest_decision, policy.seen) == (None, None, [])
    assert _sample(zmq_registry, "corticast_zmq_messages_total", topic="wave") == 0


# -- a model change between the policy's decision and the request ----------------------------

OLD_INFO = PredictorInfo("old", "cpu", "fp32", "window", "old", "-", "-")
NEW_INFO = PredictorInfo("new", "cpu", "fp32", "window", "new", "-", "-")
LENIENT_AGE_S = 0.1
"""A staleness limit (legal: under ``max_sample_age_s``'s 1 s ceiling) above the 16 frames
(57.6 ms) a swapped-in model needs before any prediction of its can be scored; at the default
0.05 s the staleness interlock happens to block such a request too."""


@pytest.fixture
def lenient_device(tmp_path) -> Iterator[Device]:
    with _device(tmp_path, InterlockSettings(max_sample_age_s=LENIENT_AGE_S)) as armed:
        yield armed


class SwappingPolicy(StimulationPolicy):
    """The real policy; once ``swap`` is set, after its decision (the wave stage's thread
    between the decision and the request) it runs what the swap's and scheduler's threads do
    meanwhile: ``swap`` itself, once."""

    swap: Callable[[], None] | None = None

    def decide(self, estimate: WaveEstimate, robust_sd_uv: float, **kwargs):
        decision = super().decide(estimate, robust_sd_uv, **kwargs)
        swap, self.swap = self.swap, None
        if swap is not None:
            swap()
        return decision


def test_a_prediction_of_a_swapped_out_unproven_model_is_not_judged_on_the_new_models_health(
    session, requesting, lenient_device, publisher
):
    """The interlock is told the health of the model that made the prediction: an old model's
    prediction whose request comes after a hot swap, once the new model is proven, must not
    pass on the new model's record (the old one never proved itself)."""
    device = lenient_device
    seq = requesting[0]
    settings = LoopSettings(health_min_scored=1)
    zeros = np.zeros(DEFAULT_GRID.shape, np.float32)
    accuracy = LiveAccuracy(zeros, zeros + 100.0, registry=CollectorRegistry(), model=OLD_INFO)
    ring = _ring(session, seq + 15)  # the old prediction's true frames not all here: unscored
    clock = Clock(T0 + 0.004)
    policy = SwappingPolicy(POLICY, grid=ring.grid, sample_rate_hz=RATE)
    loop = ClosedLoop(
        ring,
        WaveEstimator(WAVES, grid=ring.grid, sample_rate_hz=RATE),
        policy,
        lambda: device.bridge,
        publisher,
        accuracy,
        settings,
        sample_rate_hz=RATE,
        # The daemon's rule (Daemon.model_healthy), on the live scores.
        model_healthy=lambda: ModelHealth.judge(accuracy, settings, running=True).healthy,
        registry=CollectorRegistry(),
        clock=clock,
    )

    def swap_and_prove_the_new_model() -> None:
        # Daemon.swap_model: the scores reset for the new model, then it serves.
        accuracy.set_normalisation(zeros, zeros + 100.0, NEW_INFO)
        # Two more frames arrive; the new model's first prediction (input seq + 1, 1 µV off
        # the truth: better than persistence) is scored on them, as the scheduler does.
        arrived = T0 + 17 / RATE
        stop = seq + 18
        ring.write(
            session.frames[seq + 16 : stop],
            session.timestamps[seq + 16 : stop],
            np.ones(2, dtype=bool),
            arrived,
        )
        new = dataclasses.replace(
            _prediction(session, seq + 1, available_at=T0 + 1 / RATE),
            future=session.frames[seq + 2 : seq + 18] + 1.0,
            predictor=NEW_INFO,
        )
        accuracy.add(new)
        assert accuracy.update(ring) == 1
        assert ModelHealth.judge(accuracy, settings, running=True).healthy
        clock.now = arrived + 0.004

    old = dataclasses.replace(_prediction(session, seq), predictor=OLD_INFO)
    assert not ModelHealth.judge(accuracy, settings, running=True).healthy  # unproven
    policy.swap = swap_and_prove_the_new_model
    loop.process(old)
    assert policy.swap is None, "the policy did not decide on the old model's prediction"
    (decision,) = device.decisions()
    assert decision["health"]["model_healthy"] is False, (
        "the old, unproven model's prediction was judged on the new model's health: "
        f"{decision['outcome']}, {device.emulator.pulses}"
    )
    assert decision["interlocks"] == ["model"], decision["reason"]
    assert device.emulator.pulses == ()
