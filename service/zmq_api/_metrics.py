"""Prometheus instruments of the ZeroMQ API (`corticast_zmq_*`)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter

from service.zmq_api.wire import TOPICS

QUERIES = ("latest", "by_seq", "status", "invalid")
"""Label values of ``query``; a request that names none of the first three is ``invalid``
(a label never echoes what a client sent, so a client cannot grow the metric)."""

OUTCOMES = ("ok", "bad_request", "not_found", "failed")


class PublisherMetrics:
    """Messages sent and dropped per topic; registered on the registry given.

    The children are resolved once here, so counting costs the loop no label lookup.
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        messages = Counter(
            "corticast_zmq_messages",
            "Messages handed to the PUB socket, per topic",
            ["topic"],
            registry=registry,
        )
        dropped = Counter(
            "corticast_zmq_dropped_messages",
            "Messages not sent because a subscriber's queue was full (send_hwm), per topic",
            ["topic"],
            registry=registry,
        )
        self.messages = {topic: messages.labels(topic) for topic in TOPICS}
        self.dropped = {topic: dropped.labels(topic) for topic in TOPICS}


class QueryMetrics:
    """Requests answered by the query socket, by query and outcome."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.queries = Counter(
            "corticast_zmq_queries",
            "Requests to the query socket, by query and outcome",
            ["query", "outcome"],
            registry=registry,
        )
        for query in QUERIES:
            for outcome in OUTCOMES:
                self.queries.labels(query, outcome)
