"""Every real part of the loop on loopback, for the daemon's integration tests.

The rig is a separate process (`corticast rig`, as on a rig), the emulator answers over a real
UDP socket, the daemon serves its API with a real uvicorn server and publishes on real ZeroMQ
sockets, and tells a real unix datagram socket what it tells systemd. Ports are chosen free at
fixture time.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import httpx

from firmware_bridge import FirmwareEmulator, read_audit_log
from service.api.served import ServedDaemon
from service.config import Settings
from service.daemon.daemon import Daemon, DaemonStateError
from tests.service._fault_injection import Call

TOKEN = "test-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
T = TypeVar("T")


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def loop_settings(tmp_path: Path, window: Path, step: Path, source_id: str, **sections) -> Settings:
    """Settings for one test: unique stream, ports and audit log; bridge live (not dry run).

    Window mode, so that every prediction is the model applied to exactly the window it
    claims, which the tests check (stream mode's state has seen up to 31 frames; the demo's
    test runs the default, stream mode, through the whole loop)."""
    values = {
        "stream": {"source_id": source_id, "resolve_timeout_s": 2.0},
        "model": {"path": window, "step_path": step, "threads": 1, "mode": "window"},
        "bridge": {
            "dry_run": False,
            "port": free_port(socket.SOCK_DGRAM),
            "audit_log": tmp_path / "audit.jsonl",
        },
        "zmq": {"pub_endpoint": "tcp://127.0.0.1:*", "query_endpoint": "tcp://127.0.0.1:*"},
        "api": {"port": free_port(), "token": TOKEN},
    }
    for name, section in sections.items():
        values[name] = {**values.get(name, {}), **section}
    return Settings(**values)


class Rig:
    """`corticast rig` in its own process, playing a synthetic session in a loop; with
    ``drop_probability``, each sample is lost on the way with that chance (missing frames)."""

    def __init__(self, source_id: str, seed: int = 3, drop_probability: float = 0.0) -> None:
        self.source_id, self.seed = source_id, seed
        self.drop_probability = drop_probability
        self.process: subprocess.Popen | None = None

    def start(self) -> Rig:
        env = {**os.environ, "CORTICAST_STREAM__SOURCE_ID": self.source_id}
        command = [sys.executable, "-m", "service.cli.app", "rig", "--source", "synthetic"]
        command += ["--seed", str(self.seed), "--duration", "20"]
        command += ["--drop-probability", str(self.drop_probability)]
        self.process = subprocess.Popen(
            command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        return self

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait(10)
            self.process = None


class Emulator:
    """The firmware emulator (its own thread) over the bridge's real transport."""

    def __init__(self, settings: Settings) -> None:
        self.device = FirmwareEmulator(settings.bridge, settings.emulator)

    def start(self) -> Emulator:
        self.device.start()  # bound before the bridge's first heartbeat
        return self

    def stop(self) -> None:
        self.device.stop()


