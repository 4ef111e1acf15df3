"""``[stream]`` and ``[ingest]``: which LSL stream the ingest stage reads, and its ring and
thresholds."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from service.core.grid import NOMINAL_RATE_HZ
from service.core.non_finite import MAX_NON_FINITE_FRACTION
from service.core.rate_meter import DEFAULT_TOLERANCE, DEFAULT_WINDOW_S
from service.core.settings_model import PositiveSeconds, QuoteFreeText, Section
from service.core.stimulation_markers import (
    DEFAULT_MARKER_BLANK_MS,
    DEFAULT_MARKER_LATENCY_MS,
    DEFAULT_MARKER_UNHEARD_S,
    MarkerBlankMs,
    MarkerLatencyMs,
    MarkerStreams,
)

MAX_RING_FRAMES = 2**20
"""The most frames the ring holds (``[ingest] ring_seconds`` x ``[stream] sample_rate_hz``,
checked when the config loads): 1.5 GB of 18x20 float32 frames, an hour at 277.78 Hz,
allocated when the ingestor is built; a larger ring failed there with a MemoryError naming an
array shape, not the settings."""


class StreamSettings(Section):
    """Which LSL stream to read (every non-empty field must match) and what it must carry."""

    name: QuoteFreeText = "corticast-rig"
    type: QuoteFreeText = "ECoG"
    source_id: QuoteFreeText = "corticast-sim-rig"
    resolve_timeout_s: PositiveSeconds = 5.0
    sample_rate_hz: PositiveSeconds = NOMINAL_RATE_HZ


class IngestSettings(Section):
    """Ring buffer size and the thresholds that decide staleness and stream loss."""

    ring_seconds: PositiveSeconds = 10.0
    """History kept in the ring buffer: at least ``[loop] robust_sd_seconds``, and
    ``stimulation_marker_latency_ms`` more while ``stimulation_marker_streams`` names a stream
    (the amplitude baseline leaves the frames of that latency unread; checked when the config
    loads), every frame one window of the model reads (checked at start, where the
    model is known), the ``[waves] past_frames`` each wave estimate reads (checked at
    start) and what the live scores read of a prediction: its input, its true frames and
    ``stimulation_marker_latency_ms`` after them (checked at start, and for a swap); at most
    ``MAX_RING_FRAMES`` frames at ``[stream] sample_rate_hz``."""
    max_chunk_samples: Annotated[int, Field(ge=1, le=65536)] = 1024
    inlet_buffer_s: Annotated[int, Field(ge=1, le=60)] = 1
    stale_after_frames: Annotated[int, Field(ge=1)] = 10
    lost_after_s: PositiveSeconds = 0.5
    reconnect_timeout_s: PositiveSeconds = 0.25
    max_non_finite_fraction: Annotated[float, Field(ge=0.0, lt=1.0, allow_inf_nan=False)] = (
        MAX_NON_FINITE_FRACTION
    )
    """A frame with more than this fraction of its channels NaN or infinite is missing; in one
    with fewer, each such value is held at its channel's last finite value (a broken contact:
    the flat channel is masked as dead by the wave stage) and the frame stays data
    (``service.core.non_finite``). 0 makes any non-finite value a missing frame."""
    rate_tolerance: Annotated[float, Field(ge=0.001, le=0.5)] = DEFAULT_TOLERANCE
    """Largest relative difference between the rate measured from the stream's timestamps and
    ``[stream] sample_rate_hz`` before the stream is refused (not ready; a fault while armed).
    2 %: 200 times a crystal's +-100 ppm, and 5 times the most that timestamp jitter within a
    quarter period moves the first half second's measurement (``service.core.rate_meter``),
    while the rates a misconfigured amplifier is likely to run at instead (250, 256, 300 Hz:
    8-10 % off; 200 Hz: 28 %) are far outside it."""
    rate_window_s: Annotated[float, Field(ge=0.5, le=600)] = DEFAULT_WINDOW_S
    """Stream time the rate is measured over (``service.core.rate_meter``); the first
    judgement comes after 0.5 s of a stream's timestamps, and a stream set right again is
    judged within tolerance once the wrong rate has left enough of the window."""
    stimulation_marker_streams: MarkerStreams = ()
    """LSL marker streams on which other tools announce each train they deliver to this array,
    each by name, or as ``{name = "...", source_id = "..."}`` where streams of that name come
    from several tools or rigs on the network: every sample is a train at its timestamp, and
    the frames stamped from then to ``stimulation_marker_blank_ms`` later are blanked as
    stimulation artefact, as the daemon's own trains are
    (``service.ingest.stimulation_marker_inlet``). While one is not connected the daemon is
    not ready; lost while armed, it disarms. The daemon's own marker stream is
    not listed here: its trains are blanked as they are sent."""
    stimulation_marker_blank_ms: MarkerBlankMs = DEFAULT_MARKER_BLANK_MS
    """How long after another tool's marker its frames are blanked: the longest train it may
    deliver and the amplifiers' recovery after it. 1100 ms: the longest train the stimulator
    accepts (1000 ms) and ``[loop] blank_after_train_ms``'s default recovery. A corticast
    marker (from another daemon) says its own."""
    stimulation_marker_latency_ms: MarkerLatencyMs = DEFAULT_MARKER_LATENCY_MS
    """How late after its timestamp another tool's marker may arrive and still keep its train's
    frames out of what the daemon learns from the stream: the live scores the model-health
    interlock judges, the blend fitted on them, the live AR fit and the wave stage's quiet
    background (the policy's amplitude unit and its dead channels) wait this long for a
    frame's marker before they read it (only while ``stimulation_marker_streams`` names a
    stream; the daemon's own trains are blanked as they are sent). A marker later than this is
    still blanked, counted in ``corticast_ingest_late_stimulation_markers_total``, and the
    scores, which may hold its artefact, are forgotten: the model is unproven until scored
    again. Decisions do not wait: the ``artefact`` interlock judges
    each on the frames blanked by the time it is asked."""
    stimulation_marker_unheard_s: Annotated[float, Field(ge=2.0, le=300.0, allow_inf_nan=False)] = (
        DEFAULT_MARKER_UNHEARD_S
    )
    """How long a marker stream read may go unheard by LSL's resolver before it is taken as
    gone (not ready; disarmed if armed): a tool frozen, or its host off the network, closes no
    connection, so nothing else shows that its trains could go unannounced. At least 2 s, four
    of the resolver's rounds, so that an answer lost on a loaded host does not end a stream
    that is there; longer on a network that often loses them."""
