"""Options that several commands share, defined once so that each reads and documents the same."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

ConfigOption = Annotated[
    Path | None, typer.Option("--config", "-c", help="TOML config file (defaults if omitted).")
]
