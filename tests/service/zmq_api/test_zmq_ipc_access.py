"""Who may subscribe on the PUB socket's unix socket file under the unit's ``UMask=0077``.

A real publisher binds ``ipc:///...`` with that umask; subscribers are other processes running
as ``nobody`` (the researchers' accounts), connecting with the system's Python and reading
libzmq's greeting. Needs root (to run them as another user)."""

from __future__ import annotations

import grp
import os
import pwd
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from pydantic import ValidationError

from service.zmq_api.publisher import ZmqPublisher
from service.zmq_api.settings import ZmqSettings

ANY_PORT = {"pub_endpoint": "tcp://127.0.0.1:*", "query_endpoint": "tcp://127.0.0.1:*"}
GROUP = "users"  # a group nobody is not in
ZMTP_SIGNATURE_START = "ff"  # the first byte libzmq sends on every connection

_CONNECT = """
import socket, sys
client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
try:
    client.connect(sys.argv[1])
except PermissionError:
    print("refused")
else:
    client.settimeout(5)
    print(client.recv(1).hex())
"""


def _has_accounts(*groups: str) -> bool:
    """Whether the user ``nobody`` and these groups exist here (Debian's names)."""
    try:
        pwd.getpwnam("nobody")
        for group in groups:
            grp.getgrnam(group)
    except KeyError:
        return False
    return True


pytestmark = pytest.mark.skipif(
    os.geteuid() != 0
    or not os.path.exists("/usr/bin/python3")
    or not _has_accounts("nogroup", GROUP),
    reason="needs root (to connect as another user), /usr/bin/python3, the user nobody and "
    f"the groups nogroup and {GROUP}",
)


@contextmanager
def _bound(**access) -> Iterator[Path]:
    """A publisher bound at a socket file in a folder anyone may enter (as ``/run/corticast``,
    ``RuntimeDirectoryMode=`` 0755), under the unit's umask."""
    with tempfile.TemporaryDirectory(prefix="cc-ipc-") as folder:
        os.chmod(folder, 0o755)
        path = Path(folder) / "pub.sock"
        settings = ZmqSettings(**ANY_PORT, pub_ipc_endpoint=f"ipc://{path}", **access)
        umask = os.umask(0o077)
        try:
            publisher = ZmqPublisher(settings).start()
        finally:
            os.umask(umask)
        try:
            yield path
        finally:
            publisher.stop()


def _connect_as_nobody(path: Path, extra_groups: list[str]) -> str:
    """``refused``, or the first byte the socket sent, as a subscriber in another process."""
    done = subprocess.run(
        ["/usr/bin/python3", "-c", _CONNECT, str(path)],
        user="nobody", group="nogroup", extra_groups=extra_groups,
        capture_output=True, text=True, timeout=30, cwd="/",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_by_default_the_socket_file_is_the_daemons_alone_under_the_units_umask():
    with _bound() as path:
        assert stat.S_IMODE(path.stat().st_mode) == 0o700
        assert _connect_as_nobody(path, [GROUP]) == "refused"


def test_a_configured_group_and_mode_let_that_groups_subscribers_connect_and_no_one_else():
    with _bound(pub_ipc_mode=0o660, pub_ipc_group=GROUP) as path:
        assert stat.S_IMODE(path.stat().st_mode) == 0o660
        assert path.stat().st_gid == grp.getgrnam(GROUP).gr_gid
        assert _connect_as_nobody(path, [GROUP]) == ZMTP_SIGNATURE_START
        assert _connect_as_nobody(path, []) == "refused"


def test_an_unknown_group_is_named_at_start_and_nothing_stays_bound(tmp_path):
    path = tmp_path / "pub.sock"
    settings = ZmqSettings(
        **ANY_PORT, pub_ipc_endpoint=f"ipc://{path}", pub_ipc_group="no-such-group-corticast",
        pub_ipc_mode=0o660,
    )  # fmt: skip
    with pytest.raises(OSError, match=r"'pub_ipc_group' 'no-such-group-corticast' .* no such"):
        ZmqPublisher(settings).start()
    with ZmqPublisher(settings.model_copy(update={"pub_ipc_group": None})) as publisher:
        assert publisher.ipc_endpoint == f"ipc://{path}"  # the failed start released it


@pytest.mark.parametrize(
    ("access", "message"),
    [
        ({"pub_ipc_mode": 0o660}, r"need 'pub_ipc_endpoint' = 'ipc:///PATH'.* got None"),
        (
            {"pub_ipc_group": GROUP, "pub_ipc_endpoint": "ipc://@corticast"},
            r"an abstract 'ipc://@name' has none",
        ),
        ({"pub_ipc_mode": 0o1777, "pub_ipc_endpoint": "ipc:///run/c/pub.sock"}, "less than or"),
        (  # the group could never connect: connecting needs write permission
            {"pub_ipc_group": GROUP, "pub_ipc_endpoint": "ipc:///run/c/pub.sock"},
            r"set 'pub_ipc_mode' with the group's write bit \(0o660\), got unset",
        ),
        (
            {"pub_ipc_group": GROUP, "pub_ipc_mode": 0o640, "pub_ipc_endpoint": "ipc:///r/p.sock"},
            r"the group's write bit \(0o660\), got 0o640",
        ),
    ],
)
def test_access_settings_without_a_socket_file_or_out_of_range_are_refused(access, message):
    with pytest.raises(ValidationError, match=message):
        ZmqSettings(**ANY_PORT, **access)
