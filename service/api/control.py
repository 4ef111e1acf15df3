"""Operator actions: arm, disarm, change the policy, hot-swap the model. All need the token.

Arming is refused (409) while the daemon is stopping, unless it is ready, and when the model
has been judged unhealthy; it is allowed while the model is unproven (just started or swapped
in), because the bridge's ``model`` interlock blocks every request until the model has been
scored live. An arm takes no options: a field in its body is refused (422), not dropped.
Disarming always works, at once: it waits for no model load, and a body it cannot use (400,
413, 422) is answered only after disarming with the default reason. A reason
or a model path holding a control character is refused (422): both go into the daemon's log,
and a newline would let one request write a record of its own there. A policy body is
validated in full before anything changes (422 names every problem); a model that does not fit
the stream is refused (422), and under ``[model] serving = "auto"`` one whose measured p99 fits
no stride (409), and the running one stays.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Depends, HTTPException, Request, Response, status
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator

from service.api._errors import responses, unreadable_json
from service.api._request_guard import BODY_REFUSED
from service.api.auth import require_token
from service.api.remote_daemon import LoopUnreachableError
from service.core.json_keys import loads_keys_once
from service.core.log_text import line_problem
from service.daemon.state_error import DaemonStateError
from service.inference.model_files import ModelFileError
from service.inference.predictor import BackendUnavailableError, HostResourceError
from service.policy.limits import PolicyLimitError
from service.policy.settings import PolicySettings

_log = logging.getLogger("corticast.api")

DISARM_THREADS = 8
"""Worker threads kept for disarms alone (``app.state.disarm_threads``): every other route that
runs on a thread shares the server's pool of 40, which anyone can fill with reads (/status
is open), and a disarm must not queue behind them."""


class _NoRepeatedKeysRequest(Request):
    """A request whose JSON body FastAPI reads with :func:`loads_keys_once` (a key given twice
    is refused)."""

    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = loads_keys_once(await self.body())
        return self._json


class _ControlRoute(APIRoute):
    """A control route: its body read by :class:`_NoRepeatedKeysRequest`."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
            return await handler(_NoRepeatedKeysRequest(request.scope, request.receive))

        return handle


router = APIRouter(
    prefix="/control",
    tags=["control"],
    route_class=_ControlRoute,
    dependencies=[Depends(require_token)],
    responses=responses(400, 401, 415, 422),
)


def _one_line(value: Any) -> Any:
    """Text that goes into the logs as it came must hold nothing that breaks or disguises a
    log line: one request must not forge a record (``service.core.log_text``)."""
    if isinstance(value, str) and (problem := line_problem(value)) is not None:
        raise ValueError(f"must be one line of printable text: {problem}")
    return value


