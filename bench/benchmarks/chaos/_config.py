"""What the chaos soak runs with: its files, ports and the limits chosen for it.

Limits (written out in full in the configuration files, where the auditor reads them):

- host interlocks: refractory 2 s (the default), **2 trains a minute** and a **day budget of
  0.8 per soak minute** (at least 3; 8 in a 10-minute soak), so that both budgets bite within
  the soak and across daemon restarts (under these faults the loop delivers about 1.5 trains
  a minute), and a charge-density limit of **20 µC/cm²/phase**, below the 25 ceiling, so that
  the configured limit is the one that binds; data older than 50 ms and more than 2 missing
  frames block (the defaults);
- the device (emulator) keeps its wider defaults (1.5 s, 10 a minute, 1000 a day): a backstop
  that does not hide a host that broke its own rules from the auditor; its command deadline
  is **60 ms**, below the host's 100 ms ACK deadline, so that the relay's longer holds make it
  refuse late commands;
- the audit log rotates at 64 KiB (the smallest size allowed), so restarts rebuild refractory
  and budgets across rotated files, and keeps every rotated file, so the auditor reads them all;
- the policy and wave band are the demo's (``bench.demo.demo_settings``): the scripted session
  asks for stimulation on its four seizures a minute.
"""

from __future__ import annotations

import json
import secrets
import shutil
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.demo import demo_settings
from firmware_bridge import audit_files
from firmware_bridge.config import BridgeSettings, EmulatorSettings, InterlockSettings
from service.config import Settings
from service.core.grid import NOMINAL_RATE_HZ
from service.inference.settings import SHIPPED_WEIGHTS
from service.ingest.settings import IngestSettings

MINUTE_BUDGET = 2
DAY_BUDGET_PER_MINUTE = 0.8
DENSITY_LIMIT_UC_CM2 = 20.0
COMMAND_DEADLINE_MS = 60
AUDIT_LOG_BYTES = 65_536


