"""The serving probe's measurements on disk, keyed by the model and the host.

One small JSON file per model (named by its hash) under ``[model] serving_cache_dir``. A file
is used only when its key equals the current one: the model files' sha256, the host (CPU model,
the cores this process may use, ONNX Runtime's version and execution providers) and the probe's
own settings. Anything else (another host, a new ORT, an edited file, a corrupt or truncated
one) is re-measured with a logged line saying why, never a crash; a cache that cannot be
written is logged and skipped.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from service.inference.serving_choice import Candidate, Measurement

_log = logging.getLogger("corticast.serving")

FORMAT = 1
"""Bumped whenever what a record means changes: older files are then re-measured."""


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid")

    format: int
    key: dict[str, Any]
    measurements: list[dict[str, Any]]


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
        measurements = [_measurement(m) for m in record.measurements]
    except (ValidationError, TypeError, ValueError, KeyError) as err:
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
    return measurements


def save(path: Path, key: dict[str, Any], measurements: list[Measurement]) -> None:
    """Write the record atomically (a reader never sees half a file); log, never raise, when
    the directory is not writable."""
    record = {"format": FORMAT, "key": key, "measurements": [asdict(m) for m in measurements]}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(
            "w", dir=path.parent, prefix=path.name, suffix=".tmp", delete=False
        ) as handle:
            json.dump(record, handle, indent=1)
        os.replace(handle.name, path)
    except OSError as err:
        _log.warning("serving probe: cannot write the cache %s (%s); not cached", path, err)


def _measurement(fields: dict[str, Any]) -> Measurement:
    fields = dict(fields)
    candidate = Candidate(**fields.pop("candidate"))
    return Measurement(candidate=candidate, **fields)
