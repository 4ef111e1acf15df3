"""What a request may cost before anyone has checked who sent it.

A pure ASGI middleware in front of the app: on a loopback API, a request must be for a
loopback host (``Host``: :func:`host_problem`, against DNS rebinding); on ``/control/*`` the
bearer token (without one, in development mode, the page a browser names in ``Origin``:
``auth.origin_problem``) is checked from the headers before any byte of the body is read
(FastAPI reads and parses the body before it resolves dependencies, so the router's token
dependency alone let anyone make the server parse a 100 MB JSON document); and every request's
body is limited, from its ``Content-Length`` before the app runs, and on the bytes as they
arrive for a chunked one. A refused request is answered at once with ``Connection: close``:
the rest of its body is never read. Except an authenticated ``POST /control/disarm`` (or
``/control/disarm/``): nothing
must stand between an operator and a disarm, so it goes on to the route with no body and the
refusal under ``BODY_REFUSED`` in its scope; the route disarms with the default reason, then
answers the 413.

FastAPI (>= 0.165) has a ``max_body_size`` of its own, but it runs after routing, after
nothing that could check the token first, and answers some refusals in plain text; one
middleware does both jobs in the order they must happen, in the API's error form.
"""

from __future__ import annotations

from collections.abc import Mapping

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.api._errors import error_response
from service.api.auth import CHALLENGE, bearer_problem, origin_problem
from service.core.net import names_loopback

CONTROL_PREFIX = "/control"
CONTROL_BODY_LIMIT = 8 * 1024
"""Bytes a control request may carry: a policy with every electrode of the grid as a target
is about 3 KiB of JSON."""
OTHER_BODY_LIMIT = 1024
"""Bytes any other request may carry: none of them reads a body."""
DISARM_PATHS = frozenset({CONTROL_PREFIX + "/disarm", CONTROL_PREFIX + "/disarm/"})
"""The disarm route's paths, a trailing slash's included: the router answers any other path
with a slash too many with a redirect, which disarms only where the client follows it."""
BODY_REFUSED = "corticast.body_refused"
"""Where a disarm's scope holds why its body was refused (the 413's ``detail``)."""


class RequestGuard:
    """Authenticate ``/control/*`` from the headers, then limit the body while it streams.

    Parameters
    ----------
    app
        The application behind the guard.
    token
        The control token; None (development mode on loopback, or control off) checks none.
    loopback
        Whether the API listens on a loopback address: then a request must name one, or
        ``localhost``, in its ``Host`` header (:func:`host_problem`).
    """

    def __init__(self, app: ASGIApp, token: str | None, loopback: bool = False) -> None:
        self.app = app
        self.token = token
        self.loopback = loopback

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        headers = Headers(scope=scope)
        if self.loopback and (problem := host_problem(headers.get("host"))):
            await _refuse(scope, receive, send, 421, problem)
            return
        control = path == CONTROL_PREFIX or path.startswith(CONTROL_PREFIX + "/")
        if control and self.token is not None:
            problem = bearer_problem(headers.get("authorization"), self.token)
            if problem is not None:
                await _refuse(scope, receive, send, 401, problem, CHALLENGE)
                return
        if control and self.token is None and (problem := origin_problem(headers.get("origin"))):
            await _refuse(scope, receive, send, 403, problem)
            return
        limit = CONTROL_BODY_LIMIT if control else OTHER_BODY_LIMIT
        declared = _content_length(headers)
        if declared is not None and declared > limit:
            too_large = _too_large(f"{declared} bytes declared", limit, path)
            if _is_disarm(scope):  # disarmed first, by the route; the body is never read
                await self.app({**scope, BODY_REFUSED: too_large}, _no_body, send)
                return
            await _refuse(scope, receive, send, 413, too_large)
            return
        await _LimitedBody(self.app, limit)(scope, receive, send)


class _LimitedBody:
    """One request whose body is counted as it arrives; past ``limit`` it is answered 413 and
    the app, which then sees the client gone, answers no one."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app, self.limit = app, limit
        self.received = 0
        self.refused = self.started = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def limited_receive() -> Message:
            if self.refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                self.received += len(message.get("body", b""))
                if self.received > self.limit and _is_disarm(scope):
                    # Disarmed first, by the route, which reads the refusal and not the body.
                    scope[BODY_REFUSED] = _too_large(
                        f"over {self.limit} bytes sent", self.limit, scope["path"]
                    )
                    return await _no_body()
                if self.received > self.limit:
                    self.refused = True
                    if not self.started:
                        sent = f"over {self.limit} bytes sent"
                        await _refuse(
                            scope, receive, send, 413, _too_large(sent, self.limit, scope["path"])
                        )
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            if self.refused:
                return  # the 413 has been sent; whatever the app says now goes to no one
            if message["type"] == "http.response.start":
                self.started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except Exception:
            if not self.refused:
                raise


def host_problem(host: str | None) -> str | None:
    """Why a loopback API answers no request for ``host`` (its ``Host`` header), or None.

    A web page may reach the loopback API under a name of its own that it then points at
    127.0.0.1 (DNS rebinding): to the browser the page and the API are one origin, and the
    page could read the status, the metrics and the predictions (and, without a token,
    control). Its requests carry that name; a client on this machine names a loopback
    address or ``localhost`` (or, over HTTP/1.0, nothing)."""
    if host is None:
        return None
    name = host.partition("]")[0][1:] if host.startswith("[") else host.rpartition(":")[0] or host
    if names_loopback(name):
        return None
    return (
        "this API listens on a loopback address and answers requests for a loopback address "
        "or localhost only: a request for another host name is a web page's (DNS rebinding)"
    )


def _is_disarm(scope: Scope) -> bool:
    return scope["path"] in DISARM_PATHS and scope["method"] == "POST"


async def _no_body() -> Message:
    """The body a disarm whose own was refused reads: none."""
    return {"type": "http.request", "body": b"", "more_body": False}


def _content_length(headers: Headers) -> int | None:
    """The declared length, or None when the body is chunked (the server's HTTP parser has
    already refused a malformed header)."""
    value = headers.get("content-length")
    return int(value) if value is not None and value.isascii() and value.isdigit() else None


def _too_large(size: str, limit: int, path: str) -> list[dict[str, str]]:
    return [{"where": "body", "problem": f"{size}; at most {limit} bytes are allowed on {path}"}]


async def _refuse(
    scope: Scope,
    receive: Receive,
    send: Send,
    code: int,
    detail: str | list[dict[str, str]],
    headers: Mapping[str, str] | None = None,
) -> None:
    response = error_response(code, detail, {**(headers or {}), "Connection": "close"})
    await response(scope, receive, send)
