"""The serving probe's measurements on disk, keyed by the model and the host.

One small JSON file per model (named by its hash) under ``[model] serving_cache_dir``. A file
is used only when its key equals the current one: the model files' sha256 (those of the int8
copies beside them too, and the checkpoint's, which the torch backends run), the host (CPU
model, the cores this process may use, ONNX Runtime's version and execution providers, the
versions of TensorRT, cuda-python and torch, the NVIDIA driver and GPUs, and ``[model]
device_id``) and the probe's own settings. Anything else (another host, a new ORT, the GPU
extra installed, another card, an edited file, a corrupt or truncated one, one an older
version wrote) is re-measured with a logged line saying why, never a crash; a cache that
cannot be written is logged and skipped.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from service.core.atomic_write import write_atomically
from service.inference.serving_choice import Candidate, Measurement

_log = logging.getLogger("corticast.serving")

FORMAT = 2
"""Bumped whenever what a record means changes: older files are then re-measured.
2: candidates have a precision (fp32 / int8) and int8 rows their guard."""


_Seconds = Annotated[float, Field(ge=0, allow_inf_nan=False)]


class _Candidate(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    mode: str
    backend: str
    threads: Annotated[int, Field(ge=1)]
    precision: Literal["fp32", "int8"]


class _Measurement(BaseModel):
    """What :class:`Measurement` may hold: a hand-edited value the rule cannot judge (a
    negative or non-numeric p99) is corrupt, not a crash at start."""

    model_config = ConfigDict(extra="forbid", strict=True)

    candidate: _Candidate
    p50_s: _Seconds | None = None
    p99_s: _Seconds | None = None
    runs: Annotated[int, Field(ge=0)] = 0
    stride: Annotated[int, Field(ge=1)] = 1
    max_error: float | None = None  # NaN where a model output NaN
    tolerance: _Seconds | None = None
    guard: str | None = None
    problem: str | None = None


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid")

    format: int
    key: dict[str, Any]
    measurements: list[_Measurement]


def load(path: Path, key: dict[str, Any]) -> list[Measurement] | None:
    """The measurements stored at ``path`` for ``key``, or None (logged) when there are none,
    they were taken under another key, or the file is unreadable."""
    try:
        text = path.read_bytes()  # not decoded here: bytes that are not UTF-8 are corrupt JSON
    except FileNotFoundError:
        _log.info("serving probe: no cached measurements at %s; measuring", path)
        return None
    except OSError as err:
        _log.warning("serving probe: cache %s unreadable (%s); re-measuring", path, err)
        return None
    try:
        record = _Record.model_validate_json(text)
    except ValidationError as err:
        older = _format_of(text)
        if older not in (None, FORMAT):  # what another version wrote, not damage
            _log.info(
                "serving probe: cache %s is stale (format %s != %d); re-measuring",
                path, older, FORMAT,
            )  # fmt: skip
            return None
        first = str(err).splitlines()[0]
        _log.warning("serving probe: cache %s is corrupt (%s); re-measuring", path, first)
        return None
    if record.format != FORMAT or record.key != key:
        names = key.keys() | record.key.keys()
        changed = sorted(k for k in names if key.get(k) != record.key.get(k))
        _log.info(
            "serving probe: cache %s is stale (changed: %s); re-measuring",
            path, ", ".join(changed) or f"format {record.format} != {FORMAT}",
        )  # fmt: skip
        return None
    _log.info("serving probe: using cached measurements %s", path)
    return [_measurement(m) for m in record.measurements]


def save(path: Path, key: dict[str, Any], measurements: list[Measurement]) -> None:
    """Write the record atomically and durably (``write_atomically``: a reader never sees half
    a file, and a write cut short, Ctrl-C included, leaves no scratch file); log, never raise,
    when the directory is not writable."""
    record = {"format": FORMAT, "key": key, "measurements": [asdict(m) for m in measurements]}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(path, json.dumps(record, indent=1))
    except OSError as err:
        _log.warning("serving probe: cannot write the cache %s (%s); not cached", path, err)


def _format_of(text: bytes) -> object:
    """The ``format`` a record that failed validation says it has; None if it says none."""
    try:
        record = json.loads(text)
    except ValueError:  # not JSON, not UTF-8
        return None
    return record.get("format") if isinstance(record, dict) else None


def _measurement(stored: _Measurement) -> Measurement:
    fields = stored.model_dump()
    candidate = Candidate(**fields.pop("candidate"))
    return Measurement(candidate=candidate, **fields)
