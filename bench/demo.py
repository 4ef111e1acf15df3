"""``corticast demo``: the whole closed loop on one machine, without hardware.

A simulated rig streams a scripted synthetic session over LSL (background activity, travelling
waves, and seizure-like discharges sweeping toward a target region), the firmware emulator
plays the stimulator over a real UDP socket, and the daemon runs the shipped model with its
APIs, armed against the emulator once it is ready. A one-line status each second; at the end a
summary of what went in, what came out, how fast, how accurate, and every stimulation decision.
"""

from __future__ import annotations

import secrets
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from bench.frame_source import SessionSource
from bench.rig import SimulatedRig
from bench.session import Session
from bench.synth import Artefacts, PlaneWave, RadialWave, Seizure, SynthConfig, generate_session
from firmware_bridge import FirmwareEmulator
from service.config import Settings
from service.served_daemon import ServedDaemon

SESSION_S = 60.0
"""The scripted session; the rig loops it for longer demos."""
TARGET = [[r, c] for r in range(8, 10) for c in range(17, 20)]
"""Electrodes the seizure's discharges sweep toward (right edge, mid rows): six, within the
interlocks' default of at most 8 stimulated channels."""
_READY_TIMEOUT_S = 30.0


@dataclass
class DemoSummary:
    """What the demo prints at the end (and returns, for tests)."""

    seconds: float
    frames_in: int
    predictions: int
    skipped: int
    latency_ms: dict[str, float | None]
    live_psnr_db: dict[str, list[float]]
    decisions: dict[str, int]
    bridge_outcomes: dict[str, int]
    pulses_delivered: int
    block_reasons: dict[str, int]


def demo_session(seed: int = 0) -> Session:
    """The scripted session: two seizure-like episodes heading for ``TARGET``, a plane wave
    and a radial wave in between, on 1/f background with realistic rig artefacts."""
    episodes = (
        PlaneWave(start_s=3.0, duration_s=6.0, amplitude_uv=60.0, frequency_hz=8.0,
                  speed_mps=0.3, direction_deg=120.0),
        Seizure(start_s=12.0, duration_s=14.0, amplitude_uv=220.0, start_freq_hz=6.0,
                end_freq_hz=3.0, speed_mps=0.12, direction_deg=0.0, onset_fraction=0.3),
        RadialWave(start_s=30.0, duration_s=5.0, amplitude_uv=60.0, frequency_hz=10.0,
                   speed_mps=0.2),
        Seizure(start_s=40.0, duration_s=16.0, amplitude_uv=220.0, start_freq_hz=5.0,
                end_freq_hz=2.5, speed_mps=0.1, direction_deg=10.0, onset_fraction=0.3),
    )  # fmt: skip
    config = SynthConfig(
        duration_s=SESSION_S, seed=seed, episodes=episodes, artefacts=Artefacts.realistic()
    )
    return generate_session(config)


def demo_settings(base: Settings) -> Settings:
    """``base`` with what the demo needs: the bridge live against the emulator (not dry run),
    a stimulation target on the seizure's path, and a fresh control token."""
    values = base.model_dump()
    values["bridge"] = {**values["bridge"], "dry_run": False, "audit_log": "demo-audit.jsonl"}
    values["policy"] = {**values["policy"], "target_electrodes": TARGET, "min_pgd": 0.5}
    values["waves"] = {**values["waves"], "low_hz": 2.0, "high_hz": 12.0}
    values["api"] = {**values["api"], "token": secrets.token_urlsafe(16)}
    return Settings(**values)


def run_demo(base: Settings, seconds: float, echo: Callable[[str], None] = print) -> DemoSummary:
    """Run rig, emulator and daemon for ``seconds``; print status lines and the summary."""
    settings = demo_settings(base)
    echo("demo: generating the scripted session (seizure-like discharges included) ...")
    rig = SimulatedRig(
        SessionSource(demo_session(), loop=True),
        name=settings.stream.name,
        source_id=settings.stream.source_id,
        chunk_size=settings.rig.chunk_size,
    )
    emulator = FirmwareEmulator(settings.bridge, settings.emulator)
    began = time.monotonic()
    with rig, emulator, ServedDaemon(settings) as served:
        daemon = served.daemon
        echo(
            f"demo: API {served.url} (token {settings.api.token.get_secret_value()}), "
            f"metrics {served.url}/metrics, ZeroMQ {settings.zmq.pub_endpoint}, "
            f"audit log {settings.bridge.audit_log}"
        )
        _arm_when_ready(daemon, echo)
        try:
            while (elapsed := time.monotonic() - began) < seconds:
                time.sleep(min(1.0, seconds - elapsed))
                echo(_status_line(daemon, emulator, time.monotonic() - began))
        except KeyboardInterrupt:
            echo("")
        summary = _summary(daemon, emulator, time.monotonic() - began)
    for line in format_summary(summary):
        echo(line)
    return summary


