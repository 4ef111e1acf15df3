"""Host interlocks: unit cases with the numbers in the messages, and a property test that
checks every decision against an independent re-statement of the rules and checks the
admitted trains against every limit."""

from __future__ import annotations

import itertools
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware_bridge.config import InterlockSettings
from firmware_bridge.interlocks import INTERLOCKS, Interlocks, Violation
from firmware_bridge.loop_health import LoopHealth
from firmware_bridge.stimulation_request import StimulationRequest

from .conftest import FakeClock
from .strategies import SETTINGS, good_health, healths, requests, time_steps

OK_HEALTH = LoopHealth(0.01, 0, True)


def _request(**overrides):
    fields = {
        "channels": (1, 2),
        "amplitude_ua": 50,
        "phase_width_us": 100,
        "frequency_hz": 100,
        "train_duration_ms": 100,
        "electrode_area_cm2": 3e-4,
    }
    return StimulationRequest(**(fields | overrides))


def _names(admission):
    return [v.interlock for v in admission.violations]


def test_a_good_request_while_armed_is_admitted_and_recorded(clock):
    interlocks = Interlocks(clock=clock)
    admission = interlocks.admit(_request(), OK_HEALTH, armed=True)
    assert admission.admitted and admission.clock == clock.now
    assert interlocks.last_train_clock == clock.now
    assert interlocks.budget_left() == (5, 599)


def test_disarmed_blocks_everything(clock):
    admission = Interlocks(clock=clock).admit(_request(), OK_HEALTH, armed=False)
    assert _names(admission) == ["armed"]


@pytest.mark.parametrize(
    ("overrides", "interlock", "message"),
    [
        ({"amplitude_ua": 101}, "amplitude", r"amplitude must be in \[1, 100\] µA, got 101"),
        ({"phase_width_us": 39}, "phase_width", r"phase width must be in \[40, 500\] µs, got 39"),
        ({"frequency_hz": 201}, "frequency", r"frequency must be in \[1, 200\] Hz, got 201"),
        ({"train_duration_ms": 5}, "train_duration", r"in \[10, 1000\] ms, got 5"),
        ({"channels": tuple(range(9))}, "channels", r"channels must be 1 to 8 distinct"),
        ({"electrode_area_cm2": 4e-4}, "electrode_area", r"\(0, 0.0003\] cm²"),
        ({"amplitude_ua": 80}, "charge_density", r"<= 25 µC/cm²/phase, got 26.67 \(80 µA × 100 µs"),
        (
            {"phase_width_us": 500, "frequency_hz": 1000},
            "pulse_timing",
            r"do not fit in one period",
        ),
    ],
)
def test_each_bound_blocks_with_its_name_and_numbers(clock, overrides, interlock, message):
    admission = Interlocks(clock=clock).admit(_request(**overrides), OK_HEALTH, armed=True)
    assert interlock in _names(admission)
    reason = next(v.reason for v in admission.violations if v.interlock == interlock)
    assert __import__("re").search(message, reason), reason


@pytest.mark.parametrize(
    ("health", "interlock"),
    [
        (LoopHealth(0.051, 0, True), "stale_data"),
        (LoopHealth(float("nan"), 0, True), "stale_data"),
        (LoopHealth(-0.01, 0, True), "stale_data"),
        (LoopHealth(0.01, 3, True), "missing_frames"),
        (LoopHealth(0.01, 0, False), "model"),
        (LoopHealth(0.01, 0, True, artefact_frames=1), "artefact"),
    ],
)
def test_unhealthy_loops_block(clock, health, interlock):
    assert _names(Interlocks(clock=clock).admit(_request(), health, armed=True)) == [interlock]


def test_a_configured_lower_density_limit_applies(clock):
    interlocks = Interlocks(InterlockSettings(charge_density_limit_uc_cm2=10), clock)
    assert _names(interlocks.admit(_request(amplitude_ua=31), OK_HEALTH, armed=True)) == [
        "charge_density"
    ]


