"""Options that several commands share, defined once so that each reads and documents the same."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

ConfigOption = Annotated[
    Path | None, typer.Option("--config", "-c", help="TOML config file (defaults if omitted).")
]

GRID_OPTION_HELP = (
    "A recording of another electrode array than the rig's that does not record which (an NWB "
    "file of another writer gives its electrodes' row and column but no pitch) names it: "
    "FILE::grid=ROWSxCOLS@PITCHmm, e.g. FILE::grid=16x16@0.4mm."
)
"""The ``::grid=`` option of a session file, as every command reading one takes it
(``models.sources``)."""