class NotifySocket:
    """systemd's end of sd_notify: a unix datagram socket, read as it arrives (an unread
    queue would block the sender, as systemd never lets it), counting each message."""

    def __init__(self) -> None:
        self._dir = tempfile.mkdtemp(prefix="cc-notify-", dir="/tmp")  # short: sun_path limit
        self.path = str(Path(self._dir) / "notify")
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind(self.path)
        self._sock.settimeout(0.1)
        self._messages: list[str] = []
        self._closing = threading.Event()
        self._reader = threading.Thread(target=self._read, name="test-notify", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while not self._closing.is_set():
            try:
                self._messages.append(self._sock.recv(4096).decode())
            except TimeoutError:
                continue

    def count(self, message: str) -> int:
        return self._messages.count(message)

    def close(self) -> None:
        self._closing.set()
        self._reader.join(10)
        self._sock.close()
        shutil.rmtree(self._dir, ignore_errors=True)


def wait_until(condition, timeout: float, what: str, explain=None) -> None:
    """Poll ``condition`` until true; on timeout, fail naming ``what`` and, if given, what
    ``explain()`` says of the state then (e.g. why the bridge disarmed)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            said = "" if explain is None else f" ({explain()})"
            raise AssertionError(f"timed out after {timeout} s waiting for {what}{said}")
        time.sleep(0.05)


_NOT_RETRIED = ("cannot arm: the daemon is stopping", "cannot arm: the model is ")
"""Refusals no wait undoes: the daemon stopping, the model judged unhealthy."""


def _passing(refusal: str) -> bool:
    """Whether an arm was refused for a state a loaded host passes through: not ready (the
    stream stale for a moment), a fault found while arming, the loop too busy to answer."""
    return refusal.startswith("cannot arm:") and not refusal.startswith(_NOT_RETRIED)


def arm_when_ready(http: httpx.Client, timeout: float = 30) -> dict:
    """Arm as an operator would: again while refused for a passing state (:func:`_passing`),
    until ``timeout``. The arm judges readiness anew, so one sent once after a ready seen
    earlier may be refused; any other refusal fails at once, naming it. Returns the arm's
    answer."""
    deadline = time.monotonic() + timeout
    while (answer := http.post("/control/arm", headers=AUTH)).status_code != 200:
        detail = str(answer.json().get("detail", "")) if answer.status_code == 409 else ""
        if not _passing(detail) or time.monotonic() > deadline:
            raise AssertionError(f"arm refused: {answer.status_code} {answer.text}")
        time.sleep(0.1)
    return answer.json()


LOAD_FAULTS = (
    "data stale or stream lost while armed",
    "no reply to",
    "device reports itself disarmed",
)
"""Faults a loaded test machine can cause by itself (the rig, the emulator or the heartbeat
starved of CPU for longer than the staleness limit, the ACK deadline or the device's
watchdog): each disarms, as it must."""


def arm_device_when_ready(http: httpx.Client, emulator: Emulator, tries: int = 3) -> dict:
    """:func:`arm_when_ready`, and the device seen armed too. Armed again where a load fault
    (:data:`LOAD_FAULTS`) disarmed the loop before the device's arming was seen, up to
    ``tries`` times; any other disarm fails, naming its reason. Returns the arm's answer."""
    reason = ""
    for _ in range(tries):
        answer = arm_when_ready(http)
        wait_until(
            lambda: emulator.device.armed or not http.get("/status").json()["armed"],
            30,
            "the device to be armed, or a disarm",
        )
        if emulator.device.armed:
            return answer
        reason = http.get("/status").json()["bridge"]["last_disarm_reason"] or ""
        assert any(fault in reason for fault in LOAD_FAULTS), reason
    raise AssertionError(f"disarmed by load faults {tries} times; last: {reason}")


def disarm_found_armed(
    http: httpx.Client, emulator: Emulator, audit_log: Path, tries: int = 3
) -> dict:
    """``POST /control/disarm`` of an armed loop; its answer. Where a load fault
    (:data:`LOAD_FAULTS`) disarmed the loop first (the first disarm the audit log records
    after the last arm), it is armed again (:func:`arm_device_when_ready`) and disarmed again,
    up to ``tries`` times; any other disarm fails, naming its reason."""
    reason = ""
    for _ in range(tries):
        answer = http.post("/control/disarm", headers=AUTH).json()
        if answer["was_armed"]:
            return answer
        records = read_audit_log(audit_log)
        last_arm = max(k for k, record in enumerate(records) if record["event"] == "arm")
        first = next(r for r in records[last_arm:] if r["event"] == "disarm")
        reason = first["reason"]
        assert any(fault in reason for fault in LOAD_FAULTS), reason
        arm_device_when_ready(http, emulator)
    raise AssertionError(f"disarmed by load faults {tries} times before a disarm; last: {reason}")


def arm_daemon_when_ready(daemon: Daemon, timeout: float = 30) -> None:
    """:func:`arm_when_ready` for a daemon in this process, without its HTTP API."""
    retried_while_passing(daemon.arm, timeout)


def retried_while_passing(attempt: Callable[[], T], timeout: float = 30) -> T:
    """``attempt()``, again while it raises :class:`DaemonStateError` for a passing state
    (:func:`_passing`), until ``timeout``; its answer."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return attempt()
        except DaemonStateError as refused:
            if not _passing(str(refused)) or time.monotonic() > deadline:
                raise
        time.sleep(0.1)


def arm_call_reaching(daemon: Daemon, reached: threading.Event, timeout: float = 30) -> Call:
    """``daemon.arm()`` on a thread of its own (:class:`Call`) once it reaches the bridge, which
    the test's stand-in for ``bridge.arm`` tells by setting ``reached``; started again while it
    is refused for a passing state before getting there (:func:`retried_while_passing`). A
    ready seen before is no promise: the arm judges readiness anew, and on a loaded host the
    stream may be stale for a moment just then."""

    def attempt() -> Call:
        arm = Call(daemon.arm, "arm")
        while not (reached.wait(0.05) or arm.done.is_set()):
            pass
        if reached.is_set():
            return arm
        if arm.error is None:
            raise AssertionError("the arm returned without reaching the bridge")
        raise arm.error

    return retried_while_passing(attempt, timeout)


@contextmanager
def served_beside_rig(
    settings: Settings, source_id: str
) -> Iterator[tuple[ServedDaemon, httpx.Client, Emulator]]:
    """A rig and the firmware emulator; the daemon served over HTTP (not waited for)."""
    rig = Rig(source_id).start()
    emulator = Emulator(settings).start()
    try:
        with ServedDaemon(settings) as served, httpx.Client(base_url=served.url) as http:
            yield served, http, emulator
    finally:
        rig.kill()
        emulator.stop()


@contextmanager
def armed_and_served(
    settings: Settings, source_id: str
) -> Iterator[tuple[ServedDaemon, httpx.Client, Emulator]]:
    """:func:`served_beside_rig`, ready, armed by an operator's request
    (:func:`arm_device_when_ready`), the device armed too."""
    with served_beside_rig(settings, source_id) as (served, http, emulator):
        wait_until(lambda: http.get("/readyz").status_code == 200, 30, "ready")
        arm_device_when_ready(http, emulator)
        yield served, http, emulator
