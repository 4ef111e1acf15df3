"""Host-side interlocks: the rules every stimulation request passes before anything is sent.

Pure and deterministic: time comes only from the injected clock, so property tests can drive
any sequence of requests and timings. Nothing here can be switched off; configuration can
only move limits within the hard bounds of :mod:`firmware_bridge.config`.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from firmware_bridge.config import CHARGE_DENSITY_CEILING_UC_CM2, N_ELECTRODES, InterlockSettings
from firmware_bridge.loop_health import LoopHealth
from firmware_bridge.stimulation_request import StimulationRequest
from service.core.checks import check_type

MINUTE_S = 60.0
DAY_S = 86_400.0

INTERLOCKS = (
    "armed",
    "model",
    "stale_data",
    "missing_frames",
    "artefact",
    "channels",
    "amplitude",
    "phase_width",
    "frequency",
    "train_duration",
    "pulse_timing",
    "electrode_area",
    "charge_density",
    "clock",
    "refractory",
    "minute_budget",
    "day_budget",
)
"""Every interlock's name, in the order they are checked (and reported)."""


@dataclass(frozen=True)
class Violation:
    """One interlock that a request did not pass, and why, with the numbers."""

    interlock: str
    reason: str


@dataclass(frozen=True)
class Admission:
    """The outcome of :meth:`Interlocks.admit`: when it was judged, and what stood in the way.

    An empty ``violations`` means the train was admitted and recorded as sent at ``clock``.
    """

    clock: float
    violations: tuple[Violation, ...]

    @property
    def admitted(self) -> bool:
        return not self.violations


