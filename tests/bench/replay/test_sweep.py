"""``--sweep`` items: parsed and refused as the daemon would refuse the policy."""

from __future__ import annotations

import pytest

from bench.replay._sweep import sweep_variants
from firmware_bridge.config import InterlockSettings
from service.policy.limits import PREDICTED_FRAMES
from service.policy.settings import PolicySettings

BASE = PolicySettings(target_electrodes=((0, 0),))


def test_a_persistence_past_the_predicted_frames_is_refused() -> None:
    """The daemon refuses a policy needing more frames than a decision sees
    (``check_policy_limits``); a sweep point doing so would be judged on a policy that could
    never run."""
    too_many = PREDICTED_FRAMES + 1
    with pytest.raises(ValueError, match=r"'--sweep' policy .*persistence_frames: must be at most"):
        sweep_variants([f"persistence_frames=4,{too_many}"], BASE, InterlockSettings())
    assert [v for v, _ in sweep_variants(["persistence_frames=4"], BASE, InterlockSettings())] == [
        {"persistence_frames": 4}
    ]


@pytest.mark.parametrize(
    "items", [["min_pgd=,"], ["min_pgd=0.4,0.6", "min_speed_mps= , "], ["min_pgd=0.4,,0.6"]]
)
def test_an_item_with_an_empty_value_is_refused(items: list[str]) -> None:
    """A value left out (a stray comma) is a typo, not a point to skip: with no value left an
    axis made zero combinations, and the whole sweep vanished without a word."""
    with pytest.raises(ValueError, match=r"'--sweep' .* empty value"):
        sweep_variants(items, BASE, InterlockSettings())


@pytest.mark.parametrize(
    ("item", "value"), [("min_pgd=0.4,0.4", "0.4"), ("min_pgd=0.4,0.6,0.40", "0.40")]
)
def test_an_item_repeating_a_value_is_refused_naming_it(item: str, value: str) -> None:
    """The same threshold twice is the same policy judged twice: two identical points, where
    surely another value was meant."""
    with pytest.raises(ValueError, match=rf"^'--sweep' item '{item}' repeats the value '{value}'$"):
        sweep_variants([item], BASE, InterlockSettings())
