"""The daemon's ``status`` topic and status query, with real sockets: a real daemon (a rig
process, the emulator over UDP and uvicorn where a test arms), a real ZeroMQ SUB socket, and
``corticast listen`` reading it."""

import json

import pytest
import zmq
from typer.testing import CliRunner

import service.daemon.daemon as daemon_module
from service.cli.app import app
from service.cli.listen import line, summarise
from service.daemon.daemon import Daemon
from service.zmq_api.client import PredictionClient
from service.zmq_api.wire import decode_header
from tests.service._loop_harness import (
    AUTH,
    Rig,
    armed_and_served,
    free_port,
    loop_settings,
    wait_until,
)

pytestmark = pytest.mark.slow

_WAIT_S = 30.0
"""Generous: the suite runs on a loaded 2-core machine."""


@pytest.fixture
def settings(tmp_path, exported, source_id):
    _, window, step = exported
    return loop_settings(tmp_path, window, step, source_id)


@pytest.fixture
def subscribe():
    """Opens SUB sockets subscribed to ``status``: ``subscribe(endpoint)``; closed at the end."""
    context = zmq.Context()
    sockets = []

    def open_one(endpoint: str) -> zmq.Socket:
        sub = context.socket(zmq.SUB)
        sockets.append(sub)
        sub.setsockopt(zmq.SUBSCRIBE, b"status")
        sub.connect(endpoint)
        return sub

    yield open_one
    for sub in sockets:
        sub.close(linger=0)
    context.term()


def _next_status(sub: zmq.Socket, timeout_s: float = _WAIT_S) -> dict:
    """The header of the next ``status`` message; fails naming the wait if none comes."""
    if not sub.poll(int(timeout_s * 1000), zmq.POLLIN):
        raise AssertionError(f"no message on the 'status' topic within {timeout_s} s")
    topic, header, payload = sub.recv_multipart()
    assert topic == b"status" and payload == b""
    return decode_header(header)


def _status_where(sub: zmq.Socket, condition, what: str) -> dict:
    """The first ``status`` message that ``condition`` holds for (earlier ones are skipped)."""
    seen = []
    while len(seen) < 100:
        header = _next_status(sub)
        if condition(header):
            return header
        seen.append({key: header[key] for key in ("armed", "ready", "not_ready_reasons")})
    raise AssertionError(f"no status message {what} among {seen}")


def test_a_subscriber_to_status_gets_the_daemons_status_and_listen_prints_it(settings, subscribe):
    """Neither stream nor device is needed: a daemon that is not ready says so, and why. The
    status is published every supervisor round (its least period; 1 s by default), so that
    `listen`, which waits for the next message, is not kept waiting a second."""
    zmq_settings = settings.zmq.model_copy(update={"status_period_s": 0.1})
    with Daemon(settings.model_copy(update={"zmq": zmq_settings})) as daemon:
        pub = daemon.publisher.endpoint
        sub = subscribe(pub)
        header = _next_status(sub)
        listened = CliRunner().invoke(
            app, ["listen", "--pub", pub, "--topics", "status", "--count", "1", "--seconds", "60"]
        )
    assert header["topic"] == "status"
    assert header["ready"] is False and header["armed"] is False
    assert any("stream not live" in reason for reason in header["not_ready_reasons"])
    assert header["bridge"]["last_disarm_cause"] == "start"
    assert header["model"]["health"]["state"] == "unproven"
    assert header["scheduler"]["predictions"] == 0
    # How old the (kept) document was when sent, as the status query's reply says it.
    assert 0.0 <= header["age_s"] <= settings.api.snapshot_max_age_s
    # The part of /status a subscriber watches, under /status's names; not the whole document.
    assert set(header) > {"stream", "latency_ms", "faults", "supervisor_steps_failing"}
    assert "policy" not in header and "interlocks" not in header
    json.dumps(header)

    assert listened.exit_code == 0, listened.output
    [printed] = listened.stdout.splitlines()
    assert printed.startswith("status     disarmed (")
    # What is looked for, so that a [stream] setting other than the rig's shows (name, type).
    looked_for = f"no stream found yet with name={settings.stream.name!r}, type='ECoG', "
    assert looked_for + f"source_id={settings.stream.source_id!r}; " in printed
    assert "model unproven" in printed and "predictions 0" in printed


def test_a_bridge_refusing_arming_is_published_apart_from_its_last_disarm(settings, subscribe):
    """A bridge whose audit log cannot be read back refuses arming: that is not a disarm. It
    was written over the last disarm's reason (a fault's, on a reopened bridge), and the topic
    carried no ``arming_refused``; it now carries both, each saying its own."""
    log = settings.bridge.audit_log
    log.write_text("not json\n")
    with Daemon(settings) as daemon:
        header = _next_status(subscribe(daemon.publisher.endpoint))
        document = daemon.status()
    for bridge in (header["bridge"], document["bridge"]):
        assert (bridge["last_disarm_reason"], bridge["last_disarm_cause"]) == (
            "disarmed at start",
            "start",
        )
        assert f"'{log}' line 1 is not JSON" in bridge["arming_refused"]
    assert any("bridge refuses arming" in reason for reason in header["not_ready_reasons"])


