"""Where training and evaluation data come from: recorded session files or generated sessions.

A data spec is a string a user types after ``--data``: a session file (``.xdf``, ``.xdfz``,
``.nwb``), or ``synthetic:SEEDS@SECONDS`` for sessions from :mod:`bench.data.synth` with the
realistic artefacts the simulated rig plays (``synthetic:100-109@60`` is ten 60-s sessions,
seeds 100 to 109; ``synthetic:7@30`` one; ``synthetic:1,4,9@60`` three). A spec that is not
well formed is an error naming what is wrong, never silently read as a file name.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from bench.data.session import Session

SYNTHETIC_PREFIX = "synthetic:"
_SYNTHETIC = re.compile(r"^synthetic:(?P<seeds>[0-9,\-]+)@(?P<seconds>[0-9]+(\.[0-9]*)?)$")
_SEED_ITEM = re.compile(r"^(?P<lo>[0-9]+)(-(?P<hi>[0-9]+))?$")
MAX_SYNTHETIC_SESSIONS = 1000
"""More generated sessions than this in one spec is surely a typo (``1-10000``)."""


def load_sessions(specs: Sequence[str]) -> list[Session]:
    """Every session the specs name, in order.

    Raises
    ------
    ValueError
        If ``specs`` is empty or a spec is malformed.
    OSError, bench.data.session_io.SessionFileError
        If a file cannot be read.
    """
    if not specs:
        raise ValueError("'--data' must name at least one session file or synthetic:SEEDS@SECONDS")
    sessions: list[Session] = []
    for spec in specs:
        sessions.extend(load_spec(spec))
    return sessions


def load_spec(spec: str) -> list[Session]:
    """The sessions one spec names (one for a file, one per seed for ``synthetic:``)."""
    if spec.startswith(SYNTHETIC_PREFIX):
        from bench.data.synth import Artefacts, SynthConfig, generate_session

        seeds, seconds = parse_synthetic(spec)
        return [
            generate_session(
                SynthConfig(duration_s=seconds, seed=seed, artefacts=Artefacts.realistic())
            )
            for seed in seeds
        ]
    from bench.data.session_io import read_session

    path = Path(spec)
    if not path.is_file():
        raise FileNotFoundError(
            f"data {spec!r} is neither a session file nor synthetic:SEEDS@SECONDS "
            f"(e.g. synthetic:100-109@60)"
        )
    return [read_session(path)]


def parse_synthetic(spec: str) -> tuple[list[int], float]:
    """Seeds and session length of a ``synthetic:SEEDS@SECONDS`` spec."""
    match = _SYNTHETIC.match(spec)
    if match is None:
        raise ValueError(
            f"synthetic data spec must look like synthetic:SEEDS@SECONDS with SEEDS a list "
            f"of seeds or ranges (synthetic:100-109@60, synthetic:1,4,9@30), got {spec!r}"
        )
    seeds: list[int] = []
    for item in match["seeds"].split(","):
        part = _SEED_ITEM.match(item)
        if part is None:
            raise ValueError(f"seed item {item!r} of {spec!r} must be N or N-M")
        lo = int(part["lo"])
        hi = int(part["hi"]) if part["hi"] is not None else lo
        if hi < lo:
            raise ValueError(f"seed range {item!r} of {spec!r} must not run backwards")
        seeds.extend(range(lo, hi + 1))
        if len(seeds) > MAX_SYNTHETIC_SESSIONS:
            raise ValueError(
                f"{spec!r} asks for more than {MAX_SYNTHETIC_SESSIONS} generated sessions"
            )
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"{spec!r} names a seed twice: the same session would count twice")
    seconds = float(match["seconds"])
    if seconds <= 0:
        raise ValueError(f"session length of {spec!r} must be > 0 s, got {seconds:g}")
    return seeds, seconds
