"""``--realtime``: the session through a real LSL outlet into a spawned ``corticast serve``.

Exactly as on a rig: a :class:`~bench.rig.rig.SimulatedRig` pushes the session at its recorded
pace (its own timestamps, dropped samples and jitter included) under a unique source_id; a
``corticast serve`` process of its own, with the replay's configuration plus fresh ports, a
fresh control token and a dry-run bridge, reads it, and everything it publishes on ZeroMQ
(``prediction``, ``wave``, ``stim``) is recorded as a subscriber receives it. Once the daemon
is ready the replay arms it (the dry-run bridge then judges every request by every interlock
and sends nothing), so what is recorded is what a live run would have done. At the end the
daemon's ``/status`` and ``/metrics`` give the counts only it knows (skipped windows, policy
decisions that did not request), then it is stopped with SIGTERM, as systemd stops it.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections import deque
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path

import pylsl
from prometheus_client.parser import text_string_to_metric_families

from bench.data.session import Session
from bench.replay._audit_log import fresh_audit_log
from bench.replay._marker_player import MarkerPlayer
from bench.replay._models import ModelChoice
from bench.replay.record import ReplayRecord
from bench.rig.frame_source import SessionSource
from bench.rig.rig import SimulatedRig
from service.config import Settings
from service.core.python_module import python_module_command
from service.core.worker import BackgroundWorker
from service.zmq_api.client import Message, PredictionClient

_START_TIMEOUT_S = 60.0
"""Longest a spawned daemon may take to serve its API (imports, model load and warm-up)."""
_SUBSCRIBE_S = 0.3
"""ZeroMQ's slow joiner: a subscription needs a moment to reach the publisher."""
_DRAIN_S = 1.0
"""After the rig's last sample, stop once nothing has arrived for this long."""
_ARM_EVERY_S = 0.1
_STOP_TIMEOUT_S = 15.0


class DaemonError(RuntimeError):
    """The spawned daemon did not come up or died; the message ends with its log's tail."""


