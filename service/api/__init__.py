"""The HTTP control and health API (FastAPI, served by uvicorn): ``app.create_app``."""
