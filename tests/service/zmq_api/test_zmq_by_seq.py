"""What ``by_seq`` says when it has no prediction for an ``input_seq``."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry

from service.zmq_api.client import PredictionClient, QueryError
from service.zmq_api.publisher import ZmqPublisher
from service.zmq_api.query import QueryServer
from service.zmq_api.settings import ZmqSettings
from tests.service.zmq_api.test_zmq_api import ANY_PORT, INFO, RATE, _prediction


def test_an_input_seq_inside_the_held_range_that_was_never_predicted_says_so():
    """At stride 2 the history holds 10, 12, 14, 16: asking for 13 must not read as if 13 had
    been evicted or were still to come ('input_seq 10 to 16' holds 13, read plainly)."""
    settings = ZmqSettings(**ANY_PORT, history=4)
    with (
        ZmqPublisher(settings, registry=CollectorRegistry()) as publisher,
        QueryServer(settings, publisher.history, dict) as server,
        PredictionClient(None, server.endpoint) as client,
    ):
        for seq in (8, 10, 12, 14, 16):
            publisher.publish_prediction(_prediction(seq), INFO, RATE)
        with pytest.raises(QueryError) as between:
            client.by_seq(13)
        with pytest.raises(QueryError) as evicted:
            client.by_seq(8)
        assert client.by_seq(14).header["input_seq"] == 14
    assert between.value.error == (
        "no prediction with input_seq 13: the history holds the last 4 predictions "
        "(capacity 4), input_seq 10 to 16; none was made from input_seq 13 (the scheduler "
        "predicts from every stride-th frame, and skips or refuses some windows)"
    )
    assert evicted.value.error == (
        "no prediction with input_seq 8: the history holds the last 4 predictions "
        "(capacity 4), input_seq 10 to 16"
    )


def test_an_input_seq_of_hundreds_of_digits_is_not_echoed_in_full():
    """A request of 1 KiB holds an int of ~990 digits: the reply (and any log of it) names its
    first digits and its length, not all of them."""
    huge = int("9" * 990)
    settings = ZmqSettings(**ANY_PORT, history=4)
    with (
        ZmqPublisher(settings, registry=CollectorRegistry()) as publisher,
        QueryServer(settings, publisher.history, dict) as server,
        PredictionClient(None, server.endpoint) as client,
    ):
        publisher.publish_prediction(_prediction(10), INFO, RATE)
        with pytest.raises(QueryError) as refused:
            client.by_seq(huge)
    assert refused.value.error == (
        "no prediction with input_seq 999999999999... (990 digits): the history holds the "
        "last 1 predictions (capacity 4), input_seq 10 to 10"
    )