def test_the_charge_density_limit_admits_exactly_25_and_refuses_one_ulp_above(clock):
    # 625 µA × 625 µs = 0.390625 µC exactly, over 2**-6 cm² (a float32, so the request keeps
    # it as given): exactly 25.0 µC/cm². Integer amplitude and width over a float32 area
    # cannot land one float64 ulp above 25, so that request is one whose area was changed
    # after construction, to the next double below 2**-6: the interlock must still refuse it.
    limits = InterlockSettings(
        electrode_area_cm2=2**-6, max_amplitude_ua=625, max_phase_width_us=625
    )
    interlocks = Interlocks(limits, clock)
    at_limit = _request(amplitude_ua=625, phase_width_us=625, electrode_area_cm2=2**-6)
    assert at_limit.charge_density_uc_cm2 == 25.0
    assert interlocks.admit(at_limit, OK_HEALTH, armed=True).admitted

    above = _request(amplitude_ua=625, phase_width_us=625, electrode_area_cm2=2**-6)
    object.__setattr__(above, "electrode_area_cm2", math.nextafter(2**-6, 0.0))
    assert above.charge_density_uc_cm2 == math.nextafter(25.0, math.inf)
    clock.advance(86_400)
    admission = Interlocks(limits, clock).admit(above, OK_HEALTH, armed=True)
    assert _names(admission) == ["charge_density"]


def test_refractory_then_budgets(clock):
    interlocks = Interlocks(
        InterlockSettings(refractory_s=1.5, max_trains_per_minute=2, max_trains_per_day=3), clock
    )
    assert interlocks.admit(_request(), OK_HEALTH, armed=True).admitted
    clock.advance(1.4999)
    assert _names(interlocks.admit(_request(), OK_HEALTH, armed=True)) == ["refractory"]
    clock.advance(0.0001)
    assert interlocks.admit(_request(), OK_HEALTH, armed=True).admitted
    clock.advance(1.5)
    assert _names(interlocks.admit(_request(), OK_HEALTH, armed=True)) == ["minute_budget"]
    clock.advance(60)
    assert interlocks.admit(_request(), OK_HEALTH, armed=True).admitted
    clock.advance(60)
    assert _names(interlocks.admit(_request(), OK_HEALTH, armed=True)) == ["day_budget"]
    assert interlocks.budget_left() == (2, 0)
    clock.advance(86_400)
    assert interlocks.admit(_request(), OK_HEALTH, armed=True).admitted


def test_each_block_of_state_timing_and_clock_says_why_with_its_numbers(clock):
    """The reasons an operator reads: each names the rule and the numbers that broke it."""
    interlocks = Interlocks(
        InterlockSettings(refractory_s=1.5, max_trains_per_minute=2, max_trains_per_day=3), clock
    )

    def reasons(armed: bool = True) -> list[tuple[str, str]]:
        admission = interlocks.admit(_request(), OK_HEALTH, armed=armed)
        return [(v.interlock, v.reason) for v in admission.violations]

    assert reasons(armed=False) == [("armed", "stimulation is disarmed; an operator must arm it")]
    assert reasons() == []  # 1000 s
    clock.advance(1.0)
    assert reasons() == [("refractory", "1.000 s since the last train; refractory period is 1.5 s")]
    clock.advance(1.0)
    assert reasons() == []  # 1002 s
    clock.advance(2.0)
    assert reasons() == [("minute_budget", "2 trains in the last 60 s; limit 2")]
    clock.advance(60.0)
    assert reasons() == []  # 1064 s
    clock.advance(60.0)
    assert reasons() == [("day_budget", "3 trains in the last 24 h; limit 3")]
    clock.advance(-5.0)
    assert reasons() == [
        ("clock", "clock went backwards: 1119.000000 s < 1124.000000 s read before")
    ]
    clock.now = float("nan")
    assert reasons() == [("clock", "clock reading must be finite, got nan")]


def test_each_block_of_the_loop_says_why_with_its_numbers(clock):
    """The stale-data reason carries the age and its unit, a count none; the channels reason
    the valid range; a field mangled past its own checks names the error that stopped it."""
    interlocks = Interlocks(clock=clock)
    stale = interlocks.admit(_request(), LoopHealth(0.051, 0, True), armed=True)
    assert stale.violations == (
        Violation("stale_data", "newest sample age must be in [0, 0.05] s, got 0.051"),
    )
    assert interlocks.stale_data(LoopHealth(0.051, 0, True)) == stale.violations[0].reason
    missing = interlocks.admit(_request(), LoopHealth(0.01, 3, True), armed=True)
    assert missing.violations == (
        Violation("missing_frames", "missing frames in the window must be in [0, 2], got 3"),
    )
    many = interlocks.admit(_request(channels=tuple(range(9))), OK_HEALTH, armed=True)
    assert many.violations == (
        Violation(
            "channels",
            "channels must be 1 to 8 distinct indices in [0, 359], got [0, 1, 2, 3, 4, 5, 6, 7, 8]",
        ),
    )
    mangled = _request()
    object.__setattr__(mangled, "channels", None)
    assert interlocks.admit(mangled, OK_HEALTH, armed=True).violations == (
        Violation("channels", "could not be checked: TypeError: 'NoneType' object is not iterable"),
    )


