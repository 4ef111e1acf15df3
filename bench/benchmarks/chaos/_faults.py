"""The chaos soak's fault injector and operator: what it does to the daemon and the rig, when.

Faults (``FAULTS``), one at a time, at seeded random moments: the first of each kind in a seeded
order, then weighted draws. The link faults are the relay's (``bench.benchmarks.chaos._relay``).
Between faults the operator re-arms a disarmed loop after a random pause, over HTTP, as a person at
the rig would after a fault; the daemon decides whether to accept.
"""

from __future__ import annotations

import random
import re
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

from bench.benchmarks.chaos._config import SoakPlan
from bench.benchmarks.chaos._control import Answer, ControlClient
from bench.benchmarks.chaos._processes import (
    ChildProcess,
    cpu_hog,
    find_wave_thread,
    restore_normal,
    set_idle,
)

FAULTS = (
    "rig_stall",
    "rig_restart",
    "daemon_kill",
    "daemon_term",
    "model_swap",
    "disarm",
    "wave_starve",
)
_WEIGHTS = (3, 1, 1, 1, 2, 2, 2)
MEAN_GAP_S = 8.0
"""Mean pause between two faults after the first round (exponentially distributed)."""
READY_TIMEOUT_S = 120.0
"""Longest a (re)started daemon may take to be ready before the soak notes a problem."""
HOGS = 2


def fault_schedule(rng: random.Random) -> Iterator[tuple[float, str]]:
    """(pause before, fault) forever: every kind once (seeded order), then weighted draws."""
    first = list(FAULTS)
    rng.shuffle(first)
    for kind in first:
        yield rng.uniform(1.0, 3.0), kind
    while True:
        yield rng.expovariate(1 / MEAN_GAP_S), rng.choices(FAULTS, _WEIGHTS)[0]


@dataclass
class Lifetime:
    """One daemon process, from start to end, on the monotonic and wall clocks."""

    index: int
    started: float
    started_wall: float
    ready_after_s: float | None = None
    ended: float | None = None
    ended_wall: float | None = None
    end: str = "running"


@dataclass
class FaultLog:
    """What was injected and what the operator did, for the report and the auditor."""

    counts: Counter[tuple[str, str]] = field(default_factory=Counter)
    lifetimes: list[Lifetime] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    _operator_disarms: dict[str, float] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def note(self, kind: str, outcome: str) -> None:
        self.counts[(kind, outcome)] += 1

    def operator_disarmed(self, token: str, answered: float) -> None:
        with self._lock:
            self._operator_disarms[token] = answered

    def operator_disarms(self) -> dict[str, float]:
        with self._lock:
            return dict(self._operator_disarms)


