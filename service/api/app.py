"""The FastAPI application: health, status, predictions, control and metrics.

Built by :func:`create_app` around a running :class:`service.daemon.daemon.Daemon`, one router per
resource. Reading endpoints are open (health probes, dashboards); every mutating endpoint
sits behind the bearer token (``service.api.auth``), checked before the body is read, and every
body is size-limited (``service.api._request_guard``). Every error, validation errors
included, is a JSON body ``{"error": ..., "detail": ...}`` that names the problem
(``service.api._errors``, declared in the OpenAPI schema); a 500 names nothing but an error id
that the log holds with the traceback.
"""

from __future__ import annotations

import email.message
import json
import logging
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
from fastapi import FastAPI, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi_offline import FastAPIOffline
from starlette.exceptions import HTTPException as StarletteHTTPException

from service.api import control, health, predictions, status_router
from service.api._errors import (
    declare_error_bodies,
    error_response,
    responses,
    unreadable_json,
)
from service.api._request_guard import RequestGuard
from service.api.remote_daemon import LoopUnreachableError
from service.config import ApiSettings, ConfigError
from service.core.net import is_loopback_host, loopback_hint

_log = logging.getLogger("corticast.api")


def check_api_settings(api: ApiSettings) -> str | None:
    """The token the control endpoints require, or None in development mode.

    Raises
    ------
    ConfigError
        If control is enabled without a token, unless ``dev_no_token`` is set and the API
        binds a loopback address only.
    """
    token = api.token.get_secret_value() if api.token is not None else None
    if token is not None or not api.control:
        return token
    if api.dev_no_token and is_loopback_host(api.host):
        return None
    if api.dev_no_token:
        raise ConfigError(
            "api.dev_no_token is only allowed with a loopback api.host, got "
            f"{api.host!r}{loopback_hint(api.host)}"
        )
    raise ConfigError(
        "api.token must be set (in the config or CORTICAST_API__TOKEN) while api.control is "
        "on; for development on 127.0.0.1 only, set api.dev_no_token = true"
    )


def create_app(
    daemon, api: ApiSettings, *, on_startup: Callable[[], None] | None = None,
    on_shutdown: Callable[[], None] | None = None,
) -> FastAPI:  # fmt: skip
    """The app serving ``daemon``. ``on_startup``/``on_shutdown`` run in its lifespan (the CLI
    starts and stops the daemon there, so SIGTERM to uvicorn stops the loop cleanly)."""
    token = check_api_settings(api)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if on_startup is not None:
            on_startup()
        try:
            yield
        finally:
            if on_shutdown is not None:
                on_shutdown()

    app = FastAPIOffline(  # Swagger UI and ReDoc served from the package: rig PCs may be offline
        title="corticast",
        summary="Closed-loop travelling-wave prediction beside a µECoG rig",
        version="1",
        lifespan=lifespan,
        responses=responses(413, 421, 500, 503),
    )
    app.state.daemon = daemon
    app.state.token = token
    app.state.disarm_threads = anyio.CapacityLimiter(control.DISARM_THREADS)
    app.add_middleware(RequestGuard, token=token, loopback=is_loopback_host(api.host))
    app.include_router(health.router)
    app.include_router(status_router.router)
    app.include_router(predictions.router)
    if api.control:
        app.include_router(control.router)
    app.add_exception_handler(LoopUnreachableError, _loop_unreachable)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(Exception, _internal_error)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = declare_error_bodies(FastAPI.openapi(app))
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app


async def _loop_unreachable(request: Request, exc: LoopUnreachableError) -> JSONResponse:
    """The control plane runs in a process of its own and the loop's did not answer."""
    _log.error("%s %s: %s", request.method, request.url.path, exc)
    return error_response(status.HTTP_503_SERVICE_UNAVAILABLE, str(exc))


async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    detail = exc.detail
    if exc.status_code == status.HTTP_400_BAD_REQUEST:
        # FastAPI says only 'There was an error parsing the body'; the parser's error is the
        # cause, and says why.
        detail = unreadable_json(exc.__cause__) or detail
    return error_response(exc.status_code, detail, getattr(exc, "headers", None))


async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    if isinstance(exc.__cause__, json.JSONDecodeError):
        # FastAPI reports a body that is not JSON as a 422 'JSON decode error' at 'body.<char>',
        # which reads like a field; it is the 400 of any other unreadable body, and says why.
        return error_response(status.HTTP_400_BAD_REQUEST, unreadable_json(exc.__cause__))
    content_type = request.headers.get("content-type")
    if not _is_json(content_type) and any(e["loc"] == ("body",) for e in exc.errors()):
        # FastAPI reads a body as JSON only under a JSON Content-Type; under another (curl -d
        # sends a form's) it said 'Input should be a valid dictionary' of one that is.
        return error_response(
            status.HTTP_415_UNSUPPORTED_MEDIA_TYPE,
            "the body must be JSON sent with 'Content-Type: application/json', got "
            + (f"{content_type!r}" if content_type else "no Content-Type"),
        )
    problems = [
        {"where": ".".join(str(p) for p in e["loc"]), "problem": e["msg"]} for e in exc.errors()
    ]
    return JSONResponse(
        {"error": "invalid request", "detail": problems},
        status_code=status.HTTP_422_UNPROCESSABLE_CONTENT,
    )


def _is_json(content_type: str | None) -> bool:
    """Whether FastAPI reads a body of ``content_type`` as JSON (as its own check does)."""
    message = email.message.Message()
    message["content-type"] = content_type or ""
    subtype = message.get_content_subtype()
    return message.get_content_maintype() == "application" and (
        subtype == "json" or subtype.endswith("+json")
    )


async def _internal_error(request: Request, exc: Exception) -> JSONResponse:
    """Nothing about the fault goes to the client (a message can name a file, a path, a
    setting); the log gets the traceback under an id the client can quote."""
    error_id = uuid.uuid4().hex[:12]
    _log.error(
        "internal error %s on %s %s", error_id, request.method, request.url.path, exc_info=exc
    )
    return JSONResponse(
        {
            "error": "internal error",
            "detail": "the daemon failed to answer; its log holds the details under error_id",
            "error_id": error_id,
        },
        status_code=status.HTTP_500_INTERNAL_SERVER_ERROR,
    )
