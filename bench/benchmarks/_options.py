"""Command-line values the benchmarks share."""

from __future__ import annotations

from pathlib import Path


def name_and_path(text: str, option: str) -> tuple[str, Path]:
    """``NAME=PATH`` given to ``option`` as ``(name, path)``; ValueError naming the option."""
    name, sep, path = text.partition("=")
    if not sep or not name or not path:
        raise ValueError(f"'{option}' must be NAME=PATH, got {text!r}")
    return name, Path(path)
