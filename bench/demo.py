"""``corticast demo``: the whole closed loop on one machine, without hardware.

A simulated rig streams a scripted synthetic session over LSL (background activity, travelling
waves, and seizure-like discharges sweeping toward a target region), the firmware emulator
plays the stimulator over a real UDP socket (every train it delivers shows on the rig's frames
as a stimulation artefact), and the daemon runs the shipped model with its APIs, armed against
the emulator once it is ready. A one-line status each second; at the end a summary of what went
in, what came out, how fast, how accurate, and every stimulation decision.
"""

from __future__ import annotations

import secrets
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np

from bench.data.session import Session
from bench.data.synth import (
    Artefacts,
    PlaneWave,
    RadialWave,
    Seizure,
    SynthConfig,
    generate_session,
)
from bench.rig.frame_source import SessionSource
from bench.rig.rig import SimulatedRig
from bench.rig.stimulation_artefact import StimulationArtefact
from firmware_bridge import FirmwareEmulator
from service.api.served import ServedDaemon
from service.config import Settings
from service.core.scores import PSNR_SCALE
from service.daemon.state_error import DaemonStateError

SESSION_S = 60.0
"""The scripted session; the rig loops it for longer demos."""
TARGET = [[r, c] for r in range(8, 10) for c in range(17, 20)]
"""Electrodes the seizure's discharges sweep toward (right edge, mid rows): six, within the
interlocks' default of at most 8 stimulated channels."""
_READY_TIMEOUT_S = 30.0
REARM_AFTER_S = 1.0
"""How long the loop must have been ready again, after a fault disarmed it, before the demo's
operator re-arms: a stream that keeps stalling is not re-armed between stalls."""


@dataclass
class DemoSummary:
    """What the demo prints at the end (and returns, for tests)."""

    seconds: float
    frames_in: int
    predictions: int
    skipped: int
    wave_superseded: int
    latency_ms: dict[str, float | None]
    live_psnr_db: dict[str, list[float]]
    blend: dict[str, Any]
    decisions: dict[str, int]
    bridge_outcomes: dict[str, int]
    pulses_delivered: int
    blanked_frames: int
    block_reasons: dict[str, int]
    fault_disarms: dict[str, int]
    rearms: int


def demo_session(seed: int = 0) -> Session:
    """The scripted session: four seizure-like episodes heading for ``TARGET``, a plane wave
    and a radial wave among them, on 1/f background with realistic rig artefacts.

    The discharges reach 440 µV (spike-and-wave discharges on µECoG reach 0.5-1 mV) and start
    at 60 % of it. Their onset sweeps the array at 0.06 m/s, near the slow end of ictal
    discharges (0.05-1 m/s), and reaches the target about 140 ms after it enters the array.
    The wave stage sees it only 60-130 ms after onset (the band-pass's group delay, then the
    envelope and PGD thresholds), and what is left of the lead must outlast the age of the data
    a loaded host decides on (20-60 ms): at twice the speed a seizure arrived before it could
    be seen, and a host deciding on data over ~35 ms old asked for nothing. A fast replay at
    stride 4 asks 64 / 28 / 17 / 13 / 12 / 10 times at ``min_lead_ms`` 5 / 25 / 35 / 45 / 55 /
    65 (the lead left on data 0 / 20 / 30 / 40 / 50 / 60 ms older than the replay's), three of
    the four seizures still at 65. Four seizures a minute, a chance for a train each, stay
    within the 6 trains a minute ``[interlocks]`` allows by default."""
    seizure = partial(Seizure, duration_s=7.0, amplitude_uv=440.0, start_freq_hz=6.0,
                      speed_mps=0.06, onset_fraction=0.6)  # fmt: skip
    episodes = (
        seizure(start_s=8.0, end_freq_hz=3.0, direction_deg=0.0),
        PlaneWave(start_s=16.0, duration_s=5.0, amplitude_uv=60.0, frequency_hz=8.0,
                  speed_mps=0.3, direction_deg=120.0),
        seizure(start_s=22.0, end_freq_hz=2.5, direction_deg=10.0),
        RadialWave(start_s=30.0, duration_s=4.0, amplitude_uv=60.0, frequency_hz=10.0,
                   speed_mps=0.2),
        seizure(start_s=36.0, end_freq_hz=3.0, direction_deg=-10.0),
        seizure(start_s=50.0, end_freq_hz=2.5, direction_deg=5.0),
    )  # fmt: skip
    config = SynthConfig(
        duration_s=SESSION_S, seed=seed, episodes=episodes, artefacts=Artefacts.realistic()
    )
    return generate_session(config)


