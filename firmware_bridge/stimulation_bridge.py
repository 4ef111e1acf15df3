"""The host end of the link to the stimulator: interlocks, framing, ACK deadlines, heartbeats.

Every request for stimulation comes through :meth:`StimulationBridge.request_stimulation`
and leaves with a :class:`Decision`, accounted for in the audit log before it is returned
(admitted trains in full and fsync'd; blocked requests in full once per kind and period, else
counted). Nothing reaches the device unless the host is armed (an operator action) and every
interlock passes; anything unexpected from the device, or no answer in time, disarms the host
first and is reported second. At start the refractory and budget history of earlier lifetimes
is read back from the audit log; a bridge that cannot read it refuses to arm.

This module holds the operator's and the loop's calls and the paths that join the parts:
arming, disarming (host first, then device), deciding on a request. The parts: the wire
exchange (:mod:`firmware_bridge._wire_exchange`), the armed state behind the send gate
(:mod:`firmware_bridge._send_gate`), accounting for decisions
(:mod:`firmware_bridge._decision_record`), heartbeats (:mod:`firmware_bridge._heartbeat`),
the history of earlier lifetimes (:mod:`firmware_bridge._train_history`).
"""

from __future__ import annotations

import functools
import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self

from prometheus_client import CollectorRegistry

from firmware_bridge._close_thread import CloseThread
from firmware_bridge._connect import open_transport
from firmware_bridge._decision_record import DecisionRecorder
from firmware_bridge._heartbeat import _HeartbeatWorker
from firmware_bridge._link_key import load_link_key
from firmware_bridge._send_gate import DisarmedBeforeSendError, SendGate
from firmware_bridge._train_history import checkpoint_fields, trains_in_log
from firmware_bridge._wire_exchange import Reply, WireExchange
from firmware_bridge.audit_log import AuditLog
from firmware_bridge.bridge_metrics import BridgeMetrics
from firmware_bridge.bridge_status import BridgeStatus
from firmware_bridge.config import BridgeSettings, InterlockSettings
from firmware_bridge.decision import Decision
from firmware_bridge.errors import (
    AckTimeoutError,
    AuditLogError,
    BridgeClosedError,
    BridgeError,
    DeviceFaultError,
    TransportError,
    describe_code,
    error_for_code,
)
from firmware_bridge.frame_decoder import FrameDecoder
from firmware_bridge.interlocks import Interlocks, Violation
from firmware_bridge.loop_health import LoopHealth
from firmware_bridge.messages import (
    Arm,
    DeviceStatus,
    Disarm,
    Heartbeat,
    Message,
    Nack,
    StatusRequest,
    Stimulate,
    type_of,
)
from firmware_bridge.stimulation_request import StimulationRequest
from firmware_bridge.transport import WRITE_TIMEOUT_S, Transport
from firmware_bridge.wire import clock_ms
from service.core.checks import check_type
from service.core.log_text import escape_controls

__all__ = ["DISARM_CAUSES", "BridgeStatus", "StimulationBridge"]

DISARM_CAUSES = ("operator", "fault")

_log = logging.getLogger("corticast.bridge")


@dataclass(frozen=True)
class Disarmed:
    """What a :meth:`StimulationBridge.disarm` did: whether the host was armed when it was
    entered, and whether the device confirmed (True too when there is no device: dry run;
    False without a link, before :meth:`StimulationBridge.start` or after
    :meth:`StimulationBridge.close`: nothing was told to a device that may be armed)."""

    was_armed: bool
    device_confirmed: bool


@dataclass
class _PendingDisarm:
    """A disarm whose record and DISARM are left to the thread that finishes disarms
    (:meth:`StimulationBridge.disarm_without_waiting`), and what it did once ``done``."""

    cause: str
    reason: str
    was_armed: bool
    at: float = field(default_factory=time.time)
    """Wall time the host was disarmed: the record, written later, says it."""
    answer_by: float = math.inf
    """Monotonic time its caller stops waiting: one exchange's time after the first disarm
    its thread takes up entered, for every disarm it takes up."""
    done: threading.Event = field(default_factory=threading.Event)
    device_confirmed: bool = False


