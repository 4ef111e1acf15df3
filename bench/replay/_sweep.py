"""``--sweep key=v1,v2,...``: policy variants to judge on the same replay.

Each ``--sweep`` names one threshold of ``[policy]`` and the values to try; several are
combined in every combination. Values are read as JSON numbers (``0.5``, ``4``) and validated
by ``PolicySettings`` itself and by ``check_policy_limits`` (as the config loader and the
daemon's policy change do), so a sweep cannot try a policy the daemon would refuse to load;
an unknown key is an error listing the valid ones, never ignored.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Sequence
from typing import Any

from pydantic import ValidationError

from firmware_bridge.config import InterlockSettings
from service.core.grid import DEFAULT_GRID
from service.policy.limits import PolicyLimitError, check_policy_limits
from service.policy.settings import PolicySettings

SWEEPABLE = tuple(
    name for name in PolicySettings.model_fields if name not in ("target_electrodes", "stimulation")
)
"""Policy thresholds a sweep may vary (the target region and pulse train stay as configured)."""
MAX_VARIANTS = 100


def sweep_variants(
    items: Sequence[str], base: PolicySettings, interlocks: InterlockSettings
) -> list[tuple[dict[str, Any], PolicySettings]]:
    """Every combination of the ``key=v1,v2,...`` items, applied to ``base``.

    Returns
    -------
    list
        (the values that differ from ``base``'s, keyed by threshold; the full policy) per
        combination, in the order the values were given. ``interlocks`` are those the policy
        runs under: a variant must fit them (and the predicted frames) as the configured
        policy must.

    Raises
    ------
    ValueError
        A malformed item (an empty or repeated value among its values included), an unknown
        or repeated key, a value ``PolicySettings`` or ``check_policy_limits`` refuses, or more
        than ``MAX_VARIANTS`` combinations.
    """
    if not items:
        return []
    axes: dict[str, list[str]] = {}
    for item in items:
        key, sep, values = item.partition("=")
        key = key.strip().removeprefix("policy.")
        if not sep or not key or not values.strip():
            raise ValueError(
                f"'--sweep' must look like key=v1,v2,... (e.g. min_pgd=0.4,0.6), got {item!r}"
            )
        if key not in SWEEPABLE:
            raise ValueError(
                f"'--sweep' key must be a policy threshold, one of {list(SWEEPABLE)}, got {key!r}"
            )
        if key in axes:
            raise ValueError(f"'--sweep' names {key!r} twice; give all its values in one item")
        texts = [value.strip() for value in values.split(",")]
        if not all(texts):
            # A stray comma is a typo: skipped, an axis left with no value would make zero
            # combinations, and the whole sweep would vanish without a word.
            raise ValueError(f"'--sweep' item {item!r} has an empty value (a stray comma?)")
        numbers = [_number(text) for text in texts]
        for index, text in enumerate(texts):
            if numbers[index] in numbers[:index]:
                # The same policy twice is one point drawn twice: surely another was meant.
                raise ValueError(f"'--sweep' item {item!r} repeats the value {text!r}")
        axes[key] = numbers
    count = 1
    for values in axes.values():
        count *= len(values)
    if count > MAX_VARIANTS:
        raise ValueError(f"'--sweep' asks for {count} policy variants; at most {MAX_VARIANTS}")
    variants = []
    for combo in itertools.product(*axes.values()):
        change = dict(zip(axes, combo, strict=True))
        try:
            policy = PolicySettings.model_validate(base.model_dump() | change)
            check_policy_limits(policy, interlocks, DEFAULT_GRID)
        except ValidationError as err:
            problems = "; ".join(
                f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in err.errors()
            )
            raise ValueError(f"'--sweep' policy {change} is not valid: {problems}") from None
        except PolicyLimitError as err:
            raise ValueError(f"'--sweep' policy {change} is not valid: {err}") from None
        variants.append(({key: getattr(policy, key) for key in change}, policy))
    return variants


def _number(text: str) -> Any:
    """``text`` as the JSON number it spells, else as given (``PolicySettings`` refuses it)."""
    try:
        return json.loads(text)
    except ValueError:
        return text
