"""What every settings section shares: unknown keys are errors, values are frozen once read."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, DirectoryPath, Field, FilePath

PositiveSeconds = Annotated[float, Field(gt=0, allow_inf_nan=False)]

# Matched inside an LSL XPath predicate (stream fields) or echoed in URLs (hosts), where a quote
# cannot be escaped; nor a control character: LSL sends a query as lines, which a line break
# cuts (every outlet on the network then logs a query error, and nothing is found).
QuoteFreeText = Annotated[str, Field(pattern=r"^[^'\"\x00-\x1f\x7f]*$", max_length=200)]


def _expand_user(value: Any) -> Any:
    """``value`` with a leading ``~`` (or ``~user``) read as a home directory, as a shell reads
    it; a string stays a string, so that a refusal shows it quoted, not as PosixPath(...)."""
    if isinstance(value, str):
        return os.path.expanduser(value)
    return value.expanduser() if isinstance(value, Path) else value


UserPath = Annotated[Path, BeforeValidator(_expand_user)]
"""A path setting: every one reads ``~`` as the home directory (``~/.cache/...``)."""
UserFilePath = Annotated[FilePath, BeforeValidator(_expand_user)]
"""A path setting that must name an existing file, ``~`` expanded first."""
UserDirectoryPath = Annotated[DirectoryPath, BeforeValidator(_expand_user)]
"""A path setting that must name an existing directory, ``~`` expanded first."""


def read_from(path: str | Path) -> str:
    """Where a relative ``path`` that is not there was looked for, to end its refusal: the
    working directory (under systemd ``/var/lib/corticast``), not the config file's, which is
    where it may well be. Empty for an absolute path."""
    if Path(path).is_absolute():
        return ""
    return (
        f" (a relative path is read from the working directory, {os.getcwd()!r}, not from "
        "the config file's)"
    )


class Section(BaseModel):
    """A ``[section]`` of the TOML file: a typo in a safety setting must not silently fall back
    to a default, and a running stage must not see its settings change under it."""

    model_config = ConfigDict(extra="forbid", frozen=True)
