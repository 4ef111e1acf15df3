"""Open any supported session file by its suffix."""

from __future__ import annotations

from pathlib import Path

from bench.data.session import Session
from bench.data.session_io.nwb import read_nwb
from bench.data.session_io.xdf_reader import read_xdf

_READERS = {".xdf": read_xdf, ".xdfz": read_xdf, ".nwb": read_nwb}


def read_session(path: str | Path) -> Session:
    """Read a session from ``.xdf``, ``.xdfz`` or ``.nwb`` with each reader's defaults.

    Every command that takes a session file reads it here or with the same defaults (``replay``
    adds the stream and rate checks): a crashed XDF recording's intact part is read with a
    RuntimeWarning, so ``replay``, ``rig --source`` and ``train``/``evaluate --data`` agree.
    """
    path = Path(path)
    reader = _READERS.get(path.suffix.lower())
    if reader is None:
        raise ValueError(f"'path' must end in one of {', '.join(_READERS)}, got {path.name!r}")
    return reader(path)
