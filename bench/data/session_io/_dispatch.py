"""Open any supported session file by its suffix."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from bench.data.session import Session
from bench.data.session_io.nwb import read_nwb
from bench.data.session_io.xdf_reader import read_xdf
from service.core.grid import ElectrodeGrid
from service.core.stimulation_markers import MarkerStream

_READERS = {".xdf": read_xdf, ".xdfz": read_xdf, ".nwb": read_nwb}


def read_session(
    path: str | Path,
    stimulation_marker_streams: Mapping[MarkerStream | str, float] | None = None,
    *,
    stream_name: str | None = None,
    stream_type: str | None = None,
    grid: ElectrodeGrid | None = None,
) -> Session:
    """Read a session from ``.xdf``, ``.xdfz`` or ``.nwb`` with each reader's defaults.

    Every command that takes a session file reads it here or with the same defaults (``replay``
    adds the stream and rate checks; each checks the rate the stamps keep with
    :func:`~bench.data.session_io.rate_kept.check_rate_kept`): a crashed XDF recording's intact
    part is read with a RuntimeWarning, so ``replay``, ``rig --source`` and
    ``train``/``evaluate --data`` agree.
    ``stimulation_marker_streams`` (other tools' LSL marker streams -> seconds blanked
    after each marker: :func:`read_xdf`) is read from an XDF file only: an NWB file holds no
    LSL stream. ``stream_name`` picks the XDF stream (among those of ``stream_type``, by
    default ``ECoG``) or the NWB ElectricalSeries where a file holds several; ``stream_type``
    is an XDF stream's LSL type, which an NWB series has none of. ``grid`` is the electrode
    array the stream must be on (a file of another is refused, naming both); None: the one the
    file records (an XDF stream's header, an NWB series' comments or electrode positions), the
    rig's ``DEFAULT_GRID`` where it records none.
    """
    path = Path(path)
    reader = _READERS.get(path.suffix.lower())
    if reader is None:
        raise ValueError(f"'path' must end in one of {', '.join(_READERS)}, got {path.name!r}")
    if reader is read_nwb:
        if stimulation_marker_streams:
            raise ValueError(
                f"{path.name!r}: other tools' stimulation marker streams are LSL streams, read "
                f"from an XDF recording; an NWB file holds none"
            )
        if stream_type is not None:
            raise ValueError(
                f"{path.name!r}: a stream type ({stream_type!r}) picks an LSL stream of an XDF "
                f"recording; an NWB file's ElectricalSeries have none: pick one by its name"
            )
        return read_nwb(path, series_name=stream_name, grid=grid)
    typed = {} if stream_type is None else {"stream_type": stream_type}
    return read_xdf(
        path,
        stream_name=stream_name,
        grid=grid,
        stimulation_marker_streams=stimulation_marker_streams or None,
        **typed,
    )
