"""What reaches the HTTP API before the token is checked, and how much of it: a real uvicorn
server around a started daemon (no rig, bridge in dry run), probed with raw sockets so that a
test controls exactly which bytes are sent and when."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import resource
import select
import socket
import threading
import time
import uuid

import anyio
import httpx
import pytest

from service.api.served import ServedDaemon
from service.api.serving import BoundedHeadH11Protocol
from tests.service._loop_harness import AUTH, loop_settings, wait_until

_REPLY_TIMEOUT_S = 30.0
_FLOOD = 1000
"""Reads sent at once, far more than the server has worker threads (40)."""


@pytest.fixture(scope="module")
def served(tmp_path_factory, exported):
    _, window, step = exported
    tmp_path = tmp_path_factory.mktemp("guard")
    source_id = f"corticast-test-{uuid.uuid4().hex[:12]}"
    settings = loop_settings(
        tmp_path, window, step, source_id,
        bridge={"dry_run": True},
        api={"limit_concurrency": 4 * _FLOOD},  # the flood below is served, not refused
    )  # fmt: skip
    with ServedDaemon(settings) as served:
        yield served


def _connect(served: ServedDaemon) -> socket.socket:
    sock = socket.create_connection((served.settings.api.host, served.settings.api.port))
    sock.settimeout(_REPLY_TIMEOUT_S)
    return sock


def _head(method: str, path: str, headers: dict[str, str]) -> bytes:
    lines = [
        f"{method} {path} HTTP/1.1",
        "Host: 127.0.0.1",
        *(f"{k}: {v}" for k, v in headers.items()),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 response (Content-Length framed, as uvicorn sends JSON)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"connection closed before a response; got {data!r}")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in header_lines)}
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return int(status_line.split()[1]), headers, body[:length]


def test_control_without_a_token_is_401_before_the_body_is_parsed(served):
    answer = httpx.put(
        f"{served.url}/control/policy",
        content=b"{this is not json",
        headers={"Content-Type": "application/json"},
    )
    assert answer.status_code == 401, answer.text
    assert answer.headers["www-authenticate"] == "Bearer"
    assert answer.json() == {
        "error": "unauthorized",
        "detail": "missing bearer token: send 'Authorization: Bearer <token>'",
    }
    wrong = httpx.put(
        f"{served.url}/control/policy",
        content=b"[" * 5000,
        headers={"Content-Type": "application/json", "Authorization": "Bearer nope"},
    )
    assert wrong.status_code == 401 and wrong.json()["detail"] == "invalid bearer token"


def test_a_huge_unauthenticated_body_is_refused_before_a_byte_of_it_is_sent(served):
    """The server answers from the headers alone: the test never sends the 100 MB."""
    with _connect(served) as sock:
        sock.sendall(
            _head(
                "PUT",
                "/control/policy",
                {"Content-Type": "application/json", "Content-Length": str(100 * 2**20)},
            )
        )
        status, headers, body = _read_response(sock)
    assert status == 401 and json.loads(body)["error"] == "unauthorized"
    assert headers["connection"] == "close"


def test_an_oversized_declared_body_is_413_unread_even_with_the_token(served):
    with _connect(served) as sock:
        sock.sendall(
            _head(
                "PUT",
                "/control/policy",
                {**AUTH, "Content-Type": "application/json", "Content-Length": str(10 * 2**20)},
            )
        )
        status, headers, body = _read_response(sock)
    assert status == 413 and headers["connection"] == "close"
    error = json.loads(body)
    assert error["error"] == "content too large"
    [problem] = error["detail"]
    assert problem["where"] == "body"
    assert re.fullmatch(r"10485760 bytes .* at most 8192 .*/control/policy", problem["problem"])


def test_an_oversized_chunked_body_is_413_while_it_streams(served):
    """No Content-Length: the limit is enforced on the bytes as they arrive, so the answer
    comes (and the server stops reading) long before the client would have finished."""
    with _connect(served) as sock:
        sock.sendall(
            _head(
                "PUT",
                "/control/policy",
                {**AUTH, "Content-Type": "application/json", "Transfer-Encoding": "chunked"},
            )
        )
        chunk = b'{"min_pgd": "' + b"a" * 65523
        cut_short = False
        for _ in range(1024):  # 64 MiB: more than any socket buffers hold
            try:
                sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            except (BrokenPipeError, ConnectionResetError):
                cut_short = True
                break
            if select.select([sock], [], [], 0)[0]:
                cut_short = True
                break
        else:
            sock.sendall(b"0\r\n\r\n")
        status, _, body = _read_response(sock)
    assert status == 413, body
    assert cut_short, "the server read the whole 64 MiB body before answering"
    assert json.loads(body)["detail"][0]["where"] == "body"


def test_a_body_on_a_reading_endpoint_is_limited_too(served):
    answer = httpx.request("GET", f"{served.url}/status", content=b"x" * 64 * 1024)
    assert answer.status_code == 413, answer.text
    assert "at most 1024" in answer.json()["detail"][0]["problem"]


def test_legitimate_requests_still_work(served):
    with httpx.Client(base_url=served.url, headers=AUTH) as http:
        assert http.get("/healthz").json() == {"status": "alive"}
        policy = http.get("/status").json()["policy"]
        changed = http.put("/control/policy", json={**policy, "min_pgd": 0.71})
        assert changed.status_code == 200, changed.text
        assert http.get("/status").json()["policy"]["min_pgd"] == 0.71
        chunked = http.put(
            "/control/policy",
            content=iter([json.dumps({**policy, "min_pgd": 0.72}).encode()]),
            headers={"Content-Type": "application/json"},
        )
        assert chunked.status_code == 200, chunked.text
        assert http.post("/control/disarm", json={"reason": "check"}).status_code == 200


def test_disarming_a_daemon_that_was_never_armed_says_so(served):
    answer = httpx.post(f"{served.url}/control/disarm", headers=AUTH)
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"armed": False, "was_armed": False, "device_confirmed": True}


def test_an_internal_error_is_generic_with_an_id_that_the_log_holds(served, monkeypatch, caplog):
    def broken() -> dict:
        raise PermissionError(13, "Permission denied", "/etc/corticast/corticast.env")

    monkeypatch.setattr(served.daemon, "status", broken)
    with caplog.at_level(logging.ERROR, logger="corticast.api"):
        answer = httpx.get(f"{served.url}/status")
    assert answer.status_code == 500
    body = answer.json()
    assert "corticast.env" not in answer.text and "PermissionError" not in answer.text
    assert set(body) == {"error", "detail", "error_id"} and body["error"] == "internal error"
    assert re.fullmatch(r"[0-9a-f]{12}", body["error_id"])
    [record] = [r for r in caplog.records if body["error_id"] in r.getMessage()]
    assert record.exc_info is not None and "corticast.env" in str(record.exc_info[1])


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (b'{"min_pgd": ' + b"[" * 3000 + b"]" * 3000 + b"}", "it nests too deeply"),
        (b'{"min_pgd": 1' + b"0" * 5000 + b"}", "integer string conversion: value has 5001 digits"),
    ],
)
def test_a_body_json_cannot_parse_is_400_naming_why(served, body, problem):
    """Within the size limit, JSON that Python's parser refuses (recursion, the int digits
    limit): FastAPI answers 'There was an error parsing the body', which names nothing."""
    answer = httpx.put(
        f"{served.url}/control/policy",
        content=body,
        headers={**AUTH, "Content-Type": "application/json"},
    )
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"] == "bad request"
    assert answer.json()["detail"].startswith("the body is not JSON this API can read: ")
    assert problem in answer.json()["detail"], answer.text


@pytest.fixture
def descriptors_for_a_flood():
    """Both ends of every flood connection live in this process: room for them, or a skip."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = 2 * _FLOOD + 1024
    if soft != resource.RLIM_INFINITY and soft < needed:
        if hard != resource.RLIM_INFINITY and hard < needed:
            pytest.skip(f"{needed} file descriptors needed, the hard limit is {hard}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@pytest.mark.usefixtures("descriptors_for_a_flood")
def test_a_disarm_does_not_wait_behind_a_flood_of_open_reads(served):
    """Anyone may ask for /status; a disarm must not queue behind hundreds of such requests
    for the server's worker threads. Sent after them all, it is answered before most of them."""
    flood = [_connect(served) for _ in range(_FLOOD)]
    try:
        for sock in flood:
            sock.sendall(_head("GET", "/status", {}))
        with _connect(served) as disarm:
            disarm.sendall(_head("POST", "/control/disarm", {**AUTH, "Content-Length": "0"}))
            status, _, body = _read_response(disarm)
        waiting = select.poll()  # not select(): the flood's descriptors pass 1024
        for sock in flood:
            waiting.register(sock, select.POLLIN)
        answered_first = len(waiting.poll(0))
        assert status == 200, body
        for sock in flood:  # every read is still answered
            assert _read_response(sock)[0] == 200
    finally:
        for sock in flood:
            sock.close()
    assert answered_first < _FLOOD // 2, (
        f"{answered_first} of {_FLOOD} reads sent before the disarm were answered before it"
    )


