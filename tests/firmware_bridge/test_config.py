"""Configuration: conservative defaults, hard bounds that cannot be configured away, unknown
keys refused."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from firmware_bridge.config import BridgeSettings, EmulatorSettings, InterlockSettings
from firmware_bridge.interlocks import Interlocks


def test_defaults_are_the_safe_ones():
    bridge, limits = BridgeSettings(), InterlockSettings()
    assert bridge.dry_run is True
    assert bridge.host == "127.0.0.1"
    assert limits.charge_density_limit_uc_cm2 == 25.0
    assert limits.refractory_s * 1000 > limits.max_train_duration_ms


@pytest.mark.parametrize("model", [InterlockSettings, EmulatorSettings])
def test_the_charge_density_limit_can_be_lowered_but_not_raised(model):
    assert model(charge_density_limit_uc_cm2=10).charge_density_limit_uc_cm2 == 10
    with pytest.raises(ValidationError, match="less than or equal to 25"):
        model(charge_density_limit_uc_cm2=25.001)


def test_a_limit_smuggled_past_validation_is_caught_by_the_interlocks():
    forged = InterlockSettings.model_construct(charge_density_limit_uc_cm2=1000.0)
    with pytest.raises(ValidationError, match="less than or equal to 25"):
        Interlocks(forged)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"min_amplitude_ua": 50, "max_amplitude_ua": 10}, "'min_amplitude_ua' .50. must be <="),
        ({"refractory_s": 0.5}, "'refractory_s' must be longer than 'max_train_duration_ms'"),
        (
            {"max_trains_per_minute": 20, "max_trains_per_day": 10},
            "must be <= 'max_trains_per_day'",
        ),
        ({"max_amplitude_ua": 50_000}, "less than or equal to 12000"),
        ({"max_channels": 361}, "less than or equal to 360"),
        ({"refractory_s": float("nan")}, "finite number"),
        ({"max_sample_age_s": 50}, "max_sample_age_s\n  Input should be less than or equal to 1"),
        ({"bypass": True}, "Extra inputs are not permitted"),
    ],
)
def test_inconsistent_or_unknown_limits_are_refused(overrides, message):
    with pytest.raises(ValidationError, match=message):
        InterlockSettings(**overrides)


def test_sections_are_frozen():
    with pytest.raises(ValidationError, match="frozen"):
        InterlockSettings().refractory_s = 0.0


@pytest.mark.parametrize(
    "overrides",
    [{"transport": "carrier-pigeon"}, {"port": 0}, {"ack_timeout_s": 0}, {"heartbeat_period_s": 9}],
)
def test_bridge_settings_are_checked(overrides):
    with pytest.raises(ValidationError):
        BridgeSettings(**overrides)
