"""Configuration: conservative defaults, hard bounds that cannot be configured away, unknown
keys refused."""

from __future__ import annotations

import secrets

import pytest
from pydantic import ValidationError

from firmware_bridge.config import BridgeSettings, EmulatorSettings, InterlockSettings
from firmware_bridge.interlocks import Interlocks
from service.config import ConfigError, load_settings


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
        (
            {"max_missing_frames": 10**9},
            "max_missing_frames\n  Input should be less than or equal to 16",
        ),
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


@pytest.mark.parametrize(
    ("link", "max_channels", "message"),
    [
        (
            "baud_rate = 2400",
            8,
            r"at 2400 baud a STIMULATE on 8 electrodes and its ACK \(72 bytes\) take 300 ms.*"
            r"bridge\.ack_timeout_s \(0\.1 s\).*ack_timeout_s to at least 0\.3 s or "
            r"bridge\.baud_rate to at least 7200",
        ),
        ("baud_rate = 57600", 360, r"at 57600 baud a STIMULATE on 360 electrodes"),
        (
            'baud_rate = 9600\nlink_key_file = "{key}"',
            8,
            r"STIMULATE on 8 electrodes and its ACK \(104 bytes, tagged\) take 108 ms",
        ),
    ],
    ids=["heartbeat-cannot-arm", "all-electrodes", "tags"],
)
def test_a_serial_link_too_slow_for_the_ack_timeout_is_refused_at_config_load(
    tmp_path, link, max_channels, message
):
    """Every command waits ack_timeout_s for its reply, and bytes cross an 8N1 line at 10
    bits each: where the longest exchange the interlocks allow cannot fit, the bridge could
    never stimulate (at 2400 baud not even arm), failing only with 'no reply'."""
    key = tmp_path / "link.key"
    key.write_text(secrets.token_hex(32))
    key.chmod(0o600)
    config = tmp_path / "c.toml"
    interlocks = f"[interlocks]\nmax_channels = {max_channels}\n"
    link = link.format(key=key)
    config.write_text(f'[bridge]\ntransport = "serial"\n{link}\n{interlocks}')
    with pytest.raises(ConfigError, match=message):
        load_settings(config)
    fits = config.read_text().replace("[bridge]", "[bridge]\nack_timeout_s = 2.0")
    config.write_text(fits)
    assert load_settings(config).bridge.ack_timeout_s == 2.0