def test_arming_and_disarming_over_the_api_are_published_at_once(
    tmp_path, exported, source_id, subscribe
):
    """With a period of an hour, only the change itself can publish them within the test."""
    _, window, step = exported
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    settings = loop_settings(
        tmp_path, window, step, source_id,
        zmq={"pub_endpoint": endpoint, "status_period_s": 3600.0},
    )  # fmt: skip
    sub = subscribe(endpoint)  # before the daemon binds: subscribed long before the arm
    with armed_and_served(settings, source_id) as (served, http, _):
        armed = _status_where(sub, lambda h: h["armed"], "saying armed")
        assert http.post("/control/disarm", headers=AUTH).status_code == 200
        disarmed = _status_where(sub, lambda h: not h["armed"], "saying disarmed")
        assert served.daemon.status()["armed"] is False
    assert armed["ready"] is True and armed["not_ready_reasons"] == []
    assert armed["bridge"]["last_disarm_reason"] is None
    assert armed["stream"]["fresh"] is True and armed["stream"]["measured_rate_hz"] > 0
    assert disarmed["bridge"]["last_disarm_reason"] == "operator: operator request"
    assert disarmed["bridge"]["last_disarm_cause"] == "operator"
    assert disarmed["msg_seq"] > armed["msg_seq"]

    printed = line(summarise("status", armed, None))
    assert printed.startswith("status     ARMED  ready  model ")
    assert " Hz, newest " in printed and " ms old  predictions " in printed
    assert line(summarise("status", disarmed, None)).startswith(
        "status     disarmed (operator: operator request)  ready  "
    )


def test_a_burst_of_status_queries_renders_the_status_far_fewer_times_than_answered(
    settings, source_id, monkeypatch
):
    """The query socket in the loop's process serves the status document kept for
    ``[api] snapshot_max_age_s``: a client asking in a loop must not make the loop's process
    render it (holding its interpreter lock) for every reply. Renders are counted at the
    function that builds the document, which every reader goes through. A change of the
    loop's own (the stream appearing) is answered once the kept copy is older than that."""
    renders: list[int] = []
    build = daemon_module.status_document

    def counted(daemon):
        renders.append(1)
        return build(daemon)

    monkeypatch.setattr(daemon_module, "status_document", counted)
    api = settings.api.model_copy(update={"snapshot_max_age_s": 2.0})
    rig = Rig(source_id)
    with (
        Daemon(settings.model_copy(update={"api": api})) as daemon,
        PredictionClient(daemon.publisher.endpoint, daemon.query.endpoint) as client,
    ):
        before = len(renders)
        answered = [client.status() for _ in range(100)]
        rendered = len(renders) - before
        rig.start()
        try:
            wait_until(
                lambda: client.status()["stream"]["connected"], _WAIT_S, "the stream in the status"
            )
        finally:
            rig.kill()
    assert all(status["stream"]["connected"] is False for status in answered)
    assert rendered <= len(answered) // 10, f"{rendered} renders for {len(answered)} queries"


def test_a_status_reply_says_how_old_its_kept_document_is(settings, monkeypatch):
    """A status reply may carry a document rendered up to ``[api] snapshot_max_age_s`` earlier
    (the flood of queries it spares the loop); it said nothing of that, so a client could not
    tell a fresh status from one seconds old. Now its ``age_s`` says so: 0 where the query
    rendered it, else how long ago it was rendered, below the maximum age. Renders are counted
    by a wrapper around the real one (the status topic, which shares the kept copy, renders
    once at start here): each render answered one query, with age 0, a tenth of the queries at
    most. Once the kept copy is too old, a query renders afresh."""
    renders: list[dict] = []
    build = daemon_module.status_document

    def counted(daemon):
        renders.append(build(daemon))
        return renders[-1]

    monkeypatch.setattr(daemon_module, "status_document", counted)
    max_age_s = 2.0
    api = settings.api.model_copy(update={"snapshot_max_age_s": max_age_s})
    zmq_settings = settings.zmq.model_copy(update={"status_period_s": 3600.0})
    with (
        Daemon(settings.model_copy(update={"api": api, "zmq": zmq_settings})) as daemon,
        PredictionClient(daemon.publisher.endpoint, daemon.query.endpoint) as client,
    ):
        wait_until(lambda: renders, _WAIT_S, "the status topic's first message")
        before = len(renders)
        replies = []
        for _ in range(50):
            replies.append((client.status(), client.status_age_s))
        rendered = renders[before:]

        def fresh() -> bool:
            replies_after.append((client.status(), client.status_age_s))
            return replies_after[-1][1] == 0.0

        replies_after: list[tuple[dict, float]] = []
        wait_until(fresh, _WAIT_S, "a status rendered afresh once the kept one was too old")
    ages = [age for _, age in replies]
    assert [document for document, age in replies if age == 0.0] == rendered, ages
    assert len(rendered) <= len(replies) // 10, f"{len(rendered)} renders for {len(replies)}"
    assert all(0.0 <= age < max_age_s for age in ages), ages
    assert all(document in renders for document, _ in replies)
    assert len(renders) > before + len(rendered) and replies_after[-1][0] == renders[-1]


def test_an_operators_change_is_in_the_next_status_reply(settings):
    """Kept copies are dropped by a control call: no wait for the snapshot to age."""
    api = settings.api.model_copy(update={"snapshot_max_age_s": 5.0})
    with (
        Daemon(settings.model_copy(update={"api": api})) as daemon,
        PredictionClient(daemon.publisher.endpoint, daemon.query.endpoint) as client,
    ):
        before = client.status()["policy"]
        changed = daemon.policy.model_copy(update={"min_pgd": 0.7})
        daemon.set_policy(changed)
        after = client.status()["policy"]
    assert before["min_pgd"] == 0.6 and after["min_pgd"] == 0.7
