"""The daemon as the control process sees it: each operation a call over the control link.

:class:`RemoteDaemon` offers what the HTTP routers and the query socket use of
:class:`service.daemon.daemon.Daemon` (``status``, ``readiness``, ``arm``, ``disarm``,
``set_policy``, ``swap_model``, ``latest_prediction``, ``registry``) and a history for the
query socket, so ``create_app`` and ``QueryServer`` serve it unchanged. The failures the API
tells apart come back as the same exception types; a loop process that does not answer is a
:class:`LoopUnreachableError` (HTTP 503), never a hang.

What is only read (the status document, readiness, the metrics) is kept for
``snapshot_max_age_s`` and shared by every request in that time
(``service.core.kept_snapshots``): however many clients poll, the loop's process renders each
at most once per period. Any control call drops the kept copies, so an operator's own change
shows at once; a change of the loop's own (a fault's disarm) shows within the period.
"""

from __future__ import annotations

import socket
import struct
import threading
import time
from collections.abc import Iterator
from multiprocessing.connection import Connection, answer_challenge, deliver_challenge
from pathlib import Path
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry
from prometheus_client.core import Metric
from prometheus_client.parser import text_string_to_metric_families

from firmware_bridge import Disarmed
from service.core.errors import CorticastError
from service.core.kept_snapshots import Kept, KeptSnapshots
from service.daemon.link_protocol import SENT_AS_THEMSELVES, LinkAddress
from service.daemon.status import Readiness
from service.inference.model_files import ModelFileError
from service.policy.limits import PolicyLimitError
from service.policy.settings import PolicySettings
from service.zmq_api.wire import decode_message

CALL_TIMEOUT_S = 10.0
"""Longest a call waits for the loop's process (a status under load takes milliseconds)."""
SWAP_TIMEOUT_S = 300.0
"""Longest a hot swap may take: it loads and warms a model, and under ``[model] serving =
"auto"`` measures it (seconds; ``service.inference.serving_probe`` bounds it)."""


class LoopUnreachableError(CorticastError, RuntimeError):
    """The loop's process did not answer (gone, stopping, or stuck); the API answers 503."""


class RemoteCallError(CorticastError, RuntimeError):
    """The loop's process failed a call in a way the API has no answer of its own for."""


def rebuild_error(kind: str, message: str, detail: Any) -> Exception:
    """The exception the loop's process raised, as the API's handlers expect it."""
    if kind == "ModelFileError":
        return ModelFileError(message, detail)
    if kind == "PolicyLimitError":
        return PolicyLimitError([tuple(problem) for problem in detail])
    return SENT_AS_THEMSELVES.get(kind, RemoteCallError)(message)