def test_a_disarm_is_answered_while_every_worker_thread_is_taken(served):
    """The server's 40 worker threads are anyone's to take (a slow /status, /metrics or
    /readyz: the loop's process slow to render holds each reader): a disarm, token check
    included, must need none of them. Here real worker threads of the server's event loop are
    kept busy, as 40 such reads would keep them, until the disarm has been answered."""
    [listener] = served.server.servers
    loop = listener.get_loop()
    release = threading.Event()
    limiter = anyio.to_thread.current_default_thread_limiter

    async def take_every_worker_thread(started: threading.Event) -> None:
        async with anyio.create_task_group() as group:
            for _ in range(int(limiter().total_tokens)):
                group.start_soon(anyio.to_thread.run_sync, release.wait)
            while limiter().borrowed_tokens < limiter().total_tokens:
                await anyio.sleep(0.01)
            started.set()

    started = threading.Event()
    taken = asyncio.run_coroutine_threadsafe(take_every_worker_thread(started), loop)
    try:
        assert started.wait(_REPLY_TIMEOUT_S), "the worker threads were not all taken"
        answer = httpx.post(f"{served.url}/control/disarm", headers=AUTH, timeout=_REPLY_TIMEOUT_S)
        assert answer.status_code == 200, answer.text
    finally:
        release.set()
        taken.result(_REPLY_TIMEOUT_S)


