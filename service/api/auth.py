"""Bearer-token authentication for the mutating endpoints.

One token, from the config or ``CORTICAST_API__TOKEN``; compared in constant time. A missing
or malformed Authorization header and a wrong token are both 401 with a ``WWW-Authenticate``
header (RFC 6750); nothing about the expected token leaks into the message. The only way to
run without a token is the explicit development mode on a loopback bind, checked at start
(``service.api.app.check_api_settings``); then ``app.state.token`` is None and control is open
to the clients on this machine, but not to a web page open in one of its browsers
(:func:`origin_problem`).

The check runs twice: in ``service.api._request_guard`` from the headers alone, before any
byte of the body is read, and here as the control router's dependency, which also declares
the scheme in the OpenAPI schema.
"""

from __future__ import annotations

import secrets
from typing import Annotated
from urllib.parse import urlsplit

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from service.core.net import names_loopback

CHALLENGE = {"WWW-Authenticate": "Bearer"}
_bearer = HTTPBearer(auto_error=False, description="The control token ([api] token).")


def bearer_problem(authorization: str | None, expected: str) -> str | None:
    """Why the ``Authorization`` header does not carry ``expected``, or None when it does."""
    scheme, _, credentials = (authorization or "").partition(" ")
    credentials = credentials.strip()
    if scheme.lower() != "bearer" or not credentials:
        return "missing bearer token: send 'Authorization: Bearer <token>'"
    if not secrets.compare_digest(credentials.encode(), expected.encode()):
        return "invalid bearer token"
    return None


def origin_problem(origin: str | None) -> str | None:
    """Why a control request without a token must be refused for the page that sent it, or
    None. A browser names the page a request comes from in ``Origin`` (every POST and PUT);
    curl and scripts send none. Without a token, any page the operator opens could otherwise
    POST to the loopback API unasked (a form, or fetch without CORS: no preflight), or reach
    it under a name of its own (DNS rebinding), and arm; a page served from a loopback
    address or localhost is a program on this machine, as trusted as any other."""
    if origin is None:
        return None
    try:
        host = urlsplit(origin).hostname
    except ValueError:  # a malformed origin ('http://[::1'): not a loopback page
        host = None
    if host is not None and names_loopback(host):
        return None
    return (
        "a control request from a web page (its Origin header names a page neither on a "
        "loopback address nor on localhost) is refused: without a token (api.dev_no_token) "
        "only programs on this machine may control the daemon"
    )


async def require_token(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    """Dependency of every mutating router: 401 unless the request carries the token.

    A coroutine, so that it runs on the event loop: FastAPI runs a plain function dependency
    on the server's worker threads, which anyone can take with open reads, and a disarm
    (which runs on threads of its own, ``control.DISARM_THREADS``) would queue behind them
    for its token check."""
    expected: str | None = request.app.state.token
    if expected is None:  # development mode on loopback, allowed at start
        return
    header = None if credentials is None else f"Bearer {credentials.credentials}"
    problem = bearer_problem(header, expected)
    if problem is not None:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, problem, headers=CHALLENGE)
