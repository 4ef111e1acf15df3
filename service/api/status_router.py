"""Everything an operator checks at a glance: stream, model, latency, arm and interlock state."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

router = APIRouter(tags=["status"])


@router.get("/status", summary="Stream, model, backend, latency, arm state, interlocks, budgets")
def get_status(request: Request) -> dict[str, Any]:
    return request.app.state.daemon.status()
