"""A client the daemon's CURVE sockets refuse is told why, over real sockets: without the
socket monitor it got nothing, ``receive()`` kept returning None and queries timed out."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry

from service.zmq_api.client import HandshakeError, PredictionClient
from service.zmq_api.publisher import ZmqPublisher
from service.zmq_api.query import QueryServer
from service.zmq_api.settings import ZmqSettings
from tests.service.zmq_api.test_zmq_api import ANY_PORT

WAIT_S = 5.0
"""Longest a refused client waits: the old code returned None after it, the new one raises
as soon as the handshake fails."""


@pytest.fixture
def daemon(curve_keys) -> Iterator[tuple[str, str]]:
    """A CURVE publisher and query socket admitting alice only: their endpoints."""
    settings = ZmqSettings(
        **ANY_PORT,
        curve_secret_key_file=curve_keys["server_secret"],
        curve_allowed_clients_dir=curve_keys["allowed"],
    )
    registry = CollectorRegistry()
    with (
        ZmqPublisher(settings, registry=registry) as publisher,
        QueryServer(settings, publisher.history, dict, registry=registry) as query,
    ):
        yield publisher.endpoint, query.endpoint


def _client(daemon, server_key=None, client_key=None) -> PredictionClient:
    return PredictionClient(
        *daemon,
        server_key_file=server_key,
        client_key_file=client_key,
        query_timeout_s=WAIT_S,
    )


def test_a_key_the_daemon_does_not_admit_is_told_so(daemon, curve_keys):
    with _client(daemon, curve_keys["server_public"], curve_keys["mallory"]) as mallory:
        with pytest.raises(HandshakeError, match="the daemon refused this client's key") as sub:
            mallory.receive(timeout_s=WAIT_S)
        with pytest.raises(HandshakeError, match="the daemon refused this client's key") as req:
            mallory.status()
    assert sub.value.endpoint == daemon[0] and req.value.endpoint == daemon[1]
    assert str(sub.value) == (
        f"cannot talk to the daemon at {daemon[0]!r}: the daemon refused this client's key "
        "(CURVE handshake failed, ZAP status 400): its public key must be in the daemon's "
        "'curve_allowed_clients_dir'"
    )


def test_a_wrong_server_key_is_named(daemon, curve_keys):
    """Alice's own public key given as the daemon's: her key is allowed, the handshake fails."""
    wrong = _client(daemon, curve_keys["alice_public"], curve_keys["alice"])
    named = pytest.raises(HandshakeError, match="is 'server_key_file' the daemon's public key")
    with wrong as alice, named:
        alice.receive(timeout_s=WAIT_S)


def test_a_client_without_keys_is_told_the_daemon_requires_curve(daemon):
    """libzmq reports the first failure without detail, a retry's as a mechanism mismatch:
    either way the error names the key files to pass."""
    with _client(daemon) as anonymous, pytest.raises(HandshakeError, match="'client_key_file'"):
        anonymous.receive(timeout_s=WAIT_S)


def test_an_admitted_key_reads_no_handshake_error(daemon, curve_keys):
    """A client whose handshake succeeded waits out its timeout as before."""
    with _client(daemon, curve_keys["server_public"], curve_keys["alice"]) as alice:
        assert alice.status() == {}
        assert alice.receive(timeout_s=0.2) is None
