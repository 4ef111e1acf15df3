"""The ZeroMQ API over real sockets on 127.0.0.1: publisher, query server, client, CURVE.

Every socket binds ``tcp://127.0.0.1:*`` and the test reads the port back, so runs never
collide. A PUB socket delivers nothing until the subscription has reached it (the "slow
joiner"), so each test first publishes ``status`` messages until its client sees one.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import re
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator

import numpy as np
import pytest
import zmq
import zmq.auth
from prometheus_client import CollectorRegistry
from pydantic import ValidationError
from zmq.utils.monitor import recv_monitor_message

from service.inference.predictor import PredictorInfo
from service.inference.scheduler import Prediction
from service.zmq_api.client import HandshakeError, Message, PredictionClient, QueryError
from service.zmq_api.publisher import MAX_SUBSCRIPTION_BYTES, ZmqPublisher, prediction_message
from service.zmq_api.query import QueryServer
from service.zmq_api.settings import ZmqSettings

RATE = 277.78
INFO = PredictorInfo(
    "onnxruntime-cpu", "cpu", "fp32", "window", "persistence", "/m/default.onnx", "ab" * 32
)
ANY_PORT = {"pub_endpoint": "tcp://127.0.0.1:*", "query_endpoint": "tcp://127.0.0.1:*"}


def _prediction(seq: int) -> Prediction:
    rng = np.random.default_rng(seq)
    t0 = 1000.0 + seq / RATE
    return Prediction(
        future=rng.normal(0, 50, (16, 18, 20)).astype(np.float32),
        past=rng.normal(0, 50, (16, 18, 20)).astype(np.float32),
        input_seq=seq,
        first_input_seq=seq - 15,
        input_timestamp=500.0 + seq / RATE,
        available_at=t0,
        started_at=t0 + 0.0001,
        arrived_at=t0 + 0.00005,
        finished_at=t0 + 0.0021,
        handed_at=t0 + 0.0022,
        missing_frames=seq % 3,
        skipped_before=seq % 2,
    )


def _sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels) or 0.0


def _wait_subscribed(publisher: ZmqPublisher, *clients: PredictionClient) -> None:
    """Publish ``status`` until every client has one, then drain what is left."""
    waiting = list(clients)
    deadline = time.monotonic() + 30
    while waiting:
        if time.monotonic() > deadline:
            raise TimeoutError("subscription never reached the publisher")
        publisher.publish("status", {"hello": True}, None)
        waiting = [c for c in waiting if c.receive(timeout_s=0.02) is None]
    for client in clients:
        while client.receive(timeout_s=0.05) is not None:
            pass


def _next(client: PredictionClient, topic: str, timeout_s: float = 10.0) -> Message:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        message = client.receive(timeout_s=0.1)
        if message is not None and message.topic == topic:
            return message
    raise TimeoutError(f"no {topic!r} message within {timeout_s} s")


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def publisher(registry: CollectorRegistry) -> Iterator[ZmqPublisher]:
    with ZmqPublisher(ZmqSettings(**ANY_PORT, history=4), registry=registry) as pub:
        yield pub


@pytest.fixture
def status_calls() -> list[int]:
    return []


@pytest.fixture
def query(
    publisher: ZmqPublisher, registry: CollectorRegistry, status_calls: list[int]
) -> Iterator[QueryServer]:
    def status() -> dict:
        status_calls.append(1)
        if len(status_calls) == 2:
            raise RuntimeError("stream lookup broke")
        return {"ready": True, "armed": False, "latency_p99_s": np.float64(0.0031)}

    with QueryServer(publisher.settings, publisher.history, status, registry=registry) as server:
        yield server


# --- publishing -------------------------------------------------------------------------


def test_a_subscriber_gets_the_prediction_array_and_a_header_that_matches_it(registry):
    clock_now = [2000.125]
    settings = ZmqSettings(**ANY_PORT)
    with (
        ZmqPublisher(settings, registry=registry, clock=lambda: clock_now[0]) as publisher,
        PredictionClient(publisher.endpoint, None, topics=("prediction", "status")) as client,
    ):
        _wait_subscribed(publisher, client)
        prediction = _prediction(41)
        assert publisher.publish_prediction(prediction, INFO, RATE)
        message = _next(client, "prediction")

    np.testing.assert_array_equal(message.array, prediction.future)
    assert message.array.dtype == np.float32 and not message.array.flags.writeable
    header = message.header
    period = 1 / RATE
    assert header == {
        "schema": "corticast.zmq/1",
        "topic": "prediction",
        "msg_seq": 0,
        "sent_at": 2000.125,
        "shape": [16, 18, 20],
        "dtype": "float32",
        "input_seq": 41,
        "input_timestamp": prediction.input_timestamp,
        "first_frame_timestamp": prediction.input_timestamp + period,
        "frame_period_s": period,
        "sample_rate_hz": RATE,
        "missing_frames": 2,
        "skipped_before": 1,
        "predictor": dataclasses.asdict(INFO),
        "latency": {
            "arrived_at": prediction.arrived_at,
            "available_at": prediction.available_at,
            "started_at": prediction.started_at,
            "finished_at": prediction.finished_at,
            "handed_at": prediction.handed_at,
            "published_at": 2000.125,
            "inference_s": prediction.inference_s,
            "age_s": 2000.125 - prediction.available_at,
        },
    }
    np.testing.assert_allclose(
        message.timestamps, prediction.input_timestamp + period * np.arange(1, 17)
    )
    assert _sample(registry, "corticast_zmq_messages_total", topic="prediction") == 1
    assert client.missed == {"prediction": 0, "status": 0}


def test_the_ipc_endpoint_delivers_the_same_messages_and_tcp_stays_bound(registry):
    with tempfile.TemporaryDirectory(prefix="cc-") as folder:
        path = f"ipc://{folder}/pub.sock"
        settings = ZmqSettings(**ANY_PORT, pub_ipc_endpoint=path)
        with (
            ZmqPublisher(settings, registry=registry) as publisher,
            PredictionClient(publisher.endpoint, None, topics=("prediction", "status")) as tcp,
            PredictionClient(path, None, topics=("prediction", "status")) as ipc,
        ):
            assert publisher.endpoint.startswith("tcp://127.0.0.1:")
            assert publisher.ipc_endpoint == path
            _wait_subscribed(publisher, tcp, ipc)
            prediction = _prediction(7)
            assert publisher.publish_prediction(prediction, INFO, RATE)
            over_tcp, over_ipc = _next(tcp, "prediction"), _next(ipc, "prediction")
        with ZmqPublisher(settings) as restarted:  # a file left behind by a stopped one is free
            assert restarted.ipc_endpoint == path
    assert over_ipc.header == over_tcp.header
    np.testing.assert_array_equal(over_ipc.array, prediction.future)
    np.testing.assert_array_equal(over_tcp.array, prediction.future)


def test_a_second_publisher_may_not_take_over_a_live_ipc_endpoint(registry):
    path = f"ipc://@corticast-test-{uuid.uuid4().hex}"
    settings = ZmqSettings(**ANY_PORT, pub_ipc_endpoint=path)
    with (
        ZmqPublisher(settings, registry=registry) as first,
        PredictionClient(path, None, topics=("status",)) as client,
    ):
        with pytest.raises(OSError, match=r"'pub_ipc_endpoint' .* another process is listening"):
            ZmqPublisher(settings).start()
        _wait_subscribed(first, client)  # the first still delivers there
    with ZmqPublisher(settings) as again:  # and once it has gone, the path is free again
        assert again.ipc_endpoint == path
    with ZmqPublisher(ZmqSettings(**ANY_PORT)) as tcp_only:
        assert tcp_only.ipc_endpoint is None


@pytest.mark.parametrize(
    ("endpoint", "message"),
    [
        ("tcp://127.0.0.1:6001", r"'pub_ipc_endpoint' must look like 'ipc:///run/corticast"),
        ("ipc://pub.sock", r"'pub_ipc_endpoint' must look like 'ipc:///run/corticast"),
        ("ipc:///" + "x" * 120, r"'pub_ipc_endpoint' path must be at most 107 bytes"),
        ("tcp://127.0.0.1:5556", r"'pub_ipc_endpoint' must look like"),
        ("ipc:///tmp/q.sock", r"'pub_ipc_endpoint' must differ from 'pub_endpoint' and 'query"),
    ],
)
def test_a_bad_ipc_endpoint_is_refused_by_name(endpoint, message):
    with pytest.raises(ValidationError, match=message):
        ZmqSettings(query_endpoint="ipc:///tmp/q.sock", pub_ipc_endpoint=endpoint)


def test_a_missing_ipc_folder_is_named_at_bind(registry, tmp_path):
    settings = ZmqSettings(**ANY_PORT, pub_ipc_endpoint=f"ipc://{tmp_path}/absent/pub.sock")
    with pytest.raises(OSError, match=r"cannot bind 'pub_ipc_endpoint' .*No such file"):
        ZmqPublisher(settings, registry=registry).start()


@pytest.mark.parametrize("name", ["pub_ipc_endpoint", "query_endpoint"])
def test_a_file_at_an_ipc_path_is_refused_not_deleted(registry, tmp_path, name):
    """libzmq unlinks whatever is at the path before it binds: an endpoint mistyped onto the
    audit log deleted it and left a socket in its place."""
    kept = tmp_path / "audit.log"
    kept.write_text("precious\n")
    settings = ZmqSettings(**{**ANY_PORT, name: f"ipc://{kept}"})
    server = (
        ZmqPublisher(settings, registry=registry)
        if name == "pub_ipc_endpoint"
        else QueryServer(settings, ZmqPublisher(settings).history, dict, registry=registry)
    )
    with pytest.raises(
        OSError,
        match=rf"cannot bind '{name}' 'ipc://{re.escape(str(kept))}': a file that is "
        r"not a socket is there \(a mistyped path\?\); it is left as it is",
    ):
        server.start()
    assert kept.read_text() == "precious\n"


def test_prediction_message_defaults_published_at_to_the_clock():
    prediction = _prediction(3)
    header, payload = prediction_message(prediction, INFO, RATE, clock=lambda: 1010.0)
    assert payload is prediction.future
    assert header["latency"]["published_at"] == 1010.0
    assert header["latency"]["age_s"] == pytest.approx(1010.0 - prediction.available_at)
    with pytest.raises(ValueError, match="'sample_rate_hz' must be a finite number > 0, got 0"):
        prediction_message(prediction, INFO, 0)
    with pytest.raises(TypeError, match="'info' must be PredictorInfo, got dict"):
        prediction_message(prediction, {"backend": "x"}, RATE)


def test_generic_publish_checks_its_input_and_sends_json_safe_headers(publisher, registry):
    with PredictionClient(publisher.endpoint, None, topics=("wave", "status")) as client:
        _wait_subscribed(publisher, client)
        speeds = np.array([[0.1, np.nan]], dtype=np.float32).byteswap().view(">f4")
        header = {"speed": np.float32(np.nan), "pgd": math.inf, "frames": np.int64(3)}
        assert publisher.publish("wave", header, speeds)
        message = _next(client, "wave")
    assert message.header["speed"] is None and message.header["pgd"] is None
    assert message.header["frames"] == 3 and message.header["msg_seq"] == 0
    np.testing.assert_array_equal(message.array, np.array([[0.1, np.nan]], np.float32))

    with pytest.raises(ValueError, match=r"'topic' must be one of \('prediction', 'wave'"):
        publisher.publish("waves", {}, None)
    with pytest.raises(ValueError, match=r"'header' must not set \['msg_seq'\]"):
        publisher.publish("stim", {"msg_seq": 4}, None)
    with pytest.raises(TypeError, match=r"'payload' must have dtype float32.*got float64"):
        publisher.publish("wave", {}, np.zeros(3))
    with pytest.raises(TypeError, match="'header' must be dict, got list"):
        publisher.publish("wave", [], None)


def test_publish_before_start_names_the_method_to_call(registry):
    publisher = ZmqPublisher(ZmqSettings(**ANY_PORT), registry=registry)
    with pytest.raises(RuntimeError, match=r"not started; call start\(\) first"):
        publisher.publish("status", {}, None)
    with publisher, pytest.raises(RuntimeError, match=r"already started; call stop\(\)"):
        publisher.start()
    publisher.stop()  # idempotent
    assert not publisher.running


def test_a_subscriber_that_never_reads_does_not_slow_publishing(registry):
    """20,000 predictions of 23 KB at a stuck subscriber: every send returns at once, the
    overflow is dropped and counted, and the counter is exactly what the subscriber missed."""
    settings = ZmqSettings(**ANY_PORT, send_hwm=10, drop_policy="counted")
    frames = np.random.default_rng(0).normal(0, 50, (16, 18, 20)).astype(np.float32)
    n = 20_000
    with (
        ZmqPublisher(settings, registry=registry) as publisher,
        PredictionClient(
            publisher.endpoint, None, topics=("prediction", "status"), receive_hwm=10
        ) as client,
    ):
        _wait_subscribed(publisher, client)
        sent: list[bool] = []
        sender = threading.Thread(
            target=lambda: sent.extend(
                publisher.publish("prediction", {"input_seq": i}, frames) for i in range(n)
            ),
            name="test-sender",
        )
        sender.start()
        sender.join(60)  # a generous deadline: a blocking send would never return at all
        assert not sender.is_alive(), "publishing blocked on a subscriber that never reads"
        received = []
        while (message := client.receive(timeout_s=3.0)) is not None:
            received.append(message.header["msg_seq"])

    dropped = _sample(registry, "corticast_zmq_dropped_messages_total", topic="prediction")
    assert dropped > 0
    assert dropped == sent.count(False)
    assert _sample(registry, "corticast_zmq_messages_total", topic="prediction") == n - dropped
    missing = set(range(n)) - set(received)
    assert len(received) == n - dropped
    assert missing == {i for i, ok in enumerate(sent) if not ok}
    # The client sees the gaps between the first and last message it received.
    between = {seq for seq in missing if min(received) < seq < max(received)}
    assert client.missed["prediction"] == len(between) > 0


def test_an_over_large_subscription_disconnects_its_sender_and_others_still_receive(
    publisher,
):
    """A subscription is a flag byte and a topic prefix; one of 16 KiB (any size, before: the
    topic tree took ~100 bytes of the loop's memory per byte, 2.1 GB for one of 20 MB) is never
    taken in: its sender is disconnected."""
    context = zmq.Context()
    flooder = context.socket(zmq.XSUB)
    monitor = flooder.get_monitor_socket(zmq.EVENT_DISCONNECTED)
    try:
        flooder.connect(publisher.endpoint)
        flooder.send(b"\x01" + b"p" * MAX_SUBSCRIPTION_BYTES * 16)
        deadline = time.monotonic() + 30
        disconnected = False
        while not disconnected and time.monotonic() < deadline:
            publisher.publish("status", {}, None)  # the socket reads subscriptions as it sends
            if monitor.poll(100):
                disconnected = recv_monitor_message(monitor)["event"] == zmq.EVENT_DISCONNECTED
        assert disconnected, "the publisher kept a subscriber that sent a 16 KiB subscription"
        with PredictionClient(publisher.endpoint, None, topics=("status",)) as client:
            _wait_subscribed(publisher, client)
            publisher.publish("status", {"after": True}, None)
            assert _next(client, "status").header["after"] is True
    finally:
        monitor.close(linger=0)
        flooder.close(linger=0)
        context.term()


def test_per_subscriber_drops_never_block_and_show_as_msg_seq_gaps(registry):
    settings = ZmqSettings(**ANY_PORT, send_hwm=10, drop_policy="per_subscriber")
    frames = np.zeros((16, 18, 20), np.float32)
    n = 5_000
    with (
        ZmqPublisher(settings, registry=registry) as publisher,
        PredictionClient(
            publisher.endpoint, None, topics=("prediction", "status"), receive_hwm=10
        ) as client,
    ):
        _wait_subscribed(publisher, client)
        assert all(publisher.publish("prediction", {}, frames) for _ in range(n))
        received = 0
        # Only some and not all are asserted: a drain cut short by a stall proves the same.
        while client.receive(timeout_s=1.0) is not None:
            received += 1
    assert 0 < received < n
    assert _sample(registry, "corticast_zmq_dropped_messages_total", topic="prediction") == 0
    assert client.missed["prediction"] > 0


# --- the query socket ---------------------------------------------------------------------


def test_query_latest_by_seq_and_status(publisher, query, registry):
    with PredictionClient(None, query.endpoint, query_timeout_s=2.0) as client:
        with pytest.raises(QueryError, match="no prediction published yet"):
            client.latest()
        predictions = [_prediction(seq) for seq in range(10, 16)]
        for prediction in predictions:
            publisher.publish_prediction(prediction, INFO, RATE)

        latest = client.latest()
        np.testing.assert_array_equal(latest.array, predictions[-1].future)
        assert latest.header["input_seq"] == 15 and latest.header["msg_seq"] == 5
        present = client.by_seq(np.int64(13))
        np.testing.assert_array_equal(present.array, predictions[3].future)
        assert present.header["input_seq"] == 13
        evicted = (
            r"no prediction with input_seq 10: the history holds the last 4 predictions "
            r"\(capacity 4\), input_seq 12 to 15"
        )
        with pytest.raises(QueryError, match=evicted):
            client.by_seq(10)

        assert client.status() == {"ready": True, "armed": False, "latency_p99_s": 0.0031}
        with pytest.raises(QueryError, match=r"status failed \(error id [0-9a-f]{12}\)"):
            client.status()
        assert client.status()["ready"] is True

    def count(query_name: str, outcome: str) -> float:
        return _sample(registry, "corticast_zmq_queries_total", query=query_name, outcome=outcome)

    assert count("latest", "not_found") == 1 and count("latest", "ok") == 1
    assert count("by_seq", "ok") == 1 and count("by_seq", "not_found") == 1
    assert count("status", "ok") == 2 and count("status", "failed") == 1


MALFORMED = [
    ([b"not json"], "request is not JSON"),
    ([b"\xff\xfe"], "request is not JSON"),
    ([b"[1, 2]"], r"request must be a JSON object like .*got list: \[1, 2\]"),
    ([b'{"q": 1}'], r"request must have a 'query' field, one of .*got fields \['q'\]"),
    ([b'{"query": "nope"}'], r"'query' must be one of \('latest', 'by_seq', 'status'\), got 'n"),
    ([b'{"query": 5}'], r"'query' must be one of .*got 5"),
    ([b'{"query": "by_seq"}'], r"'by_seq' needs an 'input_seq' field"),
    ([b'{"query": "by_seq", "input_seq": "3"}'], r"'input_seq' must be an int, got str: '3'"),
    ([b'{"query": "by_seq", "input_seq": true}'], r"'input_seq' must be an int, got bool"),
    ([b'{"query": "by_seq", "input_seq": 1.5}'], r"'input_seq' must be an int, got float"),
    ([b'{"query": "latest", "extra": 1}'], r"'latest' takes only \['query'\], got unknown"),
    ([b'{"query": "latest"}', b"more"], r"one frame holding a JSON object, got 2 frames"),
    ([b"1" * 5000], r"request is 5000 bytes; a request is at most 1024 bytes"),
    ([b"[" * 5 + b"]" * 5], r"request nests 5 levels deep; at most 4 levels"),
]


def test_every_malformed_request_gets_an_error_and_the_server_keeps_answering(
    publisher, query, registry
):
    publisher.publish_prediction(_prediction(7), INFO, RATE)
    context = zmq.Context()
    dealer = context.socket(zmq.DEALER)
    dealer.linger = 0
    try:
        dealer.connect(query.endpoint)
        for body, pattern in MALFORMED:
            dealer.send_multipart([b"", *body])
            assert dealer.poll(2000), f"no reply to {body!r}"
            delimiter, header, payload = dealer.recv_multipart()
            assert delimiter == b"" and payload == b""
            error = json.loads(header)
            assert set(error) == {"schema", "error"}
            assert error["schema"] == "corticast.zmq/1"
            assert re.search(pattern, error["error"]), (pattern, error["error"])
        assert query.running
    finally:
        dealer.close()
        context.term()

    with PredictionClient(None, query.endpoint) as client:
        assert client.latest().header["input_seq"] == 7
    invalid = _sample(
        registry, "corticast_zmq_queries_total", query="invalid", outcome="bad_request"
    )
    assert invalid == 9
    query.raise_if_failed()


def _ask(endpoint: str, bodies: list[bytes]) -> list[str]:
    """Send each body from one DEALER and return each error reply's message."""
    context = zmq.Context()
    dealer = context.socket(zmq.DEALER)
    dealer.linger = 0
    try:
        dealer.connect(endpoint)
        errors = []
        for body in bodies:
            dealer.send_multipart([b"", body])
            assert dealer.poll(5000), f"no reply to {body[:40]!r}"
            _, header, _ = dealer.recv_multipart()
            errors.append(json.loads(header)["error"])
        return errors
    finally:
        dealer.close()
        context.term()


@pytest.mark.parametrize(
    ("body", "key"),
    [
        (b'{"query": "latest", "query": "status"}', "query"),
        (b'{"query": "by_seq", "input_seq": 7, "input_seq": 999}', "input_seq"),
    ],
)
def test_a_request_that_gives_a_key_twice_is_refused_by_name(publisher, query, body, key):
    """JSON's parser keeps the last of two values; which one a client meant is not for the
    server to guess (the HTTP API refuses a key given twice too)."""
    publisher.publish_prediction(_prediction(7), INFO, RATE)
    (error,) = _ask(query.endpoint, [body])  # an answer to it would have no "error"
    assert error.startswith(f"request gives the key {key!r} twice"), error
    assert query.running


def test_an_over_large_or_over_deep_request_is_a_plain_error_and_no_traceback(query, caplog):
    deep = b"[" * 30000 + b"]" * 30000  # 60 KB: within the socket's limit, past the parser's
    nested = b"[" * 400 + b"]" * 400  # small enough, nested past any request's depth
    with caplog.at_level(logging.WARNING, logger="corticast.zmq"):
        large_error, deep_error = _ask(query.endpoint, [deep, nested])
    assert re.fullmatch(
        r"request is 60000 bytes; a request is at most 1024 bytes, e\.g\. .*", large_error
    )
    assert re.fullmatch(r"request nests 400 levels deep; at most 4 .*", deep_error)
    assert not [r for r in caplog.records if r.exc_info], "a bad request logged a traceback"
    assert query.running


def test_repeated_bad_requests_are_logged_rate_limited(query, caplog):
    with caplog.at_level(logging.WARNING, logger="corticast.zmq"):
        errors = _ask(query.endpoint, [b"[" * 30000 + b"]" * 30000] * 30)
    assert len(errors) == 30
    logged = [r for r in caplog.records if r.name == "corticast.zmq"]
    assert len(logged) == 1, [r.getMessage()[:100] for r in logged]
    assert "bad query request" in logged[0].getMessage()


def test_an_internal_fault_answers_an_error_id_that_the_log_holds(publisher, registry, caplog):
    def broken() -> dict:
        raise PermissionError(13, "Permission denied", "/etc/corticast/corticast.env")

    with (
        QueryServer(publisher.settings, publisher.history, broken, registry=registry) as server,
        caplog.at_level(logging.ERROR, logger="corticast.zmq"),
    ):
        [error] = _ask(server.endpoint, [b'{"query": "status"}'])
    assert "corticast.env" not in error and "PermissionError" not in error
    error_id = re.fullmatch(r"status failed \(error id ([0-9a-f]{12})\); .*", error).group(1)
    [record] = [r for r in caplog.records if error_id in r.getMessage()]
    assert record.exc_info is not None


def test_a_query_without_a_server_times_out_and_the_client_recovers(registry):
    settings = ZmqSettings(**ANY_PORT)
    history_owner = ZmqPublisher(settings, registry=registry)
    server = QueryServer(settings, history_owner.history, dict).start()
    endpoint = server.endpoint
    server.stop()
    with PredictionClient(None, endpoint, query_timeout_s=0.2) as client:
        with pytest.raises(TimeoutError, match=r"no reply within 0.2 s: is the corticast daemon"):
            client.status()
        restarted = ZmqSettings(pub_endpoint="tcp://127.0.0.1:*", query_endpoint=endpoint)
        with QueryServer(restarted, history_owner.history, lambda: {"up": 1}):
            client.query_timeout_s = 2.0
            assert client.status() == {"up": 1}


def test_stop_is_prompt_and_a_stopped_server_can_start_again(publisher, registry):
    server = QueryServer(publisher.settings, publisher.history, dict, registry=registry)
    for _ in range(2):
        server.start()
        assert server.running
        assert server.stop() is True  # its thread ended within stop()'s deadline
        assert not server.running
    server.raise_if_failed()


# --- CURVE and bind safety -----------------------------------------------------------------


def test_curve_admits_an_allowed_key_and_shuts_out_an_unknown_one(curve_keys, registry):
    settings = ZmqSettings(
        pub_endpoint="tcp://127.0.0.1:*",
        query_endpoint="tcp://127.0.0.1:*",
        curve_secret_key_file=curve_keys["server_secret"],
        curve_allowed_clients_dir=curve_keys["allowed"],
    )
    with (
        ZmqPublisher(settings, registry=registry) as publisher,
        QueryServer(settings, publisher.history, lambda: {"ok": True}, registry=registry) as query,
    ):

        def client(key: str, query_timeout_s: float) -> PredictionClient:
            return PredictionClient(
                publisher.endpoint,
                query.endpoint,
                topics=("prediction", "status"),
                server_key_file=curve_keys["server_public"],
                client_key_file=curve_keys[key],
                query_timeout_s=query_timeout_s,
            )

        # Alice's answer may take a loaded machine a while.
        with client("alice", 10.0) as alice, client("mallory", 10.0) as mallory:
            _wait_subscribed(publisher, alice)
            prediction = _prediction(5)
            publisher.publish_prediction(prediction, INFO, RATE)
            np.testing.assert_array_equal(_next(alice, "prediction").array, prediction.future)
            assert alice.status() == {"ok": True}

            for seq in range(6, 16):
                publisher.publish_prediction(_prediction(seq), INFO, RATE)
            assert _next(alice, "prediction").header["input_seq"] == 6
            # Nothing reached mallory: receive() raises only when nothing is queued.
            with pytest.raises(HandshakeError, match="refused this client's key"):
                mallory.receive(timeout_s=10.0)
            with pytest.raises(HandshakeError, match="refused this client's key"):
                mallory.status()


@pytest.mark.parametrize(
    ("key", "endpoint"),
    [
        ("pub_endpoint", "tcp://0.0.0.0:5556"),
        ("query_endpoint", "tcp://*:5557"),
        ("pub_endpoint", "tcp://localhost:5556"),  # a name /etc/hosts or DNS may put elsewhere
    ],
)
def test_a_non_loopback_bind_without_curve_is_refused_by_name(key, endpoint, curve_keys):
    with pytest.raises(
        ValidationError,
        match=rf"'{key}' = '{re.escape(endpoint)}' is not a loopback address.* CURVE is off.*"
        r"'allow_insecure_remote = true'",
    ):
        ZmqSettings(**{key: endpoint})
    assert ZmqSettings(**{key: endpoint}, allow_insecure_remote=True).allow_insecure_remote
    curve = ZmqSettings(
        **{key: endpoint},
        curve_secret_key_file=curve_keys["server_secret"],
        curve_allowed_clients_dir=curve_keys["allowed"],
    )
    assert curve.curve


def test_an_insecure_remote_bind_is_logged_loudly_at_every_start(registry, caplog):
    """As the HTTP API's plain HTTP on a network address: on purpose, and said each time."""
    settings = ZmqSettings(
        pub_endpoint="tcp://0.0.0.0:*", query_endpoint="tcp://127.0.0.1:*",
        allow_insecure_remote=True,
    )  # fmt: skip
    with (
        caplog.at_level(logging.WARNING, logger="corticast.zmq"),
        ZmqPublisher(settings, registry=registry),
    ):
        pass
    [warning] = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warning.startswith("INSECURE: 'pub_endpoint' bound at tcp://0.0.0.0:")
    assert "without CURVE (allow_insecure_remote)" in warning


def test_a_plain_loopback_tcp_bind_says_every_local_user_may_connect(registry, caplog, curve_keys):
    """Once per endpoint at start, at INFO (the default, as `make demo` runs it): it points to
    the deploy README's section on keeping other users of the host out. Not said of a unix
    socket (its file mode decides) nor under CURVE (its keys do)."""
    with tempfile.TemporaryDirectory(prefix="cc-") as folder:
        plain = ZmqSettings(**ANY_PORT, pub_ipc_endpoint=f"ipc://{folder}/pub.sock")
        with caplog.at_level(logging.INFO, logger="corticast.zmq"):
            ZmqPublisher(plain, registry=registry).start().stop()
    bound = {
        r.getMessage().split()[0]: (r.levelno, r.getMessage())
        for r in caplog.records
        if " bound at " in r.getMessage()
    }
    said = "plain TCP without CURVE: every user of this host may connect"
    level, line = bound["pub_endpoint"]
    assert level == logging.INFO and said in line, line
    assert line.endswith('deploy/README.md, "Who may connect to ZeroMQ")'), line
    assert said not in bound["pub_ipc_endpoint"][1]
    caplog.clear()
    curve = ZmqSettings(
        **ANY_PORT,
        curve_secret_key_file=curve_keys["server_secret"],
        curve_allowed_clients_dir=curve_keys["allowed"],
    )
    with caplog.at_level(logging.INFO, logger="corticast.zmq"):
        ZmqPublisher(curve, registry=CollectorRegistry()).start().stop()
    [line] = [r.getMessage() for r in caplog.records if " bound at " in r.getMessage()]
    assert line.endswith(" (CURVE)") and said not in line


def test_the_publisher_itself_refuses_an_insecure_bind_it_is_handed(registry):
    unchecked = ZmqSettings.model_construct(pub_endpoint="tcp://0.0.0.0:0")
    with pytest.raises(
        ValueError, match=r"'pub_endpoint' = 'tcp://0\.0\.0\.0:0' is not a loopback"
    ):
        ZmqPublisher(unchecked, registry=registry).start()


def test_settings_name_what_is_wrong(curve_keys, tmp_path, registry):
    with pytest.raises(ValidationError, match="must be set together"):
        ZmqSettings(curve_secret_key_file=curve_keys["server_secret"])
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        ZmqSettings(pub_endpiont="tcp://127.0.0.1:1")
    with pytest.raises(ValidationError, match=r"'pub_endpoint' must look like 'tcp://"):
        ZmqSettings(pub_endpoint="localhost:5556")
    with pytest.raises(ValidationError, match="'pub_endpoint' and 'query_endpoint' must differ"):
        ZmqSettings(pub_endpoint="tcp://127.0.0.1:6000", query_endpoint="tcp://127.0.0.1:6000")
    assert ZmqSettings(pub_endpoint="ipc:///tmp/corticast.pub").pub_endpoint.startswith("ipc")

    public_only = ZmqSettings(
        **ANY_PORT,
        curve_secret_key_file=curve_keys["server_public"],
        curve_allowed_clients_dir=curve_keys["allowed"],
    )
    with pytest.raises(ValueError, match=r"holds no secret key: pass the '\.key_secret' file"):
        ZmqPublisher(public_only, registry=registry).start()
    empty = tmp_path / "empty"
    empty.mkdir()
    nobody = ZmqSettings(
        **ANY_PORT,
        curve_secret_key_file=curve_keys["server_secret"],
        curve_allowed_clients_dir=empty,
    )
    with pytest.raises(ValueError, match=r"holds no public key \('\*.key'\) files"):
        QueryServer(nobody, ZmqPublisher(nobody).history, dict).start()


@pytest.mark.parametrize("port", ["99999", "-1", "70000", "0x10", " 5", "5556x"])
def test_a_tcp_port_outside_1_to_65535_is_refused_not_bound_elsewhere(port):
    """libzmq takes a port past 65535 modulo 65536: 'tcp://127.0.0.1:99999' bound port 34463
    and ':-1' port 65535, so the daemon served where no client was told to look."""
    with pytest.raises(
        ValidationError,
        match=rf"'pub_endpoint' port must be '\*' or a number from 1 to 65535, got '{port}'",
    ):
        ZmqSettings(pub_endpoint=f"tcp://127.0.0.1:{port}")


@pytest.mark.parametrize("which", ["pub_endpoint", "query_endpoint"])
def test_a_client_refuses_a_port_libzmq_would_wrap_to_another(which):
    """A client connects where it is told: 'tcp://127.0.0.1:99999' would reach port 34463
    (`corticast listen --pub ...` waited there for messages that never came)."""
    endpoints = {"pub_endpoint": None, "query_endpoint": None, which: "tcp://127.0.0.1:99999"}
    with pytest.raises(ValueError, match=rf"'{which}' port must be '\*' or a number from 1"):
        PredictionClient(**endpoints)


def test_blend_weights_travel_in_the_header_and_are_absent_when_not_blending(registry):
    with (
        ZmqPublisher(ZmqSettings(**ANY_PORT), registry=registry) as publisher,
        PredictionClient(publisher.endpoint, None, topics=("prediction", "status")) as client,
    ):
        _wait_subscribed(publisher, client)
        weights = np.linspace(0.0, 1.0, 16)
        assert publisher.publish_prediction(_prediction(5), INFO, RATE, blend_weights=weights)
        blended = _next(client, "prediction")
        assert publisher.publish_prediction(_prediction(6), INFO, RATE)
        plain = _next(client, "prediction")
    np.testing.assert_array_equal(blended.blend_weights, weights)
    assert blended.header["schema"] == "corticast.zmq/1"  # a new field: the schema stays
    assert "blend_weights" not in plain.header and plain.blend_weights is None
    with pytest.raises(ValueError, match=r"one weight per predicted frame \(16,\), got shape"):
        prediction_message(_prediction(7), INFO, RATE, blend_weights=np.ones(3))
