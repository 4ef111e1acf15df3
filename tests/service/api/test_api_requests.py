"""Malformed requests to the HTTP API and the answers they get: a real uvicorn server around a
daemon that has not started (every refusal here comes before the daemon is asked anything)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest
import uvicorn

from service.api.app import create_app
from service.api.remote_daemon import RemoteDaemon
from service.api.serving import base_url, uvicorn_config
from service.config import ApiSettings
from service.daemon.daemon import Daemon
from service.daemon.link_protocol import LinkAddress
from tests.service._loop_harness import TOKEN, free_port, loop_settings, wait_until

AUTH = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}


@contextmanager
def _served(daemon, api: ApiSettings) -> Iterator[httpx.Client]:
    """``daemon`` behind a real uvicorn server, and a client of it carrying the token."""
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


@pytest.fixture(scope="module")
def http(tmp_path_factory, exported):
    _, window, step = exported
    tmp_path = tmp_path_factory.mktemp("requests")
    settings = loop_settings(tmp_path, window, step, "corticast-test-requests")
    with _served(Daemon(settings, serve_queries=False), settings.api) as client:
        yield client


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


@pytest.mark.parametrize(
    ("path", "body", "key"),
    [
        ("/control/policy", b'{"min_pgd": 0.9, "stimulation": {}, "min_pgd": 0.1}', "min_pgd"),
        (
            "/control/policy",
            b'{"stimulation": {"amplitude_ua": 5, "amplitude_ua": 50}}',
            "amplitude_ua",
        ),
        ("/control/model", b'{"path": "a.onnx", "path": "b.onnx"}', "path"),
    ],
)
def test_a_key_given_twice_is_a_400_that_names_it(http, path, body, key):
    """The config file's TOML refuses a key given twice; JSON's parser kept the last, so
    which of two thresholds applied was the parser's choice."""
    answer = http.put(path, content=body)
    assert answer.status_code == 400, answer.text
    assert answer.json()["detail"] == (
        f"the body is not JSON this API can read: the key '{key}' is given twice"
    )


def test_readyz_of_a_loop_process_that_does_not_answer_is_a_503_in_its_own_form(tmp_path):
    """A probe or dashboard reads ``/readyz``'s ``ready`` and ``reasons`` (its declared 503
    body) whatever the cause, the control link's too."""
    gone = RemoteDaemon(LinkAddress(str(tmp_path / "gone.sock"), b"k" * 32))
    with _served(gone, ApiSettings(port=free_port(), token=TOKEN)) as http:
        answer = http.get("/readyz")
    assert answer.status_code == 503, answer.text
    body = answer.json()
    assert body["ready"] is False
    [reason] = body["reasons"]
    assert reason.startswith("the loop's process did not answer 'readiness'"), reason


@pytest.mark.parametrize(
    ("method", "path"), [("POST", "/control/arm"), ("POST", "/control/disarm")]
)
def test_a_control_call_the_loop_process_does_not_answer_is_a_503(tmp_path, method, path):
    """As every other call the control link cannot make: 503, 'did not answer', not a 409
    that reads as the daemon's refusal."""
    gone = RemoteDaemon(LinkAddress(str(tmp_path / "gone.sock"), b"k" * 32))
    with _served(gone, ApiSettings(port=free_port(), token=TOKEN)) as http:
        answer = http.request(method, path)
    assert answer.status_code == 503, answer.text
    assert "the loop's process did not answer" in answer.json()["detail"]


@pytest.mark.parametrize(
    "origin", ["http://evil.example", "null", "http://127.0.0.1.evil.example:8080"]
)
def test_without_a_token_a_web_page_cannot_control_the_daemon(tmp_path, origin):
    """Development mode (no token, loopback) trusts every client on this machine, but a web page
    the operator opens is not one: it may POST to 127.0.0.1 unasked (a form, or fetch without
    CORS: no preflight), or reach it under a name of its own (DNS rebinding). Browsers name the
    page in ``Origin``; such a request is 403 before the route runs. Clients that send no
    ``Origin`` (curl, scripts), and pages served from a loopback address, reach the route
    (here a 503: the daemon behind it is gone)."""
    gone = RemoteDaemon(LinkAddress(str(tmp_path / "gone.sock"), b"k" * 32))
    api = ApiSettings(port=free_port(), dev_no_token=True)
    with _served(gone, api) as http:
        answer = http.post("/control/arm", headers={"Origin": origin})
        assert answer.status_code == 403, answer.text
        assert "web page" in answer.json()["detail"]
        assert http.post("/control/arm").status_code == 503
        for own in (f"http://127.0.0.1:{api.port}", f"http://localhost:{api.port}"):
            assert http.post("/control/arm", headers={"Origin": own}).status_code == 503, own