def test_pulse_problems_are_the_train_rules_of_admit_and_nothing_else(clock):
    """What the policy is checked against (``service.policy.limits``): exactly the
    violations of the train's own fields, whatever the loop, the arming and the history."""
    interlocks = Interlocks(clock=clock)
    assert interlocks.pulse_problems(_request()) == []
    bad = _request(channels=tuple(range(9)), amplitude_ua=101, frequency_hz=1000)
    judged = interlocks.admit(bad, LoopHealth(1.0, 3, False), armed=False)
    train_rules = INTERLOCKS[INTERLOCKS.index("amplitude") : INTERLOCKS.index("clock")]
    on_the_train = [v for v in judged.violations if v.interlock in train_rules]
    assert [v.interlock for v in on_the_train] == ["amplitude", "frequency", "charge_density"]
    assert interlocks.pulse_problems(bad) == on_the_train
    assert interlocks.last_train_clock is None


def test_restored_trains_count_like_admitted_ones_and_age_out_after_a_day(clock):
    limits = InterlockSettings(refractory_s=2.0, max_trains_per_minute=2, max_trains_per_day=3)
    interlocks = Interlocks(limits, clock)
    interlocks.restore([clock.now - 86_400.0, clock.now - 30.0, clock.now - 1.0])
    assert interlocks.recent_trains() == (clock.now - 30.0, clock.now - 1.0)
    assert _names(interlocks.admit(_request(), OK_HEALTH, armed=True)) == [
        "refractory",
        "minute_budget",
    ]
    clock.advance(30.0)
    assert interlocks.admit(_request(), OK_HEALTH, armed=True).admitted
    assert interlocks.budget_left() == (0, 0)


def test_a_withdrawn_train_gives_back_its_refractory_and_budgets_and_no_other(clock):
    limits = InterlockSettings(refractory_s=2.0, max_trains_per_minute=2, max_trains_per_day=2)
    interlocks = Interlocks(limits, clock)
    first = interlocks.admit(_request(), OK_HEALTH, armed=True).clock
    clock.advance(2.0)
    second = interlocks.admit(_request(), OK_HEALTH, armed=True).clock
    assert interlocks.budget_left() == (0, 0)
    interlocks.withdraw(second)
    assert interlocks.recent_trains() == (first,)
    assert interlocks.budget_left() == (1, 1)
    assert interlocks.admit(_request(), OK_HEALTH, armed=True).admitted  # at the same clock
    with pytest.raises(ValueError, match=r"no train was admitted at clock 1001.0 to withdraw"):
        interlocks.withdraw(1001.0)
    assert interlocks.recent_trains() == (first, second)


@pytest.mark.parametrize("train", [float("nan"), 1000.001])
def test_restoring_a_train_later_than_now_or_not_finite_is_refused(clock, train):
    with pytest.raises(ValueError, match=rf"no later than now \(1000.0\), got {train!r}"):
        Interlocks(clock=clock).restore([999.0, train])


def test_a_clock_that_goes_backwards_blocks(clock):
    interlocks = Interlocks(clock=clock)
    interlocks.admit(_request(), OK_HEALTH, armed=True)
    clock.advance(-5)
    assert _names(interlocks.admit(_request(), OK_HEALTH, armed=True)) == ["clock"]
    clock.now = float("nan")
    assert _names(interlocks.admit(_request(), OK_HEALTH, armed=True)) == ["clock"]


def test_a_request_mangled_after_construction_is_still_blocked(clock):
    request = _request()
    object.__setattr__(request, "amplitude_ua", float("nan"))
    object.__setattr__(request, "channels", None)
    names = _names(Interlocks(clock=clock).admit(request, OK_HEALTH, armed=True))
    assert "amplitude" in names and "channels" in names


@pytest.mark.parametrize("channel", [360, -1, True])
def test_a_channel_index_mangled_out_of_range_after_construction_is_blocked(clock, channel):
    request = _request()
    object.__setattr__(request, "channels", (1, channel))
    names = _names(Interlocks(clock=clock).admit(request, OK_HEALTH, armed=True))
    assert names == ["channels"]


def test_an_electrode_area_mangled_to_zero_is_blocked_as_the_area(clock):
    request = _request()
    object.__setattr__(request, "electrode_area_cm2", 0.0)
    names = _names(Interlocks(clock=clock).admit(request, OK_HEALTH, armed=True))
    assert names == ["electrode_area"]


