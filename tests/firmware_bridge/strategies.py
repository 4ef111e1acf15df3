"""Hypothesis strategies shared by the property tests: requests (mostly near or past the
limits), loop health, and time steps that land on the interesting boundaries."""

from __future__ import annotations

import math

from hypothesis import strategies as st

from firmware_bridge.config import InterlockSettings
from firmware_bridge.loop_health import LoopHealth
from firmware_bridge.stimulation_request import StimulationRequest

TIGHT = InterlockSettings(
    refractory_s=1.5,
    max_trains_per_minute=3,
    max_trains_per_day=5,
    max_channels=4,
    charge_density_limit_uc_cm2=20.0,
)
"""Small budgets so that a short sequence reaches every limit."""

SETTINGS = st.sampled_from([InterlockSettings(), TIGHT])


@st.composite
def plausible_requests(draw) -> StimulationRequest:
    """Inside or just past the default bounds; density straddling 25 µC/cm²."""
    width = draw(st.integers(40, 500))
    area = draw(st.sampled_from([3e-4, 2.9e-4, 1e-4]))
    amplitude_max = max(1, math.floor(25.5 * area * 1e6 / width))
    return StimulationRequest(
        channels=tuple(draw(st.sets(st.integers(0, 359), min_size=1, max_size=5))),
        amplitude_ua=draw(st.integers(1, min(amplitude_max, 101))),
        phase_width_us=width,
        frequency_hz=draw(st.integers(1, 201)),
        train_duration_ms=draw(st.integers(9, 1000)),
        electrode_area_cm2=area,
    )


@st.composite
def wild_requests(draw) -> StimulationRequest:
    """Anything the wire format can carry."""
    return StimulationRequest(
        channels=tuple(draw(st.sets(st.integers(0, 359), min_size=1, max_size=12))),
        amplitude_ua=draw(st.integers(1, 65535)),
        phase_width_us=draw(st.integers(1, 65535)),
        frequency_hz=draw(st.integers(1, 65535)),
        train_duration_ms=draw(st.integers(1, 65535)),
        electrode_area_cm2=draw(st.floats(1e-7, 1.0)),
    )


def requests() -> st.SearchStrategy[StimulationRequest]:
    """Mostly plausible requests, so that sequences reach the timing limits, some wild."""
    return st.one_of(plausible_requests(), plausible_requests(), wild_requests())


healths = st.builds(
    LoopHealth,
    newest_sample_age_s=st.one_of(
        st.floats(0, 0.06), st.sampled_from([0.05, float("nan"), -0.001, float("inf")])
    ),
    missing_frames=st.integers(0, 4),
    model_healthy=st.booleans(),
    artefact_frames=st.sampled_from([0, 0, 1, 48]),
)

good_health = st.builds(
    LoopHealth,
    newest_sample_age_s=st.floats(0, 0.05),
    missing_frames=st.integers(0, 2),
    model_healthy=st.just(True),
)

time_steps = st.one_of(
    st.sampled_from([0.0, 0.001, 1.4999, 1.5, 1.5001, 2.0, 20.0, 59.999, 60.0, 3600.0, 86_400.0]),
    st.floats(0, 100),
)
