"""The chaos soak's independent auditor: every train the device delivered, against the rules.

It reads the limits from the configuration files itself and judges from records alone — the
emulator's pulse log (what the device delivered, on its clock) and the host's audit log (what
the host admitted, transmitted and armed) — never by asking the daemon. Every clock here is
CLOCK_MONOTONIC of one machine (the device's ``time.monotonic``, the host's interlock clock,
and ``pylsl.local_clock`` behind the rig's timestamps), so readings from all three compare.

Rules, per delivered train (a *pulse*):

- ``unlinked``: it must match a ``transmit`` record of the host (same wire sequence, admitted
  no later than delivered; the latest such), whose record says which data it was decided on
  (``health.input_timestamp``). A pulse that cannot be linked is a violation.
- ``delivered_twice``: no transmitted train is delivered twice (a duplicated datagram).
- ``delivered_withdrawn``: no train the host withdrew is delivered. A withdrawn train has a
  ``transmit`` record and then a ``blocked`` decision carrying its sequence number: its data
  went stale during that record's fsync, or a disarm came first, and the host says its
  STIMULATE never left, so it counts against no limit (below) and must reach no electrode.
- ``parameters``: channels, amplitude, phase width, frequency, duration and area within the
  host's bounds, two phases within one period, and exactly the train the host transmitted.
- ``charge_density``: amplitude x phase width / area, computed here, <= 25 µC/cm²/phase and
  <= the configured limit.
- ``armed_session``: transmitted while the host was armed (after an ``arm`` record, before the
  next ``disarm``, ``arm_failed``, ``close`` or ``start``; a ``disarm`` marked
  ``overtaken_by_arm`` took effect before the ``arm`` recorded just ahead of it, so it ends
  nothing), carrying the session that the
  device had opened for that arm (the ``arm`` record's session, learnt from the device's ACK);
  and, when the soak's operator ended that arm over HTTP, delivered no later than the lag
  allowance after the disarm had been answered.
- ``delivery_lag``: delivered at most the lag allowance after the host admitted it.
- ``data_age``: delivered at most ``max_sample_age_s`` + the lag allowance after the rig's
  timestamp of the newest frame the decision rests on. The host admits data at most
  ``max_sample_age_s`` old; the device executes a STIMULATE at most its deadline late.
- ``refractory``, ``minute_budget``, ``day_budget``: on the device's clock, across every daemon
  lifetime, with the arrival jitter allowed (see *Tolerance*).
- ``host_refractory``, ``host_minute_budget``, ``host_day_budget``: the host's own admission
  clocks (every ``transmit`` record not withdrawn, every lifetime), exactly as the interlocks
  define them.
- ``records``: the logs themselves are readable.
- ``artefact`` (with another tool announcing trains, :class:`AnnouncedTrains`): no train
  decided on a frame an announced train's artefact is on (from its marker to
  ``[ingest] stimulation_marker_blank_ms`` after), where the marker was pushed at least
  :data:`ANNOUNCE_MARGIN_S` before the host admitted the train (the daemon cannot know of a
  marker still on its way). A decision rests on at least the ``[waves] past_frames`` frames up
  to its newest (``health.input_timestamp``); those are judged.

Tolerance. A train is admitted at host clock *a* and delivered at device clock *d* with
``a <= d <= a + L``, L the *lag allowance* = the device's command deadline + the link's own
allowance (the relay holds no datagram longer than its bound, plus its forwarding time): the
device refuses a STIMULATE later than its deadline, measured against the least-delayed recent
frame, whose own delay the link bounds. So delivery times may be closer together than
admission times by at most L: pulses must be at least ``refractory_s - L`` apart, and any
window shorter than 60 s - L (1 day - L) may hold at most the per-minute (per-day) budget
(a window ``(d - 60 + L, d]`` of deliveries holds only trains admitted in ``(d - 60, d]``).
The lag itself is checked (``delivery_lag``), so the tolerance is never assumed silently.
"""

