"""The rate a recording's timestamps keep, judged as the daemon's ingestor judges a live stream's.

Why: the readers check the rate a recording declares, not that its stamps keep it. An
amplifier at 250 Hz in a stream declaring 277.78 Hz steps 1.11 periods a sample, no gaps: the
daemon refuses that stream live, while a command that replayed, trained on, scored or played
the recording ran it on a time base 10 % off (every wave speed, every Hz). Every command that
reads a recording (replay, train, evaluate, adapt, rig --source) checks it here.

How: the meter (``service.core.rate_meter``) is fed the stamps as the ingestor feeds it, a
chunk at a time, and judged at each bucket it closes, over its last ``window_s``: a rate that
changes partway through (an amplifier reset to 250 Hz for the last minute of an hour) is
refused as the daemon would refuse it then, where a mean over the whole recording dilutes it
to within tolerance.
"""

from __future__ import annotations

import numpy as np

from bench.data.session import Session
from bench.data.session_io._errors import SessionFileError
from service.core.rate_meter import DEFAULT_TOLERANCE, DEFAULT_WINDOW_S, RateMeter

CHUNK_STEPS = 16
"""Steps fed to the meter at once (58 ms at 277.78 Hz, a live chunk's size): buckets close
within a chunk of half a second, as the ingestor's do."""


def check_rate_kept(
    source: str,
    session: Session,
    *,
    tolerance: float = DEFAULT_TOLERANCE,
    window_s: float = DEFAULT_WINDOW_S,
) -> None:
    """Refuse ``session`` (read from ``source``, which the error names) where its timestamps
    keep another rate than its nominal one, over any ``window_s`` of them, by more than
    ``tolerance`` (``[ingest] rate_tolerance`` and ``rate_window_s``; their defaults where a
    command has no daemon configuration).

    Raises
    ------
    SessionFileError
        Naming the file, the rate measured, where, and the nominal rate.
    """
    rate = session.sample_rate_hz
    meter = RateMeter(rate, tolerance, window_s)
    stamps = session.timestamps
    steps = np.diff(stamps)
    # Under half a second of stamps the daemon has not judged yet: neither does this.
    for start in range(0, steps.shape[0], CHUNK_STEPS):
        stop = min(start + CHUNK_STEPS, steps.shape[0])
        if meter.add_steps(steps[start:stop]) and meter.problem() is not None:
            raise SessionFileError(
                f"{source}: stream rate {meter.measured_hz:.2f} Hz measured from its "
                f"timestamps over {meter.measured_over_s:.1f} s, {stamps[stop] - stamps[0]:.1f} "
                f"s into the recording; its nominal rate is {rate:g} Hz ([ingest] "
                f"rate_tolerance {tolerance:.3g} over rate_window_s {window_s:g} s): the daemon "
                "refuses a stream whose timestamps keep another rate"
            )
