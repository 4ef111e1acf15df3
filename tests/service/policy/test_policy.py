"""The stimulation policy fires on a qualifying wave, blocks on each threshold, and says why."""

from __future__ import annotations

import dataclasses
import math
import re

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from firmware_bridge import StimulationRequest
from firmware_bridge.config import InterlockSettings
from service.core.grid import DEFAULT_GRID, NOMINAL_RATE_HZ, ElectrodeGrid
from service.policy.limits import PolicyLimitError, check_policy_limits
from service.policy.settings import PolicySettings, StimulationParameters
from service.policy.stimulation_policy import (
    CHECKS,
    StimulationDecision,
    StimulationPolicy,
    _lead_rule,
)
from service.policy.stimulation_policy import longest_run as first_longest_run
from service.waves.estimator import WaveEstimate, WaveEstimator

FS = NOMINAL_RATE_HZ
N = 16
PITCH = DEFAULT_GRID.pitch_m
SD = 2.0
TARGET = tuple((row, col) for row in range(7, 11) for col in range(17, 20))
"""Right-hand edge, rows 7-10: the wave must reach x = 17 pitches (8.5 mm) to enter it."""
COLS_X = np.arange(DEFAULT_GRID.cols) * PITCH


def _estimate(
    *,
    pgd: float | np.ndarray = 0.9,
    speed: float | np.ndarray = 0.1,
    direction: float | np.ndarray = 0.0,
    amplitude: float | np.ndarray = 10.0,
    front_x: np.ndarray | None = None,
    start_x: float = 5.0e-3,
    delay: float = 0.0,
    live: np.ndarray | None = None,
) -> WaveEstimate:
    """N predicted frames of a wave whose envelope fills the array up to ``front_x`` (+x)."""

    def per_frame(value: float | np.ndarray) -> np.ndarray:
        return np.broadcast_to(np.asarray(value, dtype=np.float64), (N,)).copy()

    speed = per_frame(speed)
    if front_x is None:
        front_x = start_x + speed * np.arange(1, N + 1) / FS
    behind = COLS_X[None, :] <= np.asarray(front_x)[:, None] + 1e-12  # (N, cols)
    envelope = np.where(behind[:, None, :], 20.0, 1.0) * np.ones((N, *DEFAULT_GRID.shape))
    return WaveEstimate(
        speed_mps=speed,
        direction_deg=per_frame(direction),
        pgd=per_frame(pgd),
        amplitude_uv=per_frame(amplitude),
        frequency_hz=per_frame(10.0),
        pattern=np.zeros(N, dtype=np.int8),
        phase_distance_corr=np.zeros(N),
        phase_angle_corr=np.zeros(N),
        envelope_uv=envelope,
        delay_s=per_frame(delay),
        channel_valid=np.ones(DEFAULT_GRID.shape, dtype=bool) if live is None else live,
        n_predicted=N,
        sample_rate_hz=FS,
    )


@pytest.fixture
def policy() -> StimulationPolicy:
    return StimulationPolicy(PolicySettings(target_electrodes=TARGET))


# -- firing ----------------------------------------------------------------------------------


def test_fires_on_a_qualifying_wave_with_its_lead_time(policy):
    decision = policy.decide(_estimate(speed=0.1, start_x=5.0e-3), SD)
    assert decision.request
    assert decision.check == "ok"
    # From frame 13 on the front has crossed the array: it can no longer be followed.
    assert decision.reason.startswith("request: all thresholds hold on predicted frames 1-12")
    # The front is 3.5 mm from the target's near edge at 0.1 m/s: 35 ms (± half a pitch).
    assert decision.lead_time_s == pytest.approx(0.035, abs=0.0026)
    assert decision.reason.endswith(
        f"of {N} (>= 8 consecutive); wavefront reaches the target in "
        f"{1e3 * decision.lead_time_s:.1f} ms"
    )
    assert (decision.run_start, decision.run_length) == (0, 12)
    params = decision.parameters
    assert params.channels == TARGET  # no stimulation channels configured: the target
    assert params.channel_indices(DEFAULT_GRID.cols)[0] == 7 * 20 + 17
    assert (params.amplitude_ua, params.phase_width_us) == (10, 100)


def test_lead_time_accounts_for_the_filter_delay(policy):
    late = policy.decide(_estimate(speed=0.1, start_x=5.0e-3, delay=0.010), SD)
    # The envelope is 10 ms old, so the front is really 1 mm further on: 10 ms sooner.
    assert late.lead_time_s == pytest.approx(0.025, abs=0.0026)


