"""What PredictionClient refuses, and how: each mistake by name, before a socket would hide it
(ZeroMQ takes a high-water mark of 0 as no limit at all)."""

from __future__ import annotations

import pytest

from service.zmq_api.client import PredictionClient

PUB, QUERY = "tcp://127.0.0.1:5556", "tcp://127.0.0.1:5557"


@pytest.mark.parametrize(
    ("hwm", "error"),
    [
        (0, ValueError),  # ZeroMQ's "no limit": a slow reader would buffer without bound
        (-1, ValueError),
        (True, TypeError),
        (1.5, TypeError),
        ("10", TypeError),
    ],
)
def test_a_receive_hwm_that_is_not_a_positive_int_is_refused_by_name(hwm, error):
    with pytest.raises(error, match=r"'receive_hwm' must be"):
        PredictionClient(PUB, QUERY, receive_hwm=hwm)


def test_a_subscription_to_no_topic_is_refused_rather_than_never_receiving():
    """No topic subscribes to nothing: ``receive`` would return None forever (or, with
    ``timeout_s=None``, never return)."""
    with pytest.raises(ValueError, match=r"'topics' must name at least one of .*pub_endpoint=None"):
        PredictionClient(PUB, QUERY, topics=())
    PredictionClient(None, QUERY, topics=()).close()  # queries only: no topic needed


def test_a_closed_client_says_it_is_closed():
    """Not ZeroMQ's 'Operation not supported' or 'Socket operation on non-socket'."""
    client = PredictionClient(PUB, QUERY)
    client.close()
    for call in (client.receive, client.latest, client.status, lambda: client.by_seq(3)):
        with pytest.raises(RuntimeError, match=r"this client is closed"):
            call()


def test_a_wait_longer_than_zeromq_can_count_is_refused_by_name():
    """ZeroMQ counts a wait in int milliseconds (at most ~24.8 days): a longer one failed as
    'OverflowError: value too large to convert to int', a query after it had been sent."""
    with pytest.raises(ValueError, match=r"'query_timeout_s' must be .* at most 2147483"):
        PredictionClient(None, QUERY, query_timeout_s=1e7)
    with PredictionClient(PUB, None) as client:
        with pytest.raises(ValueError, match=r"'timeout_s' must be .* at most 2147483"):
            client.receive(timeout_s=1e7)
        assert client.receive(timeout_s=0.01) is None


@pytest.mark.parametrize("endpoint", ["tcp://127.0.0.1:*", "tcp://*:5556"])
@pytest.mark.parametrize("which", ["pub_endpoint", "query_endpoint"])
def test_a_bind_wildcard_is_refused_by_name_as_an_endpoint_to_connect_to(which, endpoint):
    """The daemon's config may bind '*' (any port, every interface); a client cannot connect
    there, and ZeroMQ said only 'Invalid argument'."""
    endpoints = {"pub_endpoint": None, "query_endpoint": None, which: endpoint}
    with pytest.raises(ValueError, match=rf"'{which}' .*connect.* e\.g\. 'tcp://127\.0\.0\.1:"):
        PredictionClient(**endpoints)