class RealtimeReplay:
    """Plays the session to a spawned daemon per model; see the module docstring.

    Parameters
    ----------
    settings
        The replay's configuration, as the daemon will load it (``config`` plus environment).
    config
        The TOML file the daemon is started with (None: defaults and environment).
    stride
        ``[scheduler] stride`` for the daemon; None keeps the configured one.
    log_dir
        Where each daemon's log goes, and its dry-run audit log unless ``audit_dir`` is given.
    progress
        Called with the number of samples the rig played since the previous call.
    """

    def __init__(
        self,
        settings: Settings,
        config: Path | None,
        *,
        stride: int | None,
        log_dir: Path,
        audit_dir: Path | None = None,
        progress: Callable[[int], None] = lambda _: None,
    ) -> None:
        self.settings = settings
        self.config = config
        self.stride = stride
        self.log_dir = Path(log_dir)
        self.audit_dir = self.log_dir if audit_dir is None else Path(audit_dir)
        self._progress = progress

    def run(self, session: Session, model: ModelChoice, record: ReplayRecord) -> None:
        """Play ``session`` through a daemon running ``model``; messages go to ``record``."""
        source_id = f"corticast-replay-{uuid.uuid4().hex[:12]}"
        rig = SimulatedRig(
            SessionSource(session, loop=False),
            name=self.settings.stream.name,
            source_id=source_id,
            chunk_size=self.settings.rig.chunk_size,
            wait_for_consumer=True,
        )
        environment = self._environment(model)
        markers = None
        if self.settings.ingest.stimulation_marker_streams:
            markers = MarkerPlayer(self.settings.ingest.stimulation_marker_streams, session, rig)
            environment["INGEST__STIMULATION_MARKER_STREAMS"] = json.dumps(
                [stream.as_config() for stream in markers.streams]
            )
        daemon = _SpawnedDaemon(environment, self.config, self.log_dir, model.name, source_id)
        with daemon, markers or nullcontext():
            client = PredictionClient(
                daemon.pub_endpoint, None, ("prediction", "wave", "stim"), receive_hwm=1_000_000
            )
            try:
                with _Receiver(client) as receiver:
                    time.sleep(_SUBSCRIBE_S)
                    with rig:
                        self._follow(receiver, rig, daemon, record)
                        rig.raise_if_failed()
                    receiver.raise_if_failed()
                record.counters["missed_messages"] = int(sum(client.missed.values()))
                record.counters["bridge_armed"] = int(daemon.armed)
                if markers is not None:
                    markers.raise_if_failed()
                    record.counters["marker_stream_trains_played"] = markers.played
            finally:
                client.close()
            daemon.collect(record)

    def _environment(self, model: ModelChoice) -> dict[str, str]:
        daemon_log = fresh_audit_log(self.audit_dir / f"audit-{model.name}.jsonl")
        values = {
            "MODEL__PATH": str(model.path),
            "BRIDGE__DRY_RUN": "true",
            "BRIDGE__AUDIT_LOG": str(daemon_log),
        }
        if model.step_path is not None:
            values["MODEL__STEP_PATH"] = str(model.step_path)
        if self.stride is not None:
            values["SCHEDULER__STRIDE"] = str(self.stride)
        return values

    def _follow(
        self,
        receiver: _Receiver,
        rig: SimulatedRig,
        daemon: _SpawnedDaemon,
        record: ReplayRecord,
    ) -> None:
        """Record what arrives, arm once ready, until the rig is done and the daemon quiet."""
        played = 0
        next_arm = 0.0
        while True:
            while receiver.inbox:
                message, received_at = receiver.inbox.popleft()
                record.on_message(
                    message.topic, message.header, message.array, received_at=received_at
                )
            if not daemon.armed and time.monotonic() >= next_arm:
                daemon.try_arm()
                next_arm = time.monotonic() + _ARM_EVERY_S
            self._progress(rig.samples_played - played)
            played = rig.samples_played
            daemon.check_alive()
            receiver.raise_if_failed()
            quiet = time.monotonic() - receiver.last_received
            if rig.finished.is_set() and quiet >= _DRAIN_S and not receiver.inbox:
                return
            time.sleep(0.02)


class _Receiver(BackgroundWorker):
    """Takes messages off the subscriber socket as they come and stamps their arrival, on a
    thread of its own: scoring them must not delay the stamps (or fill the socket's queue)."""

    def __init__(self, client: PredictionClient) -> None:
        super().__init__("corticast-replay-receiver")
        self._client = client
        self.inbox: deque[tuple[Message, float]] = deque()
        self.last_received = time.monotonic()

    def _work(self) -> None:
        while not self._stop_requested.is_set():
            message = self._client.receive(timeout_s=0.05)
            if message is not None:
                self.inbox.append((message, pylsl.local_clock()))
                self.last_received = time.monotonic()


