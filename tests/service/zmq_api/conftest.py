"""CURVE certificates for the ZeroMQ tests: the daemon's, an allowed client's, a stranger's."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

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
    for secret in (server_secret, alice_secret, mallory_secret):
        os.chmod(secret, 0o600)  # zmq.auth leaves them to the umask; the daemon refuses them open
    shutil.copy(alice_public, allowed)
    return {
        "server_public": Path(server_public),
        "server_secret": Path(server_secret),
        "allowed": allowed,
        "alice": Path(alice_secret),
        "alice_public": Path(alice_public),
        "mallory": Path(mallory_secret),
    }
