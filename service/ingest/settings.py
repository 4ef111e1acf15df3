"""``[stream]`` and ``[ingest]``: which LSL stream the ingest stage reads, and its ring and
thresholds."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from service.core.grid import NOMINAL_RATE_HZ
from service.core.settings_model import PositiveSeconds, QuoteFreeText, Section

MAX_RING_SECONDS = 3600.0
"""The longest ring: an hour of frames is 1.4 GB, allocated when the ingestor is built; a
longer one failed there with a MemoryError naming an array shape, not the setting."""


class StreamSettings(Section):
    """Which LSL stream to read (every non-empty field must match) and what it must carry."""

    name: QuoteFreeText = "corticast-rig"
    type: QuoteFreeText = "ECoG"
    source_id: QuoteFreeText = "corticast-sim-rig"
    resolve_timeout_s: PositiveSeconds = 5.0
    sample_rate_hz: PositiveSeconds = NOMINAL_RATE_HZ


class IngestSettings(Section):
    """Ring buffer size and the thresholds that decide staleness and stream loss."""

    ring_seconds: Annotated[PositiveSeconds, Field(le=MAX_RING_SECONDS)] = 10.0
    """History kept in the ring buffer: at least ``[loop] robust_sd_seconds`` (checked when the
    config loads), every frame one window of the model reads (checked at start, where the
    model is known) and the ``[waves] past_frames`` each wave estimate reads (checked at
    start); at most ``MAX_RING_SECONDS``."""
    max_chunk_samples: Annotated[int, Field(ge=1, le=65536)] = 1024
    inlet_buffer_s: Annotated[int, Field(ge=1, le=60)] = 1
    stale_after_frames: Annotated[int, Field(ge=1)] = 10
    lost_after_s: PositiveSeconds = 0.5
    reconnect_timeout_s: PositiveSeconds = 0.25
