"""What a simulated rig plays: an endless test pattern or a session, looped if asked."""

from __future__ import annotations

from typing import Protocol

import numpy as np

from bench.data.pattern import encode_pattern
from bench.data.session import Session
from service.config import RigSettings
from service.core.grid import DEFAULT_GRID, NOMINAL_RATE_HZ, ElectrodeGrid
from service.core.rate_meter import DEFAULT_TOLERANCE, DEFAULT_WINDOW_S


class FrameSource(Protocol):
    """Frames addressed by a global sample index, with times relative to the first sample."""

    grid: ElectrodeGrid
    sample_rate_hz: float

    def read(self, start: int, count: int) -> tuple[np.ndarray, np.ndarray]:
        """Frames (k, rows, cols) float32 µV and their times (k,) in seconds since sample 0.

        ``k < count`` only when the source has ended.
        """
        ...


class PatternSource:
    """Endless :mod:`bench.data.pattern` frames at the nominal rate."""

    def __init__(
        self, grid: ElectrodeGrid = DEFAULT_GRID, sample_rate_hz: float = NOMINAL_RATE_HZ
    ) -> None:
        self.grid = grid
        self.sample_rate_hz = sample_rate_hz

    def read(self, start: int, count: int) -> tuple[np.ndarray, np.ndarray]:
        index = np.arange(start, start + count)
        return encode_pattern(index, self.grid), index / self.sample_rate_hz


class SessionSource:
    """A session's frames and timestamps; looped sessions continue one duration later."""

    def __init__(self, session: Session, *, loop: bool = True) -> None:
        if session.n_frames == 0:
            raise ValueError("cannot play an empty session (0 frames)")
        self.session = session
        self.grid = session.grid
        self.sample_rate_hz = session.sample_rate_hz
        self.loop = loop
        self._relative = session.timestamps - session.timestamps[0]

    def read(self, start: int, count: int) -> tuple[np.ndarray, np.ndarray]:
        n = self.session.n_frames
        stop = start + count if self.loop else min(start + count, n)
        index = np.arange(start, max(start, stop))
        laps, within = np.divmod(index, n)
        times = self._relative[within] + laps * self.session.duration_s
        return self.session.frames[within], times


def source_from_settings(
    rig: RigSettings,
    *,
    rate_tolerance: float = DEFAULT_TOLERANCE,
    rate_window_s: float = DEFAULT_WINDOW_S,
) -> FrameSource:
    """The source a ``[rig]`` config section names: a test pattern, a generated session, or a
    session file, refused where its timestamps keep another rate than it declares by more than
    ``rate_tolerance`` over ``rate_window_s`` (the ``[ingest]`` settings of the daemon it feeds,
    which would refuse it live)."""
    if rig.source == "pattern":
        return PatternSource()
    if rig.source == "synthetic":
        from bench.data.synth import Artefacts, SynthConfig, generate_session

        artefacts = Artefacts.realistic() if rig.artefacts == "realistic" else Artefacts()
        config = SynthConfig(duration_s=rig.duration_s, seed=rig.seed, artefacts=artefacts)
        return SessionSource(generate_session(config), loop=rig.loop)
    from bench.data.session_io import check_rate_kept, read_session
    from models.sources import FileOptions, parse_file

    path, options = parse_file(str(rig.source))  # FILE[::stream=NAME][::type=TYPE][::grid=...]
    if not path.is_file():  # a mistyped file, or a mistyped 'synthetic' or 'pattern'
        problem = "is not a file" if path.exists() else "does not exist"
        raise FileNotFoundError(
            f"rig source {str(path)!r} {problem}: --source (or [rig] source) takes "
            "'synthetic', 'pattern' or a session file (.xdf, .xdfz, .nwb)"
        )
    options = options or FileOptions()
    if options.markers:
        raise ValueError(
            f"source {str(rig.source)!r}: a rig plays the recording's electrode stream only; "
            "other tools' marker streams (markers=) are neither played nor blanked: leave them out"
        )
    session = read_session(
        path, stream_name=options.stream, stream_type=options.type, grid=options.grid
    )
    check_rate_kept(str(path), session, tolerance=rate_tolerance, window_s=rate_window_s)
    return SessionSource(session, loop=rig.loop)
