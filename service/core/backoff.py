"""How long to wait before trying again what keeps failing."""

from __future__ import annotations


def doubling_wait(first_s: float, in_a_row: int, most_s: float) -> float:
    """``first_s`` after the first failure, twice the previous wait after each further one,
    never more than ``most_s``: a step that keeps failing neither floods the log nor is given
    up on. ``in_a_row`` counts the failures so far (>= 1)."""
    return min(first_s * 2 ** min(in_a_row - 1, 32), most_s)
