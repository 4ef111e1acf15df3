"""schemathesis against the served OpenAPI schema: whatever a client sends, no 5xx, and every
answer is one the schema declares: its status, content type, headers and body."""

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from service.api.app import create_app
from service.daemon.daemon import Daemon
from tests.service._loop_harness import AUTH, TOKEN, loop_settings

pytestmark = pytest.mark.slow

CONFORMANCE = [
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


@pytest.fixture(scope="module")
def served_app(tmp_path_factory, exported):
    """The app around a started daemon (no rig: every state-dependent answer is the not-ready
    one)."""
    _, window, step = exported
    config = loop_settings(
        tmp_path_factory.mktemp("schema"), window, step, "corticast-schema-test",
        bridge={"dry_run": True},
    )  # fmt: skip
    daemon = Daemon(config).start()
    try:
        yield _from_loopback(create_app(daemon, config.api))
    finally:
        daemon.stop()


def _from_loopback(app):
    """``app`` as a client on this machine calls it: schemathesis calls it in-process for the
    host ``testserver``, which a loopback API refuses (421: a web page's, by DNS rebinding)."""

    async def asgi(scope, receive, send):
        if scope["type"] == "http":
            headers = [(name, value) for name, value in scope["headers"] if name != b"host"]
            scope = {**scope, "headers": [*headers, (b"host", b"127.0.0.1")]}
        await app(scope, receive, send)

    return asgi


@pytest.fixture(scope="module")
def api_schema(served_app):
    """The served schema, loaded by schemathesis in-process over ASGI. (A 500 is checked
    against it in test_api_guard, on a real server: in-process, the fault would be raised.)"""
    return schemathesis.openapi.from_asgi("/openapi.json", served_app)


def test_every_answer_conforms_to_the_schema_and_none_is_a_server_error(api_schema):
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert {op.path for op in operations} >= {"/readyz", "/status", "/control/policy"}
    for operation in operations:
        # /readyz answers 503 when not ready: documented, as readiness probes expect.
        checks = CONFORMANCE + ([] if operation.path == "/readyz" else [not_a_server_error])
        _conformance_test(operation, checks)()


def _conformance_test(operation, checks):
    """Valid and invalid requests to ``operation``, with the token and without."""
    strategy = operation.as_strategy() | operation.as_strategy(GenerationMode.NEGATIVE)

    @given(case=strategy)
    @settings(
        max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), database=None
    )
    def conforms(case):
        for headers in ({"Authorization": f"Bearer {TOKEN}"}, {}):
            case.call_and_validate(headers=headers, checks=checks)

    return conforms


def test_the_schema_declares_the_real_error_bodies(api_schema):
    """The error forms the API really sends, not FastAPI's defaults."""
    spec = api_schema.raw_schema
    policy = spec["paths"]["/control/policy"]["put"]["responses"]
    assert {"400", "401", "413", "422", "500"} <= set(policy)
    assert policy["422"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ErrorBody"
    }
    assert "HTTPValidationError" not in spec["components"]["schemas"]
    problem = spec["components"]["schemas"]["Problem"]
    assert set(problem["required"]) == {"where", "problem"}
    assert "error_id" in spec["components"]["schemas"]["InternalErrorBody"]["required"]


EDGES = [
    # what, method and path, headers, body: answers no generated request provokes
    ("a body that is not UTF-8", "PUT", "/control/policy", AUTH, b'{"min_pgd": "\xff"}'),
    ("no token, a body that is not JSON", "PUT", "/control/policy", {}, b"{not json"),
    ("a body over the limit", "PUT", "/control/policy", AUTH, b" " * 10_000),
    ("a body on a reading endpoint", "GET", "/status", {}, b" " * 2_000),
    ("invalid JSON with the token", "POST", "/control/disarm", AUTH, b"{not json"),
]


@pytest.mark.parametrize(("what", "method", "path", "headers", "body"), EDGES)
def test_edge_answers_are_the_ones_the_schema_declares(
    api_schema, what, method, path, headers, body
):
    operation = api_schema[path][method]
    case = operation.Case(
        headers={**headers, "Content-Type": "application/json"},
        body=body,
        media_type="application/octet-stream",
    )
    answer = case.call()
    assert answer.status_code in {400, 401, 413, 422}, (what, answer.text)
    declared = operation.definition.raw["responses"]
    assert str(answer.status_code) in declared, f"{what}: {answer.status_code} is undeclared"
    operation.validate_response(answer)  # the body against the declared schema
    case.validate_response(answer, checks=CONFORMANCE)