class Interlocks:
    """Decides whether a request may be sent, and keeps the history the timing rules need.

    Parameters
    ----------
    settings
        Limits. They are validated again here, so a settings object built without validation
        (``model_construct``) cannot carry a limit past its hard bound; the charge density
        limit is additionally capped at 25 µC/cm²/phase in code.
    clock
        Monotonic seconds; every decision is taken at one reading of it.

    Notes
    -----
    The history of trains is behind a short lock of its own: :class:`StimulationBridge`
    decides under its exchange lock, but reports the budgets left (its ``status()``) without
    it, since a request may hold that lock for as long as an audit log fsync takes, and the
    daemon's supervisor and readiness read that status every round. A train counts
    against refractory and budgets from the moment it is admitted, whether or not the device
    later acknowledges it, because an unacknowledged train may still have been delivered; only
    one the bridge stopped before its STIMULATE left is taken back (:meth:`withdraw`).
    The history starts empty; the bridge adds the trains of earlier lifetimes, read back from
    the audit log, with :meth:`restore`.
    """

    def __init__(
        self,
        settings: InterlockSettings | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        given = settings if settings is not None else InterlockSettings()
        check_type("settings", given, InterlockSettings)
        self.settings = InterlockSettings.model_validate(given.model_dump())
        self.density_limit_uc_cm2 = min(
            self.settings.charge_density_limit_uc_cm2, CHARGE_DENSITY_CEILING_UC_CM2
        )
        self._clock = clock
        self._trains: deque[float] = deque()
        self._latest_clock = -math.inf
        self._history_lock = threading.RLock()  # reentrant: admit() reads last_train_clock

    @property
    def last_train_clock(self) -> float | None:
        """Clock reading of the newest admitted train, None before the first."""
        with self._history_lock:
            return self._trains[-1] if self._trains else None

    def restore(self, trains: Iterable[float]) -> None:
        """Count trains admitted before this object existed (clock readings on its clock).

        Raises
        ------
        ValueError
            If a reading is not finite, or later than now (the caller maps those to now).
        """
        now = self.now()
        given = [float(t) for t in trains]
        for t in given:
            if not (math.isfinite(t) and t <= now):
                raise ValueError(
                    f"'trains' must be finite clock readings no later than now ({now!r}), got {t!r}"
                )
        with self._history_lock:
            self._trains = deque(sorted([*self._trains, *given]))

    def recent_trains(self) -> tuple[float, ...]:
        """Clock readings of the admitted trains of the last day, oldest first: what a
        restarted bridge needs to know (the audit log's checkpoints carry them)."""
        with self._history_lock:
            now = self.now()
            if math.isfinite(now):
                self._counts(max(now, self._latest_clock))
            return tuple(self._trains)

    def now(self) -> float:
        """One reading of the injected clock."""
        return float(self._clock())

    def admit(self, request: StimulationRequest, health: LoopHealth, *, armed: bool) -> Admission:
        """Check every interlock at one clock reading; if all pass, record the train as sent.

        Check and record happen in one call so nothing can slip in between them.
        """
        check_type("request", request, StimulationRequest)
        check_type("health", health, LoopHealth)
        check_type("armed", armed, bool)
        with self._history_lock:
            now = self.now()
            violations = tuple(self._violations(request, health, armed, now))
            if not violations:
                self._trains.append(now)
        return Admission(now, violations)

    def withdraw(self, clock: float) -> None:
        """Take back the train admitted at ``clock``: the bridge stopped it before its
        STIMULATE left the host (its data aged past the limit during the transmit record's
        fsync, or a disarm came first), so the device cannot have delivered it.

        Raises
        ------
        ValueError
            If no train was admitted at ``clock`` (nothing is taken back).
        """
        try:
            with self._history_lock:
                self._trains.remove(clock)
        except ValueError:
            raise ValueError(f"no train was admitted at clock {clock!r} to withdraw") from None

    def budget_left(self) -> tuple[int, int]:
        """Trains still allowed in the minute and the day ending now."""
        with self._history_lock:  # the clock read under it too, as admit() reads it
            now = self.now()
            if not math.isfinite(now):
                return 0, 0
            self._latest_clock = max(self._latest_clock, now)
            minute, day = self._counts(self._latest_clock)
        return (
            max(0, self.settings.max_trains_per_minute - minute),
            max(0, self.settings.max_trains_per_day - day),
        )

    def _counts(self, now: float) -> tuple[int, int]:
        """Admitted trains in (now - 60 s, now] and (now - 1 day, now]; ``now`` is finite
        and never earlier than any reading before it."""
        while self._trains and self._trains[0] <= now - DAY_S:
            self._trains.popleft()
        minute = day = 0
        for t in reversed(self._trains):
            if not t > now - DAY_S:
                break
            day += 1
            if t > now - MINUTE_S:
                minute += 1
        return minute, day

    def _violations(
        self, request: StimulationRequest, health: LoopHealth, armed: bool, now: float
    ) -> list[Violation]:
        found: list[Violation] = []

        def block(interlock: str, reason: str) -> None:
            found.append(Violation(interlock, reason))

        s = self.settings
        if armed is not True:
            block("armed", "stimulation is disarmed; an operator must arm it")
        for interlock, problem_of in self._rules:
            try:
                problem = problem_of(request, health)
            except Exception as err:  # mangled past its own checks: refuse, never crash
                problem = f"could not be checked: {type(err).__name__}: {err}"
            if problem:
                block(interlock, problem)
        if not math.isfinite(now):
            block("clock", f"clock reading must be finite, got {now!r}")
            return found
        if now < self._latest_clock:
            block(
                "clock",
                f"clock went backwards: {now:.6f} s < {self._latest_clock:.6f} s read before",
            )
            return found
        self._latest_clock = now
        last = self.last_train_clock
        if last is not None and now - last < s.refractory_s:
            block(
                "refractory",
                f"{now - last:.3f} s since the last train; refractory period is "
                f"{s.refractory_s:g} s",
            )
        minute, day = self._counts(now)
        if minute >= s.max_trains_per_minute:
            block(
                "minute_budget",
                f"{minute} trains in the last 60 s; limit {s.max_trains_per_minute}",
            )
        if day >= s.max_trains_per_day:
            block("day_budget", f"{day} trains in the last 24 h; limit {s.max_trains_per_day}")
        return found

    @property
    def _rules(
        self,
    ) -> tuple[tuple[str, Callable[[StimulationRequest, LoopHealth], str | None]], ...]:
        """(interlock, check) in report order; a check returns what is wrong, or None."""
        s = self.settings
        on_the_loop: tuple[tuple[str, Callable[[StimulationRequest, LoopHealth], str | None]], ...]
        on_the_loop = (
            ("model", lambda r, h: None if h.model_healthy is True else _UNHEALTHY),
            ("stale_data", lambda r, h: self.stale_data(h)),
            (
                "missing_frames",
                lambda r, h: _outside(
                    "missing frames in the window", "", h.missing_frames, 0, s.max_missing_frames
                ),
            ),
            ("artefact", lambda r, h: _on_artefact(h.artefact_frames)),
            ("channels", lambda r, h: self._channels_problem(r.channels)),
        )
        on_the_train = tuple((name, _ignoring_health(check)) for name, check in self._pulse_rules)
        return on_the_loop + on_the_train

    def pulse_problems(self, request: StimulationRequest) -> list[Violation]:
        """What these interlocks refuse in the pulse train itself (everything but its channels),
        whatever the loop's health and history: a train refused here is refused on every
        request. The policy is checked against exactly these rules wherever it is set
        (``service.policy.limits``), so a policy is never accepted that can never stimulate."""
        found = []
        for interlock, problem_of in self._pulse_rules:
            problem = problem_of(request)
            if problem:
                found.append(Violation(interlock, problem))
        return found

    @property
    def _pulse_rules(self) -> tuple[tuple[str, Callable[[StimulationRequest], str | None]], ...]:
        """(interlock, check) for the rules on the train's own fields, in report order."""
        s = self.settings
        return (
            (
                "amplitude",
                lambda r: _outside(
                    "amplitude", "µA", r.amplitude_ua, s.min_amplitude_ua, s.max_amplitude_ua
                ),
            ),
            (
                "phase_width",
                lambda r: _outside(
                    "phase width",
                    "µs",
                    r.phase_width_us,
                    s.min_phase_width_us,
                    s.max_phase_width_us,
                ),
            ),
            (
                "frequency",
                lambda r: _outside(
                    "frequency", "Hz", r.frequency_hz, s.min_frequency_hz, s.max_frequency_hz
                ),
            ),
            (
                "train_duration",
                lambda r: _outside(
                    "train duration",
                    "ms",
                    r.train_duration_ms,
                    s.min_train_duration_ms,
                    s.max_train_duration_ms,
                ),
            ),
            ("pulse_timing", lambda r: _pulse_timing_problem(r.phase_width_us, r.frequency_hz)),
            ("electrode_area", lambda r: self._area_problem(r.electrode_area_cm2)),
            ("charge_density", self._density_problem),
        )

    def stale_data(self, health: LoopHealth) -> str | None:
        """What is wrong with the age of the data, or None: the ``stale_data`` rule, which
        the bridge applies again just before a STIMULATE leaves."""
        return _outside(
            "newest sample age", "s", health.newest_sample_age_s, 0, self.settings.max_sample_age_s
        )

    def _channels_problem(self, channels: tuple[int, ...]) -> str | None:
        limit = self.settings.max_channels
        listed = tuple(channels)
        valid = all(
            isinstance(c, int) and not isinstance(c, bool) and 0 <= c < N_ELECTRODES for c in listed
        )
        if 1 <= len(listed) <= limit and valid and len(set(listed)) == len(listed):
            return None
        return (
            f"channels must be 1 to {limit} distinct indices in [0, {N_ELECTRODES - 1}], "
            f"got {list(listed)}"
        )

    def _area_problem(self, area: float) -> str | None:
        limit = self.settings.electrode_area_cm2
        if 0 < area <= limit:
            return None
        return (
            f"electrode area must be in (0, {limit:g}] cm² (the contacts' real area), got {area!r}"
        )

    def _density_problem(self, request: StimulationRequest) -> str | None:
        if self._area_problem(request.electrode_area_cm2) is not None:
            return None  # blocked as electrode_area; a density over a false area means nothing
        density, limit = request.charge_density_uc_cm2, self.density_limit_uc_cm2
        if density <= limit:
            return None
        return (
            f"charge density must be <= {limit:g} µC/cm²/phase, got {density:.4g} "
            f"({request.amplitude_ua!r} µA × {request.phase_width_us!r} µs / "
            f"{request.electrode_area_cm2:.4g} cm²)"
        )


_UNHEALTHY = "the predictor reports itself unhealthy"


def _on_artefact(frames: int) -> str | None:
    """No decision rests on frames a stimulation train's artefact is on, read or blanked: a
    train just delivered by any tool, or one announced only after its frames were read."""
    if frames == 0:
        return None
    return f"{frames} frame(s) the decision rests on are blanked as a stimulation artefact"


def _ignoring_health(
    check: Callable[[StimulationRequest], str | None],
) -> Callable[[StimulationRequest, LoopHealth], str | None]:
    return lambda request, _health: check(request)


def _outside(what: str, unit: str, value: float, low: float, high: float) -> str | None:
    """None if ``low <= value <= high`` (NaN is never inside), else the rule and the value."""
    if low <= value <= high:
        return None
    units = f" {unit}" if unit else ""
    return f"{what} must be in [{low:g}, {high:g}]{units}, got {value!r}"


def _pulse_timing_problem(width_us: int, frequency_hz: int) -> str | None:
    if 2 * width_us * frequency_hz < 1_000_000:
        return None
    return f"two phases of {width_us!r} µs do not fit in one period at {frequency_hz!r} Hz"
