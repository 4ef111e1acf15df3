"""disarm() and close() win over whatever the bridge is doing: with the real emulator over real
UDP, a train already admitted but not yet sent when disarm() is entered never leaves, and an
arm() whose ARM exchange is in flight when disarm() or close() is entered leaves both the host
and the device disarmed.

The slow disk and the slow device are fault injections (an audit log that stalls on the
transmit record, a relay that holds the device's replies), not stand-ins for the parts."""

from __future__ import annotations

import logging
import math
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import pytest

from firmware_bridge._heartbeat import _HeartbeatWorker
from firmware_bridge.audit_log import AuditLog, read_audit_log
from firmware_bridge.bridge_status import BridgeStatus
from firmware_bridge.config import BridgeSettings, EmulatorSettings
from firmware_bridge.emulator import FirmwareEmulator
from firmware_bridge.errors import AuditLogError
from firmware_bridge.loop_health import LoopHealth
from firmware_bridge.messages import DisarmCause
from firmware_bridge.stimulation_bridge import Disarmed, StimulationBridge
from firmware_bridge.stimulation_request import StimulationRequest
from firmware_bridge.udp_transport import UdpTransport
from tests.service._fault_injection import thread_refused

from .conftest import FakeClock

OK = LoopHealth(0.005, 0, True)
REQUEST = StimulationRequest((10, 11), 40, 100, 130, 200, 2.5e-4)
DEADLINE_S = 30.0
"""Only a hang reaches it: every wait below is on an event or a condition."""
ACK_TIMEOUT_S = 5.0
"""The longest allowed: a held reply must still be waited for when the relay lets it go."""
WHILE_HELD_S = DEADLINE_S / 2
"""How long a call is given to return while a stall holds (which it does for DEADLINE_S)."""
TAKES_EFFECT_S = 2.0
"""How long a stop may take to show, host-side; unfixed code never shows it before the
request or the ARM exchange ends, which the test holds back for longer than this."""


def _wait_until(condition: Callable[[], bool], timeout: float = DEADLINE_S) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.002)
    return True


class _StallingAuditLog(AuditLog):
    """Stalls on the ``event`` record (``transmit``) until released, as a disk whose fsync
    hangs."""

    def __init__(self, path: Any, event: str = "transmit") -> None:
        super().__init__(path)
        self.event = event
        self.stalled = threading.Event()
        self.release = threading.Event()

    def append(self, record: Any, **kwargs: Any) -> None:
        if record.get("event") == self.event and not self.release.is_set():
            self.stalled.set()
            self.release.wait(DEADLINE_S)
        super().append(record, **kwargs)


class _Thread(threading.Thread):
    """Runs ``target`` and keeps what it returned or raised."""

    def __init__(self, target: Callable[[], Any]) -> None:
        super().__init__(daemon=True)
        self._target_call = target
        self.entered = threading.Event()
        self.result: Any = None
        self.error: BaseException | None = None

    def run(self) -> None:
        self.entered.set()
        try:
            self.result = self._target_call()
        except BaseException as err:  # handed to the test
            self.error = err

    def finish(self) -> Any:
        self.join(DEADLINE_S)
        assert not self.is_alive(), "thread did not finish"
        return self.result


