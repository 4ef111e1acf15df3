"""The stimulation policy fires on a qualifying wave, blocks on each threshold, and says why."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from pydantic import ValidationError

from service.grid import DEFAULT_GRID, NOMINAL_RATE_HZ, ElectrodeGrid
from service.policy import CHECKS, StimulationDecision, StimulationPolicy, _lead_rule
from service.policy_settings import PolicySettings, StimulationParameters
from service.waves import WaveEstimate, WaveEstimator

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
    assert "reaches the target in" in decision.reason
    assert (decision.run_start, decision.run_length) == (0, 12)
    params = decision.parameters
    assert params.channels == TARGET  # no stimulation channels configured: the target
    assert params.channel_indices(DEFAULT_GRID.cols)[0] == 7 * 20 + 17
    assert (params.amplitude_ua, params.phase_width_us) == (10, 100)


def test_lead_time_accounts_for_the_filter_delay(policy):
    late = policy.decide(_estimate(speed=0.1, start_x=5.0e-3, delay=0.010), SD)
    # The envelope is 10 ms old, so the front is really 1 mm further on: 10 ms sooner.
    assert late.lead_time_s == pytest.approx(0.025, abs=0.0026)


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
    ],
)
def test_lead_time_reason_names_the_commonest_failure(failing, expected):
    # Mixed infinities must neither produce NaN (median of -inf and inf) nor warn.
    assert _lead_rule(np.array(failing), PolicySettings()).startswith(expected)


def test_nan_in_an_estimate_is_refused():
    with pytest.raises(ValueError, match="'pgd' must not contain NaN"):
        _estimate(pgd=math.nan)


def test_no_target_region_never_requests():
    decision = StimulationPolicy().decide(_estimate(), SD)
    assert not decision.request
    assert decision.check == "target"
    assert "no target region configured" in decision.reason


def test_dead_target_electrodes_still_define_the_region(policy):
    live = np.ones(DEFAULT_GRID.shape, dtype=bool)
    live[7:11, 17:20] = False
    assert policy.decide(_estimate(live=live), SD).request


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


def test_electrodes_off_the_grid_are_refused():
    with pytest.raises(ValueError, match=r"'target_electrodes' must name .* got \(18, 0\)"):
        StimulationPolicy(PolicySettings(target_electrodes=((18, 0),)))
    stim = StimulationParameters(channels=((0, 20),))
    with pytest.raises(ValueError, match=r"'stimulation.channels' .* got \(0, 20\)"):
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
    with pytest.raises(ValidationError):
        config.min_pgd = 0.1  # type: ignore[misc]
    assert StimulationParameters().charge_density_uc_per_cm2 < 25.0


# -- properties ------------------------------------------------------------------------------


def _longest_run(flags: np.ndarray) -> int:
    best = current = 0
    for flag in flags:
        current = current + 1 if flag else 0
        best = max(best, current)
    return best


_unit = st.floats(0.0, 1.0)
_frames = {"shape": N, "dtype": np.float64}


def _mostly(good: float, other: st.SearchStrategy[float]) -> st.SearchStrategy[float]:
    """Per-frame values that usually pass, so that requests and near misses both occur."""
    return st.one_of(st.just(good), st.just(good), st.just(good), st.just(good), other)


@settings(max_examples=200, deadline=None)
@given(
    pgd=arrays(elements=_mostly(0.9, _unit), **_frames),
    speed=arrays(
        elements=_mostly(0.1, st.sampled_from([0.08, 0.01, 2.0, math.inf, 0.0])), **_frames
    ),
    amplitude=arrays(elements=_mostly(10.0, st.floats(0.0, 20.0)), **_frames),
    direction=arrays(elements=_mostly(0.0, st.sampled_from([5.0, -10.0, 90.0, 180.0])), **_frames),
    start_x=st.floats(0.0, 9.5e-3),
    min_pgd=_unit,
    min_amplitude_sd=st.floats(0.5, 8.0),
    persistence=st.integers(1, N),
    max_lead_ms=st.floats(20.0, 300.0),
)
def test_policy_is_deterministic_and_never_requests_when_a_threshold_fails(
    pgd, speed, amplitude, direction, start_x, min_pgd, min_amplitude_sd, persistence, max_lead_ms
):
    config = PolicySettings(
        target_electrodes=TARGET,
        min_pgd=min_pgd,
        min_amplitude_sd=min_amplitude_sd,
        persistence_frames=persistence,
        max_lead_ms=max_lead_ms,
    )
    front_x = start_x + 0.1 * np.arange(1, N + 1) / FS
    estimate = _estimate(
        pgd=pgd, speed=speed, amplitude=amplitude, direction=direction, front_x=front_x
    )
    policy = StimulationPolicy(config)
    decision = policy.decide(estimate, SD)
    assert policy.decide(estimate, SD) == decision
    assert StimulationPolicy(config).decide(estimate, SD) == decision
    assert decision.check in ("ok", "persistence", *CHECKS)
    assert decision.request == (decision.check == "ok")

    passes = {
        "pgd": pgd >= min_pgd,
        "speed": (speed >= config.min_speed_mps) & (speed <= config.max_speed_mps),
        "amplitude": amplitude / SD >= min_amplitude_sd,
    }
    if decision.request:
        run = slice(decision.run_start, decision.run_start + decision.run_length)
        assert decision.run_length >= persistence
        for name, ok in passes.items():
            assert ok[run].all(), name
        assert np.all(np.asarray(direction)[run] <= config.max_direction_error_deg)
        assert config.min_lead_ms <= 1e3 * decision.lead_time_s <= max_lead_ms
    for name, ok in passes.items():
        if _longest_run(ok) < persistence:
            assert not decision.request
            assert CHECKS.index(decision.check) <= CHECKS.index(name)
    if _longest_run(np.logical_and.reduce(list(passes.values()))) < persistence:
        assert not decision.request


# -- with the estimator ----------------------------------------------------------------------


def _front_session(direction: float) -> tuple[np.ndarray, float]:
    """A 10 Hz wave switched on by a front crossing the array at 0.05 m/s (+x or -x)."""
    from bench.synth.background import Background, pink_background

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
