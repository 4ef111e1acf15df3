"""Shared input checks: each message quotes the argument, states the rule and echoes the value."""

from __future__ import annotations

import math
from collections.abc import Sequence
from numbers import Integral, Real
from typing import Any, TypeVar

import numpy as np


def preview(value: Any, limit: int = 80) -> str:
    """``repr`` cut to ``limit`` characters: an error echoes what came, not all of it."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def preview_items(items: Sequence[object], limit: int = 8) -> str:
    """The first ``limit`` of ``items``, comma-separated, and how many there are in all when
    that is more: a message names what is wrong without listing hundreds of channels."""
    head = ", ".join(str(item) for item in items[:limit])
    return head + (f", ... ({len(items)} in all)" if len(items) > limit else "")


_Item = TypeVar("_Item")


def repeated(items: Sequence[_Item]) -> list[_Item]:
    """What ``items`` holds more than once, each once, in the order first seen: the names a
    refusal quotes where one name would stand for two things."""
    return list(dict.fromkeys(item for item in items if items.count(item) > 1))


def check_type(name: str, value: Any, types: type | tuple[type, ...]) -> None:
    """Raise TypeError unless ``value`` is an instance of ``types``."""
    if not isinstance(value, types):
        expected = (
            types.__name__ if isinstance(types, type) else " or ".join(t.__name__ for t in types)
        )
        raise TypeError(f"'{name}' must be {expected}, got {type(value).__name__}: {value!r}")


def check_number(name: str, value: Any) -> None:
    """Raise TypeError unless ``value`` is a real number (bool is not a number here)."""
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"'{name}' must be a real number, got {type(value).__name__}: {value!r}")


def check_range(name: str, value: Any, lo: float, hi: float = math.inf) -> None:
    """Raise ValueError unless ``value`` is a finite number in ``[lo, hi]``."""
    check_number(name, value)
    if not (math.isfinite(value) and lo <= value <= hi):
        rule = f">= {lo:g}" if hi == math.inf else f"in [{lo:g}, {hi:g}]"
        raise ValueError(f"'{name}' must be a finite number {rule}, got {value!r}")


def check_above(name: str, value: Any, lo: float) -> None:
    """Raise ValueError unless ``value`` is a finite number strictly greater than ``lo``."""
    check_number(name, value)
    if not (math.isfinite(value) and value > lo):
        raise ValueError(f"'{name}' must be a finite number > {lo:g}, got {value!r}")


def check_int(name: str, value: Any, lo: int, hi: int | None = None) -> None:
    """Raise TypeError for non-integers and ValueError outside ``[lo, hi]``."""
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise TypeError(f"'{name}' must be an int, got {type(value).__name__}: {value!r}")
    if value < lo or (hi is not None and value > hi):
        rule = f">= {lo}" if hi is None else f"in [{lo}, {hi}]"
        raise ValueError(f"'{name}' must be an int {rule}, got {value!r}")


def check_choice(name: str, value: Any, choices: tuple[Any, ...]) -> None:
    """Raise ValueError unless ``value`` is one of ``choices``."""
    if isinstance(value, bool) or value not in choices:
        raise ValueError(f"'{name}' must be one of {choices}, got {value!r}")


def check_positive(name: str, value: Any) -> None:
    """Raise ValueError unless ``value`` is a finite number > 0."""
    check_above(name, value, 0)


def check_array(
    name: str,
    array: Any,
    *,
    ndim: int | None = None,
    shape: tuple[int | None, ...] | None = None,
    dtype: type | np.dtype | None = None,
    finite: bool = False,
) -> np.ndarray:
    """Validate an array's rank, shape (None = any length), dtype and finiteness.

    Returns the input as an ndarray (no copy when it already is one).
    """
    if not isinstance(array, np.ndarray):
        raise TypeError(f"'{name}' must be a numpy array, got {type(array).__name__}")
    if ndim is not None and array.ndim != ndim:
        raise ValueError(f"'{name}' must have {ndim} dimensions, got shape {array.shape}")
    if shape is not None:
        ok = len(shape) == array.ndim and all(
            want is None or want == got for want, got in zip(shape, array.shape, strict=True)
        )
        if not ok:
            wanted = "(" + ", ".join("*" if s is None else str(s) for s in shape) + ")"
            raise ValueError(f"'{name}' must have shape {wanted}, got {array.shape}")
    if dtype is not None and array.dtype != np.dtype(dtype):
        raise TypeError(f"'{name}' must have dtype {np.dtype(dtype)}, got {array.dtype}")
    if finite and not np.all(np.isfinite(array)):
        bad = int(np.size(array) - np.count_nonzero(np.isfinite(array)))
        raise ValueError(f"'{name}' must be finite, got {bad} NaN/inf value(s)")
    return array
