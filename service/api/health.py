"""Liveness, readiness and the Prometheus scrape endpoint (no auth: probes and scrapers)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel

from service.api.remote_daemon import LoopUnreachableError

router = APIRouter(tags=["health"])


class Readiness(BaseModel):
    """Whether the loop is ready, and if not, why."""

    ready: bool
    reasons: list[str]


@router.get("/healthz", summary="Liveness: the process is serving")
def healthz() -> dict[str, str]:
    return {"status": "alive"}


@router.get(
    "/readyz",
    summary="Readiness: stream live, model warm, wave stage running, bridge connected",
    response_model=Readiness,
    responses={503: {"model": Readiness, "description": "Not ready; `reasons` says why"}},
)
def readyz(request: Request) -> JSONResponse:
    try:
        readiness = request.app.state.daemon.readiness()
    except LoopUnreachableError as err:  # the control process's link: not ready, in this form
        return JSONResponse({"ready": False, "reasons": [str(err)]}, status_code=503)
    body = {"ready": readiness.ready, "reasons": list(readiness.reasons)}
    return JSONResponse(body, status_code=200 if readiness.ready else 503)


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
def metrics(request: Request) -> Response:
    return Response(
        generate_latest(request.app.state.daemon.registry), media_type=CONTENT_TYPE_LATEST
    )