@pytest.mark.parametrize("host", ["evil.example", "evil.example:8080", "127.0.0.1.nip.io"])
def test_a_loopback_api_answers_no_request_for_another_host_name(tmp_path, host):
    """A web page can reach the loopback API under a name of its own that it then points at
    127.0.0.1 (DNS rebinding): to the browser the page and the API are then one origin, and
    the page may read /status, the metrics and the predictions. Its requests name that host
    in ``Host``; a loopback API answers only those for a loopback address or localhost."""
    gone = RemoteDaemon(LinkAddress(str(tmp_path / "gone.sock"), b"k" * 32))
    api = ApiSettings(port=free_port(), token=TOKEN)
    with _served(gone, api) as http:
        answer = http.get("/healthz", headers={"Host": host})
        assert answer.status_code == 421, answer.text
        assert "DNS rebinding" in answer.json()["detail"]
        port = api.port
        for own in (f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}", "localhost"):
            assert http.get("/healthz", headers={"Host": own}).status_code == 200, own


@pytest.mark.parametrize(
    ("body", "where", "problem"),
    [
        ({"path": "x.onnx\nARMED.onnx"}, "body.path", r"character 6 is '\n', a control character"),
        (
            {"path": "model.onnx", "step_path": "\u202exnno.pets"},
            "body.step_path",
            r"character 0 is '\u202e', an invisible format character",
        ),
    ],
    ids=["newline", "right-to-left-override"],
)
def test_a_model_path_that_would_break_a_log_line_is_refused_by_name(http, body, where, problem):
    """A model path is echoed in the daemon's log and its errors: one that holds a newline (or
    reverses the text after it) is a 422 naming the field, not looked up."""
    answer = http.put("/control/model", json=body)
    assert answer.status_code == 422, answer.text
    assert answer.json()["detail"] == [
        {"where": where, "problem": f"Value error, must be one line of printable text: {problem}"}
    ]


def test_a_policy_before_the_daemon_starts_is_a_409_that_says_so(http):
    answer = http.put("/control/policy", json={"min_pgd": 0.5})
    assert answer.status_code == 409, answer.text
    assert answer.json() == {
        "error": "conflict",
        "detail": "cannot change the policy: daemon not started",
    }


def test_a_model_path_that_cannot_be_encoded_is_a_422_that_says_so(http):
    """JSON's ``"\\ud800"`` is a lone surrogate, which no file name holds: that is the
    problem to name, not 'not inside the model directory' (403)."""
    answer = http.put("/control/model", content=b'{"path": "\\ud800.onnx"}')
    assert answer.status_code == 422, answer.text
    assert answer.json()["detail"] == [
        {
            "where": "body.path",
            "problem": "Value error, cannot be encoded as UTF-8: character 0 is '\\ud800', "
            "a lone surrogate",
        }
    ]


@pytest.mark.parametrize(
    ("body", "where"),
    [({"dry_run": True}, "body.dry_run"), ({"channels": [[3, 4]]}, "body.channels")],
)
def test_an_arm_with_a_field_is_refused_by_name_not_armed_without_it(http, body, where):
    """Arming reads nothing: an option sent with it (a dry run, channels) is refused, never
    dropped, since the arm it would have given is not the one asked for."""
    answer = http.post("/control/arm", json=body)
    assert answer.status_code == 422, answer.text
    [problem] = answer.json()["detail"]
    assert problem["where"] == where and "Extra inputs are not permitted" in problem["problem"]
    assert http.post("/control/arm", json={}).status_code == 409  # no field: asked as ever


@pytest.mark.parametrize(
    ("path", "content_type"),
    [
        ("/control/policy", "application/x-www-form-urlencoded"),  # what `curl -d` sends
        ("/control/model", None),
        ("/control/arm", "text/plain"),
    ],
)
def test_a_json_body_sent_as_another_type_is_a_415_that_names_the_content_type(
    http, path, content_type
):
    """FastAPI reads a body as JSON only under a JSON Content-Type, and otherwise said 'Input
    should be a valid dictionary' of a body that is one: say what is wrong instead."""
    method = "POST" if path == "/control/arm" else "PUT"
    request = http.build_request(method, path, content=b'{"path": "x.onnx"}')
    del request.headers["Content-Type"]  # the client's own, application/json
    if content_type is not None:
        request.headers["Content-Type"] = content_type
    answer = http.send(request)
    assert answer.status_code == 415, answer.text
    assert answer.json()["error"] == "unsupported media type"
    said = answer.json()["detail"]
    assert "Content-Type: application/json" in said
    assert (content_type or "no Content-Type") in said, said