from __future__ import annotations

import math
import tomllib
from bisect import bisect_right
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DENSITY_CEILING_UC_CM2 = 25.0
"""The clinical limit, the auditor's own copy: no configuration can raise it."""
MINUTE_S = 60.0
DAY_S = 86_400.0
ELECTRODES = 360

_TRAIN_FIELDS = (
    "channels",
    "amplitude_ua",
    "phase_width_us",
    "frequency_hz",
    "train_duration_ms",
    "electrode_area_cm2",
)
_ENDS_ARM = ("disarm", "arm_failed", "close", "start")
ANNOUNCE_MARGIN_S = 0.5
"""How long before an admission a marker must have been pushed to count against it: the
daemon's inlet reads a marker on loopback within milliseconds; the rest is for a loaded host."""


@dataclass(frozen=True)
class AuditRules:
    """The limits the auditor holds pulses to, read from the configuration files."""

    refractory_s: float
    max_trains_per_minute: int
    max_trains_per_day: int
    charge_density_limit_uc_cm2: float
    electrode_area_cm2: float
    min_amplitude_ua: int
    max_amplitude_ua: int
    min_phase_width_us: int
    max_phase_width_us: int
    min_frequency_hz: int
    max_frequency_hz: int
    min_train_duration_ms: int
    max_train_duration_ms: int
    max_channels: int
    max_sample_age_s: float
    command_deadline_s: float
    link_allowance_s: float

    @property
    def lag_s(self) -> float:
        """Longest a train may take from the host's admission to the device's delivery."""
        return self.command_deadline_s + self.link_allowance_s

    @property
    def density_limit_uc_cm2(self) -> float:
        return min(self.charge_density_limit_uc_cm2, DENSITY_CEILING_UC_CM2)

    @classmethod
    def from_config(
        cls, daemon_config: Path, emulator_config: Path, *, link_allowance_s: float
    ) -> AuditRules:
        """The host's ``[interlocks]`` from the daemon's file, the device's command deadline
        from the emulator's ``[emulator]``; every key must be written out in the file.

        Raises
        ------
        KeyError
            If a key the rules need is not in the file (naming it).
        """
        interlocks = _section(daemon_config, "interlocks")
        emulator = _section(emulator_config, "emulator")
        names = [
            f
            for f in cls.__dataclass_fields__
            if f not in ("command_deadline_s", "link_allowance_s")
        ]
        values = {name: _key(interlocks, name, daemon_config, "interlocks") for name in names}
        deadline_ms = _key(emulator, "stimulate_deadline_ms", emulator_config, "emulator")
        return cls(
            **values, command_deadline_s=deadline_ms / 1000, link_allowance_s=link_allowance_s
        )


@dataclass(frozen=True)
class AnnouncedTrains:
    """Trains another tool announced (their markers' stamps), and what the daemon blanks for
    each, read from the daemon's configuration."""

    times: tuple[float, ...]
    blank_s: float
    decision_span_s: float
    """The span of frames every decision rests on at least: ``[waves] past_frames`` frames."""

    @classmethod
    def from_config(cls, daemon_config: Path) -> AnnouncedTrains:
        """No train yet, and what the daemon blanks for each: its ``[ingest]
        stimulation_marker_blank_ms``, ``[waves] past_frames`` and ``[stream] sample_rate_hz``,
        each written out in the file (the markers themselves:
        ``bench.benchmarks.chaos._records.read_marker_times``).

        Raises
        ------
        KeyError
            If a key is not in the file (naming it).
        """
        ingest = _section(daemon_config, "ingest")
        waves = _section(daemon_config, "waves")
        stream = _section(daemon_config, "stream")
        blank_ms = _key(ingest, "stimulation_marker_blank_ms", daemon_config, "ingest")
        past = _key(waves, "past_frames", daemon_config, "waves")
        rate = _key(stream, "sample_rate_hz", daemon_config, "stream")
        return cls((), blank_ms / 1000, (past - 1) / rate)


