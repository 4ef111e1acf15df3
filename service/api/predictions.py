"""The newest prediction over HTTP (ZeroMQ is the real-time path; this is for a quick look)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, Request, status

router = APIRouter(prefix="/predictions", tags=["predictions"])


@router.get(
    "/latest",
    summary="The newest prediction: its header and frames (16 x 18 x 20, µV)",
    responses={404: {"description": "No prediction yet"}},
)
def latest(request: Request) -> dict[str, Any]:
    found = request.app.state.daemon.latest_prediction()
    if found is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no prediction has been made yet")
    header, frames = found
    return {"header": header, "frames_uv": frames.tolist()}
