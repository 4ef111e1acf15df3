"""JSON whose objects give each key once.

``json.loads`` keeps the last of a key given twice; which of two values a client or an operator
meant is not for the daemon to guess (the config file's TOML refuses a repeated key too). The
HTTP API and the ZeroMQ query server parse requests with :func:`loads_keys_once`.
"""

from __future__ import annotations

import json
from typing import Any

from service.core.errors import CorticastError


class RepeatedKeyError(CorticastError, ValueError):
    """An object of the document gives ``key`` twice."""

    def __init__(self, key: str) -> None:
        super().__init__(f"the key {key!r} is given twice")
        self.key = key


def loads_keys_once(raw: bytes | str) -> Any:
    """``json.loads``, refusing an object that gives a key twice (:class:`RepeatedKeyError`)."""
    return json.loads(raw, object_pairs_hook=_one_each)


def _one_each(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    for key, value in pairs:
        if key in seen:
            raise RepeatedKeyError(key)
        seen[key] = value
    return seen