def test_the_lead_window_is_judged_on_the_lead_left_after_the_datas_age():
    """The arrival is predicted from the newest measured frame; by the time of the decision
    that frame is ``data_age_s`` old, and only what is left of the lead counts against
    ``min_lead_ms``: the same wave is requested on fresh data and blocked on data old enough
    that less than 5 ms would be left. The decision's lead stays counted from the frame."""
    estimate = _estimate(speed=0.1, start_x=5.0e-3)
    policy = StimulationPolicy(PolicySettings(target_electrodes=TARGET, persistence_frames=1))
    fresh = policy.decide(estimate, SD)
    lead = policy._frame_values(estimate, SD)["lead_time"]
    assert fresh.request
    spare = float(lead[np.isfinite(lead)].max()) - 5e-3  # the age the longest lead can bear
    at_edge = policy.decide(estimate, SD, data_age_s=spare * (1 - 1e-9))
    # Only the longest lead's frame is left; its lead is still counted from the frame.
    assert at_edge.request and at_edge.lead_time_s == pytest.approx(spare + 5e-3, abs=1e-12)
    late = policy.decide(estimate, SD, data_age_s=spare + 1e-6)
    assert late.check == "lead_time"
    assert re.fullmatch(
        rf"blocked: lead time left on data {1e3 * (spare + 1e-6):.1f} ms old \d+\.\d ms "
        r"outside \[5, 100\] ms on 16 of 16 predicted frames",
        late.reason,
    ), late.reason


def test_the_reasons_give_the_lead_and_the_datas_age_in_ms():
    """A user reads the lead and the data's age off the reason, in ms to 0.1 ms: a slow wave
    (lead about 170 ms) is requested on data 100 ms old and blocked on data 250 ms old."""
    policy = StimulationPolicy(PolicySettings(target_electrodes=TARGET, min_speed_mps=0.01))
    estimate = _estimate(speed=0.02, start_x=5.0e-3)
    requested = policy.decide(estimate, SD, data_age_s=0.1)
    assert requested.request and requested.lead_time_s == pytest.approx(0.175, abs=0.006)
    assert requested.reason.endswith(
        f"wavefront reaches the target in {1e3 * requested.lead_time_s:.1f} ms"
    ), requested.reason
    left = float(np.median(policy._frame_values(estimate, SD, 0.25)["lead_time"]))
    blocked = policy.decide(estimate, SD, data_age_s=0.25)
    assert blocked.reason == (
        f"blocked: lead time left on data 250.0 ms old {1e3 * left:.1f} ms outside [5, 100] ms "
        "on 16 of 16 predicted frames"
    )


@pytest.mark.parametrize("age", [-1e-3, math.nan, math.inf])
def test_a_data_age_that_is_not_a_finite_number_at_least_0_is_refused(policy, age):
    with pytest.raises(ValueError, match="'data_age_s' must be a finite number >= 0"):
        policy.decide(_estimate(), SD, data_age_s=age)


def test_configured_stimulation_channels_are_used():
    stim = StimulationParameters(channels=((9, 19),), amplitude_ua=20, phase_width_us=50)
    policy = StimulationPolicy(PolicySettings(target_electrodes=TARGET, stimulation=stim))
    decision = policy.decide(_estimate(), SD)
    assert decision.request
    assert decision.parameters == stim


def test_decisions_are_frozen(policy):
    decision = policy.decide(_estimate(), SD)
    assert isinstance(decision, StimulationDecision)
    with pytest.raises(AttributeError):
        decision.request = False  # type: ignore[misc]


# -- blocking --------------------------------------------------------------------------------

_FAILS_9 = np.r_[np.full(9, 0.41), np.full(7, 0.9)]
_MOVING = 5.0e-3 + 0.1 * np.arange(1, N + 1) / FS
"""Front positions of the default wave (0.1 m/s from 5 mm), for cases that change its speed."""
# pgd fails on frame 4 only, speed on frame 11 only: each holds on >= 8 consecutive frames
# alone, but together on at most 6 (frames 5-10).
_PGD_BAD_AT_4 = np.where(np.arange(N) == 4, 0.1, 0.9)
_SPEED_BAD_AT_11 = np.where(np.arange(N) == 11, 5.0, 0.1)


