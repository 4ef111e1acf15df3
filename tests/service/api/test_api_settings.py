"""The HTTP API's start-up rules, mirroring the ZeroMQ ones: control needs a token (except in
explicit development mode on loopback); an empty token is refused wherever it comes from; a
non-loopback bind needs TLS and a token of at least 32 characters, unless plain HTTP is asked
for by name. Then the TLS itself, served by a real uvicorn with a certificate made here."""

import logging
import re
import shutil
import socket
import ssl
import subprocess
import uuid

import httpx
import pytest
from pydantic import ValidationError

from service.api.app import check_api_settings
from service.api.served import ServedDaemon
from service.config import ApiSettings, ConfigError, load_settings
from tests.service._loop_harness import TOKEN, loop_settings

LONG_TOKEN = "t" * 32


def test_control_without_a_token_is_refused():
    with pytest.raises(ConfigError, match=r"api\.token must be set"):
        check_api_settings(ApiSettings())


def test_development_mode_only_on_loopback():
    assert check_api_settings(ApiSettings(dev_no_token=True)) is None
    assert check_api_settings(ApiSettings(dev_no_token=True, host="::1")) is None
    with pytest.raises(
        ConfigError, match=re.escape("only allowed with a loopback api.host, got '0.0.0.0'")
    ):
        check_api_settings(
            ApiSettings(dev_no_token=True, host="0.0.0.0", allow_insecure_remote=True)
        )


def test_localhost_is_a_name_not_a_loopback_address():
    """/etc/hosts or DNS may give ``localhost`` a network address, where the bind then listens
    (with ``dev_no_token``: control without a token on the network); only an address literal
    says where a bind goes."""
    with pytest.raises(
        ValidationError, match=r"'localhost' is not a loopback address.*write 127\.0\.0\.1"
    ):
        ApiSettings(dev_no_token=True, host="localhost")
    with pytest.raises(ConfigError, match=r"loopback api\.host, got 'localhost'.*127\.0\.0\.1"):
        check_api_settings(
            ApiSettings(dev_no_token=True, host="localhost", allow_insecure_remote=True)
        )


def test_a_token_or_no_control_on_loopback_needs_nothing_else():
    assert check_api_settings(ApiSettings(token="s3cret")) == "s3cret"
    assert check_api_settings(ApiSettings(control=False, host="::1")) is None


@pytest.mark.parametrize("limit", [0, 1, 65537])
def test_a_concurrency_limit_that_would_serve_nothing_or_not_bound_anything_is_refused(
    tmp_path, monkeypatch, limit
):
    """At 1, uvicorn's limit (the asking connection counted) would answer every request but a
    disarm 503; above 65536 it bounds nothing the process's descriptors do not."""
    with pytest.raises(ConfigError, match=r"api\.limit_concurrency: Input should be"):
        _load(tmp_path, monkeypatch, f"[api]\ntoken = 's3cret'\nlimit_concurrency = {limit}\n")
    assert ApiSettings().limit_concurrency == 100


def _load(tmp_path, monkeypatch, toml: str = "", **env: str):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    path = tmp_path / "c.toml"
    path.write_text(toml)
    return load_settings(path)


def test_an_empty_token_is_refused_from_the_file_and_from_the_environment(tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match=r"api\.token: .*must not be empty"):
        _load(tmp_path, monkeypatch, '[api]\ntoken = ""\n')
    with pytest.raises(
        ConfigError,
        match=r"api\.token: .*must not be empty.*\(from environment CORTICAST_API__TOKEN\)",
    ):
        _load(tmp_path, monkeypatch, CORTICAST_API__TOKEN="")
    monkeypatch.delenv("CORTICAST_API__TOKEN")
    with pytest.raises(ConfigError, match=r"api\.token: .*printable ASCII without spaces"):
        _load(tmp_path, monkeypatch, '[api]\ntoken = "two words"\n')


