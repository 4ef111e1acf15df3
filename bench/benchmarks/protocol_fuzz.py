"""Protocol fuzz: malformed frames against the firmware emulator's decoder and device logic.

Every case is something a broken or hostile host could put on the wire: random bytes, valid
frames cut short, valid frames with bits flipped, oversized frames, and frames whose CRC is
valid but whose content is not (wrong version, unknown or reply types, payloads that do not fit
their type, STIMULATE that breaks a device rule by construction — including one of another arm
session, or sent longer ago than the device's deadline — and replays of a delivered train).
The device is **armed** throughout, and valid control trains are interleaved, so a pulse that
slipped through would be delivered, not refused for being disarmed: "pulses from fuzz = 0"
means the device refused every malformed train, and "control trains delivered" shows it was
able to deliver all along.

Two modes: datagrams (UDP; each case is one datagram and must get a NACK or a logged error)
and a byte stream (serial/TCP; all cases back to back in random chunks, with valid STATUS
requests interleaved that must all be found and answered by resynchronisation).

Usage: ``python -m bench.benchmarks.protocol_fuzz --cases 100000`` prints markdown tables. The CI
runs a few thousand cases through :func:`run_fuzz` (tests/firmware_bridge/test_protocol_fuzz.py).
"""

from __future__ import annotations

import argparse
import logging
import math
import platform
import random
import struct
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import SimpleNamespace

from firmware_bridge.config import BridgeSettings, EmulatorSettings
from firmware_bridge.emulator import FirmwareEmulator
from firmware_bridge.errors import ErrorCode
from firmware_bridge.frame_decoder import FrameDecoder
from firmware_bridge.messages import (
    Ack,
    Arm,
    DeviceStatus,
    Heartbeat,
    Nack,
    StatusRequest,
    Stimulate,
    encode_message,
    parse_message,
)
from firmware_bridge.wire import (
    MAX_FRAME,
    MAX_PAYLOAD,
    SEQUENCE_MODULUS,
    VERSION,
    Frame,
    MessageType,
    clock_ms,
    encode_frame,
    encode_raw,
)

CATEGORIES = ("random", "random_after_sync", "truncated", "bit_flipped", "oversized", "valid_crc")

_SECONDS_PER_CASE = 0.02
"""Device clock advance per case: control trains 1000 cases apart are 20 s apart, inside the
device's refractory period and budgets, so every intact control must be delivered."""

_CONTROL_EVERY = 1000
_STATUS_EVERY = 100

_DEVICE = EmulatorSettings(
    heartbeat_timeout_s=10.0, max_trains_per_minute=10, max_trains_per_day=100_000
)


@dataclass
class FuzzReport:
    """Counts from one run; ``ok`` is the safety verdict."""

    mode: str
    per_case: bool = True
    cases: int = 0
    nacked: int = 0
    logged_only: int = 0
    accepted: int = 0
    silent: int = 0
    crashes: int = 0
    device_faults: int = 0
    fuzz_pulses: int = 0
    reassembled_trains: int = 0
    controls_sent: int = 0
    controls_done: int = 0
    by_category: dict[str, Counter] = field(default_factory=dict)
    nack_codes: Counter = field(default_factory=Counter)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return (
            self.crashes == 0
            and self.device_faults == 0
            and self.fuzz_pulses == 0
            and self.accepted == 0
            and self.silent == 0
            and self.controls_done == self.controls_sent
        )


