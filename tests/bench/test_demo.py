"""The demo's rig shows the artefact of the trains the demo's own emulator delivers."""

from __future__ import annotations

import numpy as np

from bench.demo import demo_rig, demo_settings
from firmware_bridge import FirmwareEmulator
from service.config import Settings


def test_the_demo_rig_adds_the_artefact_of_its_emulators_trains():
    settings = demo_settings(Settings())
    emulator = FirmwareEmulator(settings.bridge, settings.emulator)
    rig = demo_rig(settings, emulator)
    assert rig.artefact is not None and rig.artefact.pulse_log is emulator
    assert rig.artefact.grid == rig.source.grid and rig.speed == 1.0
    assert not rig.artefact.at(np.array([0.0, 1e9])).any()  # no train delivered yet