@dataclass(frozen=True)
class Violation:
    """One broken rule, with the records that show it."""

    rule: str
    message: str
    evidence: dict[str, Any]

    def describe(self) -> str:
        lines = [f"VIOLATION [{self.rule}] {self.message}"]
        lines += [f"  {key}: {value}" for key, value in self.evidence.items()]
        return "\n".join(lines)


@dataclass
class AuditResult:
    """What one audit found, and the figures the report prints."""

    violations: list[Violation] = field(default_factory=list)
    pulses: int = 0
    linked: int = 0
    transmits: int = 0
    withdrawn: int = 0
    """Of the transmits, those the host withdrew before sending."""
    max_data_age_s: float | None = None
    max_lag_s: float | None = None
    min_pulse_spacing_s: float | None = None
    max_pulses_per_minute: int = 0
    announced_trains: int | None = None
    """Trains another tool announced (None: no tool did)."""


@dataclass
class _Transmit:
    lifetime: int
    sequence: int
    clock: float
    request: dict[str, Any]
    health: dict[str, Any]
    armed: bool
    session: int | None
    ended_by: dict[str, Any] | None = None
    delivered: bool = False
    withdrawn: bool = False


def audit(
    rules: AuditRules,
    pulses: Iterable[Mapping[str, Any]],
    host_records: Iterable[Mapping[str, Any]],
    operator_disarms: Mapping[str, float] | None = None,
    announced: AnnouncedTrains | None = None,
) -> AuditResult:
    """Judge every pulse (and every host admission) against ``rules``.

    Parameters
    ----------
    pulses
        The emulator's ``train`` records, in any order.
    host_records
        The audit log's records, oldest first, across rotated files and daemon lifetimes.
    operator_disarms
        The soak's own disarms over HTTP: a token that its ``reason`` carried (and the host's
        ``disarm`` record therefore contains) -> device clock when the answer came back.
    announced
        Another tool's trains, where one announced them on a marker stream the daemon reads.
    """
    result = AuditResult(announced_trains=None if announced is None else len(announced.times))
    transmits = _host_transmits(host_records)
    result.transmits = len(transmits)
    result.withdrawn = sum(t.withdrawn for t in transmits)
    _check_host_admissions(rules, transmits, result)
    by_sequence: dict[int, list[_Transmit]] = {}
    for transmit in transmits:
        by_sequence.setdefault(transmit.sequence, []).append(transmit)
    delivered = sorted(pulses, key=lambda p: p["clock"])
    result.pulses = len(delivered)
    for index, pulse in enumerate(delivered):
        _check_parameters(rules, pulse, result)
        transmit = _link(pulse, by_sequence, result)
        if transmit is not None:
            _check_linked(rules, pulse, transmit, operator_disarms or {}, result)
            if announced is not None:
                _check_artefact(announced, pulse, transmit, result)
        _check_device_timing(rules, delivered, index, result)
    return result


# --------------------------------------------------------------------- host records
def _host_transmits(records: Iterable[Mapping[str, Any]]) -> list[_Transmit]:
    """Every transmit record, with the host's arm state and session where it stands, and
    whether a later decision of its lifetime withdrew it."""
    transmits: list[_Transmit] = []
    lifetime, armed, session = 0, False, None
    in_arm: list[_Transmit] = []
    in_lifetime: dict[Any, _Transmit] = {}  # by sequence
    for record in records:
        event = record.get("event")
        if _withdraws(record) and record.get("sequence") in in_lifetime:
            in_lifetime[record["sequence"]].withdrawn = True
        if event == "disarm" and record.get("overtaken_by_arm"):
            continue  # it took effect before the arm recorded ahead of it
        if event in _ENDS_ARM:
            for transmit in in_arm:
                transmit.ended_by = dict(record)
            in_arm, armed, session = [], False, None
            if event == "start":
                lifetime += 1
                in_lifetime = {}
        elif event == "arm":
            armed, session = True, record.get("session")
        elif event == "transmit":
            transmit = _Transmit(
                lifetime=lifetime,
                sequence=record.get("sequence"),
                clock=record.get("clock"),
                request=record.get("request") or {},
                health=record.get("health") or {},
                armed=armed,
                session=session,
            )
            transmits.append(transmit)
            in_lifetime[transmit.sequence] = transmit
            if armed:
                in_arm.append(transmit)
    return transmits


