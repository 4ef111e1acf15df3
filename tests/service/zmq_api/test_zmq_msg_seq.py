"""``msg_seq`` numbers what was sent: a gap a subscriber sees is a message it missed."""

from __future__ import annotations

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from service.zmq_api.client import PredictionClient
from service.zmq_api.publisher import ZmqPublisher
from service.zmq_api.settings import ZmqSettings
from tests.service.zmq_api.test_zmq_api import ANY_PORT, _next, _wait_subscribed


def test_a_message_refused_before_sending_takes_no_msg_seq():
    """A header that cannot be encoded raises and sends nothing: the next message must follow
    the last one sent, or every subscriber counts a message missed that never existed."""
    settings = ZmqSettings(**ANY_PORT)
    with (
        ZmqPublisher(settings, registry=CollectorRegistry()) as publisher,
        PredictionClient(publisher.endpoint, None, topics=("wave", "status")) as client,
    ):
        _wait_subscribed(publisher, client)
        publisher.publish("wave", {"n": 1}, None)
        first = _next(client, "wave").header["msg_seq"]
        with pytest.raises(TypeError, match="not JSON-able"):
            publisher.publish("wave", {"n": object()}, None)
        with pytest.raises(TypeError, match="must have dtype float32"):
            publisher.publish("wave", {"n": 2}, np.zeros(3, np.float64))
        publisher.publish("wave", {"n": 3}, None)
        after = _next(client, "wave")
        assert after.header["n"] == 3
        assert after.header["msg_seq"] == first + 1
        assert client.missed["wave"] == 0
