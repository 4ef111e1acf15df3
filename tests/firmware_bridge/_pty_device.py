"""A stimulator on the far end of a pseudo-terminal: a serial port that can be unplugged.

The host opens :attr:`PtyDevice.path` (a symlink to the pty's slave, as udev names a USB
serial adapter); a thread feeds what arrives on the master to a firmware emulator's
:meth:`~firmware_bridge.emulator.FirmwareEmulator.process` and writes its replies back.
:meth:`unplug` closes the master, as pulling the cable does; :meth:`plug` opens a new pty and
points the same path at it, as the adapter coming back under the same name does.
"""

from __future__ import annotations

import os
import select
import threading
import tty
from pathlib import Path

from firmware_bridge.emulator import FirmwareEmulator


def pty_at(path: Path) -> int:
    """A new pty whose slave ``path`` (a symlink) names, as udev names a USB serial adapter;
    its master, the far end."""
    master, slave = os.openpty()
    tty.setraw(slave)  # bytes through unchanged, as a serial line carries them
    path.unlink(missing_ok=True)
    path.symlink_to(os.ttyname(slave))
    os.close(slave)  # the other side opens it by path
    return master


class PtyDevice:
    """Serves ``emulator`` on a pty reachable at ``path`` (plugged in at construction)."""

    def __init__(self, emulator: FirmwareEmulator, path: Path) -> None:
        self.emulator = emulator
        self.path = path
        self._master: int | None = None
        self._connection = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.plug()

    def plug(self) -> None:
        """A new pty at :attr:`path`: a new byte stream for the emulator's decoder."""
        master = pty_at(self.path)
        self._master, self._connection = master, self._connection + 1
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._serve, args=(master, self._connection, self._stop), daemon=True
        )
        self._thread.start()

    def unplug(self) -> None:
        """Close the master: the host's port fails with an I/O error."""
        master, thread, self._master, self._thread = self._master, self._thread, None, None
        if master is None:
            return
        self._stop.set()
        thread.join(5)
        os.close(master)

    def _serve(self, master: int, connection: int, stop: threading.Event) -> None:
        while not stop.is_set():
            ready, _, _ = select.select([master], [], [], 0.01)
            if not ready:
                self.emulator.check_watchdog()
                continue
            try:
                data = os.read(master, 4096)
            except OSError:  # no slave open (between the host's close and reopen)
                stop.wait(0.01)
                continue
            for reply in self.emulator.process(data, connection=connection):
                os.write(master, reply)

    def close(self) -> None:
        self.unplug()
        self.path.unlink(missing_ok=True)