def _utf8(value: Any) -> Any:
    """JSON text may hold a lone surrogate (``"\\ud800"``), which no file name or UTF-8 file
    can: say so, rather than what fails later on it."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as err:
            raise ValueError(
                f"cannot be encoded as UTF-8: character {err.start} is {value[err.start]!r}, "
                "a lone surrogate"
            ) from None
    return value


class DisarmRequest(BaseModel):
    """Why the operator disarms (goes to the audit log and the daemon's log)."""

    model_config = ConfigDict(extra="forbid")
    reason: Annotated[str, Field(min_length=1, max_length=200), AfterValidator(_one_line)] = (
        "operator request"
    )


class ModelSwap(BaseModel):
    """An exported model to switch to: files in the daemon's model directory ([model]
    directory), absolute or relative to it. In stream mode ``step_path`` defaults to the step
    graph beside ``path`` (``x.onnx`` -> ``x.step.onnx``)."""

    model_config = ConfigDict(extra="forbid")
    path: Path
    step_path: Path | None = None

    @field_validator("path", "step_path", mode="before")
    @classmethod
    def _names_a_file(cls, value: Any) -> Any:
        """An empty path would read as '.', the directory itself, and a NUL byte or a lone
        surrogate as a file outside it: say what is wrong with them instead."""
        if isinstance(value, str) and not value.strip():
            raise ValueError("must name a file, got an empty path")
        if isinstance(value, str) and "\x00" in value:
            raise ValueError("must not contain a NUL byte")
        return _one_line(_utf8(value))


class ArmRequest(BaseModel):
    """An arm takes no options: a field sent with it (a dry run, channels) is refused by name
    (422), never dropped, since the arm it would give is not the one asked for."""

    model_config = ConfigDict(extra="forbid")


@router.post(
    "/arm",
    summary="Arm stimulation (refused while stopping, unless ready, or if the model is unhealthy)",
    responses={409: {"description": "Stopping, not ready, or the model unhealthy; says why"}},
)
def arm(request: Request, options: ArmRequest | None = None) -> dict[str, Any]:
    daemon = request.app.state.daemon
    try:
        daemon.arm()
    except DaemonStateError as err:
        raise HTTPException(status.HTTP_409_CONFLICT, str(err)) from None
    except LoopUnreachableError:  # not the daemon's answer: the app's 503 says so
        raise
    except Exception as err:  # the bridge could not arm the device: state, not a crash
        raise HTTPException(status.HTTP_409_CONFLICT, f"arming failed: {err}") from None
    return {"armed": True}


class DisarmResult(BaseModel):
    """What the disarm did."""

    armed: bool = Field(description="Armed now (true only if an arm won a race with it)")
    was_armed: bool = Field(description="The host was armed when the disarm came")
    device_confirmed: bool = Field(
        description="The device confirmed it is disarmed (true in dry run: no device)"
    )


_DISARM_BODY = {
    "required": False,
    "content": {"application/json": {"schema": DisarmRequest.model_json_schema()}},
}
"""The body ``/control/disarm`` reads itself (declared here for the schema)."""
_DEFAULT_REASON = DisarmRequest().reason
_DISARMED_ANYWAY = f"stimulation was disarmed all the same, with the reason {_DEFAULT_REASON!r}"


@router.post("/disarm/", include_in_schema=False)  # not a redirect: a disarm in one request
@router.post(
    "/disarm",
    summary="Disarm stimulation now (also when the body is refused: 400, 413 or 422 say so)",
    openapi_extra={"requestBody": _DISARM_BODY},
)
async def disarm(request: Request) -> DisarmResult:
    """The body is read here, not by FastAPI: a body that is not JSON, or not a
    ``DisarmRequest`` (a reason too long, a key misspelt), must not stand between an operator
    and a disarm, nor one over the control requests' size limit (which the request guard
    keeps out). The daemon disarms with the default reason first, then the answer says what
    was wrong with the body (400, 413 or 422) and that it disarmed. It runs on a thread of
    the disarms' own (:data:`DISARM_THREADS`), never queued behind other requests, or on the
    event loop where no thread can be had (:func:`_disarm_off_the_event_loop`)."""
    raw = await request.body()
    too_large = request.scope.get(BODY_REFUSED)  # the request guard kept the body out
    reason, refusal = _disarm_reason(raw) if too_large is None else _too_large(too_large)
    result = await _disarm_off_the_event_loop(request.app, reason)
    if refusal is not None:
        raise refusal
    return result


async def _disarm_off_the_event_loop(app: Any, reason: str) -> DisarmResult:
    """:func:`_disarm_now` on a disarm thread; on the event loop itself where no thread can
    be had (threads ran out: a process limit, memory), every other request waiting meanwhile,
    rather than answer a disarm that never happened with a 500."""
    began = False

    def disarm() -> DisarmResult:
        nonlocal began
        began = True
        return _disarm_now(app.state.daemon, reason)

    try:
        return await anyio.to_thread.run_sync(disarm, limiter=app.state.disarm_threads)
    except RuntimeError as err:
        if began:  # the disarm's own failure (the loop's process unreachable...)
            raise
        _log.error("no thread for a disarm (%s): disarming on the event loop", err)
        return _disarm_now(app.state.daemon, reason)


def _disarm_now(daemon: Any, reason: str) -> DisarmResult:
    """Disarm and say how it went, off the event loop: with the control plane in a process of
    its own, it is a call to the loop's process (one: the disarm and the state after it),
    which may take seconds to answer, and every other request would wait for it."""
    done, armed = daemon.disarm_then_armed(f"operator: {reason}")
    return DisarmResult(
        armed=armed, was_armed=done.was_armed, device_confirmed=done.device_confirmed
    )


def _too_large(detail: list[dict[str, str]]) -> tuple[str, Exception]:
    """The default reason, and the 413 the request guard would have answered (the rest of the
    body is not read: the connection closes), saying that it disarmed."""
    disarmed = [*detail, {"where": "disarm", "problem": _DISARMED_ANYWAY}]
    too_large = status.HTTP_413_CONTENT_TOO_LARGE
    return _DEFAULT_REASON, HTTPException(too_large, disarmed, {"Connection": "close"})


def _disarm_reason(raw: bytes) -> tuple[str, Exception | None]:
    """The reason a disarm body gives, and the error to answer after disarming where the body
    is refused (then the reason is the default)."""
    default = _DEFAULT_REASON
    if not raw.strip():
        return default, None
    try:
        document = loads_keys_once(raw)
    except (ValueError, RecursionError) as err:
        detail = f"{unreadable_json(err)}; {_DISARMED_ANYWAY}"
        return default, HTTPException(status.HTTP_400_BAD_REQUEST, detail)
    if document is None:
        return default, None
    try:
        return DisarmRequest.model_validate(document).reason, None
    except ValidationError as err:
        errors = [{**e, "loc": ("body", *e["loc"])} for e in err.errors()]
        errors.append({"loc": ("disarm",), "msg": _DISARMED_ANYWAY, "type": "disarmed"})
        return default, RequestValidationError(errors)


@router.put(
    "/policy",
    summary="Replace the stimulation policy (validated as the config file's policy is)",
    responses={
        422: {
            "description": "Invalid thresholds, a pulse train or electrode count the "
            "interlocks refuse, or electrodes off this stream's grid; each field is named"
        },
        409: {"description": "The daemon is not started yet; says so"},
    },
)
def put_policy(request: Request, policy: PolicySettings) -> dict[str, Any]:
    try:
        request.app.state.daemon.set_policy(policy)
    except DaemonStateError as err:
        raise HTTPException(status.HTTP_409_CONFLICT, str(err)) from None
    except PolicyLimitError as err:  # as the field errors: 422, each field named in the body
        raise RequestValidationError(
            [
                {"loc": ("body", *field.split(".")), "msg": problem, "type": "value_error"}
                for field, problem in err.problems
            ]
        ) from None
    return policy.model_dump(mode="json")


@router.put(
    "/model",
    summary="Hot-swap to another exported model (loaded and warmed beside the running one)",
    responses={
        200: {"description": "What serves now: the predictor's info and the files, resolved"},
        403: {"description": "Not a file inside the model directory (whether it exists or not)"},
        404: {"description": "No such file in the model directory"},
        409: {
            "description": "The backend cannot run it here, the daemon is stopping, or under "
            "[model] serving = 'auto' its measured p99 fits no stride (says what would help)"
        },
        422: {
            "description": "Not a model file this daemon may load: too large, no matching "
            "step graph in stream mode, or not fit for this stream"
        },
        503: {
            "description": "The host ran out of file descriptors or memory loading it (says "
            "which); the running model keeps serving, and the same swap may work later"
        },
    },
)
def put_model(request: Request, swap: ModelSwap) -> dict[str, Any]:
    try:
        return request.app.state.daemon.swap_model(swap.path, swap.step_path)
    except ModelFileError as err:
        raise HTTPException(_REFUSALS[err.kind], str(err)) from None
    except (BackendUnavailableError, DaemonStateError) as err:
        raise HTTPException(status.HTTP_409_CONFLICT, str(err)) from None
    except HostResourceError as err:  # not the file's fault: an OSError, answered apart
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, str(err)) from None
    except (ValueError, OSError) as err:  # ModelMismatchError: it does not fit the stream
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(err)) from None


_REFUSALS = {
    "outside": status.HTTP_403_FORBIDDEN,
    "missing": status.HTTP_404_NOT_FOUND,
    "unusable": status.HTTP_422_UNPROCESSABLE_CONTENT,
}
"""The answer to each kind of :class:`ModelFileError`."""
