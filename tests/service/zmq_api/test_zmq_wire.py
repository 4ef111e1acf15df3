"""What a client makes of a message that does not follow the wire format: one ValueError that
says so, whatever is wrong with it (``PredictionClient.receive`` promises no other)."""

from __future__ import annotations

import zmq

from service.zmq_api.client import PredictionClient

NOT_JSON = [
    b"[" * 100_000 + b"]" * 100_000,  # nested past the parser's recursion limit
    b'{"a":' * 50_000 + b"1" + b"}" * 50_000,
    b"\xff\xfe",
    b"{",
]


def test_a_header_that_is_not_json_is_a_value_error_at_the_client():
    context = zmq.Context()
    pub = context.socket(zmq.PUB)
    pub.linger = 0
    try:
        port = pub.bind_to_random_port("tcp://127.0.0.1")
        with PredictionClient(f"tcp://127.0.0.1:{port}", None) as client:
            for header in NOT_JSON:
                error = _refusal(
                    client, lambda h=header: pub.send_multipart([b"prediction", h, b""])
                )
                assert str(error).startswith("message header is not JSON"), error
    finally:
        pub.close()
        context.term()


def _refusal(client: PredictionClient, send) -> ValueError:
    """The ValueError ``receive`` raises for what ``send`` publishes (sent until the
    subscription has reached the socket); the copies still queued are read and dropped."""
    while True:
        send()
        try:
            if client.receive(timeout_s=0.02) is None:
                continue
        except ValueError as error:
            while True:
                try:
                    if client.receive(timeout_s=0.05) is None:
                        return error
                except ValueError:
                    continue
        raise AssertionError("a header that is not JSON was decoded")
