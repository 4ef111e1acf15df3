"""One command to the device and its reply, within the ACK deadline.

The reply is the frame that carries the command's sequence number and answers it (an ACK of
its type, a NACK, or a STATUS for a STATUS_REQUEST). Everything else from the device is
skipped: bad frames, commands on the link (a looped-back link), replies that answer nothing.
Each is counted in the metrics, and each kind warned about at most once an interval, because
a noisy line sends bad frames by the thousand. Replies to other sequence numbers are counted
too, and a timeout names them: a device that does not echo sequence numbers otherwise looks
exactly like one that says nothing. So does a keyed device to a keyless host (it drops
untagged frames unanswered): a timeout on a connection nothing has answered yet says so.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable

from firmware_bridge.bridge_metrics import OTHER_SEQUENCE, BridgeMetrics
from firmware_bridge.errors import AckTimeoutError, ErrorCode, FirmwareError
from firmware_bridge.frame_decoder import FrameDecoder
from firmware_bridge.messages import (
    Ack,
    DeviceStatus,
    Message,
    Nack,
    encode_message,
    parse_message,
)
from firmware_bridge.transport import Transport
from firmware_bridge.wire import DEVICE_REPLIES, SEQUENCE_MODULUS, Frame, MessageType
from service.core.rate_limited_log import RateLimitedLog

_log = logging.getLogger("corticast.bridge")

Reply = Ack | Nack | DeviceStatus


class WireExchange:
    """Numbers the host's commands, sends each, and waits for the reply that answers it.

    Not thread-safe: the bridge calls it under its exchange lock, so replies are never
    taken by the wrong waiter and sequence numbers are never handed out twice.

    Parameters
    ----------
    metrics
        Where the ACK latency and the frame errors are counted.
    key
        The link key commands are authenticated with (None: an unkeyed link).
    ack_timeout_s
        How long a command waits for its reply.
    clock
        Spaces the warnings about bad frames (the bridge's interlock clock).
    """

    def __init__(
        self,
        metrics: BridgeMetrics,
        key: bytes | None,
        ack_timeout_s: float,
        clock: Callable[[], float],
    ) -> None:
        self._metrics = metrics
        self._key = key
        self._ack_timeout_s = ack_timeout_s
        self._frame_warnings = {
            kind: RateLimitedLog(_log, clock=clock)
            for kind in ("bad frame", "other sequence", "command", "bad reply", "no answer")
        }
        self._sequence = secrets.randbits(32)
        self._answered_on: int | None = None  # the connection_id a reply last came on

    def next_sequence(self) -> int:
        self._sequence = (self._sequence + 1) % SEQUENCE_MODULUS
        return self._sequence

    def send_and_wait(
        self,
        transport: Transport,
        decoder: FrameDecoder,
        kind: MessageType,
        sequence: int,
        message: Message,
        send: Callable[[Transport, bytes], None],
    ) -> Reply:
        """Encode ``message`` as ``sequence``, hand it to ``send`` and wait for its reply.

        ``send`` puts the bytes on ``transport``; the bridge passes one that first checks
        the host is still armed for a STIMULATE (and raises if not, sending nothing).

        Raises
        ------
        AckTimeoutError
            If no reply came before the deadline.
        TransportError
            If the link broke.
        """
        deadline_s = self._ack_timeout_s
        started = time.monotonic()
        send(transport, encode_message(message, sequence, key=self._key))
        strays: list[Frame] = []  # replies that came under other sequence numbers
        while (remaining := started + deadline_s - time.monotonic()) > 0:
            data = transport.receive(remaining)
            # A new connection (the link reconnected) drops what the old one left half-decoded.
            items = decoder.feed(data, connection=transport.connection_id) if data else ()
            for item in items:
                reply = self._match(item, kind, sequence, strays)
                if reply is not None:
                    self._metrics.ack_latency.observe(time.monotonic() - started)
                    self._answered_on = transport.connection_id
                    return reply
        if self._key is not None:
            hint = (
                "; a keyed device answers nothing it cannot authenticate: check that it has "
                "this link_key_file's key"
            )
        elif transport.connection_id != self._answered_on:
            # Once the device has answered untagged frames it is not keyed: no hint then.
            hint = (
                "; nothing has answered on this connection yet: a device that requires a link "
                "key stays silent to untagged frames (is [bridge] link_key_file set on both "
                "sides?)"
            )
        else:
            hint = ""
        if strays:
            last = strays[-1]
            hint += (
                f"; {len(strays)} {'reply' if len(strays) == 1 else 'replies'} to another "
                f"sequence number came instead ({last.message_type.name} #{last.sequence}): "
                "late replies to earlier commands, or a device that does not echo them"
            )
        raise AckTimeoutError(f"no reply to {kind.name} #{sequence} within {deadline_s:g} s{hint}")

    def _match(
        self, item: Frame | FirmwareError, kind: MessageType, sequence: int, strays: list[Frame]
    ) -> Reply | None:
        """The reply to the pending command, or None (after counting what was wrong; a reply
        to another sequence number also added to ``strays``, for the timeout to name)."""
        if isinstance(item, FirmwareError):
            self._metrics.frame_errors.labels(item.code.name).inc()
            self._warn("bad frame", "bad frame from the device: %s", item)
            return None
        if item.sequence != sequence:
            strays.append(item)
            self._metrics.frame_errors.labels(OTHER_SEQUENCE).inc()
            self._warn(
                "other sequence",
                "ignored %s #%d while waiting for %s #%d: a late reply to an earlier command, "
                "or a device that does not echo sequence numbers",
                item.message_type.name,
                item.sequence,
                kind.name,
                sequence,
            )
            return None
        if item.message_type not in DEVICE_REPLIES:
            self._metrics.frame_errors.labels(ErrorCode.UNEXPECTED_TYPE.name).inc()
            self._warn(
                "command",
                "device sent %s #%d, a command, not a reply (is the link looped back?)",
                item.message_type.name,
                item.sequence,
            )
            return None
        try:
            reply = parse_message(item)
        except FirmwareError as err:
            self._metrics.frame_errors.labels(err.code.name).inc()
            self._warn("bad reply", "bad reply from the device: %s", err)
            return None
        if isinstance(reply, Nack):
            return reply  # any refusal of this sequence number counts, whatever type it names
        if isinstance(reply, Ack) and reply.acked_type == kind:
            return reply
        if isinstance(reply, DeviceStatus) and kind == MessageType.STATUS_REQUEST:
            return reply
        self._metrics.frame_errors.labels(ErrorCode.UNEXPECTED_TYPE.name).inc()
        self._warn("no answer", "reply %r does not answer %s #%d", reply, kind.name, sequence)
        return None

    def _warn(self, kind: str, message: str, *args: object) -> None:
        """A warning about a frame from the device, at most once an interval for each kind."""
        self._frame_warnings[kind].log(logging.WARNING, message, *args)
