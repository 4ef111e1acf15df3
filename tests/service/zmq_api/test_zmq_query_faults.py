"""The query socket when what it reads fails: with the control plane in a process of its own,
its history is read over the control link, which may not answer."""

from __future__ import annotations

import re

import pytest
from prometheus_client import CollectorRegistry

from service.api.remote_daemon import RemoteDaemon
from service.daemon.control_link import LinkAddress
from service.zmq_api.client import PredictionClient, QueryError
from service.zmq_api.query import QueryServer
from service.zmq_api.settings import ZmqSettings
from tests.service.zmq_api.test_zmq_api import ANY_PORT


def _count(registry: CollectorRegistry, query: str, outcome: str) -> float:
    labels = {"query": query, "outcome": outcome}
    return registry.get_sample_value("corticast_zmq_queries_total", labels) or 0.0


@pytest.mark.parametrize(("query", "ask"), [("latest", "latest"), ("by_seq", "by_seq")])
def test_a_history_that_cannot_be_read_fails_the_query_it_was_read_for(tmp_path, query, ask):
    """A valid ``latest`` or ``by_seq`` whose history read fails is counted under its own
    query as ``failed``, not as an ``invalid`` request, and the client is told which query
    failed, with the error id the log holds."""
    unreachable = RemoteDaemon(LinkAddress(str(tmp_path / "gone.sock"), b"k" * 32))
    registry = CollectorRegistry()
    settings = ZmqSettings(**ANY_PORT)
    with (
        QueryServer(settings, unreachable.history, dict, registry=registry) as server,
        PredictionClient(None, server.endpoint) as client,
    ):
        with pytest.raises(QueryError) as refused:
            client.latest() if ask == "latest" else client.by_seq(12)
        assert server.running
    assert re.fullmatch(rf"{query} failed \(error id [0-9a-f]{{12}}\); .*", refused.value.error)
    assert _count(registry, query, "failed") == 1
    assert _count(registry, "invalid", "failed") == 0
