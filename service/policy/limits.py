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
from firmware_bridge.interlocks import Interlocks
from service.core.errors import CorticastError
from service.core.grid import DEFAULT_GRID, HORIZON_FRAMES, ElectrodeGrid
from service.policy.settings import PolicySettings

PREDICTED_FRAMES = HORIZON_FRAMES
"""Predicted frames every wave estimate holds: the models' horizon, which the config requires
``[waves] predicted_frames`` to be. ``persistence_frames`` counts among them."""

_FIELD_OF_INTERLOCK = {
    "amplitude": "stimulation.amplitude_ua",
    "phase_width": "stimulation.phase_width_us",
    "frequency": "stimulation.frequency_hz",
    "train_duration": "stimulation.train_duration_ms",
    "pulse_timing": "stimulation",
    "electrode_area": "stimulation.electrode_area_cm2",
    "charge_density": "stimulation",
}
"""The policy field each pulse-train interlock judges (``"stimulation"`` where several fields
make the value: a pulse's period, a charge density)."""


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

    Checked: the pulse train against the interlocks' own pulse rules
    (``Interlocks.pulse_problems``: bounds, two phases within a period, contact area, charge
    density), no more electrodes than ``max_channels``, every electrode on ``grid``, and no
    more ``persistence_frames`` than the :data:`PREDICTED_FRAMES` a decision sees (more would
    make the policy refuse every estimate, and the loop fault at its first decision).
    """
    problems = off_grid(policy, grid)
    if policy.persistence_frames > PREDICTED_FRAMES:
        problem = (
            f"must be at most the {PREDICTED_FRAMES} predicted frames each wave estimate holds "
            f"([waves] predicted_frames), got {policy.persistence_frames}: every decision "
            "would be refused"
        )
        problems.append(("persistence_frames", problem))
    stimulation = policy.stimulation
    # The pulse rules read no channels: a stand-in electrode lets the train be judged before
    # a target is set, and while the configured electrodes are off the grid.
    train = stimulation.model_copy(update={"channels": ((0, 0),)}).to_request(grid.cols)
    for violation in Interlocks(interlocks).pulse_problems(train):
        problem = (
            f"{violation.reason}: the bridge's '{violation.interlock}' interlock "
            "([interlocks]) would block every request"
        )
        problems.append((_FIELD_OF_INTERLOCK[violation.interlock], problem))
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