def demo_settings(base: Settings) -> Settings:
    """``base`` with what the demo needs: the bridge live against the emulator (not dry run),
    a stimulation target on the seizures' path, thresholds for its scripted session, and a
    fresh control token.

    The thresholds come from a fast replay of this session (written as XDF) at the demo's
    effective stride of 4, ``--sweep persistence_frames=2,4,8 --sweep min_lead_ms=5,25`` (the
    replay's data is about 6 ms old; 25 ms stands for a live wave stage deciding on data some
    26 ms old): at the default 8 frames it asks 25 times in 60 s (11 on older data), three of
    the four seizures with a train on older data; at 4 it asks 61 times (27), a train in every
    seizure, no false trigger, and the bridge's refractory interlock keeps the trains
    themselves few (6); at 2 it asks 90 times (41), yet one seizure gets no train on the
    younger data."""
    values = base.model_dump()
    values["bridge"] = {**values["bridge"], "dry_run": False, "audit_log": "demo-audit.jsonl"}
    values["policy"] = {
        **values["policy"], "target_electrodes": TARGET, "min_pgd": 0.5, "persistence_frames": 4,
    }  # fmt: skip
    values["waves"] = {**values["waves"], "low_hz": 2.0, "high_hz": 12.0}
    values["api"] = {**values["api"], "token": secrets.token_urlsafe(16)}
    return Settings(**values)


def demo_rig(settings: Settings, emulator: FirmwareEmulator) -> SimulatedRig:
    """The rig playing :func:`demo_session` in a loop, with the stimulation artefact of every
    train ``emulator`` delivers on its frames, as a real array records them."""
    source = SessionSource(demo_session(), loop=True)
    return SimulatedRig(
        source,
        name=settings.stream.name,
        source_id=settings.stream.source_id,
        chunk_size=settings.rig.chunk_size,
        artefact=StimulationArtefact(emulator, source.grid),
    )


def run_demo(base: Settings, seconds: float, echo: Callable[[str], None] = print) -> DemoSummary:
    """Run rig, emulator and daemon for ``seconds``; print status lines and the summary."""
    settings = demo_settings(base)
    echo("demo: generating the scripted session (seizure-like discharges included) ...")
    emulator = FirmwareEmulator(settings.bridge, settings.emulator)
    rig = demo_rig(settings, emulator)
    began = time.monotonic()
    began_wall = time.time()  # the audit log's clock: its earlier records are earlier runs'
    with rig, emulator, ServedDaemon(settings) as served:
        daemon = served.daemon
        echo(
            f"demo: API {served.url} (token {settings.api.token.get_secret_value()}), "
            f"metrics {served.url}/metrics, ZeroMQ {settings.zmq.pub_endpoint}, "
            f"audit log {settings.bridge.audit_log}"
        )
        operator = DemoOperator(daemon, echo)
        operator.arm_when_ready(_READY_TIMEOUT_S)
        try:
            while (elapsed := time.monotonic() - began) < seconds:
                time.sleep(min(1.0, seconds - elapsed))
                operator.tend()
                echo(_status_line(daemon, emulator, time.monotonic() - began))
        except KeyboardInterrupt:
            echo("")
        summary = _summary(daemon, emulator, operator, time.monotonic() - began, began_wall)
    for line in format_summary(summary):
        echo(line)
    return summary


