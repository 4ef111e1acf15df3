"""The API's error bodies, one shape for every error, declared in the OpenAPI schema.

Every error is ``{"error": <the status's reason>, "detail": ...}``: ``detail`` is a sentence,
or, where the request itself is at fault field by field (422, 413), a list of
``{"where", "problem"}``. A 500 says nothing about the fault itself; its ``error_id`` finds
the traceback in the log.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

from pydantic import BaseModel, Field
from starlette.responses import JSONResponse


class Problem(BaseModel):
    """One thing wrong with a request."""

    where: str = Field(description="What is wrong: 'body.min_pgd', 'body', 'query.x', ...")
    problem: str = Field(description="Why, and what was received")


class ErrorBody(BaseModel):
    """Any 4xx answer."""

    error: str = Field(description="The status's reason, e.g. 'unauthorized'")
    detail: str | list[Problem]


class InternalErrorBody(BaseModel):
    """A 500: nothing about the fault; the log holds its traceback under ``error_id``."""

    error: str
    detail: str
    error_id: str = Field(pattern=r"^[0-9a-f]{12}$")


def unreadable_json(cause: BaseException | None) -> str | None:
    """Why the JSON parser refused a body, where ``cause`` is its error: nesting past its
    recursion limit, bytes that are not UTF-8, an integer past Python's digit limit (its own
    words, less its advice to the server). None for any other cause."""
    if isinstance(cause, RecursionError):
        why = "it nests too deeply"
    elif isinstance(cause, ValueError):
        why = str(cause).split(";")[0]
    else:
        return None
    return f"the body is not JSON this API can read: {why}"


def reason(code: int) -> str:
    """The status's reason phrase in lower case, RFC 9110's wording whatever the Python."""
    if code == 413:  # "Request Entity Too Large" before Python 3.13
        return "content too large"
    try:
        return HTTPStatus(code).phrase.lower()
    except ValueError:
        return "error"


def error_response(
    code: int, detail: str | list[dict[str, str]], headers: dict[str, str] | None = None
) -> JSONResponse:
    """The JSON answer for ``code`` with ``detail`` (a sentence or ``{where, problem}``s)."""
    return JSONResponse({"error": reason(code), "detail": detail}, code, headers)


def responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries declaring the error body of each of ``codes``."""
    return {
        code: {"model": _MODELS.get(code, ErrorBody), "description": _WHY[code]} for code in codes
    }


def declare_error_bodies(schema: dict[str, Any]) -> dict[str, Any]:
    """Give every error answer in an OpenAPI ``schema`` that declares only a description (a
    route's own 404, 409, 422...) the error body it is really sent with."""
    body = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}
    for operations in schema.get("paths", {}).values():
        for operation in operations.values():
            for code, response in operation.get("responses", {}).items():
                if code.isdigit() and int(code) >= 400 and "content" not in response:
                    response["content"] = body
    return schema


_MODELS: dict[int, type[BaseModel]] = {500: InternalErrorBody}
_WHY = {
    400: "The body could not be read (e.g. not UTF-8)",
    401: "Missing or invalid bearer token (checked before the body is read)",
    404: "Not found",
    409: "Conflicts with the daemon's state; says why",
    413: "The body is larger than this endpoint accepts (refused unread)",
    415: "A body not sent as JSON ('Content-Type: application/json'); says what was sent",
    421: "A loopback API asked for another host name (a web page's, by DNS rebinding)",
    422: "Invalid request: every problem as {where, problem}",
    500: "Internal error: a generic message and an error id that the log holds",
    503: "Not ready, or (control plane in its own process) the loop's did not answer; says why",
}
