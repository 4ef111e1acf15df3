"""Requests: encodable or refused at construction, with messages that name the argument."""

from __future__ import annotations

import numpy as np
import pytest

from firmware_bridge.stimulation_request import StimulationRequest


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


def test_charge_density_is_amplitude_times_width_over_area():
    request = _request(amplitude_ua=75, phase_width_us=100, electrode_area_cm2=2.0**-12)
    assert request.charge_per_phase_uc == pytest.approx(0.0075)
    assert request.charge_density_uc_cm2 == pytest.approx(0.0075 * 4096)


def test_the_area_is_rounded_down_to_what_travels_so_density_can_only_rise():
    request = _request(electrode_area_cm2=3e-4)
    assert request.electrode_area_cm2 <= 3e-4
    assert np.float32(request.electrode_area_cm2) == request.electrode_area_cm2


def test_channels_accept_any_integer_sequence_and_become_a_tuple():
    assert _request(channels=np.array([5, 6])).channels == (5, 6)
    assert _request(channels=[359]).channels == (359,)


@pytest.mark.parametrize(
    ("overrides", "error", "message"),
    [
        ({"channels": ()}, ValueError, r"'channels' must list at least one electrode, got \(\)"),
        ({"channels": (3, 3)}, ValueError, r"'channels' must list each electrode once, got \[3\]"),
        (
            {"channels": (360,)},
            ValueError,
            r"'channels\[0\]' must be an int in \[0, 359\], got 360",
        ),
        ({"channels": 5}, TypeError, r"'channels' must be a sequence of electrode indices"),
        ({"channels": (1.0,)}, TypeError, r"'channels\[0\]' must be an int, got float"),
        ({"amplitude_ua": 0}, ValueError, r"'amplitude_ua' must be an int in \[1, 65535\], got 0"),
        ({"amplitude_ua": 70_000}, ValueError, r"'amplitude_ua' must be an int in \[1, 65535\]"),
        ({"phase_width_us": 100.0}, TypeError, r"'phase_width_us' must be an int, got float"),
        ({"frequency_hz": True}, TypeError, r"'frequency_hz' must be an int, got bool"),
        (
            {"electrode_area_cm2": 0.0},
            ValueError,
            r"'electrode_area_cm2' must be a finite number > 0",
        ),
        ({"electrode_area_cm2": float("nan")}, ValueError, r"finite number > 0, got nan"),
        ({"electrode_area_cm2": 1e39}, ValueError, r"must be representable as float32"),
        ({"electrode_area_cm2": 1e-50}, ValueError, r"must be representable as float32"),
        ({"electrode_area_cm2": "1"}, TypeError, r"'electrode_area_cm2' must be a real number"),
    ],
)
def test_unencodable_requests_are_refused_with_the_rule_and_the_value(overrides, error, message):
    with pytest.raises(error, match=message):
        _request(**overrides)