class _FakeClock:
    """The device's clock, and the host's too: the host's stamps are its milliseconds."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def ms(self) -> int:
        return clock_ms(self.now)


class _Cases:
    """Generates one malformed case at a time from a seeded RNG.

    ``session`` reads the device's open arm session, so that a train meant to break one device
    rule carries that session and an on-time stamp, and is refused for the rule it breaks.
    """

    def __init__(
        self,
        rng: random.Random,
        clock: _FakeClock,
        session: Callable[[], int],
        *,
        stream: bool = False,
    ) -> None:
        self.rng = rng
        self.clock = clock
        self.session = session
        self.stream = stream
        self.last_control: bytes | None = None
        self.intact_trains: list[bytes] = []

    def sequence(self) -> int:
        return self.rng.randrange(SEQUENCE_MODULUS)

    def make(self, category: str) -> bytes:
        return getattr(self, f"_{category}")()

    # ---- valid material to damage
    def valid_stimulate(self) -> Stimulate:
        r = self.rng
        width = r.randint(40, 200)
        area = 2.0**-12
        amplitude = r.randint(1, int(20 * area * 1e6 / width))  # density <= 20 µC/cm²
        channels = tuple(r.sample(range(360), r.randint(1, 8)))
        frequency, duration = r.randint(1, 300), r.randint(1, 900)
        return Stimulate(
            channels, amplitude, width, frequency, duration, area, self.session(), self.clock.ms()
        )

    def valid_frame(self) -> bytes:
        now = self.clock.ms()
        stimulate = self.valid_stimulate()
        message = self.rng.choice([stimulate, stimulate, Heartbeat(now), StatusRequest(), Arm(now)])
        frame = encode_message(message, self.sequence())
        if isinstance(message, Stimulate):
            self.intact_trains.append(frame)
        return frame

    # ---- categories
    def _random(self) -> bytes:
        return self.rng.randbytes(self.rng.randint(0, 2048))

    def _random_after_sync(self) -> bytes:
        return b"\xa5\x5a" + self.rng.randbytes(self.rng.randint(0, 1100))

    def _truncated(self) -> bytes:
        frame = self.valid_frame()
        return frame[: self.rng.randrange(len(frame))]

    def _bit_flipped(self) -> bytes:
        frame = bytearray(self.valid_frame())
        # Distinct bits: flipping one bit twice would hand back the intact frame.
        for bit in self.rng.sample(range(len(frame) * 8), self.rng.randint(1, 8)):
            frame[bit // 8] ^= 1 << (bit % 8)
        return bytes(frame)

    def _oversized(self) -> bytes:
        r = self.rng
        # In a byte stream, "a valid frame with bytes after it" is a valid frame followed by
        # garbage, not a malformed frame: there are no boundaries to be oversized against.
        kind = r.choice((0, 2) if self.stream else (0, 1, 2))
        if kind == 0:  # declared length over the maximum, CRC valid over what is there
            payload = r.randbytes(r.randint(0, 2000))
            return encode_raw(
                MessageType.STIMULATE,
                self.sequence(),
                payload,
                version=VERSION,
                length=r.randint(MAX_PAYLOAD + 1, 0xFFFF),
            )
        if kind == 1:  # a valid frame with bytes after it
            return self.valid_frame() + r.randbytes(r.randint(1, 200))
        return encode_frame(MessageType.STIMULATE, self.sequence(), b"") + r.randbytes(
            r.randint(MAX_FRAME, 4 * MAX_FRAME)
        )

    def _valid_crc(self) -> bytes:
        """CRC-valid frames with hostile content."""
        r = self.rng
        seq = self.sequence()
        kind = r.randrange(6)
        if kind == 0:
            return encode_raw(MessageType.HEARTBEAT, seq, bytes(4), version=r.choice([0, 1, 255]))
        if kind == 1:
            unknown = r.choice([t for t in range(256) if t not in set(MessageType)])
            return encode_frame(unknown, seq, r.randbytes(r.randint(0, 40)))
        if kind == 2:
            reply = r.choice([Ack(3, True, 1), Nack(3, 0x10, True), _status()])
            return encode_message(reply, seq)
        if kind == 3:  # payload that does not fit the type
            message_type = r.choice(
                [
                    MessageType.ARM,
                    MessageType.HEARTBEAT,
                    MessageType.STATUS_REQUEST,
                    MessageType.STIMULATE,
                ]
            )
            # Any length but the one that fits (a STIMULATE needs at least 22 bytes).
            fits = {MessageType.ARM: 4, MessageType.HEARTBEAT: 4, MessageType.STATUS_REQUEST: 0}
            length = r.choice([n for n in range(22) if n != fits.get(message_type)])
            payload = r.randbytes(length)
            if message_type == MessageType.STIMULATE and r.random() < 0.5:
                good = encode_message(self.valid_stimulate(), 0)[10:-4]
                payload = good[: -r.randint(1, 2)] if r.random() < 0.5 else good + b"\x00"
            return encode_frame(message_type, seq, payload)
        if kind == 4 and self.last_control is not None:  # replay of a delivered train
            return self.last_control
        return encode_message(self._hostile_stimulate(), seq)

    def _hostile_stimulate(self) -> Stimulate:
        """A STIMULATE that breaks at least one device rule, chosen at random."""
        r = self.rng
        s = self.valid_stimulate()
        rule = r.randrange(12)
        fields = {
            "channels": s.channels,
            "amplitude_ua": s.amplitude_ua,
            "phase_width_us": s.phase_width_us,
            "frequency_hz": s.frequency_hz,
            "train_duration_ms": s.train_duration_ms,
            "electrode_area_cm2": s.electrode_area_cm2,
            "session": s.session,
            "host_time_ms": s.host_time_ms,
        }
        if rule == 0:
            fields["channels"] = r.choice(
                [(), (5, 5), (r.randint(360, 65535),), tuple(range(r.randint(17, 360)))]
            )
        elif rule == 1:
            fields["amplitude_ua"] = r.choice([0, r.randint(_DEVICE.max_amplitude_ua + 1, 65535)])
        elif rule == 2:
            fields["phase_width_us"] = r.choice([0, r.randint(1001, 65535)])
        elif rule == 3:
            fields["frequency_hz"] = r.choice([0, r.randint(334, 65535)])
        elif rule == 4:
            fields["train_duration_ms"] = r.choice([0, r.randint(1001, 65535)])
        elif rule == 5:
            fields["electrode_area_cm2"] = r.choice(
                [math.nan, math.inf, -math.inf, 0.0, -1e-4, 1e-3, 3.4e38]
            )
        elif rule == 6:  # in bounds, but far too dense for the area claimed
            fields.update(amplitude_ua=200, phase_width_us=1000, frequency_hz=100)
            fields["electrode_area_cm2"] = r.uniform(1e-6, 7.9e-3 * 1e-3 * 1e3)
        elif rule == 7:  # just over 25 µC/cm² with the real area
            width = r.randint(100, 200)
            area = 2.0**-12
            fields.update(phase_width_us=width, electrode_area_cm2=area)
            fields["amplitude_ua"] = math.floor(25 * area * 1e6 / width) + 1
        elif rule == 8:  # two phases do not fit in one period (device allows up to 333 Hz)
            fields.update(phase_width_us=1000, frequency_hz=r.randint(500, 65535))
        elif rule == 9:
            fields["channels"] = tuple(r.sample(range(360), 17))
        elif rule == 10:  # another arm session, or none: a frame from before the latest ARM
            fields["session"] = r.choice([0, s.session ^ (1 << r.randrange(32))])
        else:  # sent longer ago than the device's deadline: held back on the way
            late_ms = _DEVICE.stimulate_deadline_ms + r.choice([1, r.randint(2, 10**7)])
            fields["host_time_ms"] = (s.host_time_ms - late_ms) % (1 << 32)
        return Stimulate(**fields)


def _status() -> DeviceStatus:
    return DeviceStatus(True, 0, 1, 1, 1, 1, 1, 1)


def run_fuzz(cases: int = 100_000, *, seed: int = 0, stream_cases: int | None = None) -> list:
    """Run ``cases`` datagram cases and ``stream_cases`` (default ``cases // 5``) stream cases.

    Returns
    -------
    list[FuzzReport]
        One report per mode: datagram, then stream.
    """
    stream_cases = cases // 5 if stream_cases is None else stream_cases
    logging.getLogger("corticast.emulator").setLevel(logging.CRITICAL)
    return [_datagrams(cases, seed), _stream(stream_cases, seed + 1)]


def _datagrams(cases: int, seed: int) -> FuzzReport:
    rng = random.Random(seed)
    clock = _FakeClock()
    emulator = FirmwareEmulator(BridgeSettings(transport="udp"), _DEVICE, clock=clock)
    gen = _Cases(rng, clock, lambda: emulator.session)
    report = FuzzReport("datagram (UDP)")
    report.by_category = {c: Counter() for c in CATEGORIES}
    started = time.perf_counter()
    _keep_armed(emulator, clock)
    for i in range(cases):
        clock.now += _SECONDS_PER_CASE
        if i % 100 == 0:
            _keep_armed(emulator, clock)
        if i % _CONTROL_EVERY == 0:
            report.controls_sent += 1
            report.controls_done += _control_train(emulator, gen)
        category = CATEGORIES[i % len(CATEGORIES)]
        data = gen.make(category)
        outcome = _one_case(emulator, data, report)
        report.cases += 1
        report.by_category[category][outcome] += 1
    report.device_faults = emulator.counters["device_faults"]
    report.seconds = time.perf_counter() - started
    return report


def _one_case(emulator: FirmwareEmulator, data: bytes, report: FuzzReport) -> str:
    pulses = len(emulator.pulses)
    logged = emulator.counters["logged_errors"]
    try:
        replies = emulator.process(data)
    except Exception:
        report.crashes += 1
        return "crash"
    if len(emulator.pulses) > pulses:
        report.fuzz_pulses += len(emulator.pulses) - pulses
        return "pulse"
    parsed = [_parse(reply) for reply in replies]
    nacks = [p for p in parsed if isinstance(p, Nack)]
    for nack in nacks:
        report.nack_codes[_code_name(nack.code)] += 1
    if any(not isinstance(p, Nack) for p in parsed):
        report.accepted += 1
        return "accepted"
    if nacks:
        report.nacked += 1
        return "nack"
    if emulator.counters["logged_errors"] > logged:
        report.logged_only += 1
        return "logged"
    report.silent += 1
    return "silent"


def _stream(cases: int, seed: int) -> FuzzReport:
    """All cases back to back, cut into random chunks, with controls between them."""
    rng = random.Random(seed)
    clock = _FakeClock()
    emulator = FirmwareEmulator(BridgeSettings(transport="tcp"), _DEVICE, clock=clock)
    gen = _Cases(rng, clock, lambda: emulator.session, stream=True)
    report = FuzzReport("byte stream (serial/TCP)", per_case=False)
    started = time.perf_counter()
    status_sequences: set[int] = set()
    answered: set[int] = set()
    pending = bytearray(encode_message(Arm(clock.ms()), 1))
    wire = bytearray()
    replies: list[bytes] = []
    for i in range(cases):
        clock.now += _SECONDS_PER_CASE
        if i % _STATUS_EVERY == 0:
            seq = gen.sequence()
            status_sequences.add(seq)
            pending += encode_message(Heartbeat(clock.ms()), gen.sequence())
            pending += encode_message(StatusRequest(), seq)
        category = CATEGORIES[i % len(CATEGORIES)]
        if category == "valid_crc":
            category = "bit_flipped"  # a replayed intact train would be a control, not a case
        pending += gen.make(category)
        report.cases += 1
        while len(pending) > 4096 or (i == cases - 1 and pending):
            cut = min(len(pending), rng.randint(1, 4096))
            wire += pending[:cut]
            try:
                replies += emulator.process(bytes(pending[:cut]))
            except Exception:
                report.crashes += 1
            del pending[:cut]
    try:
        emulator._decoder.flush()
    except Exception:
        report.crashes += 1
    for reply in replies:
        parsed = _parse(reply)
        if isinstance(parsed, Nack):
            report.nacked += 1
            report.nack_codes[_code_name(parsed.code)] += 1
        elif isinstance(parsed, DeviceStatus):
            answered.add(_sequence(reply))
    report.controls_sent = len(status_sequences)
    report.controls_done = len(status_sequences & answered)
    report.logged_only = emulator.counters["logged_errors"]
    report.reassembled_trains = reassembled_trains(emulator.pulses, bytes(wire), gen.intact_trains)
    report.fuzz_pulses = len(emulator.pulses) - report.reassembled_trains
    report.device_faults = emulator.counters["device_faults"]
    report.seconds = time.perf_counter() - started
    return report


def reassembled_trains(pulses: Sequence[dict], wire: bytes, intact_trains: list[bytes]) -> int:
    """How many delivered trains were an intact, valid train the byte stream carried whole.

    A stream has no boundaries: a train cut short, followed by a next case whose first bytes
    happen to be the ones cut (a one-byte CRC tail matches about once in 256), puts the
    intact train back on the wire. The device cannot tell it from one sent whole, and must
    deliver it. Such a pulse is not one from fuzz; any other pulse is.
    """
    on_wire = {
        _train_key(_sequence(frame), _parse(frame)) for frame in intact_trains if frame in wire
    }
    return sum(_train_key(p["sequence"], SimpleNamespace(**p)) in on_wire for p in pulses)


def _train_key(sequence: int, train: Stimulate | SimpleNamespace) -> tuple:
    """What identifies a train: a parsed STIMULATE or the emulator's record of a delivery."""
    return (
        sequence,
        train.session,
        tuple(train.channels),
        train.amplitude_ua,
        train.phase_width_us,
        train.frequency_hz,
        train.train_duration_ms,
    )


def _keep_armed(emulator: FirmwareEmulator, clock: _FakeClock) -> None:
    """A fresh ARM (a new session) and a heartbeat, both on time."""
    for message in (Arm(clock.ms()), Heartbeat(clock.ms())):
        emulator.process(encode_message(message, 0))


def _control_train(emulator: FirmwareEmulator, gen: _Cases) -> int:
    """An intact, valid train: proves the armed device delivers what is not malformed."""
    _keep_armed(emulator, gen.clock)
    frame = encode_message(gen.valid_stimulate(), gen.sequence())
    before = len(emulator.pulses)
    emulator.process(frame)
    gen.last_control = frame
    return len(emulator.pulses) - before


def _parse(reply: bytes):
    (item,) = FrameDecoder(datagram=True).feed(reply)
    if not isinstance(item, Frame):
        raise RuntimeError(f"the emulator sent a malformed reply: {item}")
    return parse_message(item)


def _sequence(reply: bytes) -> int:
    return struct.unpack_from("<I", reply, 4)[0]


def _code_name(code: int) -> str:
    try:
        return ErrorCode(code).name
    except ValueError:
        return f"0x{code:02X}"


def format_report(reports: list[FuzzReport]) -> str:
    """Markdown tables: the summary per mode, datagram outcomes per category, NACK codes."""
    lines = [
        "| mode | cases | NACK | logged error (no NACK) | accepted | unanswered | crash | "
        "device faults | pulses from fuzz | controls answered | s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in reports:
        # In a stream, replies cannot be attributed to cases; controls are checked instead.
        accepted, silent = (r.accepted, r.silent) if r.per_case else ("n/a", "n/a")
        lines.append(
            f"| {r.mode} | {r.cases:,} | {r.nacked:,} | {r.logged_only:,} | {accepted} | "
            f"{silent} | {r.crashes} | {r.device_faults} | {r.fuzz_pulses} | "
            f"{r.controls_done}/{r.controls_sent} | {r.seconds:.1f} |"
        )
    lines += [
        f"\n{r.mode}: {r.reassembled_trains} train(s) cut short were completed by the bytes "
        "after them into the intact, valid train they were cut from, and delivered as they "
        "must be; not counted as pulses from fuzz."
        for r in reports
        if r.reassembled_trains
    ]
    datagram = reports[0]
    lines += [
        "",
        "| datagram category | cases | NACK | logged error | crash | pulse |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, counts in datagram.by_category.items():
        lines.append(
            f"| {name} | {sum(counts.values()):,} | {counts['nack']:,} | {counts['logged']:,} | "
            f"{counts['crash']} | {counts['pulse']} |"
        )
    codes = Counter()
    for r in reports:
        codes.update(r.nack_codes)
    lines += ["", "| NACK code | count |", "|---|---:|"]
    lines += [f"| {name} | {n:,} |" for name, n in codes.most_common()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=100_000, help="datagram cases")
    parser.add_argument("--stream-cases", type=int, default=None, help="default: cases / 5")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    reports = run_fuzz(args.cases, seed=args.seed, stream_cases=args.stream_cases)
    print(f"protocol fuzz, seed {args.seed}, Python {platform.python_version()}\n")
    print(format_report(reports))
    verdict = all(r.ok for r in reports)
    print(f"\nverdict: {'PASS' if verdict else 'FAIL'}")
    return 0 if verdict else 1


if __name__ == "__main__":
    raise SystemExit(main())
