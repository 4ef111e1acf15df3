"""Configuration sections of the firmware bridge and the emulator.

These are sections of the daemon's TOML file (the daemon's ``Settings`` includes them); like
every section they are frozen and reject unknown keys, because a typo in a safety limit must
fail at start, never fall back to a default.

Every limit has a conservative default and a hard bound that configuration cannot pass: the
charge density limit can only be lowered from 25 µC/cm²/phase (the clinical limit of the RNS
System), and the other bounds are capped at what the stimulator hardware can deliver. The
host's :class:`InterlockSettings` and the device's :class:`EmulatorSettings` are separate on
purpose: the firmware re-checks everything against its own limits, as a real device would.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Literal, Self

from pydantic import Field, field_validator, model_validator

from firmware_bridge._link_key import load_link_key
from firmware_bridge.messages import Ack, Heartbeat, Stimulate, encode_message
from firmware_bridge.wire import TAG_SIZE, MessageType
from service.core.net import is_loopback_host, loopback_hint
from service.core.settings_model import Section, UserPath

N_ELECTRODES = 360
"""Contacts on the 18x20 array; electrode indices are row-major, 0..359."""

CHARGE_DENSITY_CEILING_UC_CM2 = 25.0
"""The RNS clinical limit per phase; configuration may lower the limit, never raise it."""

MAX_ELECTRODE_AREA_CM2 = 1.0
"""Largest contact area any setting may state, cm² (a µECoG contact is ~3e-4): beyond any
electrode the bridge drives, and far inside what a float32 on the wire can hold."""

MAX_SAMPLE_AGE_CEILING_S = 1.0
"""Longest ``max_sample_age_s`` any setting may state: data a second old (278 frames, 17
prediction horizons) says nothing of the next 57.6 ms, and a limit past it would switch the
stale-data interlock off in effect (``max_sample_age_s = 50``, meant as milliseconds)."""

MAX_MISSING_FRAMES_CEILING = 16
"""Largest ``max_missing_frames`` any setting may state, as for the scheduler's own limit
(``[scheduler] max_missing_frames``): a third of the 48 frames a decision rests on. Without a
bound, a large limit (``max_missing_frames = 1000``) would switch the missing-frames interlock
off in effect, and with it the check that the data behind a train were measured at all."""

SampleAge = Annotated[float, Field(gt=0, le=MAX_SAMPLE_AGE_CEILING_S, allow_inf_nan=False)]
AreaCm2 = Annotated[float, Field(gt=0, le=MAX_ELECTRODE_AREA_CM2, allow_inf_nan=False)]
DensityLimit = Annotated[float, Field(gt=0, le=CHARGE_DENSITY_CEILING_UC_CM2, allow_inf_nan=False)]
AmplitudeUa = Annotated[int, Field(ge=1, le=12_000)]
PhaseWidthUs = Annotated[int, Field(ge=1, le=2_000)]
FrequencyHz = Annotated[int, Field(ge=1, le=1_000)]
DurationMs = Annotated[int, Field(ge=1, le=10_000)]
ChannelCount = Annotated[int, Field(ge=1, le=N_ELECTRODES)]

SERIAL_BITS_PER_BYTE = 10
"""Bits a byte takes on the serial line: start bit, 8 data bits, no parity, 1 stop bit (8N1,
as :meth:`firmware_bridge.serial_transport.SerialTransport.open` sets the port)."""

_DEFAULT_AREA_CM2 = 3.0e-4
"""A 200 µm disc is 3.14e-4 cm²; rounding down makes every density computed from it higher."""


class _Bounds(Section):
    """Pulse-train bounds shared in shape (not in values) by host and device settings."""

    charge_density_limit_uc_cm2: DensityLimit = CHARGE_DENSITY_CEILING_UC_CM2
    electrode_area_cm2: AreaCm2 = _DEFAULT_AREA_CM2
    min_amplitude_ua: AmplitudeUa = 1
    max_amplitude_ua: AmplitudeUa = 100
    min_phase_width_us: PhaseWidthUs = 40
    max_phase_width_us: PhaseWidthUs = 500
    min_frequency_hz: FrequencyHz = 1
    max_frequency_hz: FrequencyHz = 200
    min_train_duration_ms: DurationMs = 10
    max_train_duration_ms: DurationMs = 1_000
    max_channels: ChannelCount = 8
    refractory_s: Annotated[float, Field(gt=0, le=86_400, allow_inf_nan=False)] = 2.0
    max_trains_per_minute: Annotated[int, Field(ge=1, le=600)] = 6
    max_trains_per_day: Annotated[int, Field(ge=1, le=100_000)] = 600

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        for name in ("amplitude_ua", "phase_width_us", "frequency_hz", "train_duration_ms"):
            low, high = getattr(self, f"min_{name}"), getattr(self, f"max_{name}")
            if low > high:
                raise ValueError(f"'min_{name}' ({low}) must be <= 'max_{name}' ({high})")
        if self.refractory_s * 1000 <= self.max_train_duration_ms:
            raise ValueError(
                f"'refractory_s' must be longer than 'max_train_duration_ms' so trains never "
                f"overlap, got {self.refractory_s:g} s <= {self.max_train_duration_ms} ms"
            )
        if self.max_trains_per_minute > self.max_trains_per_day:
            raise ValueError(
                f"'max_trains_per_minute' ({self.max_trains_per_minute}) must be <= "
                f"'max_trains_per_day' ({self.max_trains_per_day})"
            )
        return self


class InterlockSettings(_Bounds):
    """Host-side limits every stimulation request must pass before anything is sent.

    Charge density is amplitude × phase width / electrode area, with the amplitude taken as
    the current through *each* listed electrode (no sharing assumed) and the area as the
    request states it; a request may claim a smaller area than ``electrode_area_cm2`` (which
    raises its computed density) but never a larger one.
    """

    max_sample_age_s: SampleAge = 0.05
    max_missing_frames: Annotated[int, Field(ge=0, le=MAX_MISSING_FRAMES_CEILING)] = 2


class BridgeSettings(Section):
    """How the host reaches the stimulator, its deadlines, and whether it may send at all.

    ``dry_run`` defaults to True: a fresh installation evaluates and logs every request but
    never sends one until the configuration says otherwise. A dry-run bridge opens no
    transport at all; its decisions still count against refractory and budgets, so a dry run
    shows exactly what a live run would have sent.

    The audit log rotates at ``audit_log_max_bytes`` (``audit.jsonl`` -> ``audit.jsonl.1`` ...),
    keeps ``audit_log_keep_files`` rotated files, and starts each new file with the trains of
    the last day, so refractory and budgets survive a restart even when old files are gone.
    Blocked requests are recorded in full once per kind and ``audit_blocked_period_s``, and
    counted otherwise (see :mod:`firmware_bridge._blocked_tally`).

    The link is the stimulator's trust boundary (PROTOCOL.md, "Trust boundary"): whoever can
    send it frames can ARM and STIMULATE within the device's limits. A UDP or TCP ``host``
    that is not a loopback address is refused unless ``allow_remote_link`` says so by name
    and ``link_key_file`` is set: ``link_key_file`` (a file holding a hex key, shared with the
    device) makes both ends tag every frame with an HMAC and drop frames without a valid tag.
    """

    transport: Literal["udp", "tcp", "serial"] = "udp"
    host: Annotated[str, Field(min_length=1, max_length=253)] = "127.0.0.1"
    port: Annotated[int, Field(ge=1, le=65_535)] = 47_800
    serial_port: Annotated[str, Field(min_length=1)] = "/dev/ttyACM0"
    baud_rate: Annotated[int, Field(ge=1_200, le=4_000_000)] = 115_200
    connect_timeout_s: Annotated[float, Field(gt=0, le=30, allow_inf_nan=False)] = 1.0
    ack_timeout_s: Annotated[float, Field(gt=0, le=5, allow_inf_nan=False)] = 0.1
    heartbeat_period_s: Annotated[float, Field(gt=0, le=5, allow_inf_nan=False)] = 0.1
    dry_run: bool = True
    audit_log: UserPath = Path("corticast-audit.jsonl")
    audit_log_max_bytes: Annotated[int, Field(ge=65_536)] = 16 * 2**20
    audit_log_keep_files: Annotated[int, Field(ge=1, le=10_000)] = 32
    audit_blocked_period_s: Annotated[float, Field(gt=0, le=3_600, allow_inf_nan=False)] = 60.0
    allow_remote_link: bool = False
    link_key_file: UserPath | None = None

    @field_validator("host")
    @classmethod
    def _connectable(cls, host: str) -> str:
        if host.startswith("["):
            raise ValueError(
                f"'host' = {host!r}: write an IPv6 address without brackets (e.g. '::1'); "
                "the bridge passes it to the socket as it is"
            )
        return host

    @field_validator("link_key_file")
    @classmethod
    def _usable_key(cls, path: Path | None) -> Path | None:
        if path is not None:
            load_link_key(path)  # checked at load; read again where the link opens
        return path

    @model_validator(mode="after")
    def _loopback_unless_allowed(self) -> Self:
        if self.transport == "serial" or is_loopback_host(self.host):
            return self
        if self.allow_remote_link and self.link_key_file is None:
            # As the HTTP API's token stays required off loopback: only the key tells the
            # device's frames from anyone's on that network.
            raise ValueError(
                f"a {self.transport.upper()} link off loopback needs 'link_key_file' "
                f"('host' = {self.host!r}): without it anyone who can reach the link could ARM "
                "and STIMULATE the device; make a key (python3 -c 'import secrets; "
                "print(secrets.token_hex(32))') and give the device the same"
            )
        if self.allow_remote_link:
            return self
        raise ValueError(
            f"'host' = {self.host!r} is not a loopback address{loopback_hint(self.host)}: "
            "anyone who can reach it could "
            f"ARM and STIMULATE the device over {self.transport.upper()}. Set "
            "'allow_remote_link = true' (with 'link_key_file') to use it on purpose"
        )


class EmulatorSettings(_Bounds):
    """The emulated firmware's own limits: a backstop behind the host's, so a little wider.

    The device measures refractory and budgets on arrival times, which jitter; its defaults
    leave room for that so that a host obeying its own (stricter) limits is never refused.
    ``heartbeat_timeout_s`` must exceed the host's heartbeat period several times over.
    ``stimulate_deadline_ms`` is how late after the host sent it an ARM or STIMULATE may
    arrive (PROTOCOL.md, "Sessions and deadlines"); it must not exceed the host's
    ``ack_timeout_s``, after which the host has given up on the command (the emulator checks
    this against the link section it is given).
    """

    max_amplitude_ua: AmplitudeUa = 200
    min_phase_width_us: PhaseWidthUs = 20
    max_phase_width_us: PhaseWidthUs = 1_000
    max_frequency_hz: FrequencyHz = 333
    min_train_duration_ms: DurationMs = 1
    max_train_duration_ms: DurationMs = 1_000
    max_channels: ChannelCount = 16
    refractory_s: Annotated[float, Field(gt=0, le=86_400, allow_inf_nan=False)] = 1.5
    max_trains_per_minute: Annotated[int, Field(ge=1, le=600)] = 10
    max_trains_per_day: Annotated[int, Field(ge=1, le=100_000)] = 1_000
    heartbeat_timeout_s: Annotated[float, Field(gt=0, le=10, allow_inf_nan=False)] = 0.5
    stimulate_deadline_ms: Annotated[int, Field(ge=1, le=5_000)] = 100
    pulse_log: UserPath | None = None


def serial_wire_s(size: int, baud_rate: int) -> float:
    """Seconds ``size`` bytes take on an 8N1 serial line at ``baud_rate``."""
    return size * SERIAL_BITS_PER_BYTE / baud_rate


def least_baud_rate(size: int, within_s: float) -> int:
    """The least baud rate at which ``size`` bytes cross an 8N1 line within ``within_s``."""
    return math.ceil(round(size * SERIAL_BITS_PER_BYTE / within_s, 6))


def stimulate_size(channels: int) -> int:
    """Bytes of a STIMULATE frame on ``channels`` electrodes, untagged."""
    return len(encode_message(Stimulate(tuple(range(channels)), 1, 1, 1, 1, 1.0, 1, 0), 0))


def check_serial_timing(bridge: BridgeSettings, interlocks: InterlockSettings) -> None:
    """Refuse a serial link on which the longest exchange the host times cannot fit its
    deadline: a STIMULATE on ``max_channels`` electrodes and its ACK (longer than any other
    command and its reply), each ``ack_timeout_s`` long at most.

    No margin: only what can never fit is refused, since the device's own time and a
    USB-serial adapter's latency vary by hardware; they come on top of the wire time.

    Raises
    ------
    ValueError
        Naming the baud rate, the timeout, and the least of either that would fit.
    """
    if bridge.transport != "serial":
        return
    channels = interlocks.max_channels
    tags = 2 * TAG_SIZE if bridge.link_key_file is not None else 0
    ack = Ack(MessageType.STIMULATE, True, 1)
    size = stimulate_size(channels) + len(encode_message(ack, 0)) + tags
    wire_s = serial_wire_s(size, bridge.baud_rate)
    if wire_s <= bridge.ack_timeout_s:
        return
    raise ValueError(
        f"at {bridge.baud_rate} baud a STIMULATE on {channels} electrodes and its ACK "
        f"({size} bytes{', tagged' if tags else ''}) take {wire_s * 1000:.0f} ms on the wire "
        f"({SERIAL_BITS_PER_BYTE} bits a byte, 8N1), longer than bridge.ack_timeout_s "
        f"({bridge.ack_timeout_s:g} s), after which the host gives up on any command: raise "
        f"bridge.ack_timeout_s to at least {math.ceil(wire_s * 1000) / 1000:g} s or "
        f"bridge.baud_rate to at least {least_baud_rate(size, bridge.ack_timeout_s)}, with "
        "room for the device's own time (or lower interlocks.max_channels)"
    )


def check_deadline_on_serial(link: BridgeSettings, device: EmulatorSettings) -> None:
    """Refuse a serial link on which a STIMULATE on the device's ``max_channels`` electrodes
    is later than ``stimulate_deadline_ms`` on the wire alone.

    The device reads a frame when its last byte is in and measures lateness from the
    least-delayed recent ARM or HEARTBEAT (PROTOCOL.md, "Deadlines"; both as long), so a
    STIMULATE sent as promptly is late by the wire time of the bytes it has more (tags add
    the same to both). Past the
    deadline every such STIMULATE is refused EXPIRED, which reads as a slow link, not a slow
    baud rate. No margin, as in :func:`check_serial_timing`.

    Raises
    ------
    ValueError
        Naming the baud rate, the deadline, and the least of either that would fit.
    """
    if link.transport != "serial":
        return
    channels = device.max_channels
    train, beat = stimulate_size(channels), len(encode_message(Heartbeat(0), 0))
    late_ms = serial_wire_s(train - beat, link.baud_rate) * 1000
    if late_ms <= device.stimulate_deadline_ms:
        return
    raise ValueError(
        f"at {link.baud_rate} baud a STIMULATE on {channels} electrodes ({train} bytes) arrives "
        f"{late_ms:.0f} ms after a HEARTBEAT ({beat} bytes) sent as promptly, which the device "
        f"counts as lateness, longer than emulator.stimulate_deadline_ms "
        f"({device.stimulate_deadline_ms} ms): every such STIMULATE would be refused EXPIRED; "
        f"raise emulator.stimulate_deadline_ms to at least {math.ceil(late_ms)} ms (with "
        f"bridge.ack_timeout_s at least as long) or bridge.baud_rate to at least "
        f"{least_baud_rate(train - beat, device.stimulate_deadline_ms / 1000)} "
        "(or lower emulator.max_channels)"
    )
