"""Bearer-token authentication for the mutating endpoints.

One token, from the config or ``CORTICAST_API__TOKEN``; compared in constant time. A missing
or malformed Authorization header and a wrong token are both 401 with a ``WWW-Authenticate``
header (RFC 6750); nothing about the expected token leaks into the message. The only way to
run without a token is the explicit development mode on a loopback bind, checked at start
(``service.api.app.check_api_settings``); then ``app.state.token`` is None and control is open.
"""

from __future__ import annotations

import secrets
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

_bearer = HTTPBearer(auto_error=False, description="The control token ([api] token).")


def require_token(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    """Dependency of every mutating router: 401 unless the request carries the token."""
    expected: str | None = request.app.state.token
    if expected is None:  # development mode on loopback, allowed at start
        return
    challenge = {"WWW-Authenticate": "Bearer"}
    if credentials is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "missing bearer token: send 'Authorization: Bearer <token>'",
            headers=challenge,
        )
    if not secrets.compare_digest(credentials.credentials.encode(), expected.encode()):
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "invalid bearer token", challenge)