@pytest.mark.parametrize(
    ("changes", "check", "reason"),
    [
        (
            {"pgd": _FAILS_9},
            "pgd",
            "blocked: pgd 0.41 < 0.60 on 9 of 16 predicted frames",
        ),
        (
            {"speed": 1.5, "front_x": _MOVING},
            "speed",
            "blocked: speed 1.5 m/s outside [0.05, 1] m/s on 16 of 16 predicted frames",
        ),
        (
            {"speed": 0.01, "front_x": np.full(N, 5.0e-3)},
            "speed",
            "blocked: speed 0.01 m/s outside [0.05, 1] m/s on 16 of 16 predicted frames",
        ),
        (
            {"speed": math.inf, "front_x": np.full(N, 5.0e-3)},
            "speed",
            "blocked: speed inf m/s outside [0.05, 1] m/s on 16 of 16 predicted frames",
        ),
        (
            {"amplitude": 4.0},
            "amplitude",
            "blocked: amplitude 2.00 sd < 3 sd on 16 of 16 predicted frames",
        ),
        (
            {"direction": 180.0, "front_x": np.full(N, 5.0e-3)},
            "direction",
            "blocked: direction 180° off the target > 45° on 16 of 16 predicted frames",
        ),
        (
            {"direction": 60.0},
            "direction",
            "blocked: direction 60° off the target > 45° on 16 of 16 predicted frames",
        ),
        (
            {"speed": 0.05, "start_x": 1.0e-3},
            "lead_time",
            r"blocked: lead time 1[45]\d\.\d ms outside \[5, 100\] ms on 16 of 16 predicted frames",
        ),
        (
            {"front_x": np.full(N, 10.0e-3)},
            "lead_time",
            r"blocked: wavefront already at the target region \(it has crossed the array\) "
            "on 16 of 16 predicted frames",
        ),
        (
            {"amplitude": 10.0, "front_x": np.full(N, -1.0)},
            "direction",
            "blocked: direction 180° off the target > 45° on 16 of 16 predicted frames",
        ),
        (
            {"pgd": _PGD_BAD_AT_4, "speed": _SPEED_BAD_AT_11, "front_x": _MOVING},
            "persistence",
            "blocked: all thresholds hold together on at most 6 consecutive predicted frames "
            "< 8 required",
        ),
    ],
)
def test_each_threshold_blocks_with_its_reason(policy, changes, check, reason):
    decision = policy.decide(_estimate(**changes), SD)
    assert not decision.request
    assert decision.check == check
    assert re.fullmatch(reason, decision.reason) or decision.reason == reason, decision.reason
    assert decision.lead_time_s is None
    assert decision.run_start is None


def test_the_first_failing_threshold_in_order_is_named(policy):
    decision = policy.decide(_estimate(pgd=0.1, speed=5.0, amplitude=0.0, direction=180.0), SD)
    assert decision.check == "pgd"
    decision = policy.decide(_estimate(speed=5.0, amplitude=0.0, direction=180.0), SD)
    assert decision.check == "speed"


def test_a_front_that_already_passed_the_target_gives_a_negative_lead():
    middle = tuple((row, col) for row in range(7, 11) for col in (10, 11))  # from x = 5 mm
    policy = StimulationPolicy(PolicySettings(target_electrodes=middle))
    assert policy.decide(_estimate(speed=0.05, start_x=3.5e-3), SD).lead_time_s == (
        pytest.approx(0.030, abs=0.006)
    )
    decision = policy.decide(_estimate(speed=0.05, start_x=6.0e-3), SD)
    assert decision.check == "lead_time"
    assert re.fullmatch(
        r"blocked: lead time -\d+\.\d ms outside \[5, 100\] ms on 16 of 16 predicted frames",
        decision.reason,
    ), decision.reason


@pytest.mark.parametrize(
    ("failing", "expected"),
    [
        ([-math.inf] * 5 + [math.inf] * 3, "wavefront already at the target region"),
        ([-math.inf] * 3 + [math.inf] * 5, "arrival at the target cannot be predicted"),
        ([-math.inf, math.inf, 0.2, 0.3, 0.25], "lead time 250.0 ms outside [5, 100] ms"),
        # Ties go to the earlier, plainer reason: arrived, then unpredictable.
        ([-math.inf, math.inf, 0.2], "wavefront already at the target region"),
        ([math.inf, 0.2], "arrival at the target cannot be predicted"),
    ],
)
def test_lead_time_reason_names_the_commonest_failure(failing, expected):
    # Mixed infinities must neither produce NaN (median of -inf and inf) nor warn.
    assert _lead_rule(np.array(failing), PolicySettings()).startswith(expected)


def test_nan_in_an_estimate_is_refused():
    with pytest.raises(ValueError, match="'pgd' must not contain NaN"):
        _estimate(pgd=math.nan)


@pytest.mark.parametrize(("field", "check"), [("pgd", "pgd"), ("amplitude", "amplitude")])
def test_an_infinite_pgd_or_amplitude_blocks(policy, field, check):
    """inf is a legal ``WaveEstimate`` value (NaN is refused) but no measure of a wave: a
    PGD is at most 1 and an amplitude comes from finite samples. Non-finite values never
    pass a threshold, whichever side of it they lie."""
    decision = policy.decide(_estimate(**{field: math.inf}), SD)
    assert not decision.request
    assert decision.check == check
    assert decision.reason.startswith(f"blocked: {check} inf")


