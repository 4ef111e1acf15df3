"""A stand-in for the stimulator firmware: the device side of the protocol, with its own
interlocks, over the same transports; every train it "delivers" goes to a JSON-lines log
(fsync'd; a last line torn by a crash is moved to ``<log>.torn`` when the emulator starts).

Used by the demo (`corticast firmware-emulator`), the end-to-end tests and the protocol fuzz
bench. It behaves as the firmware must: it boots disarmed, disarms itself when heartbeats
stop, obeys any CRC-valid DISARM, opens a fresh arm session on every ARM and refuses a
STIMULATE of any other session or older than its deadline, re-checks every STIMULATE against
its own limits, answers every frame whose header it could read with an ACK or a NACK (on a
keyed link, every frame it could authenticate), and never lets a malformed frame crash it or
cause a pulse.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import threading
import time
from collections.abc import Callable
from typing import Any

from firmware_bridge._connect import open_transport
from firmware_bridge._firmware_rules import TrainHistory, density_uc_cm2, parameter_refusal
from firmware_bridge._host_clock import HostClockOffset
from firmware_bridge._link_key import load_link_key
from firmware_bridge.config import BridgeSettings, EmulatorSettings, check_deadline_on_serial
from firmware_bridge.errors import (
    ErrorCode,
    FirmwareError,
    GarbageBytesError,
    TransportError,
    UnauthenticatedFrameError,
)
from firmware_bridge.frame_decoder import FrameDecoder
from firmware_bridge.messages import (
    Ack,
    DeviceStatus,
    DisarmCause,
    Nack,
    Stimulate,
    encode_message,
    parse_message,
)
from firmware_bridge.transport import Transport
from firmware_bridge.wire import (
    HOST_COMMANDS,
    SEQUENCE_MODULUS,
    Frame,
    MessageType,
    clock_ms,
)
from service.core.checks import check_positive, check_type
from service.core.rate_limited_log import RateLimitedLog
from service.core.torn_line import set_torn_line_aside
from service.core.worker import BackgroundWorker

__all__ = ["FirmwareEmulator", "run_emulator"]

_log = logging.getLogger("corticast.emulator")

_POLL_S = 0.01
"""Longest the loop waits for bytes before checking the heartbeat watchdog again."""

_WARN_EVERY_S = 1.0
"""Rejected frames are counted always but warned about at most this often (noise storms), and
so are link errors (a lost serial port fails every poll)."""

_U16 = 0xFFFF
_U32 = 0xFFFFFFFF


class FirmwareEmulator(BackgroundWorker):
    """The emulated stimulator.

    Parameters
    ----------
    link
        Where to listen (the same section the host uses to connect).
    settings
        The device's own limits, heartbeat timeout and pulse log.
    transport
        An open transport to serve on instead of the one ``link`` names (the caller keeps
        ownership). Its ``datagram`` flag picks the decoder mode.
    clock
        Monotonic seconds for refractory, budgets, the watchdog and command deadlines (and the
        interval between warnings about a failing link).

    Raises
    ------
    ValueError
        If ``settings.stimulate_deadline_ms`` exceeds ``link.ack_timeout_s``: a command that
        late has been given up on by the host, so the device must refuse it; or if a serial
        link's wire time alone makes the widest STIMULATE later than that deadline.

    Notes
    -----
    :meth:`process` is the whole device logic, bytes in, reply frames out; the worker thread
    only moves bytes between it and the transport, so benches can drive it directly.
    """

    def __init__(
        self,
        link: BridgeSettings | None = None,
        settings: EmulatorSettings | None = None,
        *,
        transport: Transport | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__("corticast-firmware-emulator")
        self.link = link if link is not None else BridgeSettings()
        given = settings if settings is not None else EmulatorSettings()
        check_type("settings", given, EmulatorSettings)
        self.settings = EmulatorSettings.model_validate(given.model_dump())
        deadline_ms = self.settings.stimulate_deadline_ms
        if deadline_ms / 1000 > self.link.ack_timeout_s:
            raise ValueError(
                f"'stimulate_deadline_ms' must not exceed the host's 'ack_timeout_s' "
                f"({self.link.ack_timeout_s:g} s), after which the host has given up on the "
                f"command, got {deadline_ms} ms"
            )
        check_deadline_on_serial(self.link, self.settings)
        if transport is not None:
            check_type("transport", transport, Transport)
        self._given_transport = transport
        self._transport: Transport | None = None
        datagram = transport.datagram if transport is not None else self.link.transport == "udp"
        key_file = self.link.link_key_file
        self._key = load_link_key(key_file) if key_file is not None else None
        self._decoder = FrameDecoder(datagram=datagram, key=self._key)
        self._clock = clock
        self._lock = threading.Lock()
        self._booted = clock()
        self._armed = False
        self._disarm_cause = DisarmCause.BOOT
        self._last_heartbeat = self._booted
        self._session = 0  # the open arm session; 0 = none (disarmed)
        self._last_session = 0
        self._host_clock = HostClockOffset()
        self._last_train_sequence: int | None = None
        self._history = TrainHistory(self.settings)
        self._pulses: list[dict[str, Any]] = []
        self._pulse_file: Any = None
        self._last_warning = -float("inf")
        # A lost port fails every poll (100 times a second): said once an interval, with a count.
        self._link_warnings = RateLimitedLog(_log, _WARN_EVERY_S, clock)
        self.counters: dict[str, int] = dict.fromkeys(
            (
                "frames_ok",
                "frames_rejected",
                "nacks",
                "logged_errors",
                "device_faults",
                "unauthenticated",
            ),
            0,
        )

    # ----------------------------------------------------------------- lifecycle
    def _prepare(self) -> None:
        if self.settings.pulse_log is not None:
            # A line torn by a crash would swallow the next train's record: set it aside.
            set_torn_line_aside(self.settings.pulse_log)
            self._pulse_file = open(self.settings.pulse_log, "a", encoding="utf-8")  # noqa: SIM115
        try:
            self._transport = self._given_transport or open_transport(self.link, role="device")
        except BaseException:
            self._close_pulse_log()
            raise
        _log.info("firmware emulator listening (%s), disarmed", self.link.transport)

    def _work(self) -> None:
        transport = self._transport
        while not self._stop_requested.is_set():
            try:
                data = transport.receive(_POLL_S)
                replies = self.process(data, connection=transport.connection_id) if data else ()
                for reply in replies:
                    transport.send(reply)
            except TransportError as err:
                if transport.closed:
                    raise
                # A host that went away is not a device failure; keep serving, without spinning.
                self._link_warnings.log(logging.WARNING, "link error: %s", err)
                self._stop_requested.wait(_POLL_S)
            self.check_watchdog()

    def _release(self) -> None:
        transport, self._transport = self._transport, None
        if transport is not None and transport is not self._given_transport:
            transport.close()
        self._close_pulse_log()

    @property
    def address(self) -> tuple[str, int] | None:
        """(host, port) served on, for UDP/TCP (useful with port 0); None otherwise."""
        transport = self._transport or self._given_transport
        return getattr(transport, "local_address", None)

    # ----------------------------------------------------------------- device state
    @property
    def armed(self) -> bool:
        with self._lock:
            return self._armed

    @property
    def disarm_cause(self) -> DisarmCause:
        with self._lock:
            return self._disarm_cause

    @property
    def pulses(self) -> tuple[dict[str, Any], ...]:
        """Every train delivered so far, as written to the pulse log."""
        with self._lock:
            return tuple(self._pulses)

    def status(self) -> DeviceStatus:
        """What a STATUS reply would say now (``disarm_cause`` is 0 while armed)."""
        with self._lock:
            return self._status(self._clock())

    def check_watchdog(self) -> bool:
        """Disarm if armed and no heartbeat came within the timeout; True if it just did."""
        with self._lock:
            return self._check_watchdog(self._clock())

    @property
    def session(self) -> int:
        """The open arm session (0 while disarmed)."""
        with self._lock:
            return self._session

    # ----------------------------------------------------------------- the protocol
    def process(self, data: bytes, *, connection: int = 0) -> list[bytes]:
        """Handle bytes received from the host; return the reply frames to send back.

        ``connection`` is the transport's :attr:`~Transport.connection_id`: bytes of a new
        connection start a new stream, so what the old one left half-decoded is dropped.
        Never raises for anything the bytes contain: every frame whose header could be read
        gets an ACK or a NACK, the rest is counted and logged; on a keyed link only frames
        whose tag was checked are answered. An internal error disarms and is answered with a
        DEVICE_FAULT NACK.
        """
        replies: list[bytes] = []
        with self._lock:
            for item in self._decoder.feed(data, connection=connection):
                now = self._clock()
                self._check_watchdog(now)
                try:
                    if isinstance(item, FirmwareError):
                        reply = self._reject(item)
                    else:
                        reply = self._execute(item, now)
                except Exception:  # a bug here must not take the device down, nor leave it armed
                    self.counters["device_faults"] += 1
                    _log.exception("device fault while handling %r; disarming", item)
                    self._disarm(DisarmCause.FAULT)
                    reply = self._fault_nack(item)
                if reply is not None:
                    replies.append(reply)
        return replies

    def _fault_nack(self, item: Frame | FirmwareError) -> bytes | None:
        """The DEVICE_FAULT NACK for ``item``, unless a keyed link could not authenticate it."""
        if self._key is not None and isinstance(item, FirmwareError):
            return None
        sequence = getattr(item, "sequence", None) or 0
        rejected = getattr(item, "message_type", None) or 0  # as read from the header
        return encode_message(
            Nack(rejected, ErrorCode.DEVICE_FAULT, False), sequence, key=self._key
        )

    def _reject(self, error: FirmwareError) -> bytes | None:
        self.counters["frames_rejected"] += 1
        self._note(error)
        if error.sequence is None or isinstance(error, GarbageBytesError):
            self.counters["logged_errors"] += 1
            return None
        if self._key is not None or isinstance(error, UnauthenticatedFrameError):
            # On a keyed link nothing the decoder rejects was authenticated (a bad CRC, version
            # or length leaves no tag to check): never answered, as a NACK carries the armed
            # flag in clear and would tell whoever sent it whether the device is armed.
            self.counters["unauthenticated"] += 1
            return None
        return self._nack(error.message_type or 0, error.code, error.sequence)

    def _execute(self, frame: Frame, now: float) -> bytes:
        kind, sequence = frame.message_type, frame.sequence
        if kind == MessageType.DISARM:
            # Obeyed whatever the payload says: disarming is always the safe direction.
            self._disarm(DisarmCause.HOST)
        if kind not in HOST_COMMANDS:
            return self._refuse(frame, ErrorCode.UNEXPECTED_TYPE, f"{kind.name} is a reply")
        try:
            message = parse_message(frame)
        except FirmwareError as err:
            self.counters["frames_rejected"] += 1
            self._note(err)
            return self._nack(kind, err.code, sequence)
        if kind == MessageType.ARM:
            lateness = self._host_clock.lateness_ms(message.host_time_ms, clock_ms(now))
            # With nothing to judge it by (no recent arrival) an ARM is taken: the session it
            # opens is new, so no frame sent before it can be delivered in it.
            if lateness is not None and lateness > self.settings.stimulate_deadline_ms:
                return self._refuse(frame, ErrorCode.EXPIRED, f"ARM {lateness} ms late")
            self._host_clock.observe(message.host_time_ms, clock_ms(now))
            self._open_session(now)
            _log.warning("device ARMED by host (#%d), session %08x", sequence, self._session)
        elif kind == MessageType.HEARTBEAT:
            self._host_clock.observe(message.host_time_ms, clock_ms(now))
            self._last_heartbeat = now
        elif kind == MessageType.STATUS_REQUEST:
            self.counters["frames_ok"] += 1
            return encode_message(self._status(now), sequence, key=self._key)
        elif kind == MessageType.STIMULATE:
            lateness = self._host_clock.lateness_ms(message.host_time_ms, clock_ms(now))
            refusal = self._stimulate_refusal(message, sequence, now, lateness)
            if refusal is not None:
                return self._refuse(frame, refusal, f"STIMULATE refused ({lateness} ms late)")
            self._deliver(message, sequence, now, lateness)
        self.counters["frames_ok"] += 1
        return encode_message(Ack(kind, self._armed, self._session), sequence, key=self._key)

    def _stimulate_refusal(
        self, stimulate: Stimulate, sequence: int, now: float, lateness_ms: int | None
    ) -> ErrorCode | None:
        if not self._armed:
            return ErrorCode.NOT_ARMED
        if stimulate.session != self._session:
            return ErrorCode.SESSION_MISMATCH
        if lateness_ms is None or lateness_ms > self.settings.stimulate_deadline_ms:
            return ErrorCode.EXPIRED
        last = self._last_train_sequence
        ahead = (sequence - last) % SEQUENCE_MODULUS if last is not None else 1
        if not 0 < ahead < SEQUENCE_MODULUS // 2:
            # The host numbers its commands upwards (wrapping) and never resends, so within a
            # session every train comes after the last one: any other is a replayed or held copy.
            return ErrorCode.DUPLICATE_SEQUENCE
        return parameter_refusal(stimulate, self.settings) or self._history.refusal(now)

    def _open_session(self, now: float) -> None:
        """Arm under a new session id: random (a counter would restart with the device, and a
        frame held across that reboot could match again), never 0, never the last one."""
        session = 0
        while session in (0, self._last_session):
            session = secrets.randbits(32)
        self._session = self._last_session = session
        self._last_train_sequence = None  # trains are ordered within a session, not across
        self._armed = True
        self._last_heartbeat = now

    def _deliver(
        self, stimulate: Stimulate, sequence: int, now: float, lateness_ms: int | None
    ) -> None:
        self._history.add(now)
        self._last_train_sequence = sequence
        record = {
            "event": "train",
            "time": time.time(),
            "clock": now,
            "session": stimulate.session,
            "lateness_ms": lateness_ms,
            "sequence": sequence,
            "channels": list(stimulate.channels),
            "amplitude_ua": stimulate.amplitude_ua,
            "phase_width_us": stimulate.phase_width_us,
            "frequency_hz": stimulate.frequency_hz,
            "train_duration_ms": stimulate.train_duration_ms,
            "electrode_area_cm2": stimulate.electrode_area_cm2,
            "charge_density_uc_cm2": density_uc_cm2(stimulate),
            "pulses": stimulate.frequency_hz * stimulate.train_duration_ms // 1000,
        }
        self._pulses.append(record)
        if self._pulse_file is not None:
            self._pulse_file.write(json.dumps(record) + "\n")
            self._pulse_file.flush()
            os.fsync(self._pulse_file.fileno())
        _log.info("delivered train #%d on %d electrode(s)", sequence, len(stimulate.channels))

    def _refuse(self, frame: Frame, code: ErrorCode, why: str) -> bytes:
        self.counters["frames_rejected"] += 1
        _log.debug("%s #%d: %s (%s)", frame.message_type.name, frame.sequence, why, code.name)
        return self._nack(frame.message_type, code, frame.sequence)

    def _nack(self, rejected_type: int, code: ErrorCode, sequence: int) -> bytes:
        self.counters["nacks"] += 1
        return encode_message(Nack(rejected_type, code, self._armed), sequence, key=self._key)

    def _check_watchdog(self, now: float) -> bool:
        if self._armed and not (now - self._last_heartbeat <= self.settings.heartbeat_timeout_s):
            _log.warning(
                "no heartbeat for %.3f s (timeout %g s): device disarms itself",
                now - self._last_heartbeat,
                self.settings.heartbeat_timeout_s,
            )
            self._disarm(DisarmCause.HEARTBEAT_TIMEOUT)
            return True
        return False

    def _disarm(self, cause: DisarmCause) -> None:
        if self._armed:
            _log.warning("device DISARMED (%s)", cause.name)
        self._armed = False
        self._session = 0
        self._disarm_cause = cause

    def _status(self, now: float) -> DeviceStatus:
        minute_left, day_left = self._history.left(now)
        return DeviceStatus(
            armed=self._armed,
            disarm_cause=int(DisarmCause.BOOT if self._armed else self._disarm_cause),
            trains_delivered=min(len(self._pulses), _U32),
            minute_budget_left=min(minute_left, _U16),
            day_budget_left=min(day_left, _U16),
            frames_ok=min(self.counters["frames_ok"], _U32),
            frames_rejected=min(self.counters["frames_rejected"], _U32),
            uptime_ms=min(max(0, int((now - self._booted) * 1000)), _U32),
        )

    def _note(self, error: FirmwareError) -> None:
        _log.debug("rejected: %s", error)
        wall = time.monotonic()
        if wall - self._last_warning >= _WARN_EVERY_S:
            self._last_warning = wall
            _log.warning(
                "rejecting malformed input (%s: %s); %d frames rejected so far",
                type(error).__name__,
                error,
                self.counters["frames_rejected"],
            )

    def _close_pulse_log(self) -> None:
        file, self._pulse_file = self._pulse_file, None
        if file is not None:
            try:
                file.close()
            except OSError as err:
                # Closing flushes again what a failed write left buffered; that write was a
                # device fault already (the device disarmed), and stopping must still finish.
                _log.error("pulse log %s could not be closed: %s", self.settings.pulse_log, err)


def run_emulator(
    link: BridgeSettings | None = None,
    settings: EmulatorSettings | None = None,
    *,
    stop: threading.Event | None = None,
    duration_s: float | None = None,
) -> FirmwareEmulator:
    """Run the emulator until ``stop`` is set, ``duration_s`` passes, or Ctrl-C.

    This is what `corticast firmware-emulator` calls. Returns the stopped emulator (its
    :attr:`~FirmwareEmulator.pulses` and counters stay readable).

    Raises
    ------
    TransportError
        If the port or socket cannot be opened.
    RuntimeError
        If the emulator's loop failed (the original error is its cause).
    """
    if duration_s is not None:
        check_positive("duration_s", duration_s)
    emulator = FirmwareEmulator(link, settings)
    stop = stop if stop is not None else threading.Event()
    deadline = None if duration_s is None else time.monotonic() + duration_s
    with emulator:
        try:
            while emulator.running:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    break
                if stop.wait(0.2 if remaining is None else min(0.2, remaining)):
                    break
        except KeyboardInterrupt:
            _log.info("firmware emulator interrupted")
    emulator.raise_if_failed()
    return emulator