def _closed_by_server(sock: socket.socket, trickle: bytes = b"") -> bool:
    """Whether the server closes ``sock`` within the reply timeout, while the client sends
    ``trickle`` a byte at a time (a head that never ends)."""
    deadline = time.monotonic() + _REPLY_TIMEOUT_S
    sent = 0
    while time.monotonic() < deadline:
        if select.select([sock], [], [], 0.2)[0]:
            try:
                return sock.recv(65536) == b""
            except ConnectionResetError:
                return True
        if sent < len(trickle):
            try:
                sock.sendall(trickle[sent : sent + 1])
            except (BrokenPipeError, ConnectionResetError):
                return True
            sent += 1
    return False


@pytest.mark.parametrize(
    "client",
    [
        "silent",
        "head a byte at a time",
        "after a request",
        "a body a byte at a time after its answer",
    ],
)
def test_a_client_that_never_finishes_a_request_head_is_disconnected(served, monkeypatch, client):
    """Anyone may connect: one that sends no request, or its head too slowly, must not hold a
    connection (a file descriptor of the process serving the API) for ever. uvicorn bounds
    only the wait between requests, and only until the next request's first byte."""
    monkeypatch.setattr(BoundedHeadH11Protocol, "head_timeout_s", 0.5)
    with _connect(served) as sock:
        trickle = b""
        if client == "head a byte at a time":
            trickle = _head("GET", "/status", {"X-Pad": "x" * 4096})
        elif client == "after a request":
            sock.sendall(_head("GET", "/healthz", {}))
            assert _read_response(sock)[0] == 200
            trickle = _head("GET", "/status", {"X-Pad": "x" * 4096})
        elif client == "a body a byte at a time after its answer":
            # An open route reads no body and answers at once; each byte of the rest of it
            # cancelled uvicorn's keep-alive timer, which is armed only after an answer.
            sock.sendall(_head("GET", "/healthz", {"Content-Length": "1000"}))
            assert _read_response(sock)[0] == 200
            trickle = b"x" * 1000
        assert _closed_by_server(sock, trickle), f"a {client} client was still connected"
    assert httpx.get(f"{served.url}/healthz").status_code == 200


def test_requests_to_upgrade_the_connection_are_logged_at_most_once_an_interval(served, caplog):
    """uvicorn wrote two warnings for every request asking to upgrade its connection (no
    WebSocket library here), which anyone may send, unauthenticated, in a loop: the journal's
    rate limit would then drop the daemon's own lines. At most one is written an interval;
    each request is still answered."""
    caplog.set_level(logging.WARNING)
    upgrade = {"Connection": "Upgrade", "Upgrade": "websocket"}
    with _connect(served) as sock:
        for _ in range(30):
            sock.sendall(_head("GET", "/healthz", upgrade))
            assert _read_response(sock)[0] == 200
    said = [
        r.getMessage()
        for r in caplog.records
        if any(word in r.getMessage().lower() for word in ("upgrade", "websocket"))
    ]
    assert len(said) <= 1, said


