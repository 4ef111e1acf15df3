"""The chaos soak's report: markdown tables of what was injected, delivered, refused, broken."""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from bench.benchmarks.chaos._auditor import AuditResult, AuditRules
from bench.benchmarks.chaos._faults import Lifetime

_BLOCKED = "blocked"


@dataclass
class SoakSummary:
    """Everything the report shows, gathered when the soak has ended."""

    seed: int
    minutes: float
    seconds_run: float
    rules: AuditRules
    faults: Counter[tuple[str, str]]
    relay: Mapping[str, Any]
    audit: AuditResult
    host_records: list[dict[str, Any]]
    device_disarms: Counter[str]
    lifetimes: list[Lifetime]
    pulses: list[dict[str, Any]]
    problems: list[str] = field(default_factory=list)
    ended_because: str = "time is up"

    @property
    def passed(self) -> bool:
        return not self.audit.violations and self.audit.pulses > 0


def format_report(summary: SoakSummary) -> list[str]:
    """The report, as markdown lines."""
    rules = summary.rules
    lines = [
        "",
        f"## corticast chaos soak: {summary.seconds_run / 60:.1f} min of faults, "
        f"seed {summary.seed} ({summary.ended_because})",
        "",
        f"Host limits: refractory {rules.refractory_s:g} s, {rules.max_trains_per_minute} "
        f"trains/min, {rules.max_trains_per_day} trains/day, charge density <= "
        f"{rules.density_limit_uc_cm2:g} µC/cm²/phase, data age <= {rules.max_sample_age_s:g} "
        f"s. Device command deadline {rules.command_deadline_s * 1e3:g} ms; link allowance "
        f"{rules.link_allowance_s * 1e3:g} ms; lag allowance L = {rules.lag_s * 1e3:g} ms.",
    ]
    lines += _faults_table(summary.faults)
    lines += _relay_table(summary.relay)
    lines += _pulses_table(summary)
    lines += _requests_tables(summary.host_records)
    lines += _violations_table(summary.audit)
    lines += _disarms_table(summary.host_records, summary.device_disarms)
    lines += _lifetimes_table(summary)
    if summary.problems:
        lines += ["", "### Problems seen (not interlock violations)", ""]
        lines += [f"- {problem}" for problem in summary.problems]
    verdict = "PASSED" if summary.passed else "FAILED"
    why = "" if summary.audit.pulses else " (no pulse was delivered: nothing was audited)"
    lines += ["", f"**{verdict}**: {len(summary.audit.violations)} violation(s){why}", ""]
    return lines


def _faults_table(faults: Counter[tuple[str, str]]) -> list[str]:
    lines = [
        "",
        "### Faults injected, and the operator's arms",
        "",
        "| fault | outcome | count |",
        "|---|---|---:|",
    ]
    for (kind, outcome), count in sorted(faults.items()):
        lines.append(f"| {kind} | {outcome} | {count} |")
    return lines


def _relay_table(relay: Mapping[str, Any]) -> list[str]:
    faults: Mapping[str, int] = relay.get("faults", {})
    forwarded: Mapping[str, int] = relay.get("forwarded", {})
    lines = [
        "",
        "### Link faults (UDP relay between bridge and emulator)",
        "",
        "| fault | datagrams to the device | datagrams to the host |",
        "|---|---:|---:|",
    ]
    for kind in sorted({key.split()[0] for key in faults}):
        to_device, to_host = (faults.get(f"{kind} {d}", 0) for d in ("to_device", "to_host"))
        lines.append(f"| {kind} | {to_device} | {to_host} |")
    lines.append(
        f"| (forwarded) | {forwarded.get('to_device', 0)} | {forwarded.get('to_host', 0)} |"
    )
    return lines


def _pulses_table(summary: SoakSummary) -> list[str]:
    audit, rules = summary.audit, summary.rules
    budget_bound = rules.max_trains_per_minute
    return [
        "",
        "### Pulses delivered (device pulse log), as the auditor found them",
        "",
        "| figure | value | rule |",
        "|---|---:|---|",
        f"| pulse trains delivered | {audit.pulses} | |",
        f"| linked to the host's transmit record and its input frame | {audit.linked} | "
        "every one |",
        f"| trains the host transmitted (admitted to send) | {audit.transmits} | |",
        f"| of them withdrawn before sending (stale data, a disarm) | {audit.withdrawn} | "
        "none delivered |",
        f"| largest data age at delivery | {_ms(audit.max_data_age_s)} | <= "
        f"{(rules.max_sample_age_s + rules.lag_s) * 1e3:g} ms |",
        f"| largest lag, host admission to delivery | {_ms(audit.max_lag_s)} | <= "
        f"{rules.lag_s * 1e3:g} ms |",
        f"| closest two pulses | {_s(audit.min_pulse_spacing_s)} | >= "
        f"{rules.refractory_s - rules.lag_s:g} s |",
        f"| most pulses within 60 s | {audit.max_pulses_per_minute} | <= {budget_bound} "
        "(within 60 s - L) |",
        f"| day budget | {audit.pulses} of {rules.max_trains_per_day} | "
        f"<= {rules.max_trains_per_day} |",
    ] + (
        []
        if audit.announced_trains is None
        else [
            f"| trains another tool announced (its marker stream) | {audit.announced_trains} "
            "| no pulse decided on their blanked frames |"
        ]
    )