class RemoteDaemon:
    """The daemon in the loop's process, reached over the control link.

    Each thread (uvicorn runs a sync endpoint on a pool) keeps a connection of its own, so
    a swap waiting for its model never holds up a disarm.
    """

    def __init__(
        self,
        address: LinkAddress,
        *,
        snapshot_max_age_s: float = 0.1,
        call_timeout_s: float = CALL_TIMEOUT_S,
    ) -> None:
        self._address = address
        self._call_timeout_s = call_timeout_s
        self._local = threading.local()
        self._kept = KeptSnapshots(snapshot_max_age_s)
        self.registry = CollectorRegistry()
        """The loop's metrics, read through the link at each scrape; the control process
        registers its own (the query socket's) here too."""
        self.registry.register(_LoopMetrics(self))
        self.history = RemoteHistory(self)

    # ------------------------------------------------------------------ what is read
    def status(self) -> dict[str, Any]:
        return self._snapshot("status")

    def status_kept(self) -> Kept:
        """:meth:`status` and how long ago it came from the loop, for the status query."""
        return self._kept.get_kept("status", lambda: self.call("status"))

    def readiness(self) -> Readiness:
        return self._snapshot("readiness")

    def metrics_text(self) -> bytes:
        return self._snapshot("metrics")

    @property
    def armed(self) -> bool:
        return self.call("armed")

    def latest_prediction(self) -> tuple[dict[str, Any], np.ndarray] | None:
        return self.history.latest_decoded()

    # ------------------------------------------------------------------ control
    def arm(self) -> None:
        """Arm; the call carries the moment this side stops counting on its answer, half its
        timeout from now (the other half is for the answer to come back), on the monotonic
        clock both processes share: an arm that the loop's process gets to only after it,
        which the operator has been told failed, is undone there."""
        deadline = time.monotonic() + self._call_timeout_s / 2
        try:
            self.call("arm", deadline)
        finally:
            self._forget()

    def disarm(self, reason: str = "operator request") -> Disarmed:
        try:
            return self.call("disarm", reason)
        finally:
            self._forget()

    def disarm_then_armed(self, reason: str = "operator request") -> tuple[Disarmed, bool]:
        """The loop's ``Daemon.disarm_then_armed``: the disarm and the state after it in one
        call, so a link lost between them cannot answer a disarm that happened as failed."""
        try:
            return self.call("disarm_then_armed", reason)
        finally:
            self._forget()

    def set_policy(self, policy: PolicySettings) -> None:
        try:
            self.call("set_policy", policy.model_dump(mode="json"))
        finally:
            self._forget()

    def swap_model(self, path: Path, step_path: Path | None = None) -> dict[str, Any]:
        step = None if step_path is None else str(step_path)
        try:
            return self.call("swap_model", str(path), step, timeout_s=SWAP_TIMEOUT_S)
        finally:
            self._forget()

    # ------------------------------------------------------------------ the link
    def call(self, name: str, *args: Any, timeout_s: float | None = None) -> Any:
        """``name(*args)`` in the loop's process; its failure raised here as the same kind.
        ``timeout_s`` defaults to the ``call_timeout_s`` it was made with.

        Raises
        ------
        LoopUnreachableError
            If the loop's process cannot be reached or does not answer within ``timeout_s``.
        """
        timeout_s = self._call_timeout_s if timeout_s is None else timeout_s
        sent = False
        try:
            connection = self._connection(timeout_s)
            connection.send((name, args))
            sent = True
            if not connection.poll(timeout_s):
                raise TimeoutError(f"no answer within {timeout_s:g} s")
            reply = connection.recv()
        except (OSError, EOFError) as err:  # TimeoutError is an OSError
            self._drop_connection()  # a late answer must not be read as the next call's
            # Sent, an operator's call may have been carried out all the same: say so, rather
            # than let "did not answer" read as "did not happen".
            fate = "it was sent: whether it took effect, /status says" if sent else "not sent"
            raise LoopUnreachableError(
                f"the loop's process did not answer {name!r}: {err or type(err).__name__}; {fate}"
            ) from None
        if reply[0] == "ok":
            return reply[1]
        raise rebuild_error(*reply[1:])

    def close(self) -> None:
        """Close this thread's connection (the others close with their threads' process)."""
        self._drop_connection()

    def _connection(self, timeout_s: float) -> Connection:
        connection = getattr(self._local, "connection", None)
        if connection is None:
            connection = _connect(self._address, timeout_s)
            self._local.connection = connection
        return connection

    def _drop_connection(self) -> None:
        connection = getattr(self._local, "connection", None)
        self._local.connection = None
        if connection is not None:
            connection.close()

    def _snapshot(self, name: str) -> Any:
        return self._kept.get(name, lambda: self.call(name))

    def _forget(self) -> None:
        self._kept.forget()


def _connect(address: LinkAddress, timeout_s: float) -> Connection:
    """``Client(path, authkey=...)``, but each send and receive bounded by ``timeout_s``: a
    stuck loop's process still completes the connection in its kernel, and ``Client`` would
    then wait forever for the key's challenge. The bound stays on the socket; a call's wait
    for its answer is ``poll``'s, which it does not touch.

    Raises
    ------
    TimeoutError
        If connecting or the handshake waited past ``timeout_s``.
    OSError
        If it cannot connect.
    EOFError
        If the loop's process closed the connection during the handshake.
    """
    seconds, fraction = divmod(timeout_s, 1.0)
    limit = struct.pack("@ll", int(seconds), int(fraction * 1e6))  # struct timeval
    connection = None
    try:
        with socket.socket(socket.AF_UNIX) as sock:
            for option in (socket.SO_SNDTIMEO, socket.SO_RCVTIMEO):  # connect() waits on SND
                sock.setsockopt(socket.SOL_SOCKET, option, limit)
            sock.connect(address.path)
            connection = Connection(sock.detach())
        # both ends prove the key, as Client(authkey=...) does
        answer_challenge(connection, address.authkey)
        deliver_challenge(connection, address.authkey)
    except BaseException as err:
        if connection is not None:
            connection.close()
        if isinstance(err, BlockingIOError):  # what a socket's timeout raises
            raise TimeoutError(f"not connected within {timeout_s:g} s") from None
        raise
    return connection


class RemoteHistory:
    """The publisher's history, as the query socket reads it (``latest``, ``get``,
    ``describe``: each a prediction's frames exactly as published, or None), read through the
    link at every query."""

    def __init__(self, daemon: RemoteDaemon) -> None:
        self._daemon = daemon

    def latest(self) -> Any:
        return self._daemon.call("latest")

    def get(self, input_seq: int) -> Any:
        return self._daemon.call("by_seq", input_seq)

    def describe(self, asked: int | None = None) -> str:
        return self._daemon.call("describe_history", asked)

    def latest_decoded(self) -> tuple[dict[str, Any], np.ndarray] | None:
        stored = self.latest()
        return None if stored is None else decode_message(stored.header, stored.payload)


class _LoopMetrics:
    """A collector yielding the loop's metrics, parsed from its exposition at each scrape."""

    def __init__(self, daemon: RemoteDaemon) -> None:
        self._daemon = daemon

    def collect(self) -> Iterator[Metric]:
        text = self._daemon.metrics_text().decode()
        yield from text_string_to_metric_families(text)