class _SpawnedDaemon:
    """``corticast serve`` in its own process, on free loopback ports, with its own token."""

    def __init__(
        self,
        overrides: dict[str, str],
        config: Path | None,
        log_dir: Path,
        name: str,
        source_id: str,
    ) -> None:
        self.source_id = source_id
        self.pub_endpoint = f"tcp://127.0.0.1:{_free_port()}"
        self._token = secrets.token_urlsafe(24)
        port = _free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.armed = False
        values = {
            **overrides,
            "STREAM__SOURCE_ID": self.source_id,
            "ZMQ__PUB_ENDPOINT": self.pub_endpoint,
            "ZMQ__QUERY_ENDPOINT": f"tcp://127.0.0.1:{_free_port()}",
            "API__HOST": "127.0.0.1",
            "API__PORT": str(port),
            "API__TOKEN": self._token,
            "API__CONTROL": "true",
        }
        self._env = {**os.environ, **{f"CORTICAST_{k}": v for k, v in values.items()}}
        self._command = python_module_command("service.cli.app", "--log-level", "INFO", "serve")
        if config is not None:
            self._command += ["--config", str(config)]
        self.log_path = Path(log_dir) / f"daemon-{name}.log"
        self._process: subprocess.Popen | None = None

    def __enter__(self) -> _SpawnedDaemon:
        with self.log_path.open("wb") as log:
            self._process = subprocess.Popen(
                self._command, env=self._env, stdout=log, stderr=subprocess.STDOUT
            )
        try:
            self._wait_serving()
        except BaseException:
            self._stop()
            raise
        return self

    def __exit__(self, *_: object) -> None:
        self._stop()

    def check_alive(self) -> None:
        """Raise :class:`DaemonError` if the process has exited."""
        if self._process is not None and self._process.poll() is not None:
            raise DaemonError(
                f"the replay's daemon exited with status {self._process.returncode}"
                + self._log_tail()
            )

    def try_arm(self) -> None:
        """Arm once ready (``POST /control/arm`` answers 409 until then)."""
        try:
            self._http("POST", "/control/arm")
        except urllib.error.HTTPError as err:
            if err.code != 409:
                raise DaemonError(f"arming failed: HTTP {err.code} {err.read()!r}") from None
            return
        self.armed = True

    def collect(self, record: ReplayRecord) -> None:
        """The counts only the daemon knows: skipped and refused windows, superseded
        predictions, trains it read on other tools' marker streams (those that came late, and
        those it decided on their late artefact), and the policy's decisions by deciding
        check."""
        status = json.loads(self._http("GET", "/status"))
        scheduler = status["scheduler"]
        record.counters.update(
            predictions=int(scheduler["predictions"]),
            skipped_windows=int(scheduler["skipped_windows"]),
            refused_windows=int(scheduler["refused_windows"]),
            superseded_predictions=int(scheduler["wave_stage_superseded"]),
            held_values_not_scored=int(scheduler["held_values_not_scored"]),
        )
        record.dead_electrodes = status["dead_electrodes"]
        if read := status["stream"]["stimulation_marker_streams"]:
            record.counters["marker_stream_trains_read"] = sum(s["markers"] for s in read)
            # Read later than [ingest] stimulation_marker_latency_ms: the daemon forgot its
            # live scores for each (a loaded host pulling the replay's markers late).
            record.counters["marker_stream_late_markers"] = sum(s["late_markers"] for s in read)
            # Trains decided on frames a marker blanked only afterwards (a late one, or the
            # blank around the stream's opening): answers to another tool's train.
            record.counters["trains_decided_on_late_artefact"] = int(
                status["trains_decided_on_late_artefact"]
            )
        record.noisy_electrodes = status["noisy_electrodes"]
        metrics = self._http("GET", "/metrics").decode()
        record.policy_checks[0] = {
            sample.labels["check"]: int(sample.value)
            for family in text_string_to_metric_families(metrics)
            if family.name == "corticast_policy_decisions"
            for sample in family.samples
            if sample.name.endswith("_total")
        }

    def _wait_serving(self) -> None:
        deadline = time.monotonic() + _START_TIMEOUT_S
        while time.monotonic() < deadline:
            self.check_alive()
            try:
                self._http("GET", "/healthz")
                return
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.1)
        raise DaemonError(
            f"the replay's daemon did not serve {self.url} within {_START_TIMEOUT_S:g} s"
            + self._log_tail()
        )

    def _http(self, method: str, path: str) -> bytes:
        request = urllib.request.Request(
            self.url + path,
            method=method,
            headers={"Authorization": f"Bearer {self._token}"},
        )
        with urllib.request.urlopen(request, timeout=5.0) as response:
            return response.read()

    def _stop(self) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(_STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(_STOP_TIMEOUT_S)

    def _log_tail(self) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()[-15:]
        except OSError:
            return ""
        return f"; last lines of {self.log_path}:\n" + "\n".join(lines)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
