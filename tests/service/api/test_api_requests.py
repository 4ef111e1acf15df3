"""Malformed requests to the HTTP API and the answers they get: a real uvicorn server around a
daemon that has not started (every refusal here comes before the daemon is asked anything)."""

from __future__ import annotations

import threading

import httpx
import pytest
import uvicorn

from service.api.app import create_app
from service.api.serving import base_url, uvicorn_config
from service.daemon.daemon import Daemon
from tests.service._loop_harness import TOKEN, loop_settings, wait_until

AUTH = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}


@pytest.fixture(scope="module")
def http(tmp_path_factory, exported):
    _, window, step = exported
    tmp_path = tmp_path_factory.mktemp("requests")
    settings = loop_settings(tmp_path, window, step, "corticast-test-requests")
    daemon = Daemon(settings, serve_queries=False)
    api = settings.api
    server = uvicorn.Server(uvicorn_config(create_app(daemon, api), api))
    thread = threading.Thread(target=server.run, name="test-http", daemon=True)
    thread.start()
    try:
        wait_until(lambda: server.started, 30, "the HTTP server")
        with httpx.Client(base_url=base_url(api), headers=AUTH, timeout=30) as client:
            yield client
    finally:
        server.should_exit = True
        thread.join(10)


@pytest.mark.parametrize(
    ("method", "path", "body", "why"),
    [
        ("PUT", "/control/policy", b'{"min_pgd": 0.5', "Expecting ',' delimiter"),
        ("PUT", "/control/policy", b"{min_pgd: 0.5}", "Expecting property name"),
        ("PUT", "/control/model", b'{"path": "x.onnx",}', "Expecting property name"),
    ],
)
def test_a_body_that_is_not_json_is_a_400_that_says_why(http, method, path, body, why):
    """As a disarm's body, or one that is not UTF-8: the parser's reason, not 'JSON decode
    error' at a 'body.15' that reads like a field."""
    answer = http.request(method, path, content=body)
    assert answer.status_code == 400, answer.text
    detail = answer.json()["detail"]
    assert detail.startswith(f"the body is not JSON this API can read: {why}"), detail
    assert "(char " in detail, detail
