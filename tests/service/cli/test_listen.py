"""`corticast listen` against a real publisher: one line (or JSON object) per message."""

import json
import threading
from pathlib import Path

import numpy as np
import pytest
import zmq.auth
from typer.testing import CliRunner

from service.cli.app import app
from service.cli.listen import connectable
from service.loop.closed_loop import WAVE_FIELDS
from service.zmq_api.publisher import ZmqPublisher
from service.zmq_api.settings import ZmqSettings
from tests.service._loop_harness import free_port
from tests.service.zmq_api.test_zmq_api import ANY_PORT, INFO, RATE, _prediction


@pytest.fixture
def publishing():
    """A publisher on a free port sending a prediction, a wave and a stim message every 20 ms
    (over and over: a subscriber joins at an unknown moment) until the test ends."""
    stop = threading.Event()
    with ZmqPublisher(ZmqSettings(**ANY_PORT)) as publisher:
        wave = np.zeros((48, len(WAVE_FIELDS)), dtype=np.float32)
        wave[:, WAVE_FIELDS.index("speed_mps")] = 0.25
        wave[:, WAVE_FIELDS.index("direction_deg")] = [350.0, 10.0] * 24  # mean 0°, median 180°
        wave[:, WAVE_FIELDS.index("pgd")] = 0.8
        stim = {"input_seq": 7, "policy": {"check": "lead", "reason": "no wave"}, "bridge": None}

        def send() -> None:
            seq = 100
            while not stop.wait(0.02):
                publisher.publish_prediction(_prediction(seq), INFO, RATE)
                publisher.publish(
                    "wave",
                    {"input_seq": seq, "fields": list(WAVE_FIELDS), "n_predicted": 16},
                    wave,
                )
                publisher.publish("stim", stim, None)
                seq += 1

        sender = threading.Thread(target=send, daemon=True)
        sender.start()
        yield publisher.endpoint
        stop.set()
        sender.join(10)


def test_json_lines_carry_each_topic_with_its_summary(publishing):
    result = CliRunner().invoke(
        app, ["listen", "--pub", publishing, "--json", "--count", "9", "--seconds", "60"]
    )
    assert result.exit_code == 0, result.output
    messages = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(messages) == 9
    by_topic = {m["topic"]: m for m in messages}
    assert set(by_topic) == {"prediction", "wave", "stim"}
    prediction = by_topic["prediction"]
    assert prediction["inference_ms"] == pytest.approx(2.0, abs=1e-6)
    assert prediction["peak_abs_uv"] > 0 and prediction["model"] == "persistence"
    wave = by_topic["wave"]
    assert wave["speed_mps"] == pytest.approx(0.25) and wave["pgd"] == pytest.approx(0.8)
    assert wave["wave_frames"] == 16  # every predicted frame planar (pattern 0) with PGD 0.8
    assert min(wave["direction_deg"], 360 - wave["direction_deg"]) < 1e-3  # circular: 0°
    assert by_topic["stim"] == {"topic": "stim", "msg_seq": by_topic["stim"]["msg_seq"],
                                "input_seq": 7, "check": "lead", "reason": "no wave",
                                "outcome": "no bridge"}  # fmt: skip


def test_lines_for_reading_and_a_topic_filter(publishing):
    result = CliRunner().invoke(
        app, ["listen", "--pub", publishing, "--topics", "wave", "--count", "2", "--seconds", "60"]
    )
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert len(lines) == 2 and all(line.startswith("wave ") for line in lines)
    assert "speed 0.250 m/s" in lines[0] and "pgd 0.80" in lines[0]
    assert "(of 16 wave frames)" in lines[0]
    assert "nothing received" not in result.output


def test_one_message_is_counted_in_the_singular(publishing):
    """The tally read "1 messages"."""
    result = CliRunner().invoke(app, ["listen", "--pub", publishing, "--count", "1"])
    assert result.exit_code == 0, result.output
    assert result.stderr.splitlines()[-1] == "1 message; missed: none", result.stderr


@pytest.mark.parametrize("hint_after_s", [0.0, 3600.0], ids=["while waiting", "at the end"])
def test_nothing_received_says_where_it_would_come_from(monkeypatch, hint_after_s):
    """ZeroMQ connects to a port no one binds without a word: with no daemon there, listen
    printed nothing at all (or, given --seconds, "0 messages") and exited 0. It now says once,
    while it waits or at the end, what to check."""
    monkeypatch.setattr("service.cli.listen.SILENT_HINT_S", hint_after_s, raising=False)
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    result = CliRunner().invoke(app, ["listen", "--pub", endpoint, "--seconds", "1.5"])
    assert result.exit_code == 0, result.output
    hint = (
        f"nothing received from {endpoint}: is `corticast serve` running, publishing there "
        "([zmq] pub_endpoint of its --config, or --pub)? Predictions, waves and stim decisions "
        "come only while its stream is live (--topics status says why not)."
    )
    assert result.output.count(hint) == 1, result.output
    assert result.output.endswith("0 messages; missed: none\n")


def test_an_unknown_topic_is_refused_naming_the_topics():
    result = CliRunner().invoke(app, ["listen", "--topics", "predictions"])
    assert result.exit_code == 2
    assert "--topics must name some of prediction, wave, stim, status" in result.output


def test_a_wildcard_bind_endpoint_is_reached_on_loopback():
    assert connectable("tcp://*:5556") == "tcp://127.0.0.1:5556"
    assert connectable("tcp://0.0.0.0:5556") == "tcp://127.0.0.1:5556"
    assert connectable("tcp://10.0.0.5:5556") == "tcp://10.0.0.5:5556"


def test_a_key_the_daemon_refuses_ends_listen_with_one_line_saying_so(tmp_path):
    """Not a quiet '0 messages' once --seconds is over: nothing would ever come."""
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    server_public, server_secret = zmq.auth.create_certificates(tmp_path, "server")
    zmq.auth.create_certificates(allowed, "alice")
    _, mallory = zmq.auth.create_certificates(tmp_path, "mallory")
    for secret in (server_secret, mallory):
        Path(secret).chmod(0o600)  # zmq.auth leaves them to the umask; open ones are refused
    settings = ZmqSettings(
        **ANY_PORT, curve_secret_key_file=server_secret, curve_allowed_clients_dir=allowed
    )
    keys = ["--server-key", str(server_public), "--client-key", str(mallory)]
    with ZmqPublisher(settings) as publisher:
        endpoint = publisher.endpoint
        result = CliRunner().invoke(app, ["listen", "--pub", endpoint, "--seconds", "10", *keys])
    assert result.exit_code == 1, result.output
    assert result.stderr.splitlines()[-1] == (
        f"error: cannot talk to the daemon at {endpoint!r}: the daemon refused this "
        "client's key (CURVE handshake failed, ZAP status 400): its public key must be in the "
        "daemon's 'curve_allowed_clients_dir'"
    )
