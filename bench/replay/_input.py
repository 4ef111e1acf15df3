"""What a replay reads: one session (a file or a generated one), checked against the daemon.

A replay runs the daemon's own stages, which refuse a stream of the wrong rate or layout; a
session that would be refused is rejected here, before anything runs, with a message that
names the file, what it holds and what the configuration expects.
"""

from __future__ import annotations

import numpy as np

from bench.data.session import Session
from bench.data.session_io import SessionFileError, check_rate_kept, read_session, read_xdf
from models.sources import (
    MIXTURE_PREFIX,
    SYNTHETIC_PREFIX,
    FileOptions,
    is_generated,
    load_spec,
    parse_file,
)
from service.config import Settings
from service.core.checks import preview_items
from service.core.grid import DEFAULT_GRID, HORIZON_FRAMES, RATE_TOLERANCE
from service.core.non_finite import kept_as_data

FILE_SUFFIXES = (".xdf", ".xdfz", ".nwb")


def load_replay_session(
    spec: str, settings: Settings, *, stream_name: str | None = None
) -> Session:
    """The session ``spec`` names, read and checked for the daemon ``settings`` describe.

    Parameters
    ----------
    spec
        A session file (``.xdf``, ``.xdfz``, ``.nwb``), ``synthetic:SEED@SECONDS`` or
        ``synthetic-mix:SEED@SECONDS[/only=FAMILY]`` (one generated session, see
        ``models.sources``).
    settings
        The daemon's configuration: the stream type and nominal rate a file must match, and
        the marker streams of other tools whose trains it blanks (``[ingest]
        stimulation_marker_streams``).
    stream_name
        The XDF stream (by name, among those of type ``[stream] type``) or NWB
        ElectricalSeries to replay, when a file holds several.

    Raises
    ------
    SessionFileError
        A file that is damaged, has no (single) matching stream, or another grid or rate
        (declared, or kept by its timestamps).
    FileNotFoundError
        A spec that is neither an existing file nor a synthetic spec.
    ValueError
        A malformed synthetic spec, one naming several sessions, or a session too short.
    """
    rate = settings.stream.sample_rate_hz
    if is_generated(spec):
        if stream_name is not None:
            raise ValueError(f"'--stream-name' selects a stream in a file; {spec!r} is generated")
        sessions = load_spec(spec)
        if len(sessions) != 1:
            raise ValueError(
                f"a replay runs one session; {spec!r} names {len(sessions)} (give one seed)"
            )
        session = sessions[0]
    else:
        session = _read_file(spec, settings, stream_name)
    _check_fits(
        spec, session, rate, settings.waves.past_frames, settings.ingest.max_non_finite_fraction
    )
    ingest = settings.ingest
    check_rate_kept(spec, session, tolerance=ingest.rate_tolerance, window_s=ingest.rate_window_s)
    return session


def _read_file(spec: str, settings: Settings, stream_name: str | None) -> Session:
    """The file ``spec`` names, its electrode stream picked as ``train`` and ``evaluate`` pick
    it (``FILE::stream=NAME``, ``::type=TYPE``) or by ``stream_name``; other tools' marker
    streams come from the configuration, as the daemon reads them."""
    path, options = parse_file(spec)
    options = options or FileOptions()
    if options.model_fields_set & {"markers", "blank_ms"}:
        raise ValueError(
            f"a replay reads other tools' marker streams as the daemon does, from its "
            f"configuration: name them in [ingest] stimulation_marker_streams (and "
            f"stimulation_marker_blank_ms), not after the file; got {spec!r}"
        )
    if None not in (stream_name, options.stream) and stream_name != options.stream:
        raise ValueError(
            f"{spec!r} names stream {options.stream!r} and --stream-name {stream_name!r}: "
            f"name it once"
        )
    stream_name = options.stream or stream_name
    suffix = path.suffix.lower()
    if suffix not in FILE_SUFFIXES:
        raise ValueError(
            f"SESSION must be a file ending in one of {', '.join(FILE_SUFFIXES)} or "
            f"{SYNTHETIC_PREFIX}SEED@SECONDS or {MIXTURE_PREFIX}SEED@SECONDS, got {str(path)!r}"
        )
    if not path.is_file():
        raise FileNotFoundError(f"session file {str(path)!r} does not exist")
    if suffix == ".nwb":  # no LSL stream in it: no type, no marker streams
        return read_session(
            path, stream_name=stream_name, stream_type=options.type, grid=options.grid
        )
    ingest = settings.ingest
    blank_s = ingest.stimulation_marker_blank_ms / 1000
    return read_xdf(
        path,
        stream_type=options.type or settings.stream.type,
        stream_name=stream_name,
        grid=options.grid,
        expected_rate_hz=settings.stream.sample_rate_hz,
        rate_rtol=RATE_TOLERANCE,
        # Another tool's trains, blanked as the daemon under this configuration would.
        stimulation_marker_streams=dict.fromkeys(ingest.stimulation_marker_streams, blank_s),
    )


def _check_fits(
    spec: str, session: Session, rate: float, past_frames: int, max_non_finite: float
) -> None:
    """The daemon's own rules: same array and pitch, same nominal rate, enough frames for one
    decision (frames with more than ``max_non_finite`` of their electrodes NaN or infinite
    missing)."""
    grid = session.grid
    if not grid.same_array(DEFAULT_GRID):  # a file is read on the array it records
        raise SessionFileError(
            f"{spec}: frames are on a {grid.rows}x{grid.cols} array at {grid.pitch_m * 1e3:g} "
            f"mm pitch; the daemon reads the {DEFAULT_GRID.rows}x{DEFAULT_GRID.cols} array at "
            f"{DEFAULT_GRID.pitch_m * 1e3:g} mm"
        )
    if abs(session.sample_rate_hz - rate) > RATE_TOLERANCE * rate:
        raise SessionFileError(
            f"{spec}: nominal rate {session.sample_rate_hz:g} Hz; the daemon reads "
            f"{rate:g} Hz ([stream] sample_rate_hz), within {RATE_TOLERANCE:.1%}"
        )
    need = past_frames + 2 * HORIZON_FRAMES
    if session.n_frames < need:
        raise ValueError(
            f"{spec}: {session.n_frames} frames is too short to replay; one wave decision needs "
            f"at least {need} ([waves] past_frames {past_frames} + 2 x {HORIZON_FRAMES})"
        )
    non_finite = ~np.isfinite(session.frames)
    measured = int(np.count_nonzero(kept_as_data(non_finite, max_non_finite)))
    if measured < need:  # the daemon keeps such a frame as missing
        never = [(int(r), int(c)) for r, c in np.argwhere(non_finite.all(axis=0))]
        raise SessionFileError(
            f"{spec}: {measured} of {session.n_frames} frames have at most {max_non_finite:g} "
            "of their electrodes NaN or infinite ([ingest] max_non_finite_fraction); one wave "
            f"decision needs at least {need}"
            + (f". NaN or infinite in every frame: electrodes (row, col) [{preview_items(never)}]"
               if never else "")
        )  # fmt: skip
