"""The control API refuses to start without a token, except in explicit development mode on
loopback."""

import re

import pytest

from service.api.app import check_api_settings
from service.config import ApiSettings, ConfigError


def test_control_without_a_token_is_refused():
    with pytest.raises(ConfigError, match=r"api\.token must be set"):
        check_api_settings(ApiSettings())


def test_development_mode_only_on_loopback():
    assert check_api_settings(ApiSettings(dev_no_token=True)) is None
    assert check_api_settings(ApiSettings(dev_no_token=True, host="::1")) is None
    with pytest.raises(
        ConfigError, match=re.escape("only allowed with a loopback api.host, got '0.0.0.0'")
    ):
        check_api_settings(ApiSettings(dev_no_token=True, host="0.0.0.0"))


def test_a_token_or_no_control_needs_nothing_else():
    assert check_api_settings(ApiSettings(token="s3cret", host="0.0.0.0")) == "s3cret"
    assert check_api_settings(ApiSettings(control=False, host="0.0.0.0")) is None