@pytest.mark.parametrize("direction", [math.inf, -math.inf])
def test_an_infinite_direction_blocks_on_direction(policy, direction):
    """An infinite direction has no heading: the decision blocks on it, naming it, rather
    than raising from the strips across that direction."""
    decision = policy.decide(_estimate(direction=direction), SD)
    assert not decision.request
    assert decision.check == "direction"
    assert decision.reason.startswith("blocked: direction 180° off the target")


def test_no_target_region_never_requests():
    policy = StimulationPolicy()
    decision = policy.decide(_estimate(), SD)
    assert not decision.request
    assert decision.check == "target"
    assert decision.reason == "blocked: no target region configured (policy.target_electrodes)"
    assert (decision.run_start, decision.run_length, decision.lead_time_s) == (None, 0, None)
    assert decision.parameters == policy.parameters


def test_a_blocked_decision_reports_the_longest_run_and_the_train_it_would_have_asked_for():
    # pgd fails on frame 4 only, speed on frame 11 only: together they hold on frames 5-10.
    estimate = _estimate(pgd=_PGD_BAD_AT_4, speed=_SPEED_BAD_AT_11, front_x=_NEAR)
    for persistence, check in ((7, "persistence"), (12, "pgd")):
        policy = StimulationPolicy(
            PolicySettings(target_electrodes=TARGET, persistence_frames=persistence)
        )
        decision = policy.decide(estimate, SD)
        assert decision.check == check, decision.reason
        assert (decision.run_start, decision.run_length, decision.lead_time_s) == (None, 6, None)
        assert decision.parameters == policy.parameters
        assert decision.parameters.channels == TARGET


def test_a_threshold_failing_on_every_frame_blocks_even_when_one_frame_is_enough():
    settings = PolicySettings(target_electrodes=TARGET, persistence_frames=1)
    decision = StimulationPolicy(settings).decide(_estimate(pgd=0.1, front_x=_NEAR), SD)
    assert (decision.request, decision.check, decision.run_length) == (False, "pgd", 0)
    assert StimulationPolicy(settings).decide(_estimate(front_x=_NEAR), SD).request


@pytest.mark.parametrize(
    ("flags", "expected"),
    [([], (0, 0)), ([0, 0, 0], (0, 0)), ([0, 1, 1, 0, 1], (1, 2)), ([1, 0, 1, 1], (2, 2))],
)
def test_the_first_longest_run_of_true_is_found(flags, expected):
    assert first_longest_run(np.array(flags, dtype=bool)) == expected


def test_an_envelope_below_the_amplitude_threshold_locates_no_wave():
    # The wave's envelope is 20 µV: 3 robust s.d. at s.d. 6 µV (located, requested), but short
    # of 3 s.d. at 7 µV, where no electrode is part of a wave (direction unknown: 180°). The
    # amplitude itself (30 µV) passes at both.
    policy = StimulationPolicy(PolicySettings(target_electrodes=TARGET))
    assert policy.decide(_estimate(amplitude=30.0, front_x=_NEAR), 6.0).request
    decision = policy.decide(_estimate(amplitude=30.0, front_x=_NEAR), 7.0)
    assert (decision.request, decision.check) == (False, "direction"), decision.reason
    assert "direction 180°" in decision.reason


def test_dead_channels_do_not_dilute_the_front():
    # Only rows 7-10 are live; dead channels carry no envelope, as the estimator reports them.
    # Averaged over live electrodes only, each column of the wave still reads 20 µV.
    policy = StimulationPolicy(PolicySettings(target_electrodes=TARGET))
    everywhere = policy.decide(_estimate(front_x=_NEAR), SD)
    live = np.zeros(DEFAULT_GRID.shape, dtype=bool)
    live[7:11] = True
    estimate = _estimate(front_x=_NEAR, live=live)
    estimate = dataclasses.replace(estimate, envelope_uv=np.where(live, estimate.envelope_uv, 0.0))
    decision = policy.decide(estimate, SD)
    assert decision.request, decision.reason
    assert decision.lead_time_s == everywhere.lead_time_s


def test_dead_target_electrodes_still_define_the_region(policy):
    live = np.ones(DEFAULT_GRID.shape, dtype=bool)
    live[7:11, 17:20] = False
    assert policy.decide(_estimate(live=live), SD).request


def test_a_front_at_the_last_live_strip_before_a_dead_target_region_is_not_followed(policy):
    """Columns 17-19, the target's, are dead: a front seen at column 16 may be anywhere
    beyond it, and a wave that swept the whole array looks the same. It is not requested; a
    front still two columns before the last live one is."""
    live = np.ones(DEFAULT_GRID.shape, dtype=bool)
    live[:, 17:] = False
    for front_x in (8.0e-3, 1.0):  # at column 16; long past the array
        decision = policy.decide(_estimate(front_x=np.full(N, front_x), live=live), SD)
        assert (decision.request, decision.check) == (False, "lead_time"), decision.reason
        assert "already at the target region" in decision.reason
    approaching = policy.decide(_estimate(front_x=np.full(N, 7.0e-3), live=live), SD)
    assert approaching.request, approaching.reason
    assert approaching.lead_time_s == pytest.approx(1.25e-3 / 0.1 + 8.5 / FS, abs=1e-9)


