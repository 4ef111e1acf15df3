"""The query socket when something fails: what it reads (with the control plane in a process of
its own, the history is read over the control link, which may not answer), or a client."""

from __future__ import annotations

import logging
import re
import shutil
import tempfile
import threading
import time

import pytest
import zmq
from prometheus_client import CollectorRegistry

from service.api.remote_daemon import RemoteDaemon
from service.daemon.link_protocol import LinkAddress
from service.zmq_api._history import PredictionHistory
from service.zmq_api.client import PredictionClient, QueryError
from service.zmq_api.query import QueryServer
from service.zmq_api.settings import ZmqSettings
from tests.service._fault_injection import socket_closed_at_first_request
from tests.service._loop_harness import wait_until
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


def test_replies_dropped_for_a_client_that_does_not_read_are_logged(caplog):
    """A client that asks faster than it reads loses replies once its queue is full; the
    server says so (rate-limited) instead of dropping them in silence, and keeps answering."""
    padded = {"pad": "x" * 20_000}  # 20 KB replies fill the socket buffers within ~300
    settings = ZmqSettings(**ANY_PORT)
    context = zmq.Context()
    dealer = context.socket(zmq.DEALER)
    dealer.linger = 0
    dealer.rcvhwm, dealer.rcvbuf = 1, 4096
    try:
        with (
            caplog.at_level(logging.WARNING, logger="corticast.zmq"),
            QueryServer(settings, PredictionHistory(4), lambda: padded) as server,
        ):
            dealer.connect(server.endpoint)
            for _ in range(2000):
                dealer.send_multipart([b"", b'{"query": "status"}'])
            wait_until(
                lambda: any("query reply dropped" in r.getMessage() for r in caplog.records),
                10,
                "a dropped reply to be logged",
            )
            while dealer.poll(200):
                dealer.recv_multipart()
            with PredictionClient(None, server.endpoint) as client:
                assert client.status() == padded
            assert server.running
    finally:
        dealer.close()
        context.term()
    dropped = [r for r in caplog.records if "query reply dropped" in r.getMessage()]
    assert len(dropped) == 1, [r.getMessage() for r in dropped]


def test_a_client_gone_before_its_reply_costs_the_server_nothing():
    """With ROUTER_MANDATORY a reply to a client that has left raises EHOSTUNREACH: that
    reply is dropped, and the thread goes on."""
    asked = threading.Event()

    def slow_status() -> dict:
        asked.set()
        time.sleep(0.3)  # the client leaves meanwhile
        return {"up": 1}

    with QueryServer(ZmqSettings(**ANY_PORT), PredictionHistory(4), slow_status) as server:
        context = zmq.Context()
        dealer = context.socket(zmq.DEALER)
        dealer.linger = 0
        dealer.connect(server.endpoint)
        dealer.send_multipart([b"", b'{"query": "status"}'])
        assert asked.wait(10)
        dealer.close()
        context.term()
        with PredictionClient(None, server.endpoint) as client:
            assert client.status() == {"up": 1}
        server.raise_if_failed()
        assert server.running


def test_stop_is_prompt_while_requests_keep_arriving():
    """The thread answers what is queued before it waits again; a backlog (a client asking in
    a loop: 5,000 requests at 1 ms each here) must not keep it from seeing a stop request."""
    answering = threading.Event()

    def status() -> dict:
        answering.set()
        time.sleep(0.001)
        return {}

    server = QueryServer(ZmqSettings(**ANY_PORT), PredictionHistory(4), status).start()
    context = zmq.Context()
    dealer = context.socket(zmq.DEALER)
    dealer.linger = 0
    try:
        dealer.connect(server.endpoint)
        for _ in range(5000):
            dealer.send_multipart([b"", b'{"query": "status"}'])
        assert answering.wait(10)
        assert server.stop() is True, "the thread was still answering the backlog"
    finally:
        server.stop()
        dealer.close()
        context.term()


def test_a_fault_every_query_meets_is_logged_once_an_interval_under_the_id_each_reply_names(
    tmp_path, caplog
):
    """With the loop's process gone every query fails at once: a client asking in a loop
    wrote one traceback per query (50 here) into the journal. One is logged, and every reply
    names its id, where the log holds the traceback."""
    unreachable = RemoteDaemon(LinkAddress(str(tmp_path / "gone.sock"), b"k" * 32))
    with (
        caplog.at_level(logging.ERROR, logger="corticast.zmq"),
        QueryServer(ZmqSettings(**ANY_PORT), unreachable.history, dict) as server,
        PredictionClient(None, server.endpoint) as client,
    ):
        errors = []
        for _ in range(50):
            with pytest.raises(QueryError) as refused:
                client.latest()
            errors.append(refused.value.error)
        assert server.running
    logged = [r for r in caplog.records if r.exc_info is not None]
    assert len(logged) == 1, f"{len(logged)} tracebacks logged for 50 failed queries"
    ids = {
        re.fullmatch(r"latest failed \(error id ([0-9a-f]{12})\); .*", e).group(1) for e in errors
    }
    assert ids == {re.search(r"error id ([0-9a-f]{12})", logged[0].getMessage()).group(1)}


def test_a_server_whose_thread_died_starts_again_on_its_ipc_endpoint_under_curve(curve_keys):
    """The supervisor starts a failed query server again without stopping it first. Its thread
    closed only the socket as it ended: the old context and its CURVE authenticator's thread
    were left running beside the new ones, one more at each restart. Now the start releases
    them before it binds again, and an allowed client is answered at the same unix socket."""
    folder = tempfile.mkdtemp(prefix="cc-query-", dir="/tmp")  # short: sun_path limit
    endpoint = f"ipc://{folder}/query.sock"
    settings = ZmqSettings(
        pub_endpoint="tcp://127.0.0.1:*",
        query_endpoint=endpoint,
        curve_secret_key_file=curve_keys["server_secret"],
        curve_allowed_clients_dir=curve_keys["allowed"],
    )
    closed = threading.Event()
    server = socket_closed_at_first_request(closed)(
        settings, PredictionHistory(4), lambda: {"up": 1}
    )
    client = PredictionClient(
        None,
        endpoint,
        server_key_file=curve_keys["server_public"],
        client_key_file=curve_keys["alice"],
        query_timeout_s=1.0,
    )
    try:
        server.start()
        failed = server._server
        with pytest.raises(TimeoutError):
            client.status()
        wait_until(lambda: not server.running, 30, "the query thread to end")
        with pytest.raises(RuntimeError, match="Socket operation on non-socket"):
            server.raise_if_failed()
        server.start()  # as the supervisor restarts it: no stop() in between
        assert failed.context.closed, "the failed server's context was left open"
        client.query_timeout_s = 30.0
        assert client.status() == {"up": 1}
    finally:
        client.close()
        server.stop()
        shutil.rmtree(folder, ignore_errors=True)
