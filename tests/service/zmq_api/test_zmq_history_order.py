"""A prediction is in the query history before any subscriber can have it.

A client that receives a prediction and at once asks the query socket for it by ``input_seq``
must get it. The publisher once sent first and stored second, so on a loaded machine the query
thread answered "no prediction with input_seq N" for a prediction already delivered (seen in
``test_daemon.py``'s end-to-end test).
"""

from __future__ import annotations

import numpy as np
import zmq
from prometheus_client import CollectorRegistry

from service.inference.scheduler import Prediction
from service.zmq_api.publisher import ZmqPublisher
from service.zmq_api.settings import ZmqSettings
from tests.service.zmq_api.test_zmq_api import ANY_PORT, INFO, RATE, _prediction


def test_a_prediction_is_stored_before_it_is_sent():
    with ZmqPublisher(ZmqSettings(**ANY_PORT), registry=CollectorRegistry()) as publisher:
        context = zmq.Context.instance()
        with context.socket(zmq.SUB) as sub:
            sub.setsockopt(zmq.SUBSCRIBE, b"")
            sub.connect(publisher.endpoint)
            while not sub.poll(20):  # past the slow joiner
                publisher.publish("status", {}, None)
            while sub.poll(50):
                sub.recv_multipart()

            on_the_wire_before_stored: list[bool] = []
            store = publisher.history.add

            def add_and_look(stored) -> None:
                # Give a message already sent every chance to arrive, then look for it.
                on_the_wire_before_stored.append(bool(sub.poll(200)))
                store(stored)

            publisher.history.add = add_and_look
            prediction: Prediction = _prediction(7)
            publisher.publish_prediction(prediction, INFO, RATE)
            assert on_the_wire_before_stored == [False]
            topic, _, payload = sub.recv_multipart()  # and it is sent, after being stored
            assert topic == b"prediction"
            np.testing.assert_array_equal(
                np.frombuffer(payload, dtype="<f4").reshape(16, 18, 20), prediction.future
            )