class FaultInjector:
    """Injects one fault at a time into the running soak, and tends the arm switch.

    Parameters
    ----------
    plan
        The soak's files and ports.
    daemon, rig
        Their processes (the injector starts, kills and restarts them).
    control
        The daemon's API.
    rng
        Every random choice (durations, pauses, which model).
    stop
        Set when the soak must end now (a violation, or time is up): waits are cut short and
        what a fault changed is put back.
    log
        Where outcomes go.
    """

    def __init__(
        self,
        plan: SoakPlan,
        daemon: ChildProcess,
        rig: ChildProcess,
        control: ControlClient,
        rng: random.Random,
        stop: threading.Event,
        log: FaultLog,
    ) -> None:
        self.plan, self.daemon, self.rig, self.control = plan, daemon, rig, control
        self.rng, self.stop, self.log = rng, stop, log
        self._model = 0
        self._disarms = 0
        self._rearm_at: float | None = None
        self._next_look = 0.0

    def inject(self, kind: str) -> bool:
        """Run fault ``kind`` (one of :data:`FAULTS`) to its end; whether it took effect (a
        stall of a rig that was running, a swap or disarm the daemon accepted, a wave thread
        found and starved), so that the soak can tell a fault that happened from one that
        found nothing to act on."""
        return getattr(self, f"_{kind}")()

    # ----------------------------------------------------------------- lifecycle
    def start_daemon(self) -> None:
        """Start the daemon and wait (up to :data:`READY_TIMEOUT_S`) until it is ready."""
        self.daemon.start()
        lifetime = Lifetime(len(self.log.lifetimes) + 1, time.monotonic(), time.time())
        self.log.lifetimes.append(lifetime)
        deadline = lifetime.started + READY_TIMEOUT_S
        while not self.stop.is_set() and time.monotonic() < deadline:
            if not self.daemon.running:
                self._ended(f"exited during start ({self.daemon.returncode})")
                self.log.problems.append(f"daemon #{lifetime.index} exited during its start")
                return
            if self.control.ready():
                lifetime.ready_after_s = time.monotonic() - lifetime.started
                return
            self.stop.wait(0.5)
        if not self.stop.is_set():
            self.log.problems.append(
                f"daemon #{lifetime.index} not ready within {READY_TIMEOUT_S:g} s of its start"
            )

    def end_daemon(self, how: str) -> None:
        """The soak ends: stop the daemon with SIGTERM, as a service manager would."""
        if self.daemon.running:
            self._ended(self.daemon.stop(signal.SIGTERM) + f" ({how})")

    def tend(self) -> None:
        """The operator's look at the loop (call it often): notice a daemon that died by itself
        and restart it; re-arm a disarmed loop after a random pause of 0.5 to 3 s."""
        now = time.monotonic()
        if now < self._next_look:
            return
        self._next_look = now + 1.0
        if not self.daemon.running:
            code = self.daemon.returncode
            self._ended(f"exited by itself ({code})")
            self.log.problems.append(f"daemon exited by itself with status {code}; restarted")
            self.start_daemon()
            return
        if not self.rig.running:
            self.log.problems.append(f"rig exited by itself ({self.rig.returncode}); restarted")
            self.rig.start()
        armed = self.control.armed()
        if armed is not False:
            self._rearm_at = None
            return
        if self._rearm_at is None:
            self._rearm_at = now + self.rng.uniform(0.5, 3.0)
        elif now >= self._rearm_at:
            self._rearm_at = None
            self._note_answer("arm", self.control.arm())

    def arm_first(self, timeout_s: float) -> bool:
        """Arm as soon as the daemon accepts; False if it did not within ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while not self.stop.is_set() and time.monotonic() < deadline:
            if not self.daemon.running:
                return False  # start_daemon() noted why
            answer = self.control.arm()
            self._note_answer("arm", answer)
            if answer.ok:
                return True
            self.stop.wait(1.0)
        return False

    # ----------------------------------------------------------------- faults
    def _rig_stall(self) -> bool:
        """SIGSTOP the rig for 30 ms to 2.5 s (a third of stalls under 0.3 s, short enough to
        fall between two supervisor rounds), then SIGCONT: it sends the backlog at once."""
        seconds = (
            self.rng.uniform(0.03, 0.3)
            if self.rng.random() < 1 / 3
            else (self.rng.uniform(0.3, 2.5))
        )
        if not self.rig.send(signal.SIGSTOP):
            self.log.note("rig_stall", "rig not running")
            return False
        try:
            self.stop.wait(seconds)
        finally:
            self.rig.send(signal.SIGCONT)
        self.log.note("rig_stall", "stalled < 0.3 s" if seconds < 0.3 else "stalled 0.3-2.5 s")
        return True

    def _rig_restart(self) -> bool:
        """SIGKILL the rig; a new one starts 0.2 to 2 s later (the session from its start)."""
        self.rig.kill()
        self.stop.wait(self.rng.uniform(0.2, 2.0))
        self.rig.start()
        self.log.note("rig_restart", "killed and restarted")
        return True

    def _daemon_kill(self) -> bool:
        """SIGKILL the daemon (no disarm, no flush); restart it at once."""
        code = self.daemon.kill()
        self._ended(f"SIGKILL ({code})")
        self.log.note("daemon_kill", "SIGKILL, restarted")
        self.start_daemon()
        return True

    def _daemon_term(self) -> bool:
        """SIGTERM the daemon and, at once, ask it to arm (stop must win); restart it."""
        self.daemon.send(signal.SIGTERM)
        answer = self.control.arm()
        self.log.note("arm during stop", _outcome(answer))
        how = self.daemon.wait_exit("SIGTERM")
        self._ended(how)
        if "did not exit" in how:
            self.log.problems.append(f"daemon did not stop on SIGTERM: {how}")
        self.log.note("daemon_term", "stopped, restarted")
        self.start_daemon()
        return True

    def _model_swap(self) -> bool:
        """PUT /control/model: the shipped model and its copy, by turns."""
        self._model ^= 1
        path, step_path = self.plan.models[self._model]
        answer = self.control.swap_model(path, step_path)
        self.log.note("model_swap", _outcome(answer))
        return answer.ok

    def _disarm(self) -> bool:
        """POST /control/disarm with a reason the auditor can find in the host's record."""
        self._disarms += 1
        token = f"chaos-disarm-{self._disarms:04d}"
        answer = self.control.disarm(f"chaos soak {token}")
        if answer.ok:
            self.log.operator_disarmed(token, time.monotonic())
        self.log.note("disarm", _outcome(answer))
        return answer.ok

    def _wave_starve(self) -> bool:
        """The daemon's wave thread under SCHED_IDLE for 2 to 5 s while CPU hogs run."""
        pid = self.daemon.pid if self.daemon.running else None
        tid = find_wave_thread(pid) if pid is not None else None
        if tid is None:
            self.log.note("wave_starve", "wave thread not found")
            return False
        try:
            nice = set_idle(tid)
        except ProcessLookupError:
            self.log.note("wave_starve", "wave thread gone")
            return False
        hogs = [cpu_hog(self.plan.log("hogs")) for _ in range(HOGS)]
        try:
            for hog in hogs:
                hog.start()
            self.stop.wait(self.rng.uniform(2.0, 5.0))
        finally:
            for hog in hogs:
                hog.kill()
            self.log.note("wave_starve", _restore(tid, nice))
        return True

    # ----------------------------------------------------------------- helpers
    def _ended(self, how: str) -> None:
        lifetime = self.log.lifetimes[-1]
        if lifetime.ended is None:
            lifetime.ended, lifetime.ended_wall, lifetime.end = time.monotonic(), time.time(), how

    def _note_answer(self, action: str, answer: Answer) -> None:
        self.log.note(action, _outcome(answer))


def _restore(tid: int, nice: int) -> str:
    try:
        restore_normal(tid, nice)
    except ProcessLookupError:
        return "starved (thread gone before restore)"
    except PermissionError:
        return "starved (restore refused: no CAP_SYS_NICE)"
    return "starved and restored"


def _outcome(answer: Answer) -> str:
    """'accepted', or the status and the gist of the refusal (digits masked, so that
    refusals of one kind count together)."""
    if answer.ok:
        return "accepted"
    if answer.status == 0:
        return "no answer (daemon down)"
    try:
        detail = str(answer.json().get("detail", ""))
    except ValueError:
        detail = answer.body
    gist = re.sub(r"\b\d+(\.\d+)?\b", "N", detail)[:70]
    return f"refused {answer.status}: {gist}"
