"""A test device on a real UDP socket whose replies follow a script: ACK, NACK, silence,
garbage, corrupted or misaddressed replies. It plays the device in tests of the bridge's
reactions to every kind of answer; it has no interlocks of its own."""

from __future__ import annotations

import threading
from collections import defaultdict, deque

from firmware_bridge.frame_decoder import FrameDecoder
from firmware_bridge.messages import Ack, DeviceStatus, Nack, encode_message
from firmware_bridge.udp_transport import UdpTransport
from firmware_bridge.wire import Frame, MessageType

BEHAVIOURS = (
    "ack",
    "ack_disarmed",
    "ack_armed",
    "nack",
    "silent",
    "garbage",
    "corrupt",
    "wrong_sequence",
    "wrong_type",
    "stale_then_ack",
    "garbage_then_ack",
    "noise_then_ack",
    "status_reply",
)
"""What the device may do with one command. Only "ack", "stale_then_ack", "garbage_then_ack"
and "noise_then_ack" deliver a well-formed, matching ACK."""

NOISE_FRAMES = 40
"""Corrupted copies of its ACK that "noise_then_ack" sends first (a noisy line)."""


class ScriptedDevice:
    """Answers each command with the next behaviour planned for its type ("ack" when none)."""

    def __init__(self) -> None:
        self.transport = UdpTransport.bind("127.0.0.1", 0)
        self.port = self.transport.local_address[1]
        self.armed = False
        self.session = 0  # the arm session its ACKs report; 0 exactly while disarmed
        self.received: list[Frame] = []
        self.nack_code = 0x10
        self._plans: defaultdict[MessageType, deque[str]] = defaultdict(deque)
        self._decoder = FrameDecoder(datagram=True)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._serve, name="scripted-device", daemon=True)
        self._thread.start()

    def plan(self, kind: MessageType, behaviour: str) -> None:
        if behaviour not in BEHAVIOURS:
            raise ValueError(f"unknown behaviour {behaviour!r}")
        self._plans[kind].append(behaviour)

    def clear_plans(self) -> None:
        self._plans.clear()

    def stimulate_sequences(self) -> list[int]:
        with self._lock:
            return [f.sequence for f in self.received if f.message_type == MessageType.STIMULATE]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.transport.close()

    def __enter__(self) -> ScriptedDevice:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _serve(self) -> None:
        while not self._stop.is_set():
            data = self.transport.receive(0.01)
            if not data:
                continue
            (item,) = self._decoder.feed(data)
            if not isinstance(item, Frame):
                continue
            with self._lock:
                self.received.append(item)
            plans = self._plans[item.message_type]
            behaviour = plans.popleft() if plans else "ack"
            for reply in self._replies(item, behaviour):
                self.transport.send(reply)

    def _replies(self, frame: Frame, behaviour: str) -> list[bytes]:
        kind, sequence = frame.message_type, frame.sequence
        if behaviour in ("ack", "stale_then_ack", "garbage_then_ack", "noise_then_ack"):
            if kind == MessageType.ARM:
                self.armed, self.session = True, self.session % 0xFFFF_FFFF + 1
            elif kind == MessageType.DISARM:
                self.armed = False
        ack = encode_message(self._ack(kind), sequence)
        if behaviour == "ack":
            return [ack]
        if behaviour == "ack_disarmed":
            self.armed = False
            return [encode_message(self._ack(kind), sequence)]
        if behaviour == "ack_armed":  # a faulty device: it acknowledges, and stays armed
            return [encode_message(Ack(kind, True, self.session or 1), sequence)]
        if behaviour == "nack":
            return [encode_message(Nack(kind, self.nack_code, self.armed), sequence)]
        if behaviour == "silent":
            return []
        if behaviour == "garbage":
            return [b"\x00\xff" * 7]
        if behaviour == "corrupt":
            return [ack[:-1] + bytes([ack[-1] ^ 0x01])]
        if behaviour == "noise_then_ack":
            return [ack[:-1] + bytes([ack[-1] ^ 0x01])] * NOISE_FRAMES + [ack]
        if behaviour == "wrong_sequence":
            return [encode_message(self._ack(kind), (sequence + 1) % 2**32)]
        if behaviour == "wrong_type":
            other = MessageType.HEARTBEAT if kind != MessageType.HEARTBEAT else MessageType.ARM
            return [encode_message(self._ack(other), sequence)]
        if behaviour == "status_reply":  # well formed, right sequence, but no answer to it
            return [encode_message(DeviceStatus(self.armed, 0, 0, 5, 600, 1, 0, 1000), sequence)]
        if behaviour == "stale_then_ack":
            return [encode_message(self._ack(kind), (sequence - 1) % 2**32), ack]
        return [b"garbage!", ack]

    def _ack(self, kind: MessageType) -> Ack:
        # A test may set ``armed`` behind the host's back: some session is open then too.
        return Ack(kind, self.armed, (self.session or 1) if self.armed else 0)