class DemoOperator:
    """The demo's rig operator: arms once the loop is ready, and re-arms after a fault (only
    after a fault: a disarm through the API is a person's decision and stands).

    The daemon never re-arms itself: a fault (a stalled stream, a lost stimulator) disarms and
    it stays disarmed until an operator arms again. On a shared 2-core machine the simulated
    rig can stall past the staleness limit, and a demo that stayed disarmed after that would
    show no stimulation at all; so here the operator is part of the script. It re-arms once the
    loop has been ready again for ``rearm_after_s``, and every fault and re-arm is printed and
    counted in the summary.
    """

    def __init__(
        self, daemon, echo: Callable[[str], None], rearm_after_s: float = REARM_AFTER_S
    ) -> None:
        self.daemon, self.echo, self.rearm_after_s = daemon, echo, rearm_after_s
        self.fault_disarms: Counter[str] = Counter()
        self.rearms = 0
        self._armed_once = False
        self._fault_seen = False
        self._ready_since: float | None = None

    def arm_when_ready(self, timeout_s: float) -> bool:
        """Arm as soon as the loop is ready; False (and the reasons printed) after timeout_s."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.daemon.readiness().ready and self._try_arm():
                self.echo("demo: ready; ARMED against the firmware emulator")
                self._armed_once = True
                return True
            time.sleep(0.2)
        reasons = "; ".join(self.daemon.readiness().reasons)
        self.echo(f"demo: not ready within {timeout_s:g} s: {reasons}")
        return False

    def tend(self) -> None:
        """One look at the loop (call it about once a second): note a fault that disarmed it,
        and re-arm once the loop has been ready again for ``rearm_after_s``."""
        bridge = self.daemon.bridge
        state = bridge.status() if bridge is not None and self._armed_once else None
        if state is None or state.armed or state.last_disarm_cause != "fault":
            self._fault_seen, self._ready_since = False, None  # armed, or a person disarmed it
            return
        if not self._fault_seen:
            reason = state.last_disarm_reason or "unknown"
            self.fault_disarms[reason] += 1
            self._fault_seen = True
            self.echo(f"demo: stimulation DISARMED by a fault: {reason}")
        now = time.monotonic()
        if not self.daemon.readiness().ready:
            self._ready_since = None
        elif self._ready_since is None:
            self._ready_since = now
        elif now - self._ready_since >= self.rearm_after_s and self._try_arm():
            self.rearms += 1
            self._fault_seen, self._ready_since = False, None
            self.echo(
                f"demo: the loop was ready again for {self.rearm_after_s:g} s; the operator "
                "RE-ARMED it"
            )

    def _try_arm(self) -> bool:
        try:
            self.daemon.arm()
        except DaemonStateError as err:  # e.g. the model is unhealthy: try again later
            self.echo(f"demo: {err}")
            return False
        return True


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


def _summary(
    daemon, emulator: FirmwareEmulator, operator: DemoOperator, seconds: float, since: float
) -> DemoSummary:
    status = daemon.status()
    bridge = status["bridge"] or {}
    decisions = {
        sample.labels["check"]: int(sample.value)
        for metric in daemon.registry.collect()
        if metric.name == "corticast_policy_decisions"
        for sample in metric.samples
        if sample.name.endswith("_total")
    }
    reasons: Counter[str] = Counter()
    for record in _audit_records(daemon, since):  # blocked: in full, or counted in a summary
        if record.get("event") == "decision" and record.get("outcome") == "blocked":
            reasons[" + ".join(record["interlocks"])] += 1
        elif record.get("event") == "blocked_summary":
            for kind, count in record["by_interlocks"].items():
                reasons[kind.replace("+", " + ")] += count
    return DemoSummary(
        seconds=seconds,
        frames_in=status["stream"]["frames_written"],
        predictions=status["scheduler"]["predictions"],
        skipped=status["scheduler"]["skipped_windows"],
        wave_superseded=status["scheduler"]["wave_stage_superseded"],
        latency_ms=status["latency_ms"],
        live_psnr_db=status["live_psnr_db"],
        blend=status["blend"],
        decisions=decisions,
        bridge_outcomes=dict(bridge.get("outcomes", {})),
        pulses_delivered=len(emulator.pulses),
        blanked_frames=status["stream"]["blanked_frames"],
        block_reasons=dict(reasons),
        fault_disarms=dict(operator.fault_disarms),
        rearms=operator.rearms,
    )


def _audit_records(daemon, since: float) -> list[dict]:
    """This run's records: the log (``demo-audit.jsonl`` where the demo runs) keeps earlier
    runs' too, from which the bridge rebuilds refractory and budgets as on a rig."""
    from firmware_bridge import read_audit_log

    path = daemon.settings.bridge.audit_log
    records = read_audit_log(path) if path.exists() else []
    return [record for record in records if record.get("time", since) >= since]


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
        "| predictions the wave stage had no time for (a newer one was already there) | "
        f"{summary.wave_superseded} |",
    ]
    latency = summary.latency_ms
    lines.append(
        f"| inference p50 / p99 | {_ms(latency['inference_p50'])} / "
        f"{_ms(latency['inference_p99'])} |"
    )
    lines.append(
        f"| prediction age p50 / p99 | {_ms(latency['age_p50'])} / {_ms(latency['age_p99'])} |"
    )
    lines.append(
        "| data age at the policy's decisions p50 / p99 (the lead window counts what is left) | "
        f"{_ms(latency['decision_age_p50'])} / {_ms(latency['decision_age_p99'])} |"
    )
    model = summary.live_psnr_db.get("model") or []
    served = summary.live_psnr_db.get("served") or []
    floor = summary.live_psnr_db.get("persistence") or []
    if model and served and floor:
        for horizon in (1, 4, 8, 16):
            lines.append(
                f"| live PSNR at frame {horizon}: model / served / persistence "
                f"({PSNR_SCALE}) | "
                f"{model[horizon - 1]:.2f} / {served[horizon - 1]:.2f} / "
                f"{floor[horizon - 1]:.2f} dB |"
            )
    blend = summary.blend
    weights = " ".join(f"{w:.2f}" for w in blend["weights"])
    fitted = (
        "off: the model is served"
        if not blend["enabled"]
        else f"fitted on {blend['windows']} scored predictions"
        + ("" if blend["fitted"] else f", fewer than {blend['min_windows']}: not moved yet")
    )
    lines.append(f"| blend weight of the model per frame, 1 to 16 ({fitted}) | {weights} |")
    if blend["ar"]:
        ar_weights = " ".join(f"{w:.2f}" for w in blend["ar_weights"])
        lines.append(f"| blend weight of the live AR baseline per frame, 1 to 16 | {ar_weights} |")
    decisions = ", ".join(f"{k} {v}" for k, v in sorted(summary.decisions.items())) or "none"
    lines.append(f"| policy decisions (by deciding check; ok = request) | {decisions} |")
    lead_blocked = summary.decisions.get("lead_time", 0)
    if lead_blocked and not summary.decisions.get("ok"):
        lines.append(
            f"| why no request | {lead_blocked} decisions found the wave reaching the target too "
            "soon, or already there, once the data's age was counted (decided on data "
            f"{_ms(latency['decision_age_p50'])} old at p50): a busier or slower host decides "
            "later |"
        )
    outcomes = ", ".join(f"{k} {v}" for k, v in sorted(summary.bridge_outcomes.items()))
    lines.append(f"| bridge outcomes of requests | {outcomes or 'none'} |")
    lines.append(f"| pulse trains delivered by the emulator | {summary.pulses_delivered} |")
    lines.append(
        "| frames blanked as stimulation artefact (each train and [loop] blank_after_train_ms "
        f"after it) | {summary.blanked_frames} |"
    )
    for reason, count in sorted(summary.block_reasons.items(), key=lambda kv: -kv[1]):
        lines.append(f"| requests blocked by interlock: {reason} | {count} |")
    faults = ", ".join(f"{k} ({v})" for k, v in sorted(summary.fault_disarms.items()))
    lines.append(f"| faults that disarmed stimulation | {faults or 'none'} |")
    lines.append(f"| re-armed by the demo's operator after a fault | {summary.rearms} |")
    return lines


def _ms(value: float | None) -> str:
    return "  n/a" if value is None or not np.isfinite(value) else f"{value:.2f} ms"
