"""The routing envelope a query reply echoes: what a client puts before its request's empty
delimiter comes back with the reply, so it must be bounded like the request itself."""

from __future__ import annotations

import json

import zmq
from prometheus_client import CollectorRegistry

from service.zmq_api.publisher import ZmqPublisher
from service.zmq_api.query import MAX_ENVELOPE_BYTES, QueryServer
from service.zmq_api.settings import ZmqSettings
from tests.service.zmq_api.test_zmq_api import ANY_PORT


def test_an_envelope_past_any_router_chain_is_refused_not_echoed():
    """50 frames of 60 KB before the delimiter (each within the socket's 64 KiB limit) made
    every reply 3 MB, queued 100 deep for a client that does not read: the reply is a short
    error instead, and a REQ-style envelope is still answered."""
    registry = CollectorRegistry()
    settings = ZmqSettings(**ANY_PORT)
    context = zmq.Context()
    dealer = context.socket(zmq.DEALER)
    dealer.linger = 0
    try:
        with (
            ZmqPublisher(settings, registry=registry) as publisher,
            QueryServer(settings, publisher.history, lambda: {"up": 1}, registry=registry) as q,
        ):
            dealer.connect(q.endpoint)
            dealer.send_multipart([b"x" * 60_000] * 50 + [b"", b'{"query": "status"}'])
            assert dealer.poll(10_000), "no reply to a request with a long envelope"
            reply = dealer.recv_multipart()
            assert sum(map(len, reply)) < 4096, (len(reply), sum(map(len, reply)))
            delimiter, header, payload = reply
            assert delimiter == b"" and payload == b""
            error = json.loads(header)["error"]
            assert f"at most 8 frames and {MAX_ENVELOPE_BYTES} bytes" in error
            assert "envelope (the frames before its empty delimiter) is 50 frames" in error

            hop, correlation = b"\x00broker", b"\x01\x02\x03\x04"
            dealer.send_multipart([hop, correlation, b"", b'{"query": "status"}'])
            assert dealer.poll(10_000), "no reply to a request through one broker"
            *envelope, header, _ = dealer.recv_multipart()
            assert envelope == [hop, correlation, b""]
            assert json.loads(header)["status"] == {"up": 1}
            assert q.running
        labels = {"query": "invalid", "outcome": "bad_request"}
        assert registry.get_sample_value("corticast_zmq_queries_total", labels) == 1
    finally:
        dealer.close()
        context.term()