def _withdraws(record: Mapping[str, Any]) -> bool:
    """A decision that withdraws the train its transmit record stands for: blocked, with the
    sequence number the train had been given."""
    return (
        record.get("event") == "decision"
        and record.get("outcome") == "blocked"
        and record.get("sequence") is not None
    )


def _check_host_admissions(
    rules: AuditRules, transmits: list[_Transmit], result: AuditResult
) -> None:
    clocks = sorted(t.clock for t in transmits if _finite(t.clock) and not t.withdrawn)
    for i, clock in enumerate(clocks):
        if i and clock - clocks[i - 1] < rules.refractory_s:
            _violate(
                result,
                "host_refractory",
                f"the host admitted trains {clock - clocks[i - 1]:.3f} s apart; refractory "
                f"period is {rules.refractory_s:g} s",
                {"admitted_at": [clocks[i - 1], clock]},
            )
        for rule, length, limit in (
            ("host_minute_budget", MINUTE_S, rules.max_trains_per_minute),
            ("host_day_budget", DAY_S, rules.max_trains_per_day),
        ):
            window = clocks[: i + 1][-(limit + 1) :]
            if len(window) > limit and window[0] > clock - length:
                _violate(
                    result,
                    rule,
                    f"the host admitted {len(window)} trains in {clock - window[0]:.3f} s "
                    f"(limit {limit} in {length:g} s)",
                    {"admitted_at": window},
                )


# --------------------------------------------------------------------- per pulse
def _check_parameters(rules: AuditRules, pulse: Mapping[str, Any], result: AuditResult) -> None:
    problems = []
    channels = pulse.get("channels") or []
    if not (
        1 <= len(channels) <= rules.max_channels
        and len(set(channels)) == len(channels)
        and all(isinstance(c, int) and 0 <= c < ELECTRODES for c in channels)
    ):
        problems.append(f"channels {channels} (1 to {rules.max_channels} distinct, 0..359)")
    for name, low, high in (
        ("amplitude_ua", rules.min_amplitude_ua, rules.max_amplitude_ua),
        ("phase_width_us", rules.min_phase_width_us, rules.max_phase_width_us),
        ("frequency_hz", rules.min_frequency_hz, rules.max_frequency_hz),
        ("train_duration_ms", rules.min_train_duration_ms, rules.max_train_duration_ms),
    ):
        value = pulse.get(name)
        if not (_finite(value) and low <= value <= high):
            problems.append(f"{name} {value!r} outside [{low}, {high}]")
    width, frequency = pulse.get("phase_width_us"), pulse.get("frequency_hz")
    if _finite(width) and _finite(frequency) and not 2 * width * frequency < 1_000_000:
        problems.append(f"two phases of {width} µs do not fit one period at {frequency} Hz")
    area = pulse.get("electrode_area_cm2")
    if not (_finite(area) and 0 < area <= rules.electrode_area_cm2):
        problems.append(f"electrode area {area!r} outside (0, {rules.electrode_area_cm2:g}] cm²")
    if problems:
        _violate(result, "parameters", "; ".join(problems), _pulse_evidence(pulse))
        return
    density = pulse["amplitude_ua"] * pulse["phase_width_us"] * 1e-6 / area
    if not density <= rules.density_limit_uc_cm2:
        _violate(
            result,
            "charge_density",
            f"{density:.4g} µC/cm²/phase > limit {rules.density_limit_uc_cm2:g}",
            _pulse_evidence(pulse),
        )