class _HoldingRelay:
    """A UDP relay between host and device that can hold the device's replies back."""

    def __init__(self, device_port: int) -> None:
        self._host_side = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._host_side.bind(("127.0.0.1", 0))
        self._device_side = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._device_side.connect(("127.0.0.1", device_port))
        for sock in (self._host_side, self._device_side):
            sock.settimeout(0.01)
        self.port = self._host_side.getsockname()[1]
        self.holding = threading.Event()
        self.held = threading.Event()
        self._queue: list[bytes] = []
        self._host: tuple[str, int] | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._upstream, daemon=True),
            threading.Thread(target=self._downstream, daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def release(self) -> None:
        with self._lock:
            self.holding.clear()
            queued, self._queue = self._queue, []
            for data in queued:
                self._host_side.sendto(data, self._host)

    def close(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(2)
        self._host_side.close()
        self._device_side.close()

    def _upstream(self) -> None:
        while not self._stop.is_set():
            try:
                data, self._host = self._host_side.recvfrom(4096)
            except TimeoutError:
                continue
            self._device_side.send(data)

    def _downstream(self) -> None:
        while not self._stop.is_set():
            try:
                data = self._device_side.recv(4096)
            except (TimeoutError, ConnectionRefusedError):
                continue
            with self._lock:
                if self.holding.is_set():
                    self._queue.append(data)
                    self.held.set()
                else:
                    self._host_side.sendto(data, self._host)


@contextmanager
def _rig(
    scratch,
    *,
    audit_log: AuditLog | None = None,
    relay: bool = False,
    ack_timeout_s: float = ACK_TIMEOUT_S,
    heartbeat_thread: bool = False,
    started: bool = True,
) -> Iterator[Any]:
    """The real emulator on UDP (its watchdog on a clock that does not move, so only the test
    decides when it disarms), a bridge (by default started, without a heartbeat thread),
    optionally a relay."""
    clock = FakeClock()
    with ExitStack() as stack:
        server = stack.enter_context(UdpTransport.bind("127.0.0.1", 0))
        if audit_log is not None:
            stack.callback(audit_log.close)
        emulator = FirmwareEmulator(
            BridgeSettings(transport="udp"), EmulatorSettings(), transport=server, clock=clock
        )
        port = server.local_address[1]
        held_relay = None
        if relay:
            held_relay = _HoldingRelay(port)
            stack.callback(held_relay.close)
            port = held_relay.port
        link = stack.enter_context(UdpTransport.connect("127.0.0.1", port))
        settings = BridgeSettings(
            port=port, dry_run=False, ack_timeout_s=ack_timeout_s, audit_log=scratch / "audit.jsonl"
        )
        bridge = StimulationBridge(
            settings,
            transport=link,
            audit_log=audit_log,
            clock=clock,
            heartbeat_thread=heartbeat_thread,
        )
        with emulator:
            try:
                yield (bridge.start() if started else bridge), emulator, held_relay
            finally:
                bridge.close()


_STOPS = {
    "disarm": lambda bridge: bridge.disarm("operator stop"),
    "fault": lambda bridge: bridge.disarm("wave stage fault", cause="fault"),
    "close": lambda bridge: bridge.close(),
}


@pytest.mark.parametrize("stop", sorted(_STOPS))
def test_a_train_admitted_before_disarm_is_not_sent_after_it(scratch, stop):
    log = _StallingAuditLog(scratch / "audit.jsonl")
    with _rig(scratch, audit_log=log) as (bridge, emulator, _):
        bridge.arm()
        request = _Thread(lambda: bridge.request_stimulation(REQUEST, OK))
        request.start()
        assert log.stalled.wait(DEADLINE_S), "the request never reached its transmit record"
        disarm = _Thread(lambda: _STOPS[stop](bridge))
        disarm.start()
        assert disarm.entered.wait(DEADLINE_S)
        took_effect = _wait_until(lambda: not bridge.armed, timeout=TAKES_EFFECT_S)
        log.release.set()
        decision = request.finish()
        disarm.finish()
        assert emulator.pulses == (), "a STIMULATE left after disarm() was entered"
        assert took_effect, f"{stop} waited for the request's lock before taking effect"
        # Withdrawn by the new arm generation, or (a loaded host holding the fsync past the
        # staleness limit) by its data's age, the check it meets first: nothing sent either way.
        assert decision.outcome == "blocked" and decision.withdrawn
        assert decision.interlocks in {("armed",), ("stale_data",)}, decision.reason
        if decision.interlocks == ("armed",):
            assert "disarmed after this train was admitted" in decision.reason
        assert not emulator.armed
    records = read_audit_log(scratch / "audit.jsonl")
    transmit = next(r for r in records if r["event"] == "transmit")
    final = next(r for r in records if r.get("request_id") == 1 and r["event"] == "decision")
    assert final["outcome"] == "blocked" and final["sequence"] == transmit["sequence"]
    assert final["interlocks"] == list(decision.interlocks)
    assert final["reasons"] == [decision.reason.removeprefix("armed: ")], final


@pytest.mark.parametrize("stop", ["disarm", "fault"])
def test_a_train_a_disarm_stopped_before_sending_no_longer_counts(scratch, stop):
    """Nothing left the host, so the train a disarm stopped gives back its place in refractory
    and the budgets: armed again at the same clock reading, the next request is sent."""
    log = _StallingAuditLog(scratch / "audit.jsonl")
    with _rig(scratch, audit_log=log) as (bridge, emulator, _):
        bridge.arm()
        full = bridge.status()
        request = _Thread(lambda: bridge.request_stimulation(REQUEST, OK))
        request.start()
        assert log.stalled.wait(DEADLINE_S), "the request never reached its transmit record"
        disarm = _Thread(lambda: _STOPS[stop](bridge))
        disarm.start()
        assert _wait_until(lambda: not bridge.armed, timeout=DEADLINE_S)
        log.release.set()
        stopped = request.finish()
        disarm.finish()
        left = bridge.status()
        assert (left.minute_budget_left, left.day_budget_left) == (
            full.minute_budget_left,
            full.day_budget_left,
        )
        assert stopped.withdrawn and stopped.interlocks == ("armed",), stopped.reason
        assert "withdrawn from refractory and budgets" in stopped.reason
        bridge.arm()
        again = bridge.request_stimulation(REQUEST, OK)  # the clock has not moved
        assert again.outcome == "sent", again.reason
        assert len(emulator.pulses) == 1


def _has_taken_effect(bridge: StimulationBridge, stop: str) -> Callable[[], bool]:
    """What each stop changes at once, without waiting for the device."""
    if stop == "close":
        return lambda: not bridge.running
    sample = ("corticast_bridge_disarms_total", {"cause": "operator"})
    return lambda: bridge.registry.get_sample_value(*sample) == 1


@pytest.mark.parametrize("stop", ["disarm", "close"])
def test_an_arm_in_flight_loses_to_a_disarm_or_close(scratch, stop):
    with _rig(scratch, relay=True) as (bridge, emulator, relay):
        relay.holding.set()
        arm_armed = [None]

        def arm_and_look() -> None:
            bridge.arm()
            arm_armed[0] = bridge.armed

        arm = _Thread(arm_and_look)
        arm.start()
        assert relay.held.wait(DEADLINE_S), "the ARM's reply never came"
        stopper = _Thread(getattr(bridge, stop))
        stopper.start()
        assert stopper.entered.wait(DEADLINE_S)
        took_effect = _wait_until(_has_taken_effect(bridge, stop), timeout=TAKES_EFFECT_S)
        relay.release()
        arm.finish()
        stopper.finish()
        assert isinstance(arm.error, RuntimeError), (
            f"arm() returned {arm.result!r} (armed: {arm_armed[0]}) though {stop}() was entered "
            "during its ARM exchange"
        )
        assert took_effect, f"{stop}() waited for the ARM exchange before taking effect"
        assert f"{stop}() was entered" in str(arm.error)
        assert not bridge.armed
        assert _wait_until(lambda: not emulator.armed), "the device was left armed"
    records = read_audit_log(scratch / "audit.jsonl")
    events = [r["event"] for r in records]
    assert "arm" not in events or events.index("arm") < events.index("arm_failed")
    (failed,) = [r for r in records if r["event"] == "arm_failed"]
    assert failed["reason"] == f"{stop}() was entered while the device was being armed"


def _stopping_held_after_its_flip(
    bridge: StimulationBridge, monkeypatch: pytest.MonkeyPatch, stop: str
) -> tuple[_Thread, threading.Event]:
    """``stop`` run on a thread of its own and held just after it flipped the host to
    disarmed, before it tells the device, until the returned event is set."""
    flipped, go = threading.Event(), threading.Event()
    real_disarm = bridge._gate.disarm
    stopping = _Thread(lambda: _STOPS[stop](bridge))

    def held_after_the_flip(*args: Any, **kwargs: Any) -> bool:
        was_armed = real_disarm(*args, **kwargs)
        if threading.current_thread() is stopping:
            flipped.set()
            go.wait(DEADLINE_S)
        return was_armed

    monkeypatch.setattr(bridge._gate, "disarm", held_after_the_flip)
    stopping.start()
    assert flipped.wait(DEADLINE_S), f"{stop} never flipped the host"
    return stopping, go


@pytest.mark.parametrize("stop", sorted(_STOPS))
def test_a_disarm_overtaken_by_close_still_reaches_the_device(scratch, monkeypatch, stop):
    """A disarm (or another close) that has flipped the host but not yet told the device when
    close() runs whole: close() found the host disarmed already and, before the fix, closed
    the link without a DISARM, and the overtaken one then found no link (a disarm called that
    "confirmed"). The device stayed armed (until its watchdog) after both had returned."""
    with _rig(scratch) as (bridge, emulator, _):
        bridge.arm()
        assert emulator.armed
        disarm, go = _stopping_held_after_its_flip(bridge, monkeypatch, stop)
        bridge.close()
        left_armed_by_close = emulator.armed
        go.set()
        done = disarm.finish()
        assert disarm.error is None
        assert not left_armed_by_close, "close() returned with the device still armed"
        assert not emulator.armed, f"the device is armed after {stop} returned {done!r}"
        assert stop == "close" or done.was_armed


def test_an_arm_after_close_was_entered_sends_no_arm(scratch, monkeypatch):
    """close() flips the host to closing before it waits for the exchange lock; an arm()
    that gets the lock in between must refuse at once, not open a session on the device
    (and then have to close it again)."""
    with _rig(scratch) as (bridge, emulator, _):
        closing, go = _stopping_held_after_its_flip(bridge, monkeypatch, "close")
        with pytest.raises(RuntimeError, match=r"^StimulationBridge is closed; arm\(\) needs"):
            bridge.arm()
        go.set()
        closing.finish()
        assert closing.error is None
        assert emulator.disarm_cause == DisarmCause.BOOT, "the device was armed after close()"


def test_a_disarm_that_comes_after_close_does_not_say_the_device_confirmed(scratch):
    """The daemon reads its bridge, then disarms it; the supervisor may close that bridge in
    between. Before the fix a disarm of a closed bridge found no link and answered "device
    confirmed", as in dry run, though nothing was told to a device that close() could not
    reach and that is still armed."""
    with _rig(scratch, ack_timeout_s=0.5) as (bridge, emulator, _):
        bridge.arm()
        emulator.stop()  # the device goes silent, armed: close()'s DISARM gets no reply
        assert emulator.armed
        bridge.close()
        done = bridge.disarm("operator stop")
        assert emulator.armed
        assert not done.device_confirmed, f"disarm() after close() returned {done!r}"


@pytest.mark.parametrize("stop", ["disarm", "fault"])
def test_a_disarm_an_arm_overtook_says_so_in_the_audit_log(scratch, monkeypatch, stop):
    """A later arm wins over an earlier disarm still in progress (held after its flip): the
    host and device end armed. The disarm's record is written after that arm's, so the log
    read alone shows a disarm with no arm after it and then trains; the record says it was
    overtaken, and by which arm."""
    with _rig(scratch) as (bridge, emulator, _):
        bridge.arm()
        disarm, go = _stopping_held_after_its_flip(bridge, monkeypatch, stop)
        bridge.arm()  # the operator arms again: the later arm wins
        go.set()
        done = disarm.finish()
        assert disarm.error is None
        assert done == Disarmed(was_armed=True, device_confirmed=False), "the device was not told"
        assert bridge.armed and emulator.armed
    records = [
        r for r in read_audit_log(scratch / "audit.jsonl") if r["event"] in ("arm", "disarm")
    ]
    events = [(r["event"], r.get("reason")) for r in records]
    held = events.index(("disarm", "operator stop" if stop == "disarm" else "wave stage fault"))
    assert [event for event, _ in events[held - 2 : held + 1]] == ["arm", "arm", "disarm"]
    assert records[held].get("overtaken_by_arm") is True, records[held]
    closing = records[-1]  # close()'s, of the arm that won: nothing overtook it
    assert closing["reason"] == "bridge closing" and "overtaken_by_arm" not in closing, closing


def test_a_close_while_start_starts_the_heartbeat_leaves_no_heartbeat_running(scratch, monkeypatch):
    """close() entered while start() is about to start the heartbeat thread: once both have
    returned, no heartbeat thread runs. start() started it after releasing the bridge's lock,
    so a close() in between stopped a thread not yet started, and it was then started on a
    closed bridge, beating on a closed link."""
    held, release = threading.Event(), threading.Event()
    start_thread = _HeartbeatWorker.start

    def held_start(worker: _HeartbeatWorker) -> _HeartbeatWorker:
        held.set()
        release.wait(DEADLINE_S)
        return start_thread(worker)

    monkeypatch.setattr(_HeartbeatWorker, "start", held_start)
    with _rig(scratch, heartbeat_thread=True, started=False) as (bridge, _, _):
        starting = _Thread(bridge.start)
        starting.start()
        assert held.wait(DEADLINE_S)
        closing = _Thread(bridge.close)
        closing.start()
        closing.join(TAKES_EFFECT_S)  # unfixed code finishes close() meanwhile
        release.set()
        starting.join(DEADLINE_S)
        closing.join(DEADLINE_S)
        assert starting.error is None and closing.error is None
        assert not bridge._heartbeat.running, "a heartbeat thread runs on a closed bridge"


@pytest.mark.parametrize("then", ["release", "close"])
def test_a_disarm_without_waiting_returns_while_a_request_is_stuck_and_tells_the_device_later(
    scratch, then, udp_write_timeout
):
    """A request held in its transmit record's write (a disk whose fsync hangs) holds the
    exchange lock: the daemon's supervisor's disarm returns all the same, the host disarmed,
    and the bridge's status is read meanwhile, where both used to wait for that lock (the
    supervisor stopped going round). The train held never leaves; once the lock is free the
    disarm's record is written and the device told, by the thread left waiting for it or by
    a close() that takes the lock first."""
    log = _StallingAuditLog(scratch / "audit.jsonl")
    with _rig(scratch, audit_log=log, ack_timeout_s=0.2) as (bridge, emulator, _):
        bridge.arm()
        request = _Thread(lambda: bridge.request_stimulation(REQUEST, OK))
        request.start()
        assert log.stalled.wait(DEADLINE_S), "the request never reached its transmit record"
        disarm = _Thread(
            lambda: bridge.disarm_without_waiting("waves fault: stalled", cause="fault")
        )
        disarm.start()
        returned = _wait_until(lambda: not disarm.is_alive(), WHILE_HELD_S)
        status = _Thread(bridge.status)
        status.start()
        status_read = _wait_until(lambda: not status.is_alive(), WHILE_HELD_S)
        device_armed_meanwhile = emulator.armed
        if then == "close":
            closing = _Thread(bridge.close)
            closing.start()
            assert closing.entered.wait(DEADLINE_S)
        log.release.set()
        decision = request.finish()
        assert returned, "disarm_without_waiting() waited for the stuck request"
        assert disarm.error is None
        assert disarm.result == Disarmed(was_armed=True, device_confirmed=False)
        assert status_read, "status() waited for the stuck request"
        assert status.result.armed is False
        assert status.result.last_disarm_reason == "waves fault: stalled"
        assert device_armed_meanwhile, "the device was told while the lock was held"
        # Withdrawn, its data aged past the staleness limit in the hold, or by the new arm
        # generation (whichever check it meets first): either way nothing was sent.
        assert decision.withdrawn and set(decision.interlocks) <= {"stale_data", "armed"}
        assert _wait_until(lambda: not emulator.armed), "the device was never told to disarm"
        assert emulator.pulses == ()
        if then == "close":
            closing.finish()
    records = read_audit_log(scratch / "audit.jsonl")
    events = [(r["event"], r.get("reason")) for r in records]
    assert ("disarm", "waves fault: stalled") in events, events
    if then == "close":
        assert events[-1][0] == "close", events
    # Written after the withdrawn train's decision, the disarm's record says it came first.
    (disarm,) = [r for r in records if r.get("reason") == "waves fault: stalled"]
    (withdrawn,) = [r for r in records if r["event"] == "decision"]
    assert records.index(withdrawn) < records.index(disarm)
    assert disarm.get("host_disarmed_at", math.inf) < withdrawn["time"], disarm


def test_a_disarm_without_waiting_returns_while_its_own_record_s_fsync_hangs(
    scratch, udp_write_timeout
):
    """The disk hangs at the disarm's own record, the exchange lock free (no request was in
    flight): the disarm returns all the same, the host disarmed, the device to be told once
    the record is written. Its record was written on the caller's thread: the daemon's
    supervisor stopped there, as it did behind a stuck request."""
    log = _StallingAuditLog(scratch / "audit.jsonl", event="disarm")
    with _rig(scratch, audit_log=log, ack_timeout_s=0.2) as (bridge, emulator, _):
        bridge.arm()
        disarm = _Thread(lambda: bridge.disarm_without_waiting("stream fault", cause="fault"))
        disarm.start()
        assert log.stalled.wait(DEADLINE_S), "the disarm's record was never written"
        returned = _wait_until(lambda: not disarm.is_alive(), WHILE_HELD_S)
        device_armed_meanwhile = emulator.armed
        log.release.set()
        assert returned, "disarm_without_waiting() waited for its own record's fsync"
        assert disarm.result == Disarmed(was_armed=True, device_confirmed=False)
        assert not bridge.armed and device_armed_meanwhile
        assert _wait_until(lambda: not emulator.armed), "the device was never told to disarm"
    events = [(r["event"], r.get("reason")) for r in read_audit_log(scratch / "audit.jsonl")]
    assert ("disarm", "stream fault") in events, events


def test_a_bounded_close_returns_while_a_request_is_stuck_and_finishes_later(
    scratch, udp_write_timeout
):
    """The daemon's stop closes the bridge ``bounded``: with a request held in its transmit
    record's write it returns once one exchange's time has passed, the host disarmed, and the
    rest of the close (the DISARM, the close record) follows once the write returns. The
    train held never leaves."""
    log = _StallingAuditLog(scratch / "audit.jsonl")
    with _rig(scratch, audit_log=log, ack_timeout_s=0.2) as (bridge, emulator, _):
        bridge.arm()
        request = _Thread(lambda: bridge.request_stimulation(REQUEST, OK))
        request.start()
        assert log.stalled.wait(DEADLINE_S), "the request never reached its transmit record"
        closing = _Thread(lambda: bridge.close(bounded=True))
        closing.start()
        returned = _wait_until(lambda: not closing.is_alive(), WHILE_HELD_S)
        device_armed_meanwhile = emulator.armed
        log.release.set()
        decision = request.finish()
        assert returned, "close(bounded=True) waited for the stuck request"
        assert closing.error is None and closing.result is False
        assert not bridge.armed and device_armed_meanwhile
        assert _wait_until(lambda: not emulator.armed), "the device was never told to disarm"
        assert decision.withdrawn and emulator.pulses == ()
        closed = _wait_until(lambda: read_audit_log(log.path)[-1]["event"] == "close")
        assert closed, "the close was never finished"
    events = [(r["event"], r.get("reason")) for r in read_audit_log(log.path)]
    assert ("disarm", "bridge closing") in events, events


def test_a_bounded_close_returns_while_its_own_record_s_fsync_hangs(scratch, udp_write_timeout):
    """The disk hangs at the close's own disarm record, no request in flight (the daemon's
    stop has stopped the wave stage first): the bounded close returns all the same, the host
    disarmed, and finishes (the DISARM, the close record) once the write returns."""
    log = _StallingAuditLog(scratch / "audit.jsonl", event="disarm")
    with _rig(scratch, audit_log=log, ack_timeout_s=0.2) as (bridge, emulator, _):
        bridge.arm()
        closing = _Thread(lambda: bridge.close(bounded=True))
        closing.start()
        assert log.stalled.wait(DEADLINE_S), "the close's disarm record was never written"
        returned = _wait_until(lambda: not closing.is_alive(), WHILE_HELD_S)
        device_armed_meanwhile = emulator.armed
        log.release.set()
        assert returned, "close(bounded=True) waited for its own record's fsync"
        assert closing.error is None and closing.result is False
        assert not bridge.armed and device_armed_meanwhile
        assert _wait_until(lambda: not emulator.armed), "the device was never told to disarm"
        closed = _wait_until(lambda: read_audit_log(log.path)[-1]["event"] == "close")
        assert closed, "the close was never finished"


def test_a_bounded_close_for_which_no_thread_can_be_had_closes_on_its_callers(scratch, monkeypatch):
    """Threads ran out (the daemon's stop after its start found none): the bounded close's
    thread could not start, and the RuntimeError left the close undone, the device not told
    DISARM, the audit log without its close record, and the daemon's stop ended there. Now
    the close runs on its caller's thread, as an unbounded one does."""
    with _rig(scratch) as (bridge, emulator, _):
        bridge.arm()
        assert _wait_until(lambda: emulator.armed), "the device was never armed"
        refused = thread_refused(monkeypatch, "corticast-bridge-close")
        assert bridge.close(bounded=True) is True
        assert refused and not bridge.armed and not emulator.armed
    records = read_audit_log(scratch / "audit.jsonl")
    assert records[-1]["event"] == "close", records[-3:]


class _StallingThenFailingAuditLog(_StallingAuditLog):
    """Stalls on the ``event`` record until released, then fails it, as a hung disk whose
    fsync ends in an I/O error."""

    def append(self, record: Any, **kwargs: Any) -> None:
        if record.get("event") == self.event:
            self.stalled.set()
            self.release.wait(DEADLINE_S)
            raise AuditLogError(f"{self.path}: [Errno 5] Input/output error")
        super().append(record, **kwargs)


def test_a_bounded_close_that_fails_after_returning_is_logged_naming_the_bridge_and_why(
    scratch, caplog, udp_write_timeout
):
    """The disk hangs at the close's summary of blocked requests, and fails it once the
    bounded close has returned False: the close's failure is logged at error, naming the
    bridge (its link and audit log) and the error. It was kept for a caller no longer
    waiting, and dropped: the close had failed and no one could know."""
    caplog.set_level(logging.ERROR, logger="corticast.bridge")
    log = _StallingThenFailingAuditLog(scratch / "audit.jsonl", event="blocked_summary")
    with _rig(scratch, audit_log=log, ack_timeout_s=0.2) as (bridge, _emulator, _):
        for _ in range(2):  # disarmed: the first is written in full, the second counted
            assert bridge.request_stimulation(REQUEST, OK).interlocks == ("armed",)
        closing = _Thread(lambda: bridge.close(bounded=True))
        closing.start()
        assert log.stalled.wait(DEADLINE_S), "the close never wrote its summary"
        closing.finish()
        log.release.set()
        assert closing.error is None and closing.result is False

        link = f"127.0.0.1:{bridge.settings.port}"

        def failure_logged() -> bool:
            return any(
                "Input/output error" in r.getMessage() and link in r.getMessage()
                for r in caplog.records
                if r.levelno == logging.ERROR
            )

        assert _wait_until(failure_logged), f"the close's failure was never logged: {caplog.text}"
        assert bridge.released


STATUS_CYCLES = 500
"""Arms and disarms under a status() read as often as the interpreter switches threads."""


def _consistent(status: BridgeStatus) -> bool:
    """The reason and cause of the last disarm are there exactly while the host is
    disarmed (``BridgeStatus``), and together."""
    no_reason = status.last_disarm_reason is None
    return status.armed == no_reason and no_reason == (status.last_disarm_cause is None)


def test_status_shows_the_armed_state_and_the_last_disarm_of_one_moment(scratch):
    """status(), read from another thread while the host is armed and disarmed over and over,
    shows armed exactly when it shows no last disarm, and a disarm's reason with its cause.
    It read the armed state, then the reason, then the cause, one by one and without a lock,
    so an arm or disarm in between (or a disarm between its own two assignments) showed the
    host disarmed with no reason, or armed with a stale one. The interpreter is made to
    switch threads as often as it can, and to let the reader run between two flips, so that
    each flip may come at any point of a read."""
    torn: list[BridgeStatus] = []
    reads = 0
    stop = threading.Event()
    switch_interval = sys.getswitchinterval()
    with _rig(scratch, ack_timeout_s=0.5) as (bridge, _emulator, _):

        def read() -> None:
            nonlocal reads
            while not stop.is_set():
                status = bridge.status()
                reads += 1
                if not _consistent(status):
                    torn.append(status)

        reader = threading.Thread(target=read, daemon=True)
        sys.setswitchinterval(1e-6)
        try:
            reader.start()
            for cycle in range(STATUS_CYCLES):
                bridge.arm()
                time.sleep(0)  # the reader's turn: the next flip comes at any point of its read
                cause = ("operator", "fault")[cycle % 2]
                bridge.disarm(f"{cause} stop {cycle}", cause=cause)
                time.sleep(0)
        finally:
            sys.setswitchinterval(switch_interval)
            stop.set()
            reader.join(DEADLINE_S)
    assert reads > 0
    assert not torn, f"{len(torn)} of {reads} statuses torn, e.g. {torn[:3]}"


def test_a_disarm_overlapping_another_reports_what_the_device_answered_as_the_first_does(scratch):
    """Two disarms without waiting enter while a request holds the exchange lock (its transmit
    record's write held), and the lock frees well within one exchange's time: both report the
    device's confirmation. The second, entered while the first's thread still waited for the
    lock, did not wait at all and answered "not confirmed" though the device confirmed
    moments later. It now waits until the first's wait ends, no longer, so overlapping disarms
    still wait one exchange's time in all."""
    log = _StallingAuditLog(scratch / "audit.jsonl")
    with _rig(scratch, audit_log=log) as (bridge, emulator, _):
        bridge.arm()
        request = _Thread(lambda: bridge.request_stimulation(REQUEST, OK))
        request.start()
        assert log.stalled.wait(DEADLINE_S), "the request never reached its transmit record"
        first = _Thread(lambda: bridge.disarm_without_waiting("stream fault", cause="fault"))
        first.start()
        assert _wait_until(lambda: len(bridge._pending) == 1), "the first disarm was not left"
        second = _Thread(lambda: bridge.disarm_without_waiting("operator stop"))
        second.start()
        left = _wait_until(lambda: len(bridge._pending) == 2 or not second.is_alive())
        log.release.set()
        request.finish()
        assert left, "the second disarm never came"
        first.finish()
        second.finish()
        assert first.error is None and second.error is None
        assert first.result.was_armed and not second.result.was_armed
        # Confirmed unless a loaded machine took one exchange's time (6 s) to free the lock.
        assert second.result.device_confirmed == first.result.device_confirmed, (
            f"the first disarm answered {first.result}, the second {second.result}"
        )
        assert _wait_until(lambda: not emulator.armed), "the device was never told to disarm"


def test_a_disarm_without_waiting_for_which_no_thread_can_be_had_still_reaches_the_device(
    scratch, monkeypatch
):
    """Threads ran out: the thread that finishes a disarm without waiting (its record, the
    device's DISARM) could not start, the disarm raised, and that thread, never started, stood
    for one that would: no later disarm without waiting (every fault's, every operator's)
    reached the device or the audit log. Now the caller finishes it, the exchange lock being
    free, and the next disarm starts its thread again."""
    with _rig(scratch) as (bridge, emulator, _):
        bridge.arm()
        assert _wait_until(lambda: emulator.armed), "the device was never armed"
        refused = thread_refused(monkeypatch, "corticast-bridge-disarm", once=True)
        first = bridge.disarm_without_waiting("stream fault", cause="fault")
        assert refused and first.was_armed and first.device_confirmed
        assert not emulator.armed
        bridge.arm()
        assert _wait_until(lambda: emulator.armed), "the device was never armed again"
        second = bridge.disarm_without_waiting("operator stop")
        assert second.was_armed
        assert _wait_until(lambda: not emulator.armed), "the second disarm never reached it"
    reasons = [r.get("reason") for r in read_audit_log(scratch / "audit.jsonl")]
    assert "stream fault" in reasons and "operator stop" in reasons, reasons


def test_a_disarm_in_background_for_which_no_thread_can_be_had_waits_for_the_next_one(
    scratch, monkeypatch
):
    """Threads ran out for the supervisor's disarm, which waits for nothing: it returns at
    once, the host disarmed, finishing nothing on its caller's thread (that could wait out a
    silent device's exchange); the next disarm's thread tells the device and records both."""
    with _rig(scratch) as (bridge, emulator, _):
        bridge.arm()
        assert _wait_until(lambda: emulator.armed), "the device was never armed"
        real = threading.Thread
        thread_refused(monkeypatch, "corticast-bridge-disarm")
        assert bridge.disarm_in_background("stream fault: stale")
        assert not bridge.armed and emulator.armed and len(bridge._pending) == 1
        monkeypatch.setattr(threading, "Thread", real)
        assert not bridge.disarm_in_background("markers fault: unread")
        assert _wait_until(lambda: not emulator.armed), "the next disarm never reached it"
        assert _wait_until(lambda: not bridge._pending), "the disarms left were never finished"
    reasons = [r.get("reason") for r in read_audit_log(scratch / "audit.jsonl")]
    assert "stream fault: stale" in reasons, reasons
