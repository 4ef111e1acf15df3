"""The wire format shared by the publisher, the query server and the client.

A message is three frames: the topic (ASCII), a JSON header (UTF-8, an object), and the raw
payload: little-endian float32 in C order, its shape in the header, or an empty frame. JSON
keeps the header readable from any language; the raw payload keeps 23 KB of frames free of
any encoding cost.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np

SCHEMA = "corticast.zmq/1"
"""Bumped whenever a field changes meaning or disappears; new fields do not bump it."""

TOPICS = ("prediction", "wave", "stim", "status")

RESERVED_KEYS = frozenset({"schema", "topic", "msg_seq", "sent_at", "shape", "dtype"})
"""Header keys the publisher sets on every message; callers may not supply them."""

PAYLOAD_DTYPE = np.dtype("<f4")
DTYPE_NAME = "float32"


def encode_header(header: dict[str, Any]) -> bytes:
    """JSON-encode ``header``: numpy scalars and arrays become numbers and lists, and
    NaN/inf become ``null`` (bare ``NaN`` is not JSON and breaks non-Python clients)."""
    try:
        text = json.dumps(header, allow_nan=False, default=_plain, separators=(",", ":"))
    except ValueError:  # a non-finite number somewhere: the rare, slower path
        text = json.dumps(_finite(header), allow_nan=False, separators=(",", ":"))
    return text.encode()


def payload_bytes(name: str, array: np.ndarray) -> tuple[bytes, list[int]]:
    """The payload frame and shape of a float32 array (any byte order or memory layout)."""
    if not isinstance(array, np.ndarray):
        raise TypeError(f"'{name}' must be a numpy array or None, got {type(array).__name__}")
    if array.dtype.kind != "f" or array.dtype.itemsize != 4:
        raise TypeError(f"'{name}' must have dtype float32 (the wire format), got {array.dtype}")
    return np.ascontiguousarray(array, dtype=PAYLOAD_DTYPE).tobytes(), list(array.shape)


def decode_header(frame: bytes) -> dict[str, Any]:
    """Parse a header frame; ValueError when it is not a JSON object of this schema."""
    try:
        header = json.loads(frame)
    except (ValueError, RecursionError) as err:  # bad UTF-8 or JSON, or nested past the parser
        raise ValueError(f"message header is not JSON: {err}") from None
    if not isinstance(header, dict):
        raise ValueError(f"message header must be a JSON object, got {type(header).__name__}")
    schema = header.get("schema")
    if schema != SCHEMA:
        raise ValueError(
            f"message header has schema {schema!r}; this client understands {SCHEMA!r} "
            "(update corticast on one side)"
        )
    return header


def decode_array(header: dict[str, Any], frame: bytes) -> np.ndarray | None:
    """The payload as a read-only float32 array of the header's shape (None when empty)."""
    if "shape" not in header:
        if frame:
            raise ValueError(f"message carries {len(frame)} payload bytes but no 'shape'")
        return None
    shape, dtype = header["shape"], header.get("dtype")
    if dtype != DTYPE_NAME:
        raise ValueError(f"message payload 'dtype' must be {DTYPE_NAME!r}, got {dtype!r}")
    if not (isinstance(shape, list) and all(isinstance(n, int) and n >= 0 for n in shape)):
        raise ValueError(f"message 'shape' must be a list of ints >= 0, got {shape!r}")
    expected = math.prod(shape) * PAYLOAD_DTYPE.itemsize
    if len(frame) != expected:
        raise ValueError(
            f"message payload must be {expected} bytes for shape {shape} float32, got {len(frame)}"
        )
    return np.frombuffer(frame, dtype=PAYLOAD_DTYPE).reshape(shape)


def decode_message(header_frame: bytes, payload_frame: bytes) -> tuple[dict[str, Any], Any]:
    """Header and array (None when empty) of a message as it was sent."""
    header = decode_header(header_frame)
    return header, decode_array(header, payload_frame)


def nesting_depth(data: bytes) -> int:
    """How deep JSON text nests arrays and objects (brackets inside strings do not count),
    read without parsing it: the parser recurses once per level. Linear in ``len(data)``;
    for bounded requests only."""
    depth = deepest = 0
    in_string = escaped = False
    for byte in data:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:  # quote
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):  # [ {
            depth += 1
            deepest = max(deepest, depth)
        elif byte in (0x5D, 0x7D):  # ] }
            depth -= 1
    return deepest


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"header value of type {type(value).__name__} is not JSON-able: {value!r}")


def _finite(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(item) for item in value]
    if isinstance(value, np.generic | np.ndarray):
        return _finite(_plain(value))
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