def _requests_tables(records: Iterable[Mapping[str, Any]]) -> list[str]:
    outcomes: Counter[str] = Counter()
    blocked_by: Counter[str] = Counter()
    for record in records:
        if record.get("event") == "decision":
            outcomes[str(record.get("outcome"))] += 1
            if record.get("outcome") == _BLOCKED:
                blocked_by[" + ".join(record.get("interlocks") or ["?"])] += 1
        elif record.get("event") == "blocked_summary":
            outcomes[_BLOCKED] += int(record.get("requests", 0))
            for kind, count in (record.get("by_interlocks") or {}).items():
                blocked_by[kind.replace("+", " + ")] += int(count)
    lines = [
        "",
        "### Requests by outcome (host audit log, every lifetime)",
        "",
        "| outcome | requests |",
        "|---|---:|",
    ]
    lines += [f"| {outcome} | {count} |" for outcome, count in sorted(outcomes.items())]
    lines += ["", "| blocked by | requests |", "|---|---:|"]
    lines += [f"| {kind} | {count} |" for kind, count in blocked_by.most_common()]
    return lines


def _violations_table(audit: AuditResult) -> list[str]:
    by_rule = Counter(v.rule for v in audit.violations)
    lines = ["", "### Violations (must be 0)", "", "| rule | count |", "|---|---:|"]
    lines += [f"| {rule} | {count} |" for rule, count in sorted(by_rule.items())] or ["| - | 0 |"]
    for violation in audit.violations[:5]:
        lines += ["", "```", violation.describe(), "```"]
    return lines


def _disarms_table(records: Iterable[Mapping[str, Any]], device: Counter[str]) -> list[str]:
    host: Counter[tuple[str, str]] = Counter()
    for record in records:
        if record.get("event") == "disarm":
            host[(str(record.get("cause")), _gist(str(record.get("reason", ""))))] += 1
    lines = [
        "",
        "### Disarms by cause",
        "",
        "| side | cause | reason | count |",
        "|---|---|---|---:|",
    ]
    for (cause, reason), count in sorted(host.items(), key=lambda kv: -kv[1]):
        lines.append(f"| host (audit log) | {cause} | {reason} | {count} |")
    for cause, count in device.most_common():
        lines.append(f"| device (emulator's own) | {cause} | | {count} |")
    return lines


def _lifetimes_table(summary: SoakSummary) -> list[str]:
    if not summary.lifetimes:
        return []
    origin = summary.lifetimes[0].started
    starts = [r for r in summary.host_records if r.get("event") == "start"]
    lines = [
        "",
        "### Daemon lifetimes",
        "",
        "| # | started | ready after | ended | how | bridge starts (trains restored) | pulses |",
        "|---:|---:|---:|---:|---|---|---:|",
    ]
    for life in summary.lifetimes:
        end_wall = life.ended_wall if life.ended_wall is not None else math.inf
        restored = [
            str(r.get("restored_trains"))
            for r in starts
            if life.started_wall <= r.get("time", -math.inf) < end_wall
        ]
        ended = life.ended if life.ended is not None else math.inf
        pulses = sum(1 for p in summary.pulses if life.started <= p["clock"] < ended)
        lines.append(
            f"| {life.index} | {life.started - origin:.1f} s | {_s(life.ready_after_s)} | "
            f"{'-' if life.ended is None else f'{life.ended - origin:.1f} s'} | {life.end} | "
            f"{len(restored)} ({', '.join(restored) or '-'}) | {pulses} |"
        )
    return lines


def _gist(reason: str) -> str:
    """A reason with its numbers masked, so that disarms of one kind count together."""
    masked = re.sub(r"chaos-disarm-\d+", "chaos-disarm-N", reason)
    masked = re.sub(r"#\d+", "#N", masked)
    masked = re.sub(r"\b\d+(\.\d+)?\b", "N", masked)
    return masked[:90]


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1e3:.1f} ms"


def _s(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f} s"
