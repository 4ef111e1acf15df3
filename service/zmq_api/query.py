"""The query socket: a ROUTER answering ``latest``, ``by_seq`` and ``status`` requests.

A subscriber that sees a ``msg_seq`` gap, or a tool that joins late, asks here instead of
waiting for the next message. Requests are one JSON frame::

    {"query": "latest"}
    {"query": "by_seq", "input_seq": 12345}
    {"query": "status"}

Replies are ``[envelope..., header JSON, payload]``: for a prediction, the header and payload
exactly as published; for ``status``, ``{"schema", "query": "status", "status": {...},
"age_s"}`` and an empty payload, where ``age_s`` is how many seconds before the reply the status
was rendered (0.0: for this query; the daemon keeps one for ``[api] snapshot_max_age_s``, so a
client asking in a loop costs the loop one render per period); for anything wrong,
``{"schema", "error": "<what and why>"}`` and an empty payload. A bad request is answered,
counted and forgotten; it never ends the thread. Before a request is parsed its size
(``MAX_QUERY_BYTES``) and nesting (``MAX_QUERY_DEPTH``) are checked, so no request can make the
parser recurse, and so is the routing envelope a reply echoes (``MAX_ENVELOPE_FRAMES``,
``MAX_ENVELOPE_BYTES``); bad requests are logged at most once every 10 s
(``service.core.rate_limited_log``). A fault of the server's own is answered with an error id and
nothing else; the log holds its traceback under that id (one a kind of fault every 10 s: the
replies in between name the id of the one logged).
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

import zmq
from prometheus_client import CollectorRegistry

from service.core.checks import check_type, preview
from service.core.errors import CorticastError
from service.core.json_keys import RepeatedKeyError, loads_keys_once
from service.core.kept_snapshots import Kept
from service.core.rate_limited_log import RateLimitedLog
from service.core.worker import BackgroundWorker
from service.zmq_api._metrics import QueryMetrics
from service.zmq_api._server import ServerSocket
from service.zmq_api.settings import ZmqSettings
from service.zmq_api.wire import SCHEMA, encode_header, nesting_depth

_log = logging.getLogger("corticast.zmq")

_POLL_MS = 50
"""Longest the thread waits for a request before re-checking for a stop request."""

MAX_REQUEST_BYTES = 64 * 1024
"""A larger frame disconnects its sender (ZMQ_MAXMSGSIZE) unanswered. libzmq limits each frame,
not their number, and no option of it does: a request of many frames is held whole (1,000
frames of 64 KiB measured: answered 'got 1000 frames'), one left unfinished as it grows (600,000
frames of 200 bytes: 237 MB). So only who may connect bounds it: CURVE, and for plain loopback TCP
(every local user) the host's firewall (``deploy/README.md``, "Who may connect to ZeroMQ")."""
MAX_ENVELOPE_FRAMES = 8
"""Routing frames a request may carry before its empty delimiter (a REQ sends none, or one with
``REQ_CORRELATE``; each broker on the way adds one). A reply echoes them, so a longer envelope
is answered as an error under a bare one: 50 frames of 60 KB made every reply 3 MB, queued
``SNDHWM`` deep for a client that does not read."""
MAX_ENVELOPE_BYTES = 2048
"""Bytes of those routing frames (a routing id is at most 255 bytes)."""
MAX_QUERY_BYTES = 1024
"""A larger request is answered as an error, unparsed: the largest real one is ~50 bytes."""
MAX_QUERY_DEPTH = 4
"""A request nested deeper is answered as an error, unparsed (a real one is 1 deep): JSON's
parser recurses once per level, and ~1,000 levels fit in 2 KB."""
_EXAMPLE = '{"query": "latest"}'

_FIELDS = {"latest": {"query"}, "by_seq": {"query", "input_seq"}, "status": {"query"}}


class _BadRequestError(CorticastError):
    """A request the server cannot answer; the message goes back to the client verbatim."""

    def __init__(self, message: str, query: str = "invalid", outcome: str = "bad_request"):
        super().__init__(message)
        self.query = query
        self.outcome = outcome