def _arm_when_ready(daemon, echo: Callable[[str], None]) -> None:
    deadline = time.monotonic() + _READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if daemon.readiness().ready:
            daemon.arm()
            echo("demo: ready; ARMED against the firmware emulator")
            return
        time.sleep(0.2)
    echo("demo: not ready within 30 s: " + "; ".join(daemon.readiness().reasons))


def _status_line(daemon, emulator: FirmwareEmulator, elapsed: float) -> str:
    status = daemon.status()
    latency = status["latency_ms"]
    psnr = status["live_psnr_db"]
    model = psnr.get("model") or []
    floor = psnr.get("persistence") or []
    accuracy = (
        f"PSNR@16 {model[-1]:5.1f} vs {floor[-1]:5.1f} dB" if model and floor else "PSNR  (scoring)"
    )
    bridge = status["bridge"] or {}
    return (
        f"{elapsed:5.1f}s  frames {status['stream']['frames_written']:6d}  "
        f"pred {status['scheduler']['predictions']:6d}  "
        f"skip {status['scheduler']['skipped_windows']:5d}  "
        f"age p50 {_ms(latency['age_p50'])}  {accuracy}  "
        f"{'ARMED' if status['armed'] else 'disarmed':8s}  "
        f"stim sent {bridge.get('outcomes', {}).get('sent', 0):3d}  "
        f"pulses {len(emulator.pulses):3d}"
    )


def _summary(daemon, emulator: FirmwareEmulator, seconds: float) -> DemoSummary:
    status = daemon.status()
    bridge = status["bridge"] or {}
    decisions = {
        sample.labels["check"]: int(sample.value)
        for metric in daemon.registry.collect()
        if metric.name == "corticast_policy_decisions"
        for sample in metric.samples
        if sample.name.endswith("_total")
    }
    reasons = Counter(
        " + ".join(record["interlocks"])
        for record in _audit_records(daemon)
        if record.get("event") == "decision" and record.get("outcome") == "blocked"
    )
    return DemoSummary(
        seconds=seconds,
        frames_in=status["stream"]["frames_written"],
        predictions=status["scheduler"]["predictions"],
        skipped=status["scheduler"]["skipped_windows"],
        latency_ms=status["latency_ms"],
        live_psnr_db=status["live_psnr_db"],
        decisions=decisions,
        bridge_outcomes=dict(bridge.get("outcomes", {})),
        pulses_delivered=len(emulator.pulses),
        block_reasons=dict(reasons),
    )


def _audit_records(daemon) -> list[dict]:
    from firmware_bridge import read_audit_log

    path = daemon.settings.bridge.audit_log
    return list(read_audit_log(path)) if path.exists() else []


def format_summary(summary: DemoSummary) -> list[str]:
    """The end-of-demo table, as markdown lines."""
    lines = [
        "",
        f"## corticast demo: {summary.seconds:.0f} s",
        "",
        "| figure | value |",
        "|---|---|",
        f"| frames in | {summary.frames_in} |",
        f"| predictions out | {summary.predictions} |",
        f"| windows skipped (a newer one was already there) | {summary.skipped} |",
    ]
    latency = summary.latency_ms
    lines.append(
        f"| inference p50 / p99 | {_ms(latency['inference_p50'])} / "
        f"{_ms(latency['inference_p99'])} |"
    )
    lines.append(
        f"| prediction age p50 / p99 | {_ms(latency['age_p50'])} / {_ms(latency['age_p99'])} |"
    )
    model = summary.live_psnr_db.get("model") or []
    floor = summary.live_psnr_db.get("persistence") or []
    if model and floor:
        for horizon in (1, 4, 8, 16):
            lines.append(
                f"| live PSNR at frame {horizon}: model vs persistence | "
                f"{model[horizon - 1]:.2f} vs {floor[horizon - 1]:.2f} dB |"
            )
    decisions = ", ".join(f"{k} {v}" for k, v in sorted(summary.decisions.items())) or "none"
    lines.append(f"| policy decisions (by deciding check; ok = request) | {decisions} |")
    outcomes = ", ".join(f"{k} {v}" for k, v in sorted(summary.bridge_outcomes.items()))
    lines.append(f"| bridge outcomes of requests | {outcomes or 'none'} |")
    lines.append(f"| pulse trains delivered by the emulator | {summary.pulses_delivered} |")
    for reason, count in sorted(summary.block_reasons.items(), key=lambda kv: -kv[1]):
        lines.append(f"| requests blocked by interlock: {reason} | {count} |")
    return lines


def _ms(value: float | None) -> str:
    return "  n/a" if value is None or not np.isfinite(value) else f"{value:.2f} ms"
