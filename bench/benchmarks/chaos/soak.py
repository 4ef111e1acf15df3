"""Chaos soak: the real daemon, rig and emulator under injected faults, with an independent
auditor of every pulse delivered.

Processes: ``corticast firmware-emulator`` (pulse log), a UDP relay that delays, duplicates,
reorders, corrupts and drops datagrams in both directions (``bench.benchmarks.chaos._relay``),
``corticast rig`` playing the demo's scripted session (four seizures a minute that the demo's policy
asks to stimulate) over LSL on loopback, and ``corticast serve`` with its bridge pointed at the
relay. Once the operator has armed the loop, faults follow at seeded random moments
(``bench.benchmarks.chaos._faults``): the rig stalled (SIGSTOP/SIGCONT) or killed and restarted, the
daemon killed (SIGKILL) or stopped (SIGTERM, with an arm request racing the stop) and restarted, the
model swapped over HTTP, the loop disarmed over HTTP, and the daemon's wave thread starved
(SCHED_IDLE while CPU hogs run); between faults the operator re-arms a disarmed loop. Every fault
kind takes effect at least once, the relay's in each direction (the soak runs past ``--minutes``
until it has, or reports the kinds that never did: a stall of a rig not running, a wave thread
not found, is no fault), and ends at ``--minutes`` once they all have. A soak
whose faults ended before any pulse was delivered goes on without faults, the operator re-arming,
until one is (at most ``PULSE_GRACE_S``): a soak that audited nothing has shown nothing.

The auditor (``bench.benchmarks.chaos._auditor``) reads the configuration files, the emulator's
pulse log and the host's audit log every second and judges every delivered pulse against the
interlock rules, across daemon lifetimes; the soak stops at the first violation and prints it with
its evidence. The limits it runs with are in ``bench.benchmarks.chaos._config``.

Usage: ``python -m bench.benchmarks.chaos.soak --minutes 10 --seed 0`` (``make bench-chaos``); exit
status 0 when pulses were delivered and none broke a rule, 1 on a violation, 2 when nothing was
audited (the loop was never armed, or no pulse was delivered). The working directory (configs,
logs, audit and pulse logs) is kept when ``--workdir`` is given, else removed; a workdir that
holds an earlier soak's logs is refused (exit status 2).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import signal
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from bench.benchmarks.chaos._auditor import (
    AnnouncedTrains,
    AuditResult,
    AuditRules,
    Violation,
    audit,
)
from bench.benchmarks.chaos._config import SoakPlan
from bench.benchmarks.chaos._control import ControlClient
from bench.benchmarks.chaos._faults import FAULTS, FaultInjector, FaultLog, fault_schedule
from bench.benchmarks.chaos._processes import ChildProcess
from bench.benchmarks.chaos._records import (
    RecordsUnreadableError,
    device_disarms,
    read_host_records,
    read_marker_times,
    read_pulses,
)
from bench.benchmarks.chaos._relay import DIRECTIONS, FAULT_KINDS, MAX_HOLD_S
from bench.benchmarks.chaos._report import SoakSummary, format_report
from bench.data.session_io import write_xdf
from bench.demo import demo_session
from service.core.python_module import python_module_command
from service.core.worker import BackgroundWorker

LINK_ALLOWANCE_S = MAX_HOLD_S + 0.02
"""The link's share of the lag allowance: the relay's longest hold, plus 20 ms for its own
forwarding on a loaded machine (it is one Python process among the soak's)."""
AUDIT_EVERY_S = 1.0
EFFECT_GRACE_S = 120.0
"""How long past its time a soak goes on for a fault kind that has not yet taken effect."""
FIRST_ARM_TIMEOUT_S = 180.0
PULSE_GRACE_S = 90.0
"""How long a soak whose faults delivered no pulse goes on without faults for one: the demo
session asks for stimulation twice a minute, so this is three chances. Faults disarm the loop
often, and on a loaded machine stale data is refused, as it must be: a minute of faults with no
pulse happens, and a second soak from the start would cost setup and faults again."""


class ChaosSoak:
    """One soak run; :meth:`run` returns its summary (the report is :func:`format_report`).

    Parameters
    ----------
    workdir
        Where the configuration files, logs, audit log and pulse log go.
    minutes
        How long to inject faults after the first arm (longer if the first round of every
        fault kind has not finished by then).
    seed
        Seeds the fault schedule, the relay's faults and every random choice.
    pulser
        Whether another tool announces a train every 3-6 s on a marker stream the daemon
        reads (``bench.benchmarks.chaos._pulser``), which the auditor holds the daemon's own
        trains against (the ``artefact`` rule).
    echo
        Where progress lines go.
    """

    def __init__(
        self,
        workdir: Path,
        *,
        minutes: float = 10.0,
        seed: int = 0,
        pulser: bool = False,
        echo: Callable[[str], None] = print,
    ) -> None:
        if not minutes > 0:
            raise ValueError(f"'minutes' must be > 0, got {minutes!r}")
        self.plan = SoakPlan.create(workdir, seed=seed, minutes=minutes, pulser=pulser)
        self.plan.check_unused()
        self.echo = echo
        self.stop = threading.Event()
        self.log = FaultLog()
        plan = self.plan
        self.emulator = ChildProcess(
            "emulator",
            python_module_command(
                "service.cli.app", "firmware-emulator", "--config", str(plan.emulator_config)
            ),
            plan.log("emulator"),
        )
        self.relay = ChildProcess(
            "relay",
            python_module_command(
                "bench.benchmarks.chaos._relay",
                "--listen-port",
                str(plan.relay_port),
                "--device-port",
                str(plan.device_port),
                "--seed",
                str(seed),
                "--stats",
                str(plan.relay_stats),
            ),
            plan.log("relay"),
        )
        self.rig = ChildProcess(
            "rig",
            python_module_command("service.cli.app", "rig", "--config", str(plan.daemon_config)),
            plan.log("rig"),
        )
        self.daemon = ChildProcess(
            "daemon",
            python_module_command("service.cli.app", "serve", "--config", str(plan.daemon_config)),
            plan.log("daemon"),
            env={"CORTICAST_API__TOKEN": plan.token},
        )
        self.pulser = ChildProcess(
            "pulser",
            python_module_command(
                "bench.benchmarks.chaos._pulser",
                "--name",
                plan.pulser_stream,
                "--log",
                str(plan.marker_log),
                "--seed",
                str(seed),
            ),
            plan.log("pulser"),
        )
        self._never_faulted = (self.emulator, self.relay, *([self.pulser] if pulser else []))
        """The children no fault ends: one that exits ends the soak."""
        self.control = ControlClient(plan.api_url, plan.token)
        self.injector = FaultInjector(
            plan, self.daemon, self.rig, self.control, random.Random(seed), self.stop, self.log
        )
        self.rules: AuditRules | None = None
        self.announced: AnnouncedTrains | None = None
        """What the daemon blanks for another tool's train (``--pulser``); the trains are read
        at each audit."""
        self._watch: _AuditWatch | None = None

    def run(self) -> SoakSummary:
        """Set up, inject faults until time is up or a rule is broken, tear down, audit."""
        began = ended = time.monotonic()  # the faults' time: none unless the loop is armed
        ended_because = "time is up"
        try:
            self._set_up()
            if not self.injector.arm_first(FIRST_ARM_TIMEOUT_S):
                ended_because = "the loop could not be armed (see the daemon's log)"
                self.log.problems.append(ended_because)
            else:
                self.echo(f"chaos: armed; injecting faults for {self.plan.minutes:g} min")
                self.relay.send(signal.SIGUSR1)
                self._watch = _AuditWatch(self, self.stop).start()
                began = time.monotonic()
                self._inject_until(began + self.plan.minutes * 60)
                ended = time.monotonic()
                ended_because += self._await_a_pulse()
                if self._watch.result.violations:
                    ended_because = "stopped at the first violation"
        finally:
            self._tear_down()
        return self._summary(ended - began, ended_because)

    # ----------------------------------------------------------------- phases
    def _set_up(self) -> None:
        plan = self.plan
        self.echo(f"chaos: working in {plan.workdir}; writing configs and the demo session")
        plan.write()
        write_xdf(plan.session, demo_session(), source_id=plan.source_id)
        self.rules = AuditRules.from_config(
            plan.daemon_config, plan.emulator_config, link_allowance_s=LINK_ALLOWANCE_S
        )
        if plan.pulser:
            self.announced = AnnouncedTrains.from_config(plan.daemon_config)
        for process in (self.emulator, self.relay, self.rig):
            process.start()
        if plan.pulser:
            self.pulser.start()
        self.echo("chaos: emulator, relay and rig started; starting the daemon")
        self.injector.start_daemon()

    def _inject_until(self, deadline: float) -> None:
        """Faults until ``deadline`` and until each kind, the relay's in each direction, has
        taken effect once; at most :data:`EFFECT_GRACE_S` past the deadline, after which a
        kind that never took effect (one that found nothing to act on each time) is a problem
        of the soak, not passed over in silence."""
        began = time.monotonic()
        schedule = fault_schedule(self.injector.rng)
        seen: set[str] = set()
        for pause, kind in schedule:
            if not self._never_took_effect(seen):
                # Nothing left to see: a pause that runs past the deadline ends there, not
                # up to a mean gap later with no fault to show for it.
                pause = min(pause, max(0.0, deadline - time.monotonic()))
            if self._wait(pause):
                return
            now = time.monotonic()
            never = self._never_took_effect(seen)
            if now >= deadline and not never:
                return
            if now >= deadline + EFFECT_GRACE_S:
                self.log.problems.append(f"fault(s) that never took effect: {', '.join(never)}")
                return
            if self._a_child_exited():
                return
            self.echo(f"chaos: {time.monotonic() - began:6.1f} s  {kind}")
            if self.injector.inject(kind):
                seen.add(kind)
            if self.stop.is_set():
                return

    def _never_took_effect(self, seen: set[str]) -> list[str]:
        """The fault kinds not yet seen to take effect: the injector's (of ``seen``) and the
        relay's, each kind in each direction (its stats file, rewritten twice a second)."""
        never = sorted(set(FAULTS) - seen)
        try:
            relay = json.loads(self.plan.relay_stats.read_text(encoding="utf-8"))
        except FileNotFoundError:  # not written yet (it is replaced whole, never half-written)
            relay = {}
        faults = relay.get("faults", {})
        never += [
            f"link {kind} {direction}"
            for kind in FAULT_KINDS
            for direction in DIRECTIONS
            if not faults.get(f"{kind} {direction}")
        ]
        return never

    def _await_a_pulse(self) -> str:
        """Where the faults delivered no pulse, tend the loop without faults until the auditor
        has seen one, at most :data:`PULSE_GRACE_S`; what happened, for the report's heading
        ("" when a pulse was delivered during the faults, or the soak was stopped)."""
        if self._watch.pulses_audited or self.stop.is_set():
            return ""
        self.echo(f"chaos: no pulse delivered yet; faults over, waiting up to {PULSE_GRACE_S:g} s")
        began = time.monotonic()
        while (waited := time.monotonic() - began) < PULSE_GRACE_S:
            if self._watch.pulses_audited:
                return f"; the faults delivered no pulse, the first came {waited:.0f} s after them"
            if self._a_child_exited() or self._wait(AUDIT_EVERY_S / 4):
                return ""
        return f"; no pulse, during the faults or in the {PULSE_GRACE_S:g} s after them"

    def _a_child_exited(self) -> bool:
        """Whether a child that no fault ends has exited (a problem; the soak stops)."""
        for process in self._never_faulted:
            if not process.running:
                self.log.problems.append(f"the {process.name} exited ({process.returncode})")
                self.stop.set()
                return True
        return False

    def _wait(self, seconds: float) -> bool:
        """Tend the loop for ``seconds``; True if the soak must stop."""
        until = time.monotonic() + seconds
        while (left := until - time.monotonic()) > 0:
            self.injector.tend()
            if self.stop.wait(min(0.25, left)):
                return True
        return self.stop.is_set()

    def _tear_down(self) -> None:
        self.echo("chaos: stopping")
        if self._watch is not None:
            self._watch.stop()
        if self.daemon.running:
            self.control.disarm("chaos soak ends")
        if self.log.lifetimes:
            self.injector.end_daemon("soak end")
        self.rig.stop(signal.SIGTERM)
        self.pulser.stop(signal.SIGTERM)  # "not started" without one
        self.relay.stop(signal.SIGTERM)
        self.emulator.stop(signal.SIGINT)

    def _summary(self, seconds_run: float, ended_because: str) -> SoakSummary:
        plan = self.plan
        result, records, pulses = audit_files(
            self.rules, plan, self.log.operator_disarms(), self.announced
        )
        if self._watch is not None and self._watch.result.violations:
            result = self._watch.result  # the first violation found, while it ran
        relay = json.loads(plan.relay_stats.read_text()) if plan.relay_stats.exists() else {}
        return SoakSummary(
            seed=plan.seed,
            minutes=plan.minutes,
            seconds_run=seconds_run,
            rules=self.rules,
            faults=self.log.counts,
            relay=relay,
            audit=result,
            host_records=records,
            device_disarms=device_disarms(plan.log("emulator")),
            lifetimes=self.log.lifetimes,
            pulses=pulses,
            problems=self.log.problems,
            ended_because=ended_because,
        )


def audit_files(
    rules: AuditRules,
    plan: SoakPlan,
    operator_disarms: dict[str, float],
    announced: AnnouncedTrains | None = None,
) -> tuple[AuditResult, list[dict], list[dict]]:
    """Read the other tool's marker log (where ``announced`` says what the daemon blanks for
    each), the pulse log, then the audit log, and audit them. The pulse log is read before
    the audit log: every transmit record is on disk before its STIMULATE leaves the host, so
    each pulse read has its transmit record in the audit log read after it."""
    # Markers first: each is logged once pushed, before any decision it may count against.
    if announced is not None:
        announced = dataclasses.replace(announced, times=read_marker_times(plan.marker_log))
    pulses = read_pulses(plan.pulse_log)
    try:
        records = read_host_records(plan.audit_log) if plan.audit_log.exists() else []
    except RecordsUnreadableError as err:
        result = AuditResult(pulses=len(pulses))
        result.violations.append(
            Violation("records", "the audit log cannot be read", {"error": str(err)})
        )
        return result, [], pulses
    return audit(rules, pulses, records, operator_disarms, announced), records, pulses


class _AuditWatch(BackgroundWorker):
    """Audits every second while the soak runs; stops the soak at the first violation."""

    def __init__(self, soak: ChaosSoak, stop: threading.Event) -> None:
        super().__init__("chaos-auditor")
        self._soak = soak
        self._stop_soak = stop
        self.result = AuditResult()
        """The first result with a violation, if any."""
        self.pulses_audited = 0
        """How many pulses the latest round audited."""

    def _work(self) -> None:
        soak = self._soak
        while not self._stop_requested.wait(AUDIT_EVERY_S):
            try:
                result, _, _ = audit_files(
                    soak.rules, soak.plan, soak.log.operator_disarms(), soak.announced
                )
            except (OSError, RuntimeError) as err:  # e.g. a rotation storm: the next round reads
                soak.log.problems.append(f"an audit round could not read the logs: {err}")
                continue
            self.pulses_audited = result.pulses
            if result.violations:
                self.result = result
                soak.echo(result.violations[0].describe())
                self._stop_soak.set()
                return


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="fault injection time")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", type=Path, default=None, help="kept; default: a temp dir")
    parser.add_argument(
        "--pulser",
        action="store_true",
        help="another tool announces trains on a marker stream the daemon reads",
    )
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="corticast-chaos-") as scratch:
        workdir = args.workdir if args.workdir is not None else Path(scratch)
        try:
            soak = ChaosSoak(workdir, minutes=args.minutes, seed=args.seed, pulser=args.pulser)
        except ValueError as err:
            parser.error(str(err))
        summary = soak.run()
        for line in format_report(summary):
            print(line)
    if summary.audit.violations:
        return 1
    return 0 if summary.passed else 2


if __name__ == "__main__":
    raise SystemExit(main())