def _link(
    pulse: Mapping[str, Any], by_sequence: dict[int, list[_Transmit]], result: AuditResult
) -> _Transmit | None:
    candidates = [
        t
        for t in by_sequence.get(pulse.get("sequence"), [])
        if _finite(t.clock) and t.clock <= pulse["clock"]
    ]
    if not candidates:
        _violate(
            result,
            "unlinked",
            "no transmit record of the host has this wire sequence before the delivery",
            _pulse_evidence(pulse),
        )
        return None
    transmit = max(candidates, key=lambda t: t.clock)
    if transmit.delivered:
        _violate(
            result,
            "delivered_twice",
            "a train the host transmitted once was delivered again",
            _pulse_evidence(pulse) | _transmit_evidence(transmit),
        )
        return None
    transmit.delivered = True
    if transmit.withdrawn:
        _violate(
            result,
            "delivered_withdrawn",
            "the host withdrew this train before sending it (nothing sent, counted against no "
            "limit), yet the device delivered it",
            _pulse_evidence(pulse) | _transmit_evidence(transmit),
        )
        return None
    if not _finite(transmit.health.get("input_timestamp")):
        _violate(
            result,
            "unlinked",
            "the transmit record does not say which data the train was decided on "
            "(health.input_timestamp)",
            _pulse_evidence(pulse) | _transmit_evidence(transmit),
        )
        return None
    result.linked += 1
    return transmit


def _check_linked(
    rules: AuditRules,
    pulse: Mapping[str, Any],
    transmit: _Transmit,
    operator_disarms: Mapping[str, float],
    result: AuditResult,
) -> None:
    evidence = _pulse_evidence(pulse) | _transmit_evidence(transmit)
    sent = {name: transmit.request.get(name) for name in _TRAIN_FIELDS}
    got = {name: pulse.get(name) for name in _TRAIN_FIELDS}
    if sent != got:
        _violate(result, "parameters", f"delivered {got}, transmitted {sent}", evidence)
    if not transmit.armed:
        _violate(result, "armed_session", "transmitted while the host was disarmed", evidence)
    elif not transmit.session or pulse.get("session") != transmit.session:
        _violate(
            result,
            "armed_session",
            f"carries session {pulse.get('session')!r}, the host's arm opened {transmit.session!r}",
            evidence,
        )
    disarmed_at = _operator_disarm_clock(transmit.ended_by, operator_disarms)
    if disarmed_at is not None and pulse["clock"] > disarmed_at + rules.lag_s:
        _violate(
            result,
            "armed_session",
            f"delivered {pulse['clock'] - disarmed_at:.3f} s after the operator's disarm was "
            f"answered (allowed {rules.lag_s:g} s)",
            evidence | {"disarm": transmit.ended_by},
        )
    lag = pulse["clock"] - transmit.clock
    result.max_lag_s = _max(result.max_lag_s, lag)
    if lag > rules.lag_s:
        _violate(
            result,
            "delivery_lag",
            f"delivered {lag:.3f} s after the host admitted it (allowed {rules.lag_s:g} s: "
            f"deadline {rules.command_deadline_s:g} s + link {rules.link_allowance_s:g} s)",
            evidence,
        )
    age = pulse["clock"] - transmit.health["input_timestamp"]
    result.max_data_age_s = _max(result.max_data_age_s, age)
    bound = rules.max_sample_age_s + rules.lag_s
    if age > bound:
        _violate(
            result,
            "data_age",
            f"delivered {age:.3f} s after the newest frame it was decided on was measured "
            f"(allowed {bound:g} s: max_sample_age_s {rules.max_sample_age_s:g} + lag "
            f"{rules.lag_s:g})",
            evidence,
        )