# -- input checks ----------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [0.0, -1.0, math.nan, math.inf])
def test_robust_sd_must_be_finite_and_positive(policy, bad):
    with pytest.raises(ValueError, match=r"'robust_sd_uv' must be a finite number > 0"):
        policy.decide(_estimate(), bad)


def test_bad_inputs_are_refused(policy):
    with pytest.raises(TypeError, match="'estimate' must be WaveEstimate"):
        policy.decide({"pgd": 1.0}, SD)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="'robust_sd_uv' must be a real number"):
        policy.decide(_estimate(), "2")  # type: ignore[arg-type]
    long_persistence = StimulationPolicy(
        PolicySettings(target_electrodes=TARGET, persistence_frames=17)
    )
    with pytest.raises(ValueError, match="at least persistence_frames=17 predicted frames"):
        long_persistence.decide(_estimate(), SD)
    other_rate = StimulationPolicy(PolicySettings(target_electrodes=TARGET), sample_rate_hz=250.0)
    with pytest.raises(ValueError, match="must be at 250 Hz like the policy"):
        other_rate.decide(_estimate(), SD)
    other_grid = StimulationPolicy(
        PolicySettings(target_electrodes=((1, 1),)), grid=ElectrodeGrid(rows=8, cols=8)
    )
    with pytest.raises(ValueError, match="must be on the policy's grid"):
        other_grid.decide(_estimate(), SD)


def test_construction_errors_name_the_argument():
    with pytest.raises(TypeError, match=r"^'settings' must be PolicySettings"):
        StimulationPolicy({"min_pgd": 0.5})  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"^'grid' must be ElectrodeGrid"):
        StimulationPolicy(grid=(18, 20))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"^'sample_rate_hz' must be"):
        StimulationPolicy(sample_rate_hz=0.0)


def test_a_robust_sd_below_one_microvolt_is_accepted(policy):
    assert policy.decide(_estimate(amplitude=5.0, front_x=_NEAR), 0.5).request


def test_the_corner_electrodes_are_on_the_grid():
    corners = ((0, 0), (0, 19), (17, 0), (17, 19))
    policy = StimulationPolicy(PolicySettings(target_electrodes=corners))
    assert policy.parameters.channels == corners


def test_electrodes_off_the_grid_are_refused():
    with pytest.raises(ValueError, match=r"target_electrodes\.0: must be .* got \(18, 0\)"):
        StimulationPolicy(PolicySettings(target_electrodes=((18, 0),)))
    stim = StimulationParameters(channels=((0, 20),))
    with pytest.raises(ValueError, match=r"stimulation\.channels\.0: .* got \(0, 20\)"):
        StimulationPolicy(PolicySettings(target_electrodes=TARGET, stimulation=stim))


def test_settings_are_validated_and_frozen():
    with pytest.raises(ValidationError, match="'min_speed_mps' must be < 'max_speed_mps'"):
        PolicySettings(min_speed_mps=1.0, max_speed_mps=0.5)
    with pytest.raises(ValidationError, match="'min_lead_ms' must be < 'max_lead_ms'"):
        PolicySettings(min_lead_ms=50.0, max_lead_ms=10.0)
    with pytest.raises(ValidationError, match="must not repeat"):
        PolicySettings(target_electrodes=((1, 1), (1, 1)))
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        PolicySettings(min_pdg=0.5)
    with pytest.raises(ValidationError, match=r"charge density <= 25 µC/cm²"):
        StimulationParameters(amplitude_ua=100, phase_width_us=100)
    with pytest.raises(ValidationError):
        PolicySettings(min_pgd=1.5)
    config = PolicySettings(target_electrodes=[[3, 4]])  # as TOML arrays arrive
    assert config.target_electrodes == ((3, 4),)
    for not_a_number in (
        {"target_electrodes": [[0, False]]},  # lax pydantic: electrode (0, 0)
        {"min_pgd": True},
        {"persistence_frames": 8.0},
        {"stimulation": {"amplitude_ua": "10"}},
    ):
        with pytest.raises(ValidationError, match=r"Input should be a valid (integer|number)"):
            PolicySettings.model_validate(not_a_number)
    assert PolicySettings(min_lead_ms=0).min_lead_ms == 0.0  # an int where a float is due
    with pytest.raises(ValidationError):
        config.min_pgd = 0.1  # type: ignore[misc]
    assert StimulationParameters().charge_density_uc_per_cm2 < 25.0


