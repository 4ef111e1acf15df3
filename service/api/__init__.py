"""The HTTP control and health API (FastAPI, served by uvicorn)."""

from service.api.app import create_app

__all__ = ["create_app"]