def test_requests_beyond_the_connection_limit_are_503_but_a_disarm_is_answered(
    tmp_path, exported, caplog
):
    """uvicorn served any number of connections at once, each request taking its share of the
    process serving the API. Now, while ``[api] limit_concurrency`` connections are open (4
    here, the asking one counted), a request is answered 503 at once, and that said at most
    once an interval; requests within the limit are served, and so is a disarm beyond it."""
    _, window, step = exported
    source_id = f"corticast-test-{uuid.uuid4().hex[:12]}"
    settings = loop_settings(
        tmp_path, window, step, source_id,
        bridge={"dry_run": True}, api={"limit_concurrency": 4},
    )  # fmt: skip
    caplog.set_level(logging.WARNING)
    with ServedDaemon(settings) as served:
        held = [_connect(served) for _ in range(2)]
        try:
            with _connect(served) as within:  # the third connection open: within the limit
                within.sendall(_head("GET", "/healthz", {}))
                assert _read_response(within)[0] == 200
                within.sendall(b"GET /healthz HTTP/1.1\r\n")  # busy: not idle, not to be closed
                beyond = []
                for _ in range(5):  # a fourth, each time
                    with _connect(served) as sock:
                        sock.sendall(_head("GET", "/healthz", {}))
                        beyond.append(_read_response(sock)[:3:2])
                with _connect(served) as sock:
                    sock.sendall(_head("POST", "/control/disarm", {**AUTH, "Content-Length": "0"}))
                    disarm, _, body = _read_response(sock)
        finally:
            for sock in held:
                sock.close()
        assert beyond == [(503, b"Service Unavailable")] * 5
        assert disarm == 200, body
        wait_until(
            lambda: httpx.get(f"{served.url}/healthz").status_code == 200,
            _REPLY_TIMEOUT_S,
            "a request served once the connections beyond the limit have closed",
        )
    said = [r.getMessage() for r in caplog.records if "limit_concurrency" in r.getMessage()]
    assert len(said) == 1, said


def test_a_disarm_with_a_trailing_slash_disarms_within_and_beyond_the_connection_limit(
    tmp_path, exported
):
    """``POST /control/disarm/`` was answered 503 beyond ``[api] limit_concurrency`` (only the
    exact path was spared), and within it a 307 to ``/control/disarm``, which disarmed only
    where the client followed it (httpx and curl do not by default). It is the disarm route
    too now: served whatever the load, and disarming, its body refused as the disarm's is."""
    _, window, step = exported
    source_id = f"corticast-test-{uuid.uuid4().hex[:12]}"
    settings = loop_settings(
        tmp_path, window, step, source_id,
        bridge={"dry_run": True}, api={"limit_concurrency": 4},
    )  # fmt: skip
    reason = {"reason": "slash"}
    with ServedDaemon(settings) as served:
        within = httpx.post(f"{served.url}/control/disarm/", headers=AUTH, json=reason)
        assert within.status_code == 200, (within.status_code, within.text)
        assert within.json()["armed"] is False
        assert served.daemon.bridge.status().last_disarm_reason == "operator: slash"
        held = [_connect(served) for _ in range(3)]
        try:
            with _connect(served) as sock:  # the fourth connection open: beyond the limit
                too_large = json.dumps({"reason": "x" * 10_000}).encode()
                length = {"Content-Length": str(len(too_large))}
                sock.sendall(_head("POST", "/control/disarm/", {**AUTH, **length}) + too_large)
                beyond, _, body = _read_response(sock)
        finally:
            for sock in held:
                sock.close()
    assert beyond == 413, body  # disarmed, then told its body was refused
    assert "stimulation was disarmed all the same" in body.decode(), body


def test_idle_keep_alive_connections_make_room_for_a_request_beyond_the_connection_limit(
    tmp_path, exported
):
    """Idle keep-alive connections counted against ``[api] limit_concurrency`` until uvicorn's
    keep-alive timeout (5 s) closed them: one client asking once every few seconds on each of
    that many connections held them all, and an operator's ``/status`` was answered 503. Now a
    request beyond the limit closes the connection idle longest (as its keep-alive timeout
    would; its client opens another) and is served."""
    _, window, step = exported
    source_id = f"corticast-test-{uuid.uuid4().hex[:12]}"
    settings = loop_settings(
        tmp_path, window, step, source_id,
        bridge={"dry_run": True}, api={"limit_concurrency": 4},
    )  # fmt: skip
    with ServedDaemon(settings) as served:
        idle = [_connect(served) for _ in range(3)]
        try:
            for sock in idle:  # each answered once, then idle between requests
                sock.sendall(_head("GET", "/healthz", {}))
                assert _read_response(sock)[0] == 200
            with _connect(served) as sock:  # the fourth connection open: beyond the limit
                sock.sendall(_head("GET", "/status", {}))
                status, _, body = _read_response(sock)
            assert idle[0].recv(1) == b""  # the one idle longest was closed
        finally:
            for sock in idle:
                sock.close()
    assert status == 200, body