def test_the_configured_train_is_the_request_the_bridge_is_asked_for():
    stim = StimulationParameters(
        channels=((9, 19), (0, 1)),
        amplitude_ua=20,
        phase_width_us=50,
        frequency_hz=130,
        train_duration_ms=200,
        electrode_area_cm2=2.5e-4,
    )
    assert stim.to_request(DEFAULT_GRID.cols) == StimulationRequest(
        channels=(9 * 20 + 19, 1),  # row-major, in the configured order
        amplitude_ua=20,
        phase_width_us=50,
        frequency_hz=130,
        train_duration_ms=200,
        electrode_area_cm2=2.5e-4,
    )
    # The default train, on the last electrode, passes the bridge's checks.
    assert StimulationParameters(channels=((17, 19),)).to_request(20).channels == (359,)


@pytest.mark.parametrize("area", [1.01, 3.4028235677973366e38, 1e300])
def test_a_contact_area_past_the_interlocks_bound_is_refused_naming_it(area):
    """The bridge's own bound (``[interlocks] electrode_area_cm2`` <= 1 cm²): a larger area,
    one float32 cannot hold above all, was taken here and failed later as the bridge's
    request was built (an HTTP 500 from PUT /control/policy, found by the schema fuzz)."""
    with pytest.raises(ValidationError, match="electrode_area_cm2"):
        StimulationParameters(electrode_area_cm2=area)


# -- threshold boundaries --------------------------------------------------------------------

_NEAR = 1.5e-3 + 0.1 * np.arange(1, N + 1) / FS
"""Front positions of a wave at 0.1 m/s from 1.5 mm: it stays short of the target on every
predicted frame, ~70 ms away."""


def _boundary_estimate() -> WaveEstimate:
    """Every threshold holds on all 16 frames, each quantity varying a little across them."""
    return _estimate(
        pgd=np.linspace(0.8, 0.9, N),
        speed=np.linspace(0.09, 0.11, N),
        amplitude=np.linspace(8.0, 12.0, N),
        direction=np.linspace(-5.0, 10.0, N),
        start_x=1.5e-3,
    )


def _limit(name: str, bound: str, values: dict[str, np.ndarray]) -> tuple[str, float, float]:
    """The setting for ``name``'s ``bound``, its value at the extreme frame (which must pass)
    and the next float beyond it toward failing (which must not)."""
    lead_ms = 1e3 * values["lead_time"]
    table = {
        ("pgd", "min"): ("min_pgd", values["pgd"].min(), math.inf),
        ("speed", "min"): ("min_speed_mps", values["speed"].min(), math.inf),
        ("speed", "max"): ("max_speed_mps", values["speed"].max(), -math.inf),
        ("amplitude", "min"): ("min_amplitude_sd", values["amplitude"].min(), math.inf),
        ("direction", "max"): ("max_direction_error_deg", values["direction"].max(), -math.inf),
        ("lead_time", "min"): ("min_lead_ms", lead_ms.min(), math.inf),
        ("lead_time", "max"): ("max_lead_ms", lead_ms.max(), -math.inf),
    }
    setting, at, toward = table[(name, bound)]
    return setting, float(at), float(np.nextafter(at, toward))


@pytest.mark.parametrize(
    ("name", "bound"),
    [
        ("pgd", "min"),
        ("speed", "min"),
        ("speed", "max"),
        ("amplitude", "min"),
        ("direction", "max"),
        ("lead_time", "min"),
        ("lead_time", "max"),
    ],
)
def test_every_threshold_is_inclusive_and_one_ulp_beyond_it_blocks(name, bound):
    # Settings and docstrings say "needs", "range", "largest angle", "window": each limit is
    # itself allowed. Pinned at the float: a frame exactly at the limit passes, the next float
    # beyond it fails, and with all 16 frames required that one frame decides.
    estimate = _boundary_estimate()
    base = {"target_electrodes": TARGET, "persistence_frames": N}
    values = StimulationPolicy(PolicySettings(**base))._frame_values(estimate, SD)
    setting, at, beyond = _limit(name, bound, values)
    at_limit = StimulationPolicy(PolicySettings(**base, **{setting: at})).decide(estimate, SD)
    assert at_limit.request, at_limit.reason
    past_limit = StimulationPolicy(PolicySettings(**base, **{setting: beyond}))
    decision = past_limit.decide(estimate, SD)
    assert not decision.request
    assert decision.check == name, decision.reason
    assert "on 1 of 16 predicted frames" in decision.reason


def test_the_amplitude_limit_is_in_units_of_the_robust_sd():
    estimate = _estimate(amplitude=6.0, front_x=_NEAR)  # 6 µV over 2 µV: exactly 3 sd
    assert StimulationPolicy(PolicySettings(target_electrodes=TARGET)).decide(estimate, 2.0).request
    blocked = StimulationPolicy(PolicySettings(target_electrodes=TARGET)).decide(
        estimate, float(np.nextafter(2.0, math.inf))
    )
    assert blocked.check == "amplitude"