def _check_artefact(
    announced: AnnouncedTrains,
    pulse: Mapping[str, Any],
    transmit: _Transmit,
    result: AuditResult,
) -> None:
    newest = transmit.health["input_timestamp"]
    oldest = newest - announced.decision_span_s
    for marker in announced.times:
        if marker > transmit.clock - ANNOUNCE_MARGIN_S:
            continue  # perhaps still on its way to the daemon
        if marker <= newest and marker + announced.blank_s >= oldest:
            _violate(
                result,
                "artefact",
                f"decided on frames stamped {oldest:.3f}-{newest:.3f} s; another tool "
                f"announced a train at {marker:.3f} s ({transmit.clock - marker:.3f} s before "
                f"the admission), whose artefact the daemon blanks for {announced.blank_s:g} s",
                _pulse_evidence(pulse) | _transmit_evidence(transmit) | {"marker": marker},
            )


def _check_device_timing(
    rules: AuditRules, delivered: list[Mapping[str, Any]], index: int, result: AuditResult
) -> None:
    clock = delivered[index]["clock"]
    clocks = [p["clock"] for p in delivered[: index + 1]]
    if index:
        spacing = clock - clocks[-2]
        result.min_pulse_spacing_s = (
            spacing
            if result.min_pulse_spacing_s is None
            else min(result.min_pulse_spacing_s, spacing)
        )
        if spacing < rules.refractory_s - rules.lag_s:
            _violate(
                result,
                "refractory",
                f"delivered {spacing:.3f} s after the previous train (refractory "
                f"{rules.refractory_s:g} s, arrival jitter allowed {rules.lag_s:g} s)",
                {
                    "previous": _pulse_evidence(delivered[index - 1]),
                    "this": _pulse_evidence(delivered[index]),
                },
            )
    result.max_pulses_per_minute = max(
        result.max_pulses_per_minute, len(clocks) - bisect_right(clocks, clock - MINUTE_S)
    )
    for rule, length, limit in (
        ("minute_budget", MINUTE_S, rules.max_trains_per_minute),
        ("day_budget", DAY_S, rules.max_trains_per_day),
    ):
        in_window = clocks[bisect_right(clocks, clock - (length - rules.lag_s)) :]
        if len(in_window) > limit:
            _violate(
                result,
                rule,
                f"{len(in_window)} trains delivered within {clock - in_window[0]:.3f} s "
                f"(limit {limit} per {length:g} s, less {rules.lag_s:g} s of arrival jitter)",
                {
                    "delivered_at": in_window,
                    "sequences": [
                        p.get("sequence") for p in delivered[index + 1 - len(in_window) : index + 1]
                    ],
                },
            )


# --------------------------------------------------------------------- helpers
def _operator_disarm_clock(
    ended_by: Mapping[str, Any] | None, operator_disarms: Mapping[str, float]
) -> float | None:
    if ended_by is None or ended_by.get("event") != "disarm":
        return None
    reason = str(ended_by.get("reason", ""))
    answered = [clock for token, clock in operator_disarms.items() if token in reason]
    return min(answered) if answered else None


def _violate(result: AuditResult, rule: str, message: str, evidence: dict[str, Any]) -> None:
    result.violations.append(Violation(rule, message, evidence))


def _pulse_evidence(pulse: Mapping[str, Any]) -> dict[str, Any]:
    return {"pulse": dict(pulse)}


def _transmit_evidence(transmit: _Transmit) -> dict[str, Any]:
    return {
        "transmit": {
            "daemon_bridge_lifetime": transmit.lifetime,
            "sequence": transmit.sequence,
            "admitted_at": transmit.clock,
            "health": transmit.health,
            "host_armed": transmit.armed,
            "host_session": transmit.session,
        }
    }


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _max(current: float | None, value: float) -> float:
    return value if current is None else max(current, value)


def _section(path: Path, name: str) -> dict[str, Any]:
    with open(path, "rb") as file:
        document = tomllib.load(file)
    if name not in document:
        raise KeyError(f"{str(path)!r} has no [{name}] section; the auditor reads its limits there")
    return document[name]


def _key(section: Mapping[str, Any], key: str, path: Path, name: str) -> Any:
    if key not in section:
        raise KeyError(f"{str(path)!r} must set [{name}] {key}: the auditor reads it from the file")
    return section[key]
