"""The demo's rig shows the artefact of the trains the demo's own emulator delivers; its
summary says why no stimulation was asked for where the data's age used up the lead."""

from __future__ import annotations

import numpy as np
import pytest

from bench.demo import DemoSummary, demo_rig, demo_settings, format_summary
from firmware_bridge import FirmwareEmulator
from service.config import Settings


def test_the_demo_rig_adds_the_artefact_of_its_emulators_trains():
    settings = demo_settings(Settings())
    emulator = FirmwareEmulator(settings.bridge, settings.emulator)
    rig = demo_rig(settings, emulator)
    assert rig.artefact is not None and rig.artefact.pulse_log is emulator
    assert rig.artefact.grid == rig.source.grid and rig.speed == 1.0
    assert not rig.artefact.at(np.array([0.0, 1e9])).any()  # no train delivered yet


def _summary(decisions: dict[str, int]) -> DemoSummary:
    latency = {"inference_p50": 10.0, "inference_p99": 20.0, "age_p50": 17.0, "age_p99": 32.0}
    return DemoSummary(
        seconds=60.0, frames_in=16_000, predictions=3_800, skipped=12_000, wave_superseded=95,
        latency_ms={**latency, "decision_age_p50": 33.5, "decision_age_p99": 60.0},
        live_psnr_db={}, blend={"enabled": False, "weights": [1.0] * 16, "ar": False},
        decisions=decisions, bridge_outcomes={}, pulses_delivered=0, blanked_frames=0,
        block_reasons={}, fault_disarms={}, rearms=0,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("decisions", "said"),
    [
        ({"ok": 0, "lead_time": 178, "pgd": 1574}, True),
        ({"ok": 3, "lead_time": 178, "pgd": 1574}, False),  # it asked: nothing to explain
        ({"ok": 0, "lead_time": 0, "pgd": 1574}, False),  # no wave got as far as its lead
    ],
)
def test_the_summary_says_when_the_data_s_age_left_no_lead_to_ask_on(decisions, said):
    """On a slow host the loop decides on older data, and the lead left after that age is
    what the policy judges: where that is why nothing was asked for, the summary says so,
    with the age, rather than leave a newcomer with 'ok 0'."""
    lines = [line for line in format_summary(_summary(decisions)) if "why no request" in line]
    assert len(lines) == int(said)
    if said:
        assert "178 decisions" in lines[0] and "33.50 ms old at p50" in lines[0]