@pytest.mark.parametrize(("persistence", "check"), [(6, "ok"), (7, "persistence")])
def test_persistence_counts_frames_on_which_all_thresholds_hold_together(persistence, check):
    # pgd fails on frame 4 only, speed on frame 11 only: together they hold on frames 5-10.
    estimate = _estimate(pgd=_PGD_BAD_AT_4, speed=_SPEED_BAD_AT_11, front_x=_NEAR)
    settings = PolicySettings(target_electrodes=TARGET, persistence_frames=persistence)
    decision = StimulationPolicy(settings).decide(estimate, SD)
    assert decision.check == check, decision.reason
    if decision.request:
        assert (decision.run_start, decision.run_length) == (5, 6)


@pytest.mark.parametrize(("persistence", "check"), [(12, "ok"), (13, "pgd")])
def test_a_threshold_holding_on_fewer_frames_than_persistence_is_named(persistence, check):
    estimate = _estimate(pgd=np.r_[np.full(4, 0.1), np.full(12, 0.9)], front_x=_NEAR)
    settings = PolicySettings(target_electrodes=TARGET, persistence_frames=persistence)
    assert StimulationPolicy(settings).decide(estimate, SD).check == check


# -- properties ------------------------------------------------------------------------------


def _runs(flags: np.ndarray) -> list[tuple[int, int]]:
    """(start, length) of every run of True, in order."""
    runs, start = [], None
    for k, flag in enumerate([*flags, False]):
        if flag and start is None:
            start = k
        elif not flag and start is not None:
            runs.append((start, k - start))
            start = None
    return runs


def _longest_run(flags: np.ndarray) -> int:
    return max((length for _, length in _runs(flags)), default=0)


def _near(limit: float, step: float) -> st.SearchStrategy[float]:
    """Values at a limit, one ulp either side, and a little further either side."""
    below, above = np.nextafter(limit, -math.inf), np.nextafter(limit, math.inf)
    return st.sampled_from([limit, below, above, limit - step, limit + step]).map(float)


def _per_frame(data: st.DataObject, good: float, near: st.SearchStrategy[float]) -> np.ndarray:
    """Per-frame values: mostly ``good``, else near a limit, so that requests, boundary cases
    and near misses all occur."""
    value = st.one_of(st.just(good), st.just(good), near)
    return np.array(data.draw(st.lists(value, min_size=N, max_size=N)), dtype=np.float64)


@settings(max_examples=300, deadline=None)
@given(
    data=st.data(),
    min_pgd=st.floats(0.1, 0.9),
    speed_range=st.tuples(st.floats(0.06, 0.095), st.floats(0.105, 2.0)),
    min_amplitude_sd=st.floats(0.5, 8.0),
    persistence=st.integers(1, N),
    start_x=st.floats(0.0, 9.5e-3),
    front_speed=st.sampled_from([0.0, 0.05, 0.1]),
)
def test_a_request_happens_exactly_when_every_threshold_holds_long_enough(
    data, min_pgd, speed_range, min_amplitude_sd, persistence, start_x, front_speed
):
    min_speed, max_speed = speed_range
    pgd = _per_frame(data, 0.95, _near(min_pgd, 0.05))
    speed = _per_frame(
        data,
        0.1,
        st.one_of(_near(min_speed, 0.01), _near(max_speed, 0.01), st.just(math.inf)),
    )
    amplitude = SD * _per_frame(data, 10.0, _near(min_amplitude_sd, 0.5))
    direction = _per_frame(data, 0.0, st.sampled_from([5.0, -30.0, 60.0, 180.0]))
    front_x = start_x + front_speed * np.arange(1, N + 1) / FS
    estimate = _estimate(
        pgd=pgd, speed=speed, amplitude=amplitude, direction=direction, front_x=front_x
    )
    # Direction error and lead time come from the wave's geometry (tested with the estimator
    # below); draw their limits at, or an ulp from, a frame's value.
    located = StimulationPolicy(
        PolicySettings(target_electrodes=TARGET, min_amplitude_sd=min_amplitude_sd)
    )._frame_values(estimate, SD)
    error, lead_ms = located["direction"], 1e3 * located["lead_time"]
    finite_lead = lead_ms[np.isfinite(lead_ms)]

    def limit_at_a_frame(values: np.ndarray, widest: float) -> float:
        """At (or an ulp from) one frame's value; half the time the widest, which lets
        every frame through, so that the other thresholds' boundaries decide."""
        frame = data.draw(st.one_of(st.just(widest), st.sampled_from(list(values))))
        return data.draw(_near(float(frame), 1.0))

    max_error = limit_at_a_frame(error, float(error.max()))
    min_lead, max_lead = 5.0, 100.0
    if finite_lead.size:
        min_lead = limit_at_a_frame(finite_lead, float(finite_lead.min()))
        max_lead = limit_at_a_frame(finite_lead, float(finite_lead.max()))
    assume(0.0 <= max_error <= 180.0 and 0.0 <= min_lead < max_lead)
    config = PolicySettings(
        target_electrodes=TARGET,
        min_pgd=min_pgd,
        min_speed_mps=min_speed,
        max_speed_mps=max_speed,
        min_amplitude_sd=min_amplitude_sd,
        max_direction_error_deg=max_error,
        min_lead_ms=min_lead,
        max_lead_ms=max_lead,
        persistence_frames=persistence,
    )
    policy = StimulationPolicy(config)
    decision = policy.decide(estimate, SD)
    assert policy.decide(estimate, SD) == decision
    assert StimulationPolicy(config).decide(estimate, SD) == decision
    assert decision.request == (decision.check == "ok")

    # Each threshold as documented: limits inclusive, anything non-finite fails.
    holds = {
        "pgd": pgd >= min_pgd,
        "speed": (speed >= min_speed) & (speed <= max_speed),
        "amplitude": amplitude / SD >= min_amplitude_sd,
        "direction": error <= max_error,
        "lead_time": (lead_ms >= min_lead) & (lead_ms <= max_lead),
    }
    together = np.logical_and.reduce(list(holds.values()))
    # Both directions: a request whenever every threshold holds together long enough ...
    assert decision.request == (_longest_run(together) >= persistence), decision.reason
    if decision.request:
        # ... on the first longest run, whose median lead time is reported.
        runs = _runs(together)
        start, length = max(runs, key=lambda run: (run[1], -run[0]))
        assert (decision.run_start, decision.run_length) == (start, length)
        assert decision.lead_time_s == pytest.approx(
            float(np.median(located["lead_time"][start : start + length])), rel=1e-12
        )
    else:
        # ... and never otherwise, naming the first threshold, in order, that holds on too few
        # consecutive frames by itself, else persistence.
        short = [name for name in CHECKS if _longest_run(holds[name]) < persistence]
        assert decision.check == (short[0] if short else "persistence"), decision.reason