def test_wrong_argument_types_raise():
    with pytest.raises(TypeError, match="'armed' must be bool, got int"):
        Interlocks().admit(_request(), OK_HEALTH, armed=1)
    with pytest.raises(TypeError, match="'health' must be LoopHealth"):
        Interlocks().admit(_request(), None, armed=True)
    with pytest.raises(TypeError, match="'request' must be StimulationRequest"):
        Interlocks().admit(None, OK_HEALTH, armed=True)
    with pytest.raises(TypeError, match="'settings' must be InterlockSettings"):
        Interlocks(settings={"refractory_s": 1.0})


# ------------------------------------------------------------------ properties
def _expected(s: InterlockSettings, admitted: list[float], request, health, armed, now) -> set:
    """The rules, restated from the issue and PROTOCOL.md without looking at the code."""
    out = set()
    if not armed:
        out.add("armed")
    if not health.model_healthy:
        out.add("model")
    if not (0 <= health.newest_sample_age_s <= s.max_sample_age_s):
        out.add("stale_data")
    if health.missing_frames > s.max_missing_frames:
        out.add("missing_frames")
    if health.artefact_frames > 0:
        out.add("artefact")
    if len(request.channels) > s.max_channels:
        out.add("channels")
    for name, value in (
        ("amplitude_ua", request.amplitude_ua),
        ("phase_width_us", request.phase_width_us),
        ("frequency_hz", request.frequency_hz),
        ("train_duration_ms", request.train_duration_ms),
    ):
        if not getattr(s, f"min_{name}") <= value <= getattr(s, f"max_{name}"):
            out.add(name.rsplit("_", 1)[0])
    if request.phase_width_us * 2 * request.frequency_hz >= 1_000_000:
        out.add("pulse_timing")
    if request.electrode_area_cm2 > s.electrode_area_cm2:
        out.add("electrode_area")
    elif request.amplitude_ua * request.phase_width_us * 1e-6 / request.electrode_area_cm2 > min(
        25.0, s.charge_density_limit_uc_cm2
    ):
        out.add("charge_density")
    if admitted and now - admitted[-1] < s.refractory_s:
        out.add("refractory")
    if sum(1 for t in admitted if t > now - 60) >= s.max_trains_per_minute:
        out.add("minute_budget")
    if sum(1 for t in admitted if t > now - 86_400) >= s.max_trains_per_day:
        out.add("day_budget")
    return out


def check_admitted_trains(s: InterlockSettings, trains: list[tuple[float, StimulationRequest]]):
    """No admitted sequence may exceed any limit: the safety property itself."""
    times = [t for t, _ in trains]
    assert all(b - a >= s.refractory_s for a, b in itertools.pairwise(times))
    for t in times:
        assert sum(1 for u in times if t - 60 < u <= t) <= s.max_trains_per_minute
        assert sum(1 for u in times if t - 86_400 < u <= t) <= s.max_trains_per_day
    for _, request in trains:
        assert request.charge_density_uc_cm2 <= min(25.0, s.charge_density_limit_uc_cm2)
        assert request.electrode_area_cm2 <= s.electrode_area_cm2
        assert s.min_amplitude_ua <= request.amplitude_ua <= s.max_amplitude_ua
        assert s.min_phase_width_us <= request.phase_width_us <= s.max_phase_width_us
        assert s.min_frequency_hz <= request.frequency_hz <= s.max_frequency_hz
        assert s.min_train_duration_ms <= request.train_duration_ms <= s.max_train_duration_ms
        assert 1 <= len(request.channels) <= s.max_channels


steps = st.lists(
    st.tuples(time_steps, requests(), st.one_of(good_health, healths), st.booleans()),
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(limits=SETTINGS, sequence=steps)
def test_every_decision_matches_the_rules_and_no_limit_is_ever_exceeded(limits, sequence):
    clock = FakeClock()
    interlocks = Interlocks(limits, clock)
    admitted: list[tuple[float, StimulationRequest]] = []
    for dt, request, health, armed in sequence:
        clock.advance(dt)
        expected = _expected(limits, [t for t, _ in admitted], request, health, armed, clock.now)
        admission = interlocks.admit(request, health, armed=armed)
        names = _names(admission)
        assert set(names) == expected
        assert names == [n for n in INTERLOCKS if n in names], "reported out of order"
        assert all(v.reason for v in admission.violations)
        if admission.admitted:
            admitted.append((clock.now, request))
    check_admitted_trains(limits, admitted)
    minute, day = interlocks.budget_left()
    assert 0 <= minute <= limits.max_trains_per_minute and 0 <= day <= limits.max_trains_per_day
    assert not math.isnan(clock.now)
