"""sd_notify from the daemon: what systemd's socket receives, and never a blocked caller."""

import socket
import tempfile
import threading
from pathlib import Path

from service.daemon import _systemd


def test_notify_sends_the_state_and_never_blocks_on_a_socket_nobody_reads(monkeypatch):
    with tempfile.TemporaryDirectory(prefix="cc-", dir="/tmp") as folder:  # short sun_path
        path = str(Path(folder) / "notify")
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sink:
            sink.bind(path)
            monkeypatch.setenv("NOTIFY_SOCKET", path)
            assert _systemd.notify("READY=1")
            assert sink.recv(64) == b"READY=1"

            # Nobody reads from here on: the queue fills and each call must still return.
            results: list[bool] = []
            done = threading.Event()

            def ping_until_refused() -> None:
                while len(results) < 10_000 and (not results or results[-1]):
                    results.append(_systemd.notify("WATCHDOG=1"))
                done.set()

            threading.Thread(target=ping_until_refused, daemon=True).start()
            assert done.wait(60), "notify() blocked on a full socket queue"
            assert results[-1] is False  # the lost ping is reported, not waited for


def test_notify_outside_systemd_does_nothing(monkeypatch):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert _systemd.notify("READY=1") is False