@dataclass(frozen=True)
class SoakPlan:
    """Files, ports and limits of one soak; :meth:`write` puts the files in ``workdir``."""

    workdir: Path
    seed: int
    minutes: float
    source_id: str
    token: str
    api_port: int
    pub_port: int
    query_port: int
    relay_port: int
    device_port: int
    pulser: bool = False
    """Whether another tool announces trains on a marker stream the daemon reads
    (``bench.benchmarks.chaos._pulser``)."""

    @classmethod
    def create(cls, workdir: Path, *, seed: int, minutes: float, pulser: bool = False) -> SoakPlan:
        return cls(
            workdir=workdir.resolve(),
            seed=seed,
            minutes=minutes,
            pulser=pulser,
            source_id=f"corticast-chaos-{secrets.token_hex(4)}",
            token=secrets.token_urlsafe(16),
            api_port=_free_port(socket.SOCK_STREAM),
            pub_port=_free_port(socket.SOCK_STREAM),
            query_port=_free_port(socket.SOCK_STREAM),
            relay_port=_free_port(socket.SOCK_DGRAM),
            device_port=_free_port(socket.SOCK_DGRAM),
        )

    @property
    def day_budget(self) -> int:
        return max(3, round(DAY_BUDGET_PER_MINUTE * self.minutes))

    # ----------------------------------------------------------------- paths
    @property
    def daemon_config(self) -> Path:
        return self.workdir / "daemon.toml"

    @property
    def emulator_config(self) -> Path:
        return self.workdir / "emulator.toml"

    @property
    def session(self) -> Path:
        return self.workdir / "session.xdf"

    @property
    def audit_log(self) -> Path:
        return self.workdir / "audit.jsonl"

    @property
    def pulse_log(self) -> Path:
        return self.workdir / "pulses.jsonl"

    @property
    def marker_log(self) -> Path:
        """The other tool's markers, as it pushed them."""
        return self.workdir / "markers.jsonl"

    @property
    def pulser_stream(self) -> str:
        """The other tool's marker stream (its name and source id)."""
        return f"{self.source_id}-pulser"

    @property
    def relay_stats(self) -> Path:
        return self.workdir / "relay-stats.json"

    @property
    def models(self) -> tuple[tuple[Path, Path], tuple[Path, Path]]:
        """Two copies of the shipped model, (window graph, step graph) each, in one directory
        (a swap loads only from the model directory): the daemon starts on the first, and
        swaps go back and forth."""
        models = self.workdir / "models"
        return (
            (models / "default.onnx", models / "default.step.onnx"),
            (models / "copy.onnx", models / "copy.step.onnx"),
        )

    def log(self, name: str) -> Path:
        return self.workdir / "logs" / f"{name}.log"

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    # ----------------------------------------------------------------- files
    def check_unused(self) -> None:
        """Refuse a workdir holding an earlier soak's logs: the auditor reads the audit,
        pulse and marker logs whole, so that soak's pulses would be counted as this one's
        (and the bridge would restore its trains). ValueError naming them."""
        logs = [*audit_files(self.audit_log), self.pulse_log, self.marker_log]
        earlier = [path for path in logs if path.exists()]
        if earlier:
            raise ValueError(
                f"--workdir {str(self.workdir)!r} holds an earlier soak's logs "
                f"({', '.join(path.name for path in earlier)}), which this soak's audit would "
                "count as its own: choose a new directory, or move them away"
            )

    def write(self) -> None:
        """Write both configuration files and the model copy (the session is written apart)."""
        (self.workdir / "logs").mkdir(parents=True, exist_ok=True)
        shipped = (SHIPPED_WEIGHTS / "default.onnx", SHIPPED_WEIGHTS / "default.step.onnx")
        for copies in self.models:
            for source, copied in zip(shipped, copies, strict=True):
                copied.parent.mkdir(exist_ok=True)
                shutil.copyfile(source, copied)
        self.daemon_config.write_text(_toml(self._daemon_sections()), encoding="utf-8")
        self.emulator_config.write_text(_toml(self._emulator_sections()), encoding="utf-8")

    def _bridge(self, port: int) -> dict[str, Any]:
        return BridgeSettings(
            transport="udp",
            host="127.0.0.1",
            port=port,
            dry_run=False,
            audit_log=self.audit_log,
            audit_log_max_bytes=AUDIT_LOG_BYTES,
            audit_log_keep_files=10_000,
        ).model_dump(mode="json")

    def _daemon_sections(self) -> dict[str, Any]:
        demo = demo_settings(Settings())
        interlocks = InterlockSettings(
            max_trains_per_minute=MINUTE_BUDGET,
            max_trains_per_day=self.day_budget,
            charge_density_limit_uc_cm2=DENSITY_LIMIT_UC_CM2,
        )
        # Written out in full: the auditor reads the blank and the decisions' span here.
        ingest = IngestSettings(
            stimulation_marker_streams=(self.pulser_stream,) if self.pulser else ()
        )
        return {
            "stream": {"source_id": self.source_id, "sample_rate_hz": NOMINAL_RATE_HZ},
            "ingest": {
                "stimulation_marker_streams": [
                    stream.as_config() for stream in ingest.stimulation_marker_streams
                ],
                "stimulation_marker_blank_ms": ingest.stimulation_marker_blank_ms,
            },
            "rig": {"source": str(self.session), "loop": True},
            "model": {"path": str(self.models[0][0]), "step_path": str(self.models[0][1])},
            "policy": demo.policy.model_dump(mode="json"),
            "waves": demo.waves.model_dump(mode="json"),
            "bridge": self._bridge(self.relay_port),
            "interlocks": interlocks.model_dump(mode="json"),
            "zmq": {
                "pub_endpoint": f"tcp://127.0.0.1:{self.pub_port}",
                "query_endpoint": f"tcp://127.0.0.1:{self.query_port}",
            },
            "api": {"host": "127.0.0.1", "port": self.api_port},
        }

    def _emulator_sections(self) -> dict[str, Any]:
        emulator = EmulatorSettings(
            stimulate_deadline_ms=COMMAND_DEADLINE_MS, pulse_log=self.pulse_log
        )
        return {
            "bridge": self._bridge(self.device_port),
            "emulator": emulator.model_dump(mode="json"),
        }


def _free_port(kind: socket.SocketKind) -> int:
    with socket.socket(socket.AF_INET, kind) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _toml(sections: dict[str, Any]) -> str:
    """TOML text of ``{section: {key: value}}`` (nested dicts become sub-tables; None is left
    out, as TOML has no null and every such key defaults to None)."""
    lines: list[str] = []

    def table(name: str, values: dict[str, Any]) -> None:
        lines.append(f"[{name}]")
        nested = {k: v for k, v in values.items() if isinstance(v, dict)}
        for key, value in values.items():
            if value is not None and key not in nested:
                lines.append(f"{key} = {_value(value)}")
        lines.append("")
        for key, value in nested.items():
            table(f"{name}.{key}", value)

    for name, values in sections.items():
        table(name, values)
    return "\n".join(lines)


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    raise TypeError(f"no TOML form for {type(value).__name__}: {value!r}")
