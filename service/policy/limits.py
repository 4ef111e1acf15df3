"""Whether a stimulation policy fits the interlocks and the electrode grid it will run on.

A policy only asks; the firmware bridge's interlocks decide what is sent. A pulse train outside
the interlocks' bounds, too many electrodes, or an electrode off the array would be blocked on
every request: the operator would be told that the policy is set when it can never stimulate.
So a policy is checked against the limits wherever it is set, by this one function: the config
loader (``service.config.Settings``) and the daemon's policy change (``PUT /control/policy``)
refuse the same policies in the same words.
"""

from __future__ import annotations

from firmware_bridge.config import InterlockSettings
from service.core.errors import CorticastError
from service.core.grid import DEFAULT_GRID, ElectrodeGrid
from service.policy.settings import PolicySettings

_BOUNDED = (
    ("amplitude_ua", "µA"),
    ("phase_width_us", "µs"),
    ("frequency_hz", "Hz"),
    ("train_duration_ms", "ms"),
)
"""Pulse-train fields the interlocks bound by ``min_<field>`` and ``max_<field>``."""


class PolicyLimitError(CorticastError, ValueError):
    """A policy that the interlocks or the grid would refuse.

    Attributes
    ----------
    problems
        ``(field, problem)`` pairs: the field as a dotted path inside the policy (e.g.
        ``"stimulation.amplitude_ua"``; ``"stimulation"`` for the charge density, which three
        fields make) and what is wrong with it, quoting the limit and the value.
    """

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        self.problems = tuple(problems)
        super().__init__("; ".join(f"{field}: {problem}" for field, problem in self.problems))


def check_policy_limits(
    policy: PolicySettings, interlocks: InterlockSettings, grid: ElectrodeGrid = DEFAULT_GRID
) -> None:
    """Raise :class:`PolicyLimitError` naming every field of ``policy`` that does not fit.

    Checked: amplitude, phase width, frequency and train duration within the interlocks'
    bounds; the contact area no larger than the array's; the charge density within the
    interlocks' limit; no more electrodes than ``max_channels``; every electrode on ``grid``.
    """
    problems = off_grid(policy, grid)
    stimulation = policy.stimulation
    for field, unit in _BOUNDED:
        value = getattr(stimulation, field)
        low, high = getattr(interlocks, f"min_{field}"), getattr(interlocks, f"max_{field}")
        if not low <= value <= high:
            problem = (
                f"must be within the interlocks' [{low}, {high}] {unit} "
                f"(interlocks.min_{field}, interlocks.max_{field}), got {value}"
            )
            problems.append((f"stimulation.{field}", problem))
    area, array_area = stimulation.electrode_area_cm2, interlocks.electrode_area_cm2
    if area > array_area:
        problem = (
            f"must be <= interlocks.electrode_area_cm2 ({array_area:g} cm²): the bridge refuses "
            f"a request that claims a larger contact than the array has, got {area:g}"
        )
        problems.append(("stimulation.electrode_area_cm2", problem))
    density, limit = stimulation.charge_density_uc_per_cm2, interlocks.charge_density_limit_uc_cm2
    if density > limit:
        problem = (
            f"'amplitude_ua' x 'phase_width_us' / 'electrode_area_cm2' must give a charge "
            f"density <= interlocks.charge_density_limit_uc_cm2 ({limit:g} µC/cm² per phase), "
            f"got {density:.3g} µC/cm² ({stimulation.amplitude_ua} µA, "
            f"{stimulation.phase_width_us} µs, {area:g} cm²)"
        )
        problems.append(("stimulation", problem))
    channels = stimulation.channels or policy.target_electrodes
    if len(channels) > interlocks.max_channels:
        field = "stimulation.channels" if stimulation.channels else "target_electrodes"
        why = (
            "" if stimulation.channels else " (the target region: 'stimulation.channels' is empty)"
        )
        problem = (
            f"must name at most interlocks.max_channels ({interlocks.max_channels}) electrodes "
            f"to stimulate, got {len(channels)}{why}"
        )
        problems.append((field, problem))
    if problems:
        raise PolicyLimitError(problems)


def off_grid(policy: PolicySettings, grid: ElectrodeGrid) -> list[tuple[str, str]]:
    """``(field, problem)`` for each electrode of ``policy`` that is not on ``grid``."""
    problems = []
    for name, electrodes in (
        ("target_electrodes", policy.target_electrodes),
        ("stimulation.channels", policy.stimulation.channels),
    ):
        for index, (row, col) in enumerate(electrodes):
            if not (row < grid.rows and col < grid.cols):
                problem = (
                    f"must be an electrode (row, col) on the {grid.rows}x{grid.cols} grid, "
                    f"row < {grid.rows} and col < {grid.cols}, got ({row}, {col})"
                )
                problems.append((f"{name}.{index}", problem))
    return problems
