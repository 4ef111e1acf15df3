"""Python client of corticast's ZeroMQ API: predictions as numpy arrays, queries as calls.

Subscribe, print and plot (with the daemon or ``make demo`` running on this machine)::

    import numpy as np
    from service.zmq_api.client import PredictionClient

    with PredictionClient() as client:  # tcp://127.0.0.1:5556 and :5557
        print(client.status())
        for _ in range(50):
            message = client.receive(timeout_s=1.0)
            if message is None:
                print("no prediction within 1 s: is the daemon running?")
                continue
            future = message.array  # (16, 18, 20) float32 µV, read-only
            latency = message.header["latency"]
            weights = message.blend_weights  # the model's share per frame, 0 = persistence
            print(
                f"input_seq {message.header['input_seq']}: "
                f"{latency['age_s'] * 1e3:.2f} ms old at publish, "
                f"peak {np.abs(future).max():.1f} µV over the 16 frames, "
                f"model weight {weights.min():.2f} to {weights.max():.2f}"
            )
        print("messages missed:", client.missed)
        newest = client.latest()  # the newest prediction, from the query socket

    import matplotlib.pyplot as plt  # pip install matplotlib

    plt.imshow(newest.array[-1], cmap="RdBu_r")  # the 16th predicted frame, µV
    plt.title(f"input_seq {newest.header['input_seq']}, LSL time {newest.timestamps[-1]:.4f} s")
    plt.colorbar()
    plt.show()

A missed prediction (``client.missed`` counts the ``msg_seq`` gaps) can be fetched while the
daemon still holds it: ``client.by_seq(input_seq)``. For a daemon behind CURVE, pass the
server's public ``.key`` file and this client's ``.key_secret`` file; a daemon that refuses the
handshake (a key it does not admit, the wrong server key, CURVE on one side only) makes
``receive()`` and the queries raise :class:`HandshakeError`, saying which.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import numpy as np
import zmq

from service.core.checks import check_int, check_positive, check_type
from service.core.errors import CorticastError
from service.zmq_api._handshake import HandshakeWatch
from service.zmq_api._security import (
    CurveKeys,
    check_connect_endpoint,
    load_public_key,
    load_secret_keys,
    make_curve_client,
)
from service.zmq_api.wire import TOPICS, decode_array, decode_header

_LONGEST_WAIT_S = (2**31 - 1) // 1000
"""ZeroMQ counts a wait in int milliseconds: about 24.8 days at most (``receive(timeout_s=None)``
waits without end)."""


def _check_wait(name: str, seconds: Any) -> None:
    check_positive(name, seconds)
    if seconds > _LONGEST_WAIT_S:
        raise ValueError(
            f"'{name}' must be a wait of at most {_LONGEST_WAIT_S} s (about 24.8 days, the "
            f"longest ZeroMQ counts), got {seconds!r}"
        )


@dataclass(frozen=True, eq=False)
class Message:
    """One message from the daemon.

    Attributes
    ----------
    topic
        ``prediction``, ``wave``, ``stim`` or ``status``.
    header
        The JSON header (fields listed in ``service.zmq_api.publisher``).
    array
        The payload, float32 in the header's shape (read-only: ``.copy()`` to modify), or
        None when the message carries none.
    """

    topic: str
    header: dict[str, Any]
    array: np.ndarray | None

    @property
    def timestamps(self) -> np.ndarray | None:
        """LSL times of the predicted frames (None for messages that are not predictions)."""
        first, period = self.header.get("first_frame_timestamp"), self.header.get("frame_period_s")
        if self.array is None or first is None or period is None:
            return None
        return first + period * np.arange(self.array.shape[0])

    @property
    def blend_weights(self) -> np.ndarray | None:
        """The model's weight per predicted frame (the rest is persistence and the AR
        baseline's share, ``blend_ar_weights``), or None for messages that are not
        predictions or come from a daemon that does not blend."""
        weights = self.header.get("blend_weights")
        return None if weights is None else np.asarray(weights, dtype=np.float64)

    @property
    def blend_ar_weights(self) -> np.ndarray | None:
        """The live AR baseline's weight per predicted frame, or None where ``blend_weights``
        is, or from a daemon that does not blend the AR in (persistence has what the model and
        the AR leave)."""
        weights = self.header.get("blend_ar_weights")
        return None if weights is None else np.asarray(weights, dtype=np.float64)


class QueryError(CorticastError, RuntimeError):
    """The daemon answered a query with an error; ``error`` is its text."""

    def __init__(self, error: str) -> None:
        super().__init__(f"corticast refused the query: {error}")
        self.error = error


class HandshakeError(CorticastError, ConnectionError):
    """The daemon's socket refused this client's handshake; ``reason`` says why. libzmq 4.3
    does not try again after a refused key or a CURVE mismatch (measured: no new attempt in
    2 s), so make a new client once the cause is fixed."""

    def __init__(self, endpoint: str, reason: str) -> None:
        super().__init__(f"cannot talk to the daemon at {endpoint!r}: {reason}")
        self.endpoint = endpoint
        self.reason = reason


class PredictionClient:
    """Subscriber to the PUB socket and requester on the query socket.

    Parameters
    ----------
    pub_endpoint
        The daemon's ``pub_endpoint`` (None: no subscription, queries only).
    query_endpoint
        The daemon's ``query_endpoint`` (None: no queries).
    topics
        Topics to receive, from ``prediction``, ``wave``, ``stim``, ``status``.
    server_key_file, client_key_file
        For a CURVE daemon: its public ``.key`` certificate and this client's ``.key_secret``
        (whose public half must be in the daemon's ``curve_allowed_clients_dir``).
    query_timeout_s
        How long :meth:`latest`, :meth:`by_seq` and :meth:`status` wait for a reply.
    receive_hwm
        Messages buffered here (at least 1). A reader that falls behind by more loses the
        newest as they arrive, not the oldest: what it reads next is stale. :attr:`missed`
        counts the loss when a later message arrives; ``header["sent_at"]`` dates each one.
    """

    def __init__(
        self,
        pub_endpoint: str | None = "tcp://127.0.0.1:5556",
        query_endpoint: str | None = "tcp://127.0.0.1:5557",
        topics: Iterable[str] = ("prediction",),
        *,
        server_key_file: str | Path | None = None,
        client_key_file: str | Path | None = None,
        query_timeout_s: float = 2.0,
        receive_hwm: int = 1000,
    ) -> None:
        topics = tuple(topics)
        for topic in topics:
            if topic not in TOPICS:
                raise ValueError(f"'topics' must hold only {TOPICS}, got {topic!r}")
        if pub_endpoint is not None and not topics:
            raise ValueError(
                f"'topics' must name at least one of {TOPICS} (none subscribes to nothing: "
                "receive() would never return a message); for queries only, pass "
                "pub_endpoint=None"
            )
        _check_wait("query_timeout_s", query_timeout_s)
        check_int("receive_hwm", receive_hwm, 1)  # ZeroMQ reads 0 as no limit at all
        if (server_key_file is None) != (client_key_file is None):
            raise ValueError(
                "'server_key_file' and 'client_key_file' must be given together for CURVE, got "
                f"{server_key_file!r} and {client_key_file!r}"
            )
        curve: tuple[CurveKeys, bytes] | None = None
        if server_key_file is not None:
            curve = (
                load_secret_keys("client_key_file", Path(client_key_file)),
                load_public_key("server_key_file", Path(server_key_file)),
            )
        self.query_timeout_s = query_timeout_s
        self.status_age_s: float | None = None
        """How old the status the last :meth:`status` returned was when the daemon replied:
        0.0 if rendered for that query, else up to its ``[api] snapshot_max_age_s``."""
        self._missed = dict.fromkeys(topics, 0)
        self._last_seq: dict[str, int] = {}
        self._context = zmq.Context()
        self._sub: zmq.Socket | None = None
        self._req: zmq.Socket | None = None
        self._watches: dict[zmq.Socket, HandshakeWatch] = {}
        try:
            if pub_endpoint is not None:
                check_type("pub_endpoint", pub_endpoint, str)
                check_connect_endpoint("pub_endpoint", pub_endpoint)  # ':99999' -> 34463
                self._sub = self._socket(zmq.SUB, curve)
                self._sub.rcvhwm = int(receive_hwm)
                for topic in topics:
                    self._sub.subscribe(topic.encode())
                self._sub.connect(pub_endpoint)
            if query_endpoint is not None:
                check_type("query_endpoint", query_endpoint, str)
                check_connect_endpoint("query_endpoint", query_endpoint)
                self._req = self._socket(zmq.REQ, curve)
                # Relaxed + correlated: after a timeout the next request may be sent, and a
                # late reply to the earlier one is recognised and discarded.
                self._req.setsockopt(zmq.REQ_RELAXED, 1)
                self._req.setsockopt(zmq.REQ_CORRELATE, 1)
                self._req.connect(query_endpoint)
        except BaseException:
            self.close()
            raise

    def _socket(self, kind: int, curve: tuple[CurveKeys, bytes] | None) -> zmq.Socket:
        socket = self._context.socket(kind)
        socket.linger = 0
        if curve is not None:
            make_curve_client(socket, *curve)
        self._watches[socket] = HandshakeWatch(socket, curve=curve is not None)
        return socket

    def close(self) -> None:
        """Close both sockets and the context; idempotent."""
        for socket in (self._sub, self._req):
            if socket is not None and not socket.closed:
                socket.close(linger=0)
        for watch in self._watches.values():
            watch.close()
        if not self._context.closed:
            self._context.term()

    def _check_open(self) -> None:
        if self._context.closed:
            raise RuntimeError("this client is closed (close() or its with-block ended)")

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def missed(self) -> dict[str, int]:
        """Messages per topic that never arrived here, from gaps in ``msg_seq`` (dropped by
        the daemon or by this client's full queue). Counting starts at the first message
        received; a ``msg_seq`` going back (the daemon restarted) starts it again."""
        return dict(self._missed)

    def receive(self, timeout_s: float | None = 1.0) -> Message | None:
        """The next message of a subscribed topic, or None after ``timeout_s`` (None: wait).

        Raises
        ------
        HandshakeError
            If no message is queued and the latest handshake with the daemon failed (as soon
            as it fails, within the wait).
        ValueError
            If the message does not follow the wire format (another schema version).
        """
        self._check_open()
        if self._sub is None:
            raise RuntimeError("this client has no subscription; pass 'pub_endpoint'")
        if timeout_s is not None:
            _check_wait("timeout_s", timeout_s)
        if not self._wait(self._sub, None if timeout_s is None else timeout_s * 1000):
            return None
        frames = self._sub.recv_multipart()
        if len(frames) != 3:
            raise ValueError(
                f"a message must have 3 frames (topic, header, payload), got {len(frames)}"
            )
        topic = frames[0].decode("ascii", errors="replace")
        header = decode_header(frames[1])
        message = Message(topic, header, decode_array(header, frames[2]))
        self._count_gap(topic, header.get("msg_seq"))
        return message

    def _count_gap(self, topic: str, seq: Any) -> None:
        if not isinstance(seq, int) or topic not in self._missed:
            return
        last = self._last_seq.get(topic)
        if last is not None and seq > last + 1:
            self._missed[topic] += seq - last - 1
        self._last_seq[topic] = seq

    def latest(self) -> Message:
        """The newest prediction the daemon holds."""
        return self._prediction({"query": "latest"})

    def by_seq(self, input_seq: int) -> Message:
        """The prediction made from the window whose newest frame is ``input_seq``.

        Raises
        ------
        QueryError
            If the daemon no longer (or never) held it; the text says what it holds.
        """
        if isinstance(input_seq, bool) or not isinstance(input_seq, int | np.integer):
            raise TypeError(
                f"'input_seq' must be an int, got {type(input_seq).__name__}: {input_seq!r}"
            )
        return self._prediction({"query": "by_seq", "input_seq": int(input_seq)})

    def status(self) -> dict[str, Any]:
        """The daemon's status (the same fields as its HTTP ``/status``); how many seconds
        before the reply it was rendered is then :attr:`status_age_s`."""
        header, _ = self._request({"query": "status"})
        age_s = header.get("age_s")  # None from a daemon older than the field
        self.status_age_s = age_s if isinstance(age_s, int | float) else None
        return header["status"]

    def _prediction(self, request: dict[str, Any]) -> Message:
        header, payload = self._request(request)
        return Message("prediction", header, decode_array(header, payload))

    def _request(self, request: dict[str, Any]) -> tuple[dict[str, Any], bytes]:
        self._check_open()
        if self._req is None:
            raise RuntimeError("this client has no query socket; pass 'query_endpoint'")
        _check_wait("query_timeout_s", self.query_timeout_s)  # an attribute: set anew, maybe
        timeout_ms = self.query_timeout_s * 1000
        try:
            self._req.send(json.dumps(request).encode(), flags=zmq.NOBLOCK)
        except zmq.Again:
            self._raise_if_refused(self._req)
            raise TimeoutError(f"cannot send a query: {self._no_reply()}") from None
        if not self._wait(self._req, timeout_ms):
            raise TimeoutError(f"no reply within {self.query_timeout_s} s: {self._no_reply()}")
        frames = self._req.recv_multipart()
        if len(frames) != 2:
            raise ValueError(f"a reply must have 2 frames (header, payload), got {len(frames)}")
        header = decode_header(frames[0])
        if "error" in header:
            raise QueryError(str(header["error"]))
        return header, frames[1]

    def _wait(self, socket: zmq.Socket, timeout_ms: float | None) -> bool:
        """Whether ``socket`` has something to read within ``timeout_ms`` (None: no limit);
        raises :class:`HandshakeError` instead once nothing is queued and the latest
        handshake failed, without waiting out the rest."""
        watch = self._watches[socket]
        poller = zmq.Poller()
        poller.register(socket, zmq.POLLIN)
        if watch.monitor is not None:
            poller.register(watch.monitor, zmq.POLLIN)
        deadline = None if timeout_ms is None else time.monotonic() + timeout_ms / 1000
        wait_ms: float | None = 0  # what is queued, or a failure already seen, comes first
        while True:
            if socket in dict(poller.poll(wait_ms)):
                return True
            self._raise_if_refused(socket)
            if deadline is None:
                wait_ms = None
            else:
                wait_ms = (deadline - time.monotonic()) * 1000
                if wait_ms <= 0:
                    return False

    def _raise_if_refused(self, socket: zmq.Socket) -> None:
        failure = self._watches[socket].failure()
        if failure is not None:
            raise HandshakeError(socket.getsockopt_string(zmq.LAST_ENDPOINT), failure)

    def _no_reply(self) -> str:
        endpoint = self._req.getsockopt_string(zmq.LAST_ENDPOINT)
        return (
            f"is the corticast daemon answering at {endpoint!r} "
            "(and, under CURVE, is this client's key allowed)?"
        )
