"""Which model families exist, without importing them: names, design papers, input kind.

``corticast models`` lists these on a machine without the ``train`` extra (no torch), and
:mod:`models.registry` builds every family from the same entries, so the list and what can be
trained cannot disagree.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FamilyEntry:
    """What is known of a family before its code is imported.

    Attributes
    ----------
    paper
        The design paper it follows (``../shared/papers/NNN_*``).
    irregular
        Whether its model takes the past frames' true times (the daemon's ``irregular``
        missing-frame policy serves it).
    """

    paper: str
    irregular: bool = False


CATALOGUE: dict[str, FamilyEntry] = {
    "convlstm": FamilyEntry("000"),
    "mr_lstm": FamilyEntry("000"),
    "mr_layer_lstm": FamilyEntry("000"),
    "mspn": FamilyEntry("001"),
    "s_hr_vqvae": FamilyEntry("002"),
    "trajgru": FamilyEntry("003", irregular=True),
    "trajgru_attention": FamilyEntry("003", irregular=True),
    "trajgru_ode": FamilyEntry("003", irregular=True),
    "trajgru_attention_ode": FamilyEntry("003", irregular=True),
    "ile": FamilyEntry("004"),
}


def model_names() -> list[str]:
    """Every family's name, sorted."""
    return sorted(CATALOGUE)