class StimulationBridge:
    """Sends stimulation requests that pass every interlock, and nothing else.

    Parameters
    ----------
    settings
        Link, deadlines, heartbeat period, dry run, audit log path.
    interlocks
        Host-side limits (validated again here; they cannot be passed around).
    transport
        An open transport to use instead of opening the one ``settings`` names (tests,
        custom links). The caller keeps ownership and closes it. Not allowed in dry run.
    audit_log
        Where decisions go; default: a log the bridge opens at ``settings.audit_log`` (with
        the rotation settings) and closes itself. A log passed in is the caller's to close;
        the bridge sets the checkpoint its rotated files start with.
    registry
        Where the ``corticast_bridge_*`` metrics are registered (a fresh one if None).
    metrics
        Instruments to update instead of registering new ones: a bridge reopened after a
        failed start keeps reporting on the same series.
    clock
        Monotonic seconds for the interlocks (refractory, budgets). It must be the
        system-wide monotonic clock (the default) for the history read back at start to
        compare with it (:mod:`firmware_bridge._train_history`); it also spaces the warnings
        about bad frames from the device. ACK deadlines always use the real monotonic clock,
        because they wait on real sockets.
    heartbeat_thread
        Run the heartbeat thread (default). Tests that call :meth:`heartbeat` themselves turn
        it off; that can only make the device disarm sooner, never keep it armed.
    last_disarm
        (reason, cause) of the disarm that left the bridge this one replaces disarmed: reported
        as this one's last disarm until it arms, so a bridge reopened after a fault says so,
        not that it was disarmed at start. None: disarmed at start.

    Notes
    -----
    Lifecycle: :meth:`start` (opens the link, starts heartbeats), :meth:`arm`, any number of
    :meth:`request_stimulation`, :meth:`close` (disarms, idempotent); or use it as a context
    manager. The bridge starts disarmed. Every exchange with the device happens under one lock,
    so a heartbeat never interleaves with a STIMULATE and its ACK.

    Disarming never waits for that lock: a request may hold it for as long as the audit log
    takes to fsync, and an :meth:`arm` for a whole ARM exchange. The armed state lives behind a
    second, short lock (the *send gate*, :mod:`firmware_bridge._send_gate`) with an *arm
    generation* that every arm and disarm bumps. :meth:`disarm`, :meth:`close` and every fault
    flip the host to disarmed under the gate first; a request remembers the generation it was
    admitted under, and its STIMULATE is sent under the gate only if that generation is still
    current, so no STIMULATE leaves after :meth:`disarm` has been entered. An :meth:`arm`
    likewise arms only if no disarm came during its exchange. Telling the device DISARM then
    waits for the exchange lock: :meth:`disarm` waits for it; :meth:`disarm_without_waiting`
    (the daemon's operator disarm and stop, which must answer while a stage is stuck in a
    request) leaves the disarm's record and the DISARM to a thread of their own (or to
    :meth:`close`, if that takes the lock first), and waits for them only as long as one
    exchange may take; :meth:`disarm_in_background` (the daemon's supervisor's, for a fault)
    leaves them to that thread and does not wait.
    :meth:`status` reads no state behind that lock, so it never waits for it either, and
    ``close(bounded=True)`` (the daemon's stop) waits for it, and for its own records, no
    longer than a close with a silent device takes, leaving the rest to a thread of its own;
    :meth:`close_without_waiting` (the supervisor's, replacing a failed bridge) does not wait.
    """

    def __init__(
        self,
        settings: BridgeSettings | None = None,
        interlocks: InterlockSettings | None = None,
        *,
        transport: Transport | None = None,
        audit_log: AuditLog | None = None,
        registry: CollectorRegistry | None = None,
        metrics: BridgeMetrics | None = None,
        clock: Callable[[], float] = time.monotonic,
        heartbeat_thread: bool = True,
        last_disarm: tuple[str, str] | None = None,
    ) -> None:
        given = settings if settings is not None else BridgeSettings()
        check_type("settings", given, BridgeSettings)
        self.settings = BridgeSettings.model_validate(given.model_dump())
        if transport is not None:
            check_type("transport", transport, Transport)
            if self.settings.dry_run:
                raise ValueError(
                    "'transport' must be None in dry run: a dry-run bridge never talks to the "
                    "device (set dry_run = false to use a transport)"
                )
        if audit_log is not None:
            check_type("audit_log", audit_log, AuditLog)
        self._interlocks = Interlocks(interlocks, clock)
        self.registry = registry if registry is not None else CollectorRegistry()
        self.metrics = metrics if metrics is not None else BridgeMetrics(self.registry)
        self.metrics.dry_run.set(int(self.settings.dry_run))

        self._lock = threading.RLock()
        self._pending_lock = threading.Lock()
        self._pending: list[_PendingDisarm] = []
        self._finisher: threading.Thread | None = None
        """The thread that finishes the disarms pending (:meth:`disarm_without_waiting`),
        while it has yet to take them up."""
        self._finisher_answer_by = math.inf
        """When the callers of the disarms that thread takes up stop waiting for it."""
        if last_disarm is not None:
            check_type("last_disarm[0]", last_disarm[0], str)
            if last_disarm[1] not in (*DISARM_CAUSES, "start"):
                raise ValueError(
                    f"'last_disarm[1]' must be one of {(*DISARM_CAUSES, 'start')}, got "
                    f"{last_disarm[1]!r}"
                )
        self._gate = SendGate(self.metrics, last_disarm)
        self._given_transport = transport
        self._transport: Transport | None = None
        self._decoder: FrameDecoder | None = None
        self._own_audit = audit_log is None
        self._audit = (
            audit_log
            if audit_log is not None
            else AuditLog(
                self.settings.audit_log,
                max_bytes=self.settings.audit_log_max_bytes,
                keep_files=self.settings.audit_log_keep_files,
            )
        )
        self._audit.set_checkpoint(self._checkpoint)
        self._decisions = DecisionRecorder(
            self._audit, self.metrics, self.settings.audit_blocked_period_s, self.settings.dry_run
        )
        self._history_error: str | None = None
        self._heartbeat = (
            _HeartbeatWorker(self.heartbeat, self.settings.heartbeat_period_s, self._on_stopped)
            if heartbeat_thread and not self.settings.dry_run
            else None
        )
        key_file = self.settings.link_key_file
        self._key = load_link_key(key_file) if key_file is not None else None
        self._wire = WireExchange(self.metrics, self._key, self.settings.ack_timeout_s, clock)
        self._session = 0  # the device's arm session, from its ACK of our latest ARM
        self._started = False
        self._closed = False
        self._released = threading.Event()
        """Set once a close has let go of the link and the audit log (:attr:`released`)."""
        self._closing_lock = threading.Lock()
        self._closing: CloseThread | None = None
        """The close running on its own thread, once one was started."""
        self._connected = False
        self._device_armed: bool | None = None
        self._update_budget_gauges()

    # ----------------------------------------------------------------- lifecycle
    def start(self) -> Self:
        """Open the link (unless dry run), record the limits in force, start heartbeats.

        Raises
        ------
        TransportError
            If the serial port or socket cannot be opened.
        RuntimeError
            If already started, or closed.
        """
        with self._lock:
            if self._closed:
                raise BridgeClosedError("StimulationBridge is closed; create a new one")
            if self._started:
                raise RuntimeError("StimulationBridge is already started; call close() first")
            if not self.settings.dry_run:
                transport = self._given_transport or open_transport(self.settings, role="host")
                self._transport = transport
                self._decoder = FrameDecoder(datagram=transport.datagram, key=self._key)
            restored = self._restore_history()
            try:
                self._audit.append(
                    {
                        "event": "start",
                        "dry_run": self.settings.dry_run,
                        "transport": self.settings.transport,
                        "interlocks": self._interlocks.settings.model_dump(),
                        "charge_density_limit_uc_cm2": self._interlocks.density_limit_uc_cm2,
                        "restored_trains": restored,
                        "clock": self._clock_for_the_record(),
                        "history_error": self._history_error,
                    }
                )
            except AuditLogError:
                # No durable record of the limits in force: do not run at all.
                transport, self._transport = self._transport, None
                if transport is not None and transport is not self._given_transport:
                    transport.close()
                raise
            self._started = True
            # Under the lock: a close() entered meanwhile waits, and then stops this thread,
            # instead of finding none to stop and leaving it to start on a closed bridge.
            if self._heartbeat is not None:
                self._heartbeat.start()
        return self

    def close(self, *, bounded: bool = False) -> bool:
        """Disarm (telling the device), stop heartbeats, release the link; idempotent.

        The host is disarmed, and refuses to arm again, before anything waits for a request
        or an ARM exchange in progress. ``bounded`` (the daemon's stop) runs the rest on a
        thread of its own and waits for it no longer than a close with a silent device takes
        (:attr:`close_bound_s`, counted from when the close began): a request stuck in an audit
        log fsync, or the close's own records' fsync on a hung disk, would otherwise hold it
        until systemd's SIGKILL (or for ever, from a terminal). A close already running on its
        own thread (:meth:`close_without_waiting`) is waited for, not started again. Past the
        bound False is returned and the close goes on; meanwhile the device, hearing no
        heartbeat, disarms itself at its watchdog's timeout. True once closed. Where no
        thread can be had for it (threads ran out), the close runs on the caller's, unbounded:
        a close that may wait beats none, the device untold and the audit log left open.
        """
        was_armed = self._gate.disarm("operator", "bridge closing", quiet=True, closing=True)
        if not bounded:
            self._close_when_free(was_armed)
            return True
        try:
            closing = self._close_on_own_thread(was_armed, self._log_close_failure)
        except RuntimeError as err:  # its thread could not start
            _log.error("no thread for the bridge's close (%s): closing on this one", err)
            self._close_when_free(was_armed)
            return True
        if closing.wait_until(closing.began + self.close_bound_s):
            return True
        _log.error(
            "closing the stimulator bridge is held up (a request stuck in an audit log "
            "write, or the disk hung?): the host is disarmed; the DISARM and the close "
            "follow when they can"
        )
        return False

    def close_without_waiting(
        self, on_failure: Callable[[BaseException], None] | None = None
    ) -> None:
        """Disarm the host at once and close on a thread of its own, waiting for nothing.

        For the daemon's supervisor replacing a failed bridge: a bounded close on its thread
        stopped its rounds, and its watchdog pings, for up to :attr:`close_bound_s` (19 s at
        the longest ACK deadline, past systemd's ``WatchdogSec``); it reads :attr:`released`
        and :attr:`close_held_up` instead. A close that fails is handed to ``on_failure``
        unless a :meth:`close` waiting for it raises it (default: logged at error).
        """
        was_armed = self._gate.disarm("operator", "bridge closing", quiet=True, closing=True)
        self._close_on_own_thread(was_armed, on_failure or self._log_close_failure)

    @property
    def close_bound_s(self) -> float:
        """How long a close with a silent device takes (:func:`close_bound_s`)."""
        return close_bound_s(self.settings)

    @property
    def close_held_up(self) -> bool:
        """Whether a close on its own thread has run past :attr:`close_bound_s` unfinished:
        stuck (behind a hung disk), not merely slow."""
        closing = self._closing
        return (
            closing is not None
            and not closing.done
            and time.monotonic() > closing.began + self.close_bound_s
        )

    def _close_on_own_thread(
        self, was_armed: bool, on_failure: Callable[[BaseException], None]
    ) -> CloseThread:
        """The close on its own thread: started by the first caller, the same for the rest."""
        with self._closing_lock:
            if self._closing is None:
                self._closing = CloseThread(
                    functools.partial(self._close_when_free, was_armed), on_failure
                )
            return self._closing

    def _log_close_failure(self, error: BaseException) -> None:
        """A close that failed once no caller waited for it: logged, or no one would know."""
        _log.error(
            "closing the stimulator bridge on %s failed after its caller stopped waiting: %s: %s",
            self.link_name,
            type(error).__name__,
            escape_controls(str(error)),
            exc_info=error,
        )

    @property
    def link_name(self) -> str:
        """The link and audit log, which name this bridge in a log line."""
        link = self.settings
        where = link.serial_port if link.transport == "serial" else f"{link.host}:{link.port}"
        name = "no link (dry run)" if link.dry_run else f"{link.transport} {where}"
        return f"{name}, audit log {self._audit.path}"

    def _close_when_free(self, was_armed: bool) -> None:
        """:meth:`close` from its wait for the exchange lock on."""
        self._lock.acquire()
        self._close_held(was_armed)

    def _close_held(self, was_armed: bool) -> None:
        """:meth:`close` from when it holds the exchange lock, which this releases."""
        try:
            if self._closed:
                return
            self._finish_pending()  # before the log and the link are closed
            if was_armed:
                self._finish_disarm("operator", "bridge closing", was_armed)
            elif self._device_armed:
                # A disarm or fault flipped the host first and has yet to tell the device (it
                # waits for this lock): once the link below is closed it could not.
                self._disarm_device()
            self._closed = True
        finally:
            self._lock.release()
        try:
            if self._heartbeat is not None:
                self._heartbeat.stop(timeout=self.settings.ack_timeout_s + 1.0)
            with self._lock:
                try:
                    transport, self._transport = self._transport, None
                    if transport is not None and transport is not self._given_transport:
                        transport.close()
                    self._set_connected(False)
                    if self._started:
                        self._decisions.write_blocked_summary()
                        self._audit_quietly(
                            {"event": "close", "clock": self._clock_for_the_record()}
                        )
                finally:  # whatever failed: held, the log could be opened by no other bridge
                    if self._own_audit:
                        self._audit.close()
        finally:
            self._released.set()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def running(self) -> bool:
        """Started, and :meth:`close` not entered."""
        return self._started and not (self._gate.closing or self._closed)

    @property
    def released(self) -> bool:
        """Whether a close has let go of the link and the audit log, so that another bridge
        may open them: a bounded close that returned False is still at it on a thread of its
        own (``service.daemon.supervisor`` opens the failed bridge's successor only then)."""
        return self._released.is_set()

    @property
    def armed(self) -> bool:
        return self._gate.armed

    # ----------------------------------------------------------------- operator actions
    def arm(self) -> None:
        """Allow stimulation: the device must acknowledge ARM and report itself armed.

        Raises
        ------
        RuntimeError
            If not started, closing, or the heartbeat thread has failed; or if :meth:`disarm`
            or :meth:`close` was entered while the device was being armed (the bridge stays
            disarmed and the device is told to disarm).
        AckTimeoutError, TransportError
            If the device did not answer in time.
        FirmwareError
            The class for the device's NACK code, if it refused.
        AuditLogError
            If the refractory and budget history could not be read back from the audit log
            at start (the message names the file), or the arm cannot be recorded.
        """
        with self._lock:
            self._require_running("arm")
            if self._heartbeat is not None:
                self._heartbeat.raise_if_failed()
            armed, generation = self._gate.state()
            if armed:
                return
            if self._history_error is not None:
                self._audit_quietly({"event": "arm_failed", "reason": self._history_error})
                raise AuditLogError(self._history_error)
            if not self.settings.dry_run:
                try:
                    reply = self._exchange(Arm(_send_time_ms()))
                    if isinstance(reply, Nack):
                        raise error_for_code(reply.code)(
                            f"device refused ARM: {describe_code(reply.code)}"
                        )
                    if not reply.armed:
                        raise DeviceFaultError("device acknowledged ARM but reports disarmed")
                    self._session = reply.session
                except BridgeError as err:
                    self._audit_quietly({"event": "arm_failed", "reason": str(err)})
                    self._disarm_device()  # in case it armed and only the ACK was lost
                    raise
            try:  # the session the device opened: every STIMULATE until the next disarm carries it
                self._audit.append(
                    {"event": "arm", "dry_run": self.settings.dry_run, "session": self._session}
                )
            except AuditLogError:
                self._disarm_device()  # never armed without a record of it
                raise
            self._set_armed(generation)
            _log.warning("stimulation ARMED%s", " (dry run)" if self.settings.dry_run else "")

    def disarm(self, reason: str = "operator request", *, cause: str = "operator") -> Disarmed:
        """Forbid stimulation now, then tell the device; never raises for the device's sake.

        ``cause`` is ``"operator"`` (a person, or the daemon stopping) or ``"fault"`` (the
        daemon found a fault in another stage); it labels the disarm in the metrics.

        Returns
        -------
        Disarmed
            Whether the host was armed, and whether the device confirmed.
        """
        was_armed = self._disarm_host(reason, cause)
        with self._lock:
            return Disarmed(was_armed, self._finish_disarm(cause, reason, was_armed))

    def disarm_without_waiting(
        self, reason: str = "operator request", *, cause: str = "operator"
    ) -> Disarmed:
        """Forbid stimulation now, as :meth:`disarm` does, but never wait on a stuck holder of
        the exchange lock (a request whose audit log fsync does not return).

        For the daemon's operator disarm and stop, which waiting there never answered (the
        host disarmed all the same), and which report whether the device confirmed. The host is
        disarmed at once, before anything waits, so no STIMULATE leaves after this call (a
        request held inside finds its generation gone when it comes to send). The disarm's
        record and the device's DISARM are left to a thread of their own, which takes the
        lock (or :meth:`close`, if that takes it first), and waited for as long as one
        exchange may take (the ACK deadline after a serial write's timeout; one entered while
        an earlier one's wait goes on, until that wait ends, so that both report the device's
        answer): a disk that hangs at the disarm's own record's fsync holds up that thread,
        not the caller. Meanwhile the device, hearing no heartbeat (its thread waits for the
        same lock), disarms itself at its watchdog's timeout.

        Returns
        -------
        Disarmed
            Whether the host was armed, and whether the device confirmed (False where the
            DISARM was left to wait for the lock).
        """
        was_armed = self._disarm_host(reason, cause)
        pending = self._finish_later(cause, reason, was_armed, finish_here=True)
        if not pending.done.wait(max(0.0, pending.answer_by - time.monotonic())):
            _log.error(
                "a disarm's record and DISARM did not finish within one exchange's time (a "
                "request stuck in an audit log write, or the disk hung?): the host is "
                "disarmed; they follow when they can"
            )
        return Disarmed(was_armed, pending.device_confirmed)

    def disarm_in_background(self, reason: str, *, cause: str = "fault") -> bool:
        """Forbid stimulation now, as :meth:`disarm_without_waiting` does, and wait for nothing:
        the disarm's record and the device's DISARM are left to the thread that finishes
        disarms, which logs how they went (the disarm's warning; at error, a device that did
        not confirm). Returns whether the host was armed.

        For the daemon's supervisor and the failure callbacks of the stages it watches, which
        read no answer: waiting one exchange for a device that stopped answering (6 s at the
        longest ACK deadline) held up a round with faults for most of systemd's
        ``WatchdogSec``, and its next round's ping past it. Should no thread be had, the
        record and DISARM wait for the next disarm's thread or the close, as
        :meth:`disarm_without_waiting`'s may, and meanwhile the heartbeat tells an armed
        device to disarm.
        """
        was_armed = self._disarm_host(reason, cause)
        self._finish_later(cause, reason, was_armed, finish_here=False)
        return was_armed

    def audit_writing_for(self) -> float | None:
        """Seconds the audit log's write in progress has taken, None when none is: names the
        disk as the cause of a stage stuck in a request (``service.daemon.stalls``)."""
        return self._audit.writing_for()

    # ----------------------------------------------------------------- the loop's calls
    def request_stimulation(
        self,
        request: StimulationRequest,
        health: LoopHealth,
        *,
        on_send: Callable[[], None] | None = None,
    ) -> Decision:
        """Judge ``request`` against every interlock; send it only if all pass and not dry run.

        ``on_send`` is called, under the bridge's lock, once the request has passed every
        interlock and its transmit record is durable, just before the STIMULATE is handed to
        the link: from then on the device may deliver the train, whatever the verdict (the
        loop starts blanking the artefact there). Not called when nothing is to be sent. An
        exception from it is a fault: the bridge disarms, sends nothing and raises it.

        Returns
        -------
        Decision
            Already in the audit log. ``sent`` only when the device ACKed within the deadline;
            a NACK, a missing ACK or a broken link disarms the bridge.
            A bridge whose heartbeat thread has failed can send nothing (the device's
            watchdog would disarm it): such a request is ``blocked`` by the ``armed``
            interlock, its reason naming the failure, the host disarmed first.

        Raises
        ------
        TypeError
            If ``request`` or ``health`` is not of its type (nothing is recorded).
        AuditLogError
            If the decision (or, before sending, the transmit record) cannot be made durable;
            the bridge disarms.
        BridgeClosedError
            A ``RuntimeError``: if closed; nothing is recorded or sent.
        """
        check_type("request", request, StimulationRequest)
        check_type("health", health, LoopHealth)
        entered = time.monotonic()  # the wait for the lock ages the data too
        with self._lock:
            if self._closed:
                raise BridgeClosedError("StimulationBridge is closed; create a new one")
            try:
                return self._decide(request, health, entered, on_send, self._cannot_send())
            except BaseException as err:
                self._fault(f"error while handling a request: {type(err).__name__}: {err}")
                raise

    def heartbeat(self) -> bool:
        """Send one HEARTBEAT and reconcile with the device's armed state.

        Called by the heartbeat thread every period. If the device does not answer in time,
        refuses, or reports itself disarmed while the host is armed (its watchdog fired, or a
        fault), or armed in a session other than the one the host's ARM opened, the host
        disarms. If the device is armed while the host is not, it is told to
        disarm.

        Returns
        -------
        bool
            True if the device acknowledged.
        """
        with self._lock:
            if self._closed or self._transport is None:
                return False
            try:
                reply = self._exchange(Heartbeat(_send_time_ms()))
            except BridgeError:
                self.metrics.heartbeat_failures.inc()
                return False
            finally:
                self._update_budget_gauges()
            if isinstance(reply, Nack):
                self.metrics.heartbeat_failures.inc()
                self._fault(f"device refused HEARTBEAT: {describe_code(reply.code)}")
                return False
            if self._gate.armed and not reply.armed:
                self._fault(
                    "device reports itself disarmed (heartbeat watchdog or device fault); "
                    "host disarmed too"
                )
            elif self._gate.armed and reply.session != self._session:
                # The device closed our session and opened another (an ARM we did not send
                # now, or a reboot): no STIMULATE of ours can match it, and it is not our arm.
                self._fault(
                    f"device is armed in session {reply.session:08x}, not the host's "
                    f"{self._session:08x} (an ARM the host did not send now); host disarmed too"
                )
            elif reply.armed and not self._gate.armed:
                self._disarm_device()
            return True

    def query_device(self) -> DeviceStatus:
        """Ask the device for its STATUS (armed state, counters, its own budgets left).

        Raises
        ------
        RuntimeError
            In dry run or before :meth:`start`.
        AckTimeoutError, TransportError, FirmwareError
            If the device did not answer properly (the bridge disarms if armed).
        """
        with self._lock:
            self._require_running("query_device")
            if self._transport is None:
                raise RuntimeError("query_device() needs a device; this bridge is in dry run")
            reply = self._exchange(StatusRequest())
            if isinstance(reply, Nack):
                self._fault(f"device refused STATUS: {describe_code(reply.code)}")
                raise error_for_code(reply.code)(
                    f"device refused STATUS: {describe_code(reply.code)}"
                )
            return reply

    def status(self) -> BridgeStatus:
        """The host's state, budgets left and outcome counts (no device exchange).

        Read without the exchange lock (the budgets behind the interlocks' own lock): the
        daemon's supervisor and readiness read it every round, and must not stop behind a
        request stuck in an audit log fsync. The armed state and the last disarm's reason and
        cause are the send gate's one view (:class:`~firmware_bridge._send_gate.GateView`),
        so they are never those of two different arms and disarms, nor disarmed with no
        reason yet."""
        minute, day = self._interlocks.budget_left()
        error = self._heartbeat.error if self._heartbeat is not None else None
        gate = self._gate.view
        return BridgeStatus(
            running=self.running,
            armed=gate.armed,
            dry_run=self.settings.dry_run,
            connected=self._connected,
            device_armed=self._device_armed,
            last_disarm_reason=gate.last_disarm_reason,
            last_disarm_cause=gate.last_disarm_cause,
            minute_budget_left=minute,
            day_budget_left=day,
            requests=self._decisions.requests,
            outcomes=self._decisions.outcomes,
            error=None if error is None else f"{type(error).__name__}: {error}",
            arming_refused=self._history_error,
        )

    # ----------------------------------------------------------------- decisions
    def _decide(
        self,
        request: StimulationRequest,
        health: LoopHealth,
        entered: float,
        on_send: Callable[[], None] | None,
        cannot_send: str | None,
    ) -> Decision:
        """Admit, record, send. ``health``'s data age was measured when the request was made;
        every wait since (the lock behind a heartbeat's exchange, the transmit record's fsync)
        is added, so the staleness interlock judges the data's age at admission and again just
        before the STIMULATE leaves. ``cannot_send`` (:meth:`_cannot_send`) blocks the request
        as disarmed, saying why instead of asking an operator to arm."""
        request_id = self._decisions.next_request_id()
        armed, generation = self._gate.state()
        judged = time.monotonic()
        health = health.aged_by(judged - entered)  # the age at admission, the lock wait in it
        admission = self._interlocks.admit(request, health, armed=armed and cannot_send is None)
        # The device's deadline counts from here, so a slow transmit fsync cannot hide.
        sent_at_ms = _send_time_ms()
        common: dict[str, Any] = {
            "request_id": request_id,
            "clock": admission.clock,
            "request": request,
            "health": health,
        }
        if not admission.admitted:
            violations = admission.violations
            if cannot_send is not None:
                violations = tuple(
                    Violation(v.interlock, cannot_send) if v.interlock == "armed" else v
                    for v in violations
                )
            reason = "; ".join(f"{v.interlock}: {v.reason}" for v in violations)
            return self._record(
                Decision(outcome="blocked", violations=violations, reason=reason, **common)
            )
        if self.settings.dry_run:
            return self._record(
                Decision(outcome="dry_run", reason="dry run: passed every interlock", **common)
            )
        sequence = self._wire.next_sequence()
        self._decisions.write_blocked_summary()
        # The train and the data it was decided on are in the transmit record itself: it is
        # durable before the STIMULATE leaves, the decision only after the ACK (or never, if the
        # process dies in between), and an audit must link every delivered train to its basis.
        self._audit.append(
            {
                "event": "transmit",
                "request_id": request_id,
                "sequence": sequence,
                "clock": admission.clock,
                "request": request.to_record(),
                "health": health.to_record(),
            }
        )
        message = Stimulate(
            request.channels,
            request.amplitude_ua,
            request.phase_width_us,
            request.frequency_hz,
            request.train_duration_ms,
            request.electrode_area_cm2,
            self._session,
            sent_at_ms,
        )
        if stale := self._interlocks.stale_data(health.aged_by(time.monotonic() - judged)):
            return self._withdraw(
                Violation("stale_data", f"before sending: {stale}"),
                f"stale_data: before sending: {stale}; nothing was sent",
                sequence,
                common,
            )
        if on_send is not None:
            on_send()
        try:
            reply = self._exchange(message, sequence, armed_generation=generation)
        except DisarmedBeforeSendError as err:
            return self._withdraw(Violation("armed", str(err)), f"armed: {err}", sequence, common)
        except BridgeError as err:
            # _exchange has disarmed already (the host was armed to get here).
            return self._record(
                Decision(outcome="failed", reason=str(err), sequence=sequence, **common)
            )
        if isinstance(reply, Nack):
            reason = f"device refused STIMULATE: {describe_code(reply.code)}"
            self._fault(reason)
            return self._record(
                Decision(
                    outcome="rejected",
                    reason=reason,
                    sequence=sequence,
                    error_code=reply.code,
                    **common,
                )
            )
        decision = self._record(
            Decision(
                outcome="sent", reason="acknowledged by the device", sequence=sequence, **common
            )
        )
        if not reply.armed:
            self._fault("device reports itself disarmed after delivering a train")
        return decision

    def _withdraw(
        self, violation: Violation, reason: str, sequence: int, common: dict[str, Any]
    ) -> Decision:
        """Block a train admitted (its transmit record written) whose STIMULATE never left:
        it no longer counts against refractory and budgets, here and, from its decision
        record, after a restart (:mod:`firmware_bridge._train_history`)."""
        self._interlocks.withdraw(common["clock"])
        decision = Decision(
            outcome="blocked", violations=(violation,), reason=reason, sequence=sequence, **common
        )
        return self._record(decision)

    def _record(self, decision: Decision) -> Decision:
        """Account for ``decision`` (:class:`DecisionRecorder`); an unwritable audit log
        disarms and raises."""
        try:
            self._decisions.record(decision)
        except AuditLogError as err:
            self._fault(f"audit log failed: {err}")
            raise
        self._update_budget_gauges()
        return decision

    # ----------------------------------------------------------------- history
    def _restore_history(self) -> int:
        """Count the trains of earlier lifetimes (refractory, budgets) from the audit log.

        A log that cannot be read leaves the history unknown: the bridge starts, but refuses
        to arm until the log is repaired (see :meth:`arm`). Returns the trains restored.
        """
        try:
            trains = trains_in_log(self._audit, self._interlocks.now())
        except AuditLogError as err:
            self._history_error = (
                f"refractory and budgets cannot be rebuilt from the audit log, so arming is "
                f"refused until it can be read: {err}"
            )
            _log.error("%s", self._history_error)  # status: arming_refused, not a disarm
            return 0
        self._interlocks.restore(trains)
        self._update_budget_gauges()
        if trains:
            _log.warning("%d train(s) of the last day restored from the audit log", len(trains))
        return len(trains)

    def _clock_for_the_record(self) -> float | None:
        """The interlock clock now, for a start or close record (None if not finite): with
        the record's wall time it places this boot's trains after a reboot, and a close record
        is often the last of a boot, written after NTP has set the wall clock right
        (:mod:`firmware_bridge._train_history`)."""
        now = self._interlocks.now()
        return now if math.isfinite(now) else None

    def _checkpoint(self) -> dict[str, Any]:
        """The record each new audit file starts with (called under the audit log's lock)."""
        if self._history_error is not None:
            return {"history_error": self._history_error}
        return checkpoint_fields(self._interlocks.recent_trains(), self._interlocks.now())

    # ----------------------------------------------------------------- disarming
    def _disarm_host(self, reason: str, cause: str) -> bool:
        """Check a disarm's arguments and flip the host to disarmed (the send gate); returns
        whether it was armed."""
        check_type("reason", reason, str)
        if cause not in DISARM_CAUSES:
            raise ValueError(f"'cause' must be one of {DISARM_CAUSES}, got {cause!r}")
        return self._gate.disarm(cause, reason, quiet=cause == "fault")

    def _finish_later(
        self, cause: str, reason: str, was_armed: bool, *, finish_here: bool
    ) -> _PendingDisarm:
        """Leave a disarm's record and DISARM to a thread that takes the exchange lock; one
        such thread waiting for it finishes every disarm left meanwhile. Where none can be
        started, ``finish_here`` says whether the caller, which waits anyway, finishes them.

        Each is answered by when the first that thread takes up is (one exchange's time after
        it entered): a disarm that overlaps it then reports what the device answered as the
        first does, and callers whose disarms overlap still wait one exchange's time in all,
        not one each (nor any once that time has passed: the lock's holder is stuck)."""
        pending = _PendingDisarm(cause, reason, was_armed)
        with self._pending_lock:
            self._pending.append(pending)
            if self._finisher is not None:
                pending.answer_by = self._finisher_answer_by
                return pending
            wait_s = self.settings.ack_timeout_s + WRITE_TIMEOUT_S
            pending.answer_by = self._finisher_answer_by = time.monotonic() + wait_s
            self._finisher = finisher = threading.Thread(
                target=self._finish_when_free, name="corticast-bridge-disarm", daemon=True
            )
        try:
            finisher.start()
        except RuntimeError as err:  # threads ran out (a process limit, memory)
            self._finish_without_a_thread(finisher, pending, err, finish_here)
        return pending

    def _finish_without_a_thread(
        self,
        finisher: threading.Thread,
        pending: _PendingDisarm,
        err: RuntimeError,
        finish_here: bool,
    ) -> None:
        """The thread to finish the disarms pending could not start: one never started must
        not stand for one that will (no disarm after it would ever reach the device or the
        audit log), so the next disarm may start one again; meanwhile a caller that waits
        anyway (``finish_here``) finishes them itself if the exchange lock comes free within
        that time, else they wait for the next disarm's thread or the close."""
        with self._pending_lock:
            if self._finisher is finisher:
                self._finisher = None
        if not finish_here:
            _log.error("no thread to finish a disarm (%s): it waits for the next one's", err)
            return
        _log.error("no thread to finish a disarm (%s): finishing it on the caller's", err)
        if self._lock.acquire(timeout=max(0.0, pending.answer_by - time.monotonic())):
            try:
                self._finish_pending()
            finally:
                self._lock.release()

    def _finish_when_free(self) -> None:
        with self._lock:
            self._finish_pending()

    def _finish_pending(self) -> None:
        """Finish the disarms left to wait for the exchange lock (lock held)."""
        with self._pending_lock:
            pending, self._pending, self._finisher = self._pending, [], None
        for disarm in pending:
            try:
                disarm.device_confirmed = self._finish_disarm(
                    disarm.cause, disarm.reason, disarm.was_armed, disarm.at
                )
            except Exception:  # one that fails must not keep the others from the device
                _log.exception("could not finish the disarm %r", disarm.reason)
            finally:
                disarm.done.set()

    def _fault(self, reason: str) -> None:
        """Something went wrong: disarm first (host, then device), report second."""
        was_armed = self._gate.disarm("fault", reason, quiet=True)
        if was_armed:
            _log.error("FAULT, disarming: %s", escape_controls(reason))
        self._finish_disarm("fault", reason, was_armed)

    def _set_armed(self, generation: int) -> None:
        """Arm the host, unless a disarm or close was entered since ``generation`` was read.

        Raises
        ------
        RuntimeError
            If one was: the device (which acknowledged ARM) is told to disarm first.
        """
        lost_to = self._gate.arm(generation)
        if lost_to is None:
            return
        reason = f"{lost_to}() was entered while the device was being armed"
        self._audit_quietly({"event": "arm_failed", "reason": reason})
        self._disarm_device()
        raise RuntimeError(f"arm() did not arm: {reason}; the bridge stays disarmed")

    def _finish_disarm(
        self, cause: str, reason: str, was_armed: bool, host_disarmed_at: float | None = None
    ) -> bool:
        """After :meth:`SendGate.disarm` (lock held): audit the disarm and tell the device.

        The device is told unless an arm() armed the host again meanwhile: a later arm wins
        over an earlier disarm, as it would had they not overlapped. Its record then comes
        after that arm's and says so (``overtaken_by_arm``): read alone, the log would show a
        disarm with no arm after it, and the trains the arm allowed. A disarm finished later
        (:meth:`disarm_without_waiting`) says when the host was disarmed
        (``host_disarmed_at``, wall time): its record may come long after, behind a request
        stuck in an audit log write, and after that request's own records (a train withdrawn
        because of it).
        """
        overtaken = self._gate.armed
        # Once closed, the log is too, and its last record says so: a later disarm (the
        # daemon's, racing the supervisor's close) changes nothing and leaves no record.
        if (was_armed or cause != "fault") and not self._closed:
            record: dict[str, Any] = {"event": "disarm", "cause": cause, "reason": reason}
            if host_disarmed_at is not None:
                record["host_disarmed_at"] = host_disarmed_at
            self._audit_quietly(record | ({"overtaken_by_arm": True} if overtaken else {}))
            if was_armed:
                _log.warning("stimulation DISARMED (%s): %s", cause, escape_controls(reason))
        if overtaken:
            _log.warning("not telling the device to disarm: arm() armed it again since")
            return False
        return self._disarm_device()

    def _disarm_device(self) -> bool:
        """Best effort: tell the device to disarm; True if it confirmed or there is none (dry
        run). False without a link (not started, or closed): nothing was told to a device
        that may be armed (by an earlier process, or before close() could reach it)."""
        if self._transport is None:
            return self.settings.dry_run
        try:
            reply = self._exchange(Disarm())
        except BridgeError as err:
            _log.error("device did not confirm DISARM: %s", err)
            return False
        if isinstance(reply, Nack) or reply.armed:
            _log.error("device did not confirm DISARM: %s", reply)
            return False
        return True

    def _cannot_send(self) -> str | None:
        """Why this bridge can send nothing (its heartbeat thread failed: the device's watchdog
        would disarm it), the host disarmed first (its thread may not have done so yet); None
        if it can. Lock held."""
        error = self._heartbeat.error if self._heartbeat is not None else None
        if error is None:
            return None
        failure = _heartbeat_failure(error)
        if self._gate.armed:
            self._fault(failure)
        return (
            f"this bridge cannot send: {failure}; nothing is sent until a new bridge is "
            "opened (the daemon's supervisor reopens it) and armed"
        )

    def _on_stopped(self, error: BaseException | None) -> None:
        """The heartbeat thread ended: without heartbeats the host must not stay armed."""
        if error is not None:
            self.metrics.heartbeat_failures.inc()
            reason = _heartbeat_failure(error)
        elif self._gate.armed:
            reason = "heartbeat thread stopped"
        else:
            return
        was_armed = self._gate.disarm("fault", reason, quiet=True)
        with self._lock:
            if was_armed:
                _log.error("FAULT, disarming: %s", escape_controls(reason))
            self._finish_disarm("fault", reason, was_armed)

    def _audit_quietly(self, record: dict[str, Any]) -> None:
        """For records written while disarming: a failing log must not stop the disarm."""
        try:
            self._audit.append(record)
        except AuditLogError:
            _log.exception("could not audit %s", record.get("event"))

    # ----------------------------------------------------------------- the wire
    def _exchange(
        self, message: Message, sequence: int | None = None, *, armed_generation: int | None = None
    ) -> Reply:
        """Send one command and wait for its reply until the ACK deadline (lock held).

        A missing reply or a broken link disarms an armed host before raising. With
        ``armed_generation`` (a STIMULATE), the command is sent only if the host is still
        armed in that generation; otherwise :class:`DisarmedBeforeSendError` and nothing is sent.
        """
        kind = type_of(message)
        if sequence is None:
            sequence = self._wire.next_sequence()
        transport, decoder = self._transport, self._decoder
        if transport is None or decoder is None:
            raise TransportError("no link to the device (not started, closed, or dry run)")
        try:
            reply = self._wire.send_and_wait(
                transport,
                decoder,
                kind,
                sequence,
                message,
                lambda link, data: self._gate.send(link, data, armed_generation),
            )
        except (AckTimeoutError, TransportError) as err:
            self._set_connected(False)
            if self._gate.armed:
                self._fault(f"{kind.name} #{sequence}: {err}")
            raise
        self._set_connected(True)
        self._device_armed = reply.armed
        return reply

    # ----------------------------------------------------------------- small helpers
    def _set_connected(self, connected: bool) -> None:
        self._connected = connected
        self.metrics.connected.set(int(connected))

    def _update_budget_gauges(self) -> None:
        minute, day = self._interlocks.budget_left()
        self.metrics.minute_budget_left.set(minute)
        self.metrics.day_budget_left.set(day)

    def _require_running(self, method: str) -> None:
        if self._gate.closing or self._closed:
            raise BridgeClosedError(f"StimulationBridge is closed; {method}() needs a new one")
        if not self._started:
            raise RuntimeError(f"call start() before {method}()")


def close_bound_s(settings: BridgeSettings) -> float:
    """How long a close with a silent device takes under ``settings``: the exchange lock, a
    DISARM and the heartbeat thread's last exchange (three exchanges, each the ACK deadline
    after a serial write's timeout), and a second. Without a bridge: `corticast serve`'s stop
    budget counts it (deploy/README.md, "Stopping")."""
    return 3 * (settings.ack_timeout_s + WRITE_TIMEOUT_S) + 1.0


def _heartbeat_failure(error: BaseException) -> str:
    """The fault a failed heartbeat thread is: its disarm's reason."""
    return f"heartbeat thread failed: {type(error).__name__}: {error}"


def _send_time_ms() -> int:
    """Now on the host's clock as commands carry it, for the device's deadline check."""
    return clock_ms(time.monotonic())
