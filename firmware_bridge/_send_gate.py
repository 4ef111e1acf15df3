"""Whether the host is armed, behind a short lock of its own: the send gate.

Disarming must never wait for the bridge's exchange lock: a request may hold it for as long as
the audit log takes to fsync, and an arm for a whole ARM exchange. So the armed state lives
here, under a lock held only for a few assignments (and, for a STIMULATE, one send), with an
*arm generation* that every arm and disarm bumps. A request remembers the generation it was
admitted under and its STIMULATE leaves only if that generation is still current; an arm arms
only if no disarm came during its exchange. Every field here is written under this lock only.

The armed state and why it was last disarmed are one immutable :class:`GateView`, replaced
whole under the lock and read whole without it: the bridge's status reads them together
without waiting (the lock is held through a STIMULATE's send), and never a disarm half done
(disarmed, with no reason yet) or the fields of two different arms and disarms.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from firmware_bridge.bridge_metrics import BridgeMetrics
from firmware_bridge.errors import BridgeError
from firmware_bridge.transport import Transport


class DisarmedBeforeSendError(BridgeError):
    """A train admitted while armed met a disarm before its STIMULATE could leave."""


@dataclass(frozen=True)
class GateView:
    """The host's armed state and why it was last disarmed, as one arm or disarm left them:
    the reason and cause are None exactly while armed."""

    armed: bool
    last_disarm_reason: str | None
    last_disarm_cause: str | None


class SendGate:
    """The host's armed state, its arm generation, and why it was last disarmed.

    Parameters
    ----------
    metrics
        Its ``armed`` gauge follows the state (set under the lock); ``disarms`` counts the
        disarms that are recorded.
    last_disarm
        (reason, cause) it reports as its last disarm until it arms; None: disarmed at start.
    """

    def __init__(self, metrics: BridgeMetrics, last_disarm: tuple[str, str] | None = None) -> None:
        self._metrics = metrics
        self._lock = threading.Lock()
        self._generation = 0
        self._closing = False
        reason, cause = last_disarm or ("disarmed at start", "start")
        self._view = GateView(armed=False, last_disarm_reason=reason, last_disarm_cause=cause)

    @property
    def armed(self) -> bool:
        return self._view.armed

    @property
    def view(self) -> GateView:
        """The armed state and the last disarm's reason and cause, read together without
        waiting for the lock."""
        return self._view

    @property
    def closing(self) -> bool:
        """``close()`` was entered: the host never arms again."""
        return self._closing

    def state(self) -> tuple[bool, int]:
        """Armed, and the arm generation, read together (a request is admitted under both)."""
        with self._lock:
            return self._view.armed, self._generation

    def arm(self, generation: int) -> str | None:
        """Arm, unless a disarm or close was entered since ``generation`` was read.

        Returns None if it armed, else what came in between: ``"close"`` or ``"disarm"``.
        """
        with self._lock:
            lost_to = "close" if self._closing else "disarm"
            if not self._closing and self._generation == generation:
                self._view = GateView(armed=True, last_disarm_reason=None, last_disarm_cause=None)
                self._generation += 1
                self._metrics.armed.set(1)
                return None
        return lost_to

    def disarm(self, cause: str, reason: str, *, quiet: bool, closing: bool = False) -> bool:
        """Forbid stimulation at once, without waiting for a request or an exchange.

        Returns whether the host was armed. Bumping the arm generation stops a STIMULATE
        admitted under an older one from being sent, and an ARM exchange that began under an
        older one from arming. A ``quiet`` disarm (faults, closing) is recorded as the
        last disarm only if the host was armed; an operator's is recorded always.
        """
        with self._lock:
            before = self._view
            self._generation += 1
            self._closing = self._closing or closing
            recorded = before.armed or not quiet
            if recorded:
                self._view = GateView(
                    armed=False, last_disarm_reason=reason, last_disarm_cause=cause
                )
            self._metrics.armed.set(0)
        if recorded:
            self._metrics.disarms.labels(cause).inc()
        return before.armed

    def send(self, transport: Transport, data: bytes, armed_generation: int | None) -> None:
        """Send ``data``; with ``armed_generation`` (a STIMULATE), only while the host is
        armed in it.

        That check and the send happen under the gate, so a disarm is either entirely
        before them (nothing sent) or entirely after (the command left first). Other commands
        deliver nothing and do not take the gate, so a disarm never waits for, say, a TCP
        reconnect started by a heartbeat.

        A STIMULATE's send holds the gate while the link writes it: on a serial line whose
        device stops reading, up to the write timeout (``transport.WRITE_TIMEOUT_S``, 1 s), so
        a disarm entered meanwhile flips the host when the write ends, or fails (a fault, which
        disarms). Nothing sooner would be safe or of use: the STIMULATE's bytes may be on the
        line already (a disarm that did not wait could not say whether the train left), and a
        DISARM could only follow them on the same byte stream, which the device is not reading.

        Raises
        ------
        DisarmedBeforeSendError
            If the host was disarmed (or armed anew) since ``armed_generation``: nothing sent.
        """
        if armed_generation is None:
            transport.send(data)
            return
        with self._lock:
            if armed_generation != self._generation:
                raise DisarmedBeforeSendError(
                    "disarmed after this train was admitted and before it was sent: nothing "
                    "sent, so it is withdrawn from refractory and budgets"
                )
            transport.send(data)