def test_a_remote_bind_needs_tls_and_a_long_token_and_errors_never_echo_it(tmp_path, monkeypatch):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.write_text("x")
    key.write_text("x")
    key.chmod(0o600)
    with pytest.raises(ConfigError) as plain:
        _load(tmp_path, monkeypatch, f'[api]\nhost = "0.0.0.0"\ntoken = "{LONG_TOKEN}"\n')
    assert re.search(
        r"api: .*'host' = '0\.0\.0\.0' is not a loopback address and TLS is off.*"
        r"'ssl_certfile' and 'ssl_keyfile'.*'allow_insecure_remote = true'",
        str(plain.value),
    )
    assert LONG_TOKEN not in str(plain.value)
    tls = f'ssl_certfile = "{cert}"\nssl_keyfile = "{key}"\n'
    with pytest.raises(ConfigError) as short:
        _load(tmp_path, monkeypatch, f'[api]\nhost = "0.0.0.0"\ntoken = "changeme"\n{tls}')
    assert re.search(
        r"api\.token: .*at least 32 characters .*not a loopback address, got 8", str(short.value)
    )
    assert "changeme" not in str(short.value)
    # TLS and a long token: served. Plain HTTP with a long token: only when asked for by name.
    assert _load(tmp_path, monkeypatch, f'[api]\nhost = "0.0.0.0"\ntoken = "{LONG_TOKEN}"\n{tls}')
    insecure = f'[api]\nhost = "0.0.0.0"\ntoken = "{LONG_TOKEN}"\nallow_insecure_remote = true\n'
    assert _load(tmp_path, monkeypatch, insecure).api.allow_insecure_remote
    with pytest.raises(ConfigError, match=r"api\.token: .*at least 32 characters"):
        _load(tmp_path, monkeypatch, insecure.replace(LONG_TOKEN, "a"))
    # An error of the whole file (here: the policy's area) does not show the token either.
    with pytest.raises(ConfigError) as whole:
        _load(
            tmp_path, monkeypatch,
            f'[api]\ntoken = "{LONG_TOKEN}"\n[policy.stimulation]\nelectrode_area_cm2 = 1.0\n',
        )  # fmt: skip
    assert "electrode_area_cm2" in str(whole.value) and LONG_TOKEN not in str(whole.value)
    # Without control the token is never used; the bind still needs TLS.
    assert _load(tmp_path, monkeypatch, f'[api]\nhost = "0.0.0.0"\ncontrol = false\n{tls}')
    with pytest.raises(ConfigError, match=r"'ssl_certfile' and 'ssl_keyfile' must be set together"):
        _load(tmp_path, monkeypatch, f'[api]\nssl_certfile = "{cert}"\n')


def _self_signed(tmp_path):
    if shutil.which("openssl") is None:
        pytest.skip("no openssl command to make a test certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return cert, key


def test_the_api_serves_tls_from_the_configured_certificate(tmp_path, exported, caplog):
    cert, key = _self_signed(tmp_path)
    _, window, step = exported
    settings = loop_settings(
        tmp_path, window, step, f"corticast-test-{uuid.uuid4().hex[:12]}",
        bridge={"dry_run": True}, api={"ssl_certfile": cert, "ssl_keyfile": key},
    )  # fmt: skip
    with ServedDaemon(settings) as served:
        assert served.url.startswith("https://127.0.0.1:")
        trusted = ssl.create_default_context(cafile=str(cert))
        with httpx.Client(base_url=served.url, verify=trusted) as https:
            assert https.get("/healthz").json() == {"status": "alive"}
            answer = https.post("/control/disarm", headers={"Authorization": f"Bearer {TOKEN}"})
            assert answer.status_code == 200
        # Plain HTTP to the TLS port gets no answer from the app.
        with socket.create_connection(("127.0.0.1", settings.api.port), timeout=10) as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            assert b'"alive"' not in sock.recv(4096)


def test_plain_http_on_a_network_address_is_logged_loudly(caplog):
    from service.api.serving import uvicorn_options

    api = ApiSettings(host="0.0.0.0", token=LONG_TOKEN, allow_insecure_remote=True)
    with caplog.at_level(logging.WARNING, logger="corticast.api"):
        options = uvicorn_options(api)
    assert options["host"] == "0.0.0.0" and "ssl_certfile" not in options
    [record] = caplog.records
    assert record.levelno == logging.WARNING
    assert "INSECURE" in record.getMessage() and "cleartext" in record.getMessage()


def test_a_tls_key_other_users_may_read_is_refused_by_name(tmp_path, monkeypatch):
    """Whoever reads the server's private key can pose as it and take the token off the
    wire: refused as a CURVE secret key or the token file is, its group allowed to read."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.write_text("x")
    key.write_text("x")
    key.chmod(0o644)
    tls = f'[api]\nhost = "0.0.0.0"\ntoken = "{LONG_TOKEN}"\n'
    tls += f'ssl_certfile = "{cert}"\nssl_keyfile = "{key}"\n'
    with pytest.raises(
        ConfigError, match=r"api\.ssl_keyfile: .*'.*key\.pem' is open to other users \(mode 0644\)"
    ):
        _load(tmp_path, monkeypatch, tls)
    key.chmod(0o640)
    assert _load(tmp_path, monkeypatch, tls).api.tls