# -- with the estimator ----------------------------------------------------------------------


def _front_session(direction: float) -> tuple[np.ndarray, float]:
    """A 10 Hz wave switched on by a front crossing the array at 0.05 m/s (+x or -x)."""
    from bench.data.synth.background import Background, pink_background

    speed, onset = 0.05, 0.5
    t = np.arange(300) / FS
    x, _ = DEFAULT_GRID.positions_m()
    along = x if direction == 0.0 else x.max() - x
    tau = t[:, None, None] - onset - along / speed
    frames = 100.0 * (tau >= 0) * np.cos(2 * np.pi * 10.0 * tau)
    frames += pink_background(t, DEFAULT_GRID, Background(rms_uv=20.0), np.random.default_rng(1))
    return frames.astype(np.float32), onset + 8.5e-3 / speed


def test_estimator_and_policy_fire_ahead_of_a_front_and_not_behind_one():
    estimator = WaveEstimator()
    policy = StimulationPolicy(PolicySettings(target_electrodes=TARGET))
    frames, arrival_s = _front_session(0.0)
    sd = estimator.robust_sd(frames[:130])
    newest = round(arrival_s * FS) - 12  # the front reaches the target 12 frames later
    decision = policy.decide(estimator.estimate(frames[newest - 47 : newest + 17]), sd)
    assert decision.request, decision.reason
    truth = arrival_s - newest / FS
    assert decision.lead_time_s == pytest.approx(truth, abs=0.025)

    away, _ = _front_session(180.0)
    for newest in range(180, 280, 10):
        decision = policy.decide(estimator.estimate(away[newest - 47 : newest + 17]), sd)
        assert not decision.request


@pytest.mark.parametrize("persistence", [N + 1, 1024])
def test_a_persistence_longer_than_the_prediction_is_refused_where_the_policy_is_set(persistence):
    """Every estimate holds the models' 16 predicted frames: a policy asking for more
    consecutive frames was taken by the config and by PUT /control/policy, and then refused
    every estimate, a fault in the loop at its first decision. It is refused where it is set,
    naming the key; all 16 are allowed."""
    interlocks, target = InterlockSettings(), ((8, 19),)
    with pytest.raises(PolicyLimitError) as raised:
        check_policy_limits(
            PolicySettings(target_electrodes=target, persistence_frames=persistence), interlocks
        )
    assert raised.value.problems == (
        (
            "persistence_frames",
            f"must be at most the {N} predicted frames each wave estimate holds ([waves] "
            f"predicted_frames), got {persistence}: every decision would be refused",
        ),
    )
    check_policy_limits(PolicySettings(target_electrodes=target, persistence_frames=N), interlocks)
