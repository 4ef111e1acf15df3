"""Bearer-token authentication for the mutating endpoints.

One token, from the config or ``CORTICAST_API__TOKEN``; compared in constant time. A missing
or malformed Authorization header and a wrong token are both 401 with a ``WWW-Authenticate``
header (RFC 6750); nothing about the expected token leaks into the message. The only way to
run without a token is the explicit development mode on a loopback bind, checked at start
(``service.api.app.check_api_settings``); then ``app.state.token`` is None and control is open.

The check runs twice: in ``service.api._request_guard`` from the headers alone, before any
byte of the body is read, and here as the control router's dependency, which also declares
the scheme in the OpenAPI schema.
"""

from __future__ import annotations

import secrets
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

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
