"""A recording made without the daemon: the rig's stream and another tool's marker stream."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bench.data.session import Session
from bench.data.session_io.xdf_writer import XdfWriter
from service.core.stimulation_markers import STREAM_TYPE


def write_tool_recording(
    path: Path, session: Session, frames: np.ndarray, marker_frames: list[int]
) -> None:
    """``frames`` on ``session``'s timestamps as the rig's stream ``rig``, and the marker
    stream ``pulser`` (one string channel, irregular rate, as LabRecorder records a tool's
    markers) announcing a train at each of ``marker_frames``' stamps."""
    with XdfWriter(path) as writer:
        writer.add_stream(
            1, name="rig", stream_type="ECoG", channel_count=360, channel_format="float32",
            nominal_srate=session.sample_rate_hz,
        )  # fmt: skip
        writer.add_stream(
            2, name="pulser", stream_type=STREAM_TYPE, channel_count=1,
            channel_format="string", nominal_srate=0.0,
        )  # fmt: skip
        writer.write_samples(1, session.timestamps, frames.reshape(-1, 360))
        texts = [[f"train {k}"] for k in range(1, len(marker_frames) + 1)]
        writer.write_samples(2, session.timestamps[marker_frames], texts)
