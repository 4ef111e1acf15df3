"""The ``status`` topic's publisher judges a change against what its last message said."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from service.core.kept_snapshots import Kept
from service.daemon._status_topic import StatusTopic
from service.daemon.status import _STATUS_TOPIC_FIELDS
from service.zmq_api.client import PredictionClient
from service.zmq_api.publisher import ZmqPublisher
from service.zmq_api.settings import ZmqSettings
from tests.service.zmq_api.test_zmq_api import ANY_PORT, _next, _wait_subscribed


def _document(armed: bool, ready: bool) -> dict:
    """A status document: the keys the topic's header takes, the rest left out."""
    blank = dict.fromkeys(_STATUS_TOPIC_FIELDS)
    return blank | {"armed": armed, "ready": ready}


def test_a_change_between_the_rounds_read_and_its_render_is_published_when_it_is_undone():
    """The supervisor reads armed and ready, then renders and publishes the status: an arm
    between the two published a message saying armed, recorded as sent on 'disarmed', so the
    disarm after it changed nothing the next round compared, and subscribers heard of it only
    a period later (an hour in the daemon test that failed on it in a full run)."""
    document = _document(armed=True, ready=True)  # rendered after the arm
    with (
        ZmqPublisher(ZmqSettings(**ANY_PORT), registry=CollectorRegistry()) as publisher,
        PredictionClient(publisher.endpoint, None, topics=("status",)) as client,
    ):
        _wait_subscribed(publisher, client)
        topic = StatusTopic(
            publisher, lambda: Kept(document, 0.0), forget=lambda: None, period_s=3600.0
        )
        topic.publish_if_due(armed=False, ready=True)  # read before the arm
        assert _next(client, "status").header["armed"] is True
        document = _document(armed=False, ready=True)  # the operator disarms
        topic.publish_if_due(armed=False, ready=True)
        assert _next(client, "status").header["armed"] is False
        topic.publish_if_due(armed=False, ready=True)  # nothing changed: not again
        assert client.receive(timeout_s=0.5) is None


def test_a_status_message_says_how_old_its_document_was_when_sent():
    """The topic publishes the kept status document (rendered up to ``[api]
    snapshot_max_age_s``, at most 5 s, before): each message went out with a fresh ``sent_at``
    and nothing to say its content was older, where the status query's reply says ``age_s``.
    Now the message says it too."""
    with (
        ZmqPublisher(ZmqSettings(**ANY_PORT), registry=CollectorRegistry()) as publisher,
        PredictionClient(publisher.endpoint, None, topics=("status",)) as client,
    ):
        _wait_subscribed(publisher, client)
        kept = Kept(_document(armed=False, ready=False), 4.5)
        StatusTopic(publisher, lambda: kept, forget=lambda: None, period_s=3600.0).publish_if_due(
            armed=False, ready=False
        )
        header = _next(client, "status").header
    assert header["age_s"] == 4.5
    assert header["schema"] == "corticast.zmq/1"  # a field added within the schema
