"""CURVE key files that are corrupt or open to other users are refused at start, by name, over
the real sockets they would have keyed: a corrupt one was a bare 'Invalid argument' from libzmq
(or, among the admitted clients, a daemon that started admitting no one), an open one was used."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from service.zmq_api.client import PredictionClient
from service.zmq_api.publisher import ZmqPublisher
from service.zmq_api.settings import ZmqSettings
from tests.service._private_files import (
    give_group_to_nogroup,
    give_to_nobody,
    grant_read_to_nobody,
)
from tests.service.zmq_api.test_zmq_api import ANY_PORT


def _start(secret, allowed) -> None:
    settings = ZmqSettings(
        **ANY_PORT, curve_secret_key_file=secret, curve_allowed_clients_dir=allowed
    )
    ZmqPublisher(settings, registry=CollectorRegistry()).start().stop()


def _corrupted(path, tmp_path, field: str):
    """A copy of the certificate ``path`` with its ``field`` key cut short."""
    text = path.read_text()
    bad = tmp_path / f"cut-{path.name}"
    bad.write_text(re.sub(rf'({field}-key = ")(.{{10}})[^"]*"', r'\1\2"', text))
    bad.chmod(0o600)
    return bad


def _refused_as_server_and_client(
    secret: Path, allowed: Path, as_server: str, as_client: str
) -> None:
    """``secret`` refused by the daemon's start as its key (``as_server`` matching the error)
    and by a client as its own (``as_client``)."""
    with pytest.raises(ValueError, match=as_server):
        _start(secret, allowed)
    with pytest.raises(ValueError, match=as_client):
        PredictionClient(None, "tcp://127.0.0.1:1", client_key_file=secret, server_key_file=secret)


@pytest.mark.parametrize("field", ["secret", "public"])
def test_a_corrupt_secret_key_file_is_named_at_start(curve_keys, tmp_path, field):
    bad = _corrupted(curve_keys["server_secret"], tmp_path, field)
    _refused_as_server_and_client(
        bad,
        curve_keys["allowed"],
        rf"'curve_secret_key_file' '{re.escape(str(bad))}' holds a {field} key of 10 "
        r"characters; a CURVE key is 40 Z85 characters",
        rf"'client_key_file' '{re.escape(str(bad))}' holds a",
    )


def test_a_corrupt_admitted_key_stops_the_start_instead_of_admitting_no_one(curve_keys, tmp_path):
    broken = curve_keys["allowed"] / "bob.key"
    broken.write_text("not a certificate\n")
    with pytest.raises(
        ValueError,
        match=rf"'curve_allowed_clients_dir' file '{re.escape(str(broken))}' is not a readable "
        r"CURVE certificate",
    ):
        _start(curve_keys["server_secret"], curve_keys["allowed"])
    shutil.copy(_corrupted(curve_keys["alice_public"], tmp_path, "public"), broken)
    with pytest.raises(ValueError, match=r"bob\.key' holds a public key of 10 characters"):
        _start(curve_keys["server_secret"], curve_keys["allowed"])


def test_a_secret_key_other_users_can_read_is_refused(curve_keys):
    secret = curve_keys["server_secret"]
    secret.chmod(0o644)  # what zmq.auth.create_certificates leaves under umask 022
    _refused_as_server_and_client(
        secret,
        curve_keys["allowed"],
        rf"'curve_secret_key_file' '{re.escape(str(secret))}' is open to other users "
        r"\(mode 0644\): chmod 0600 it",
        r"'client_key_file' .* is open to other users",
    )
    secret.chmod(0o640)  # root-owned, readable by the daemon's group: allowed
    _start(secret, curve_keys["allowed"])


def test_a_secret_key_an_acl_lets_another_user_read_is_refused(curve_keys):
    """An ACL entry lets a named user read a 0600 key whose mode then reads 0640, which the
    group rule allows: that user could pose as the server (or the client) all the same."""
    secret = curve_keys["server_secret"]
    grant_read_to_nobody(secret)
    _refused_as_server_and_client(
        secret,
        curve_keys["allowed"],
        rf"'curve_secret_key_file' '{re.escape(str(secret))}' has an ACL that may let "
        r"other users read it \(its mode reads 0640\)",
        r"'client_key_file' .* has an ACL",
    )


def test_a_secret_key_another_user_owns_is_refused(curve_keys):
    """Its owner may read it and chmod it whatever its mode."""
    secret = curve_keys["server_secret"]
    give_to_nobody(secret)
    _refused_as_server_and_client(
        secret,
        curve_keys["allowed"],
        r"'curve_secret_key_file' .* belongs to another user",
        r"'client_key_file' .* belongs to another user",
    )


def test_a_secret_key_a_group_the_daemon_is_not_in_may_read_is_refused(curve_keys):
    """0640 is for the daemon to read its key by its group, not for another group's members."""
    secret = curve_keys["server_secret"]
    secret.chmod(0o640)
    give_group_to_nogroup(secret)
    with pytest.raises(ValueError, match=r"'curve_secret_key_file' .* may be read by group 65534"):
        _start(secret, curve_keys["allowed"])
    secret.chmod(0o600)
    _start(secret, curve_keys["allowed"])


@pytest.mark.parametrize("which", ["folder", "file"])
def test_admitted_keys_another_user_owns_are_refused(curve_keys, which):
    """Their owner may write them whatever their mode, and so admit a key of their own."""
    allowed = curve_keys["allowed"]
    give_to_nobody(allowed if which == "folder" else next(allowed.glob("*.key")))
    with pytest.raises(
        ValueError, match=rf"'curve_allowed_clients_dir' {which} .* belongs to another user"
    ):
        _start(curve_keys["server_secret"], allowed)


@pytest.mark.parametrize("which", ["folder", "file"])
def test_admitted_keys_other_users_can_write_are_refused(curve_keys, which):
    """Whoever can write the folder or a key in it can admit their own key."""
    allowed = curve_keys["allowed"]
    target = allowed if which == "folder" else allowed / curve_keys["alice_public"].name
    target.chmod(target.stat().st_mode | 0o002)
    with pytest.raises(
        ValueError,
        match=rf"'curve_allowed_clients_dir' {which} '{re.escape(str(target))}' is writable by "
        r"users other than its owner",
    ):
        _start(curve_keys["server_secret"], allowed)
