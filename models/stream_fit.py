"""Whether sessions are of the stream a model was made for: its electrode array and rate.

A model learns one array's waves at one frame rate, and the daemon serves it only a stream of
both (``service.inference.predictor.check_model_fits``); scoring or tuning it on sessions of
another would measure something it never meets, so every command that feeds it sessions checks
them here first.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from bench.data.session import Session
from models.windows import source_note
from service.core.grid import RATE_TOLERANCE, ElectrodeGrid


def misfits(sessions: Sequence[Session], grid: ElectrodeGrid, rate_hz: float) -> list[str]:
    """One line per way a session is not of the model's stream (``grid`` and ``rate_hz``),
    naming the session and both; empty where all fit."""
    problems = []
    for index, session in enumerate(sessions):
        where = f"session {index}{source_note(session)}"
        if not session.grid.same_array(grid):
            problems.append(
                f"{where}: grid {session.grid.describe()} != the model's {grid.describe()}"
            )
        if not math.isclose(session.sample_rate_hz, rate_hz, rel_tol=RATE_TOLERANCE):
            problems.append(
                f"{where}: rate {session.sample_rate_hz:g} Hz != the model's {rate_hz:g} Hz"
            )
    return problems
