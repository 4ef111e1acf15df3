"""CURVE certificates for the ZeroMQ tests: the daemon's, an allowed client's, a stranger's."""

from __future__ import annotations

import shutil

import pytest
import zmq.auth


@pytest.fixture
def curve_keys(tmp_path):
    keys = tmp_path / "keys"
    allowed = tmp_path / "allowed"
    keys.mkdir()
    allowed.mkdir()
    server_public, server_secret = zmq.auth.create_certificates(keys, "server")
    alice_public, alice_secret = zmq.auth.create_certificates(keys, "alice")
    _, mallory_secret = zmq.auth.create_certificates(keys, "mallory")
    shutil.copy(alice_public, allowed)
    return {
        "server_public": server_public,
        "server_secret": server_secret,
        "allowed": allowed,
        "alice": alice_secret,
        "alice_public": alice_public,
        "mallory": mallory_secret,
    }