class _EnvelopeError(_BadRequestError):
    """A request whose routing envelope is too long to echo; answered under ``bare``."""

    def __init__(self, message: str, bare: list[bytes]) -> None:
        super().__init__(message)
        self.bare = bare


@runtime_checkable
class History(Protocol):
    """What the query socket reads: the publisher's history (``ZmqPublisher.history``), or, with the
    control plane in a process of its own, a reader of it over the control link. ``latest``
    and ``get`` return what was published (``input_seq``, ``header``, ``payload``) or None."""

    def latest(self) -> Any: ...

    def get(self, input_seq: int) -> Any: ...

    def describe(self, asked: int | None = None) -> str: ...


class QueryServer(BackgroundWorker):
    """Background thread answering queries from the publisher's history and a status callable.

    Parameters
    ----------
    settings
        ``query_endpoint`` and CURVE keys (the same as the publisher's).
    history
        ``ZmqPublisher.history``: read here, written by the scheduler thread.
    status
        Returns the daemon's status as a JSON-able dict (rendered now), or a kept one with its
        age (``KeptSnapshots.get_kept``); called in this thread for every ``status`` query, so
        keep it quick and thread-safe. Its exceptions are answered as errors, not raised.
    registry
        Prometheus registry of ``corticast_zmq_queries_total{query,outcome}``.
    """

    def __init__(
        self,
        settings: ZmqSettings | None,
        history: History,
        status: Callable[[], dict[str, Any] | Kept],
        *,
        registry: CollectorRegistry | None = None,
    ) -> None:
        super().__init__("corticast-zmq-query")
        self.settings = settings if settings is not None else ZmqSettings()
        check_type("settings", self.settings, ZmqSettings)
        check_type("history", history, History)
        if not callable(status):
            raise TypeError(f"'status' must be callable, got {type(status).__name__}: {status!r}")
        self._history = history
        self._status = status
        self.metrics = QueryMetrics(registry if registry is not None else CollectorRegistry())
        self._server: ServerSocket | None = None
        self._bad_requests = RateLimitedLog(_log)
        self._dropped_replies = RateLimitedLog(_log)
        self._faults: dict[tuple[str, str], tuple[RateLimitedLog, str]] = {}
        """Per kind of fault: its log's limit and the id of the traceback last logged."""

    @property
    def endpoint(self) -> str:
        """The bound endpoint, with the port the OS chose for ``tcp://HOST:*``."""
        server = self._server
        if server is None:
            raise RuntimeError("QueryServer is not started; call start() first")
        return server.endpoint

    def _prepare(self) -> None:
        # A start after the thread ended (the supervisor's restart) frees the last socket's
        # context and authenticator first: the thread closed only the socket.
        self._release()
        self._server = ServerSocket(
            self.settings,
            zmq.ROUTER,
            "query_endpoint",
            # ROUTER_MANDATORY: a reply to a full queue raises (logged below) instead of
            # vanishing without a word; one to a client gone raises EHOSTUNREACH.
            {
                zmq.MAXMSGSIZE: MAX_REQUEST_BYTES,
                zmq.SNDHWM: 100,
                zmq.RCVHWM: 100,
                zmq.ROUTER_MANDATORY: 1,
            },
        )

    def _work(self) -> None:
        socket = self._server.socket
        while not self._stop_requested.is_set():
            if not socket.poll(_POLL_MS, zmq.POLLIN):
                continue
            while not self._stop_requested.is_set():  # a backlog must not hold up a stop
                try:
                    frames = socket.recv_multipart(flags=zmq.NOBLOCK)
                except zmq.Again:
                    break
                try:
                    socket.send_multipart(self._reply(frames), flags=zmq.NOBLOCK)
                except zmq.Again:
                    self._dropped_replies.log(
                        logging.WARNING,
                        "query reply dropped: the client's queue is full (it asks faster "
                        "than it reads)",
                    )
                except zmq.ZMQError as err:
                    if err.errno != zmq.EHOSTUNREACH:
                        raise
                    _log.debug("query reply dropped: the client has gone")

    def _finished(self) -> None:
        # The socket is closed by the thread that used it last.
        if self._server is not None:
            self._server.socket.close(linger=0)

    def _release(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        if not server.closed:
            # The thread is stuck (a status callable that never returns): terminating the
            # context now would hang until it returns, so leave both to the process exit.
            _log.error("query thread still running; its socket is left open")
            return
        server.close()

    def _reply(self, frames: list[bytes]) -> list[bytes]:
        envelope, body = _split_envelope(frames)
        try:
            envelope = _check_envelope(envelope)
            query, header, payload = self._respond(body)
            outcome = "ok"
        except _BadRequestError as err:
            query, outcome = err.query, err.outcome
            if isinstance(err, _EnvelopeError):
                envelope = err.bare
            header, payload = _error(str(err)), b""
            if outcome == "bad_request":
                self._bad_requests.log(logging.WARNING, "bad query request: %s", err)
        except Exception as err:  # a fault here must cost one reply, never the thread
            query, outcome = "invalid", "failed"
            header, payload = _error(self._fault("internal error", "query failed", err)), b""
        self.metrics.queries.labels(query, outcome).inc()
        return [*envelope, header, payload]

    def _respond(self, body: list[bytes]) -> tuple[str, bytes, bytes]:
        request = _parse(body)
        query = request["query"]
        if query == "status":
            return query, self._status_header(), b""
        try:
            stored, missing = self._read(query, request)
        except Exception as err:  # the control link not answering: this query failed, by name
            raise _BadRequestError(
                self._fault(f"{query} failed", f"{query} query failed", err), query, "failed"
            ) from err
        if stored is None:
            raise _BadRequestError(missing, query, "not_found")
        return query, stored.header, stored.payload

    def _read(self, query: str, request: dict[str, Any]) -> tuple[Any, str]:
        """What ``latest`` or ``by_seq`` asks of the history, or None and why it is not there."""
        if query == "latest":
            return self._history.latest(), "no prediction published yet"
        seq = request["input_seq"]
        stored = self._history.get(seq)
        if stored is not None:
            return stored, ""
        return None, f"no prediction with input_seq {_echo_int(seq)}: {self._history.describe(seq)}"

    def _status_header(self) -> bytes:
        try:
            status, age_s = _aged(self._status())
            check_type("status()", status, dict)
            return encode_header(
                {"schema": SCHEMA, "query": "status", "status": status, "age_s": age_s}
            )
        except Exception as err:
            raise _BadRequestError(
                self._fault("status failed", "status callable failed", err), "status", "failed"
            ) from err

    def _fault(self, what: str, logged: str, err: BaseException) -> str:
        """Log ``err`` with its traceback under a new id, at most once every 10 s per kind of
        fault (``logged`` and the exception's type): a client asking in a loop while the
        history cannot be read must not fill the journal. Returns the client's message, which
        names only the id of the traceback logged (an exception's text can name files, paths
        and settings)."""
        kind = (logged, type(err).__qualname__)
        limit, logged_id = self._faults.get(kind) or (RateLimitedLog(_log), "")
        error_id = uuid.uuid4().hex[:12]
        if limit.log(logging.ERROR, "%s (error id %s)", logged, error_id, exc_info=err):
            logged_id = error_id
        self._faults[kind] = (limit, logged_id)
        return f"{what} (error id {logged_id}); the daemon's log holds the details"


def _aged(status: dict[str, Any] | Kept) -> tuple[Any, float]:
    """The status document and its age: a plain one was rendered for this query."""
    return (status.value, status.age_s) if isinstance(status, Kept) else (status, 0.0)


def _split_envelope(frames: list[bytes]) -> tuple[list[bytes], list[bytes]]:
    """Routing frames (identity, REQ correlation id, empty delimiter) and the body.

    Echoing the whole envelope serves REQ, REQ with ``REQ_CORRELATE`` and DEALER clients
    alike; a DEALER that sends no delimiter gets none back.
    """
    for index in range(1, len(frames)):
        if not frames[index]:
            return frames[: index + 1], frames[index + 1 :]
    return frames[:1], frames[1:]


def _check_envelope(envelope: list[bytes]) -> list[bytes]:
    """``envelope``, or, past ``MAX_ENVELOPE_FRAMES`` or ``MAX_ENVELOPE_BYTES``, a bare one
    (the sender's identity and a delimiter) for the error reply :class:`_BadRequestError` is."""
    routing = envelope[1:-1]
    size = sum(map(len, routing))
    if len(routing) <= MAX_ENVELOPE_FRAMES and size <= MAX_ENVELOPE_BYTES:
        return envelope
    raise _EnvelopeError(
        f"request's envelope (the frames before its empty delimiter) is {len(routing)} frames, "
        f"{size} bytes; at most {MAX_ENVELOPE_FRAMES} frames and {MAX_ENVELOPE_BYTES} bytes "
        "(a REQ socket sends at most one)",
        [envelope[0], b""],
    )


def _parse(body: list[bytes]) -> dict[str, Any]:
    if len(body) != 1:
        raise _BadRequestError(
            f"a request must be one frame holding a JSON object, got {len(body)} frames"
        )
    if len(body[0]) > MAX_QUERY_BYTES:
        raise _BadRequestError(
            f"request is {len(body[0])} bytes; a request is at most {MAX_QUERY_BYTES} bytes, "
            f"e.g. {_EXAMPLE}"
        )
    depth = nesting_depth(body[0])
    if depth > MAX_QUERY_DEPTH:
        raise _BadRequestError(
            f"request nests {depth} levels deep; at most {MAX_QUERY_DEPTH} levels, e.g. {_EXAMPLE}"
        )
    try:
        request = loads_keys_once(body[0])
    except RepeatedKeyError as err:  # which one the client meant is not for us to guess
        raise _BadRequestError(
            f"request gives the key {preview(err.key)} twice, e.g. {_EXAMPLE}"
        ) from None
    except ValueError as err:  # bad UTF-8, bad JSON, an int too long to parse
        raise _BadRequestError(
            f'request is not JSON ({err}); send e.g. {{"query": "latest"}}, got {preview(body[0])}'
        ) from None
    if not isinstance(request, dict):
        raise _BadRequestError(
            f'request must be a JSON object like {{"query": "latest"}}, '
            f"got {type(request).__name__}: {preview(request)}"
        )
    if "query" not in request:
        raise _BadRequestError(
            f"request must have a 'query' field, one of {tuple(_FIELDS)}, "
            f"got fields {preview(sorted(request))}"
        )
    query = request["query"]
    if not isinstance(query, str) or query not in _FIELDS:
        raise _BadRequestError(f"'query' must be one of {tuple(_FIELDS)}, got {preview(query)}")
    unknown = set(request) - _FIELDS[query]
    if unknown:
        raise _BadRequestError(
            f"'{query}' takes only {sorted(_FIELDS[query])}, "
            f"got unknown {preview(sorted(unknown))}",
            query,
        )
    if query == "by_seq":
        if "input_seq" not in request:
            raise _BadRequestError("'by_seq' needs an 'input_seq' field (an int)", query)
        seq = request["input_seq"]
        if isinstance(seq, bool) or not isinstance(seq, int):
            raise _BadRequestError(
                f"'input_seq' must be an int, got {type(seq).__name__}: {preview(seq)}", query
            )
    return request


_ECHOED_DIGITS = 24
"""Digits of an int a reply echoes in full; a request of 1 KiB holds one of 1,000."""


def _echo_int(value: int) -> str:
    """``value`` as a reply echoes it: in full up to ``_ECHOED_DIGITS`` digits (an input_seq
    has at most 19), else its first digits and how many there are."""
    text = str(value)
    if len(text) <= _ECHOED_DIGITS:
        return text
    return f"{text[:12]}... ({len(text.lstrip('-'))} digits)"


def _error(message: str) -> bytes:
    return json.dumps({"schema": SCHEMA, "error": message}).encode()
