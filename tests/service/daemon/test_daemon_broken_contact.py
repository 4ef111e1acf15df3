"""The daemon on a rig with bad contacts: a real LSL stream with an electrode that sends NaN
and one that picks up noise."""

import numpy as np
import pytest

from bench.data.session import Session
from bench.data.synth import SynthConfig, generate_session
from bench.rig.frame_source import SessionSource
from bench.rig.rig import SimulatedRig
from service.daemon.daemon import Daemon
from tests.service._loop_harness import loop_settings, wait_until

pytestmark = pytest.mark.slow


def test_a_stream_with_an_always_nan_electrode_is_predicted_from_and_the_electrode_masked(
    tmp_path, exported, source_id
):
    """Every frame of such a stream used to be kept as missing: the daemon predicted nothing
    and only logged a warning every 10 s. The electrode is now held flat, the frames are data:
    predictions flow, /status names the electrode as held (ingest) and as left out of the
    wave estimate (dead), and the held-channel gauge counts it. An electrode picking up noise
    a thousand times the cortex's is left out too, as noisy, and counted apart."""
    base = generate_session(SynthConfig(duration_s=4.0, seed=11))
    frames = base.frames.copy()
    frames[:, 3, 4] = np.nan
    frames[:, 12, 7] += np.random.default_rng(12).normal(0.0, 3e4, len(frames)).astype(np.float32)
    session = Session(frames, base.timestamps, base.sample_rate_hz, base.grid)
    _, window, step = exported
    settings = loop_settings(
        tmp_path, window, step, source_id, bridge={"dry_run": True},
        loop={"robust_sd_seconds": 1.0, "robust_sd_every_s": 0.5},
    )  # fmt: skip
    rig = SimulatedRig(SessionSource(session), source_id=source_id, scramble_channels=True)
    with rig, Daemon(settings) as daemon:
        wait_until(lambda: daemon.scheduler.predictions > 20, 30, "predictions")
        wait_until(lambda: daemon.status()["dead_electrodes"], 30, "a baseline")

        def masked() -> list[float | None]:
            return [
                daemon.registry.get_sample_value(f"corticast_waves_{kind}_channels")
                for kind in ("dead", "noisy")
            ]

        # The gauges are set just after the baseline's refresh that /status reads.
        wait_until(lambda: masked() == [1, 1], 30, "the masked-channel gauges")
        status = daemon.status()
        held = daemon.registry.get_sample_value("corticast_ingest_held_channels")
        missing = daemon.registry.get_sample_value("corticast_ingest_nonfinite_frames_total")
    assert status["stream"]["held_electrodes"] == [[3, 4]]
    assert status["dead_electrodes"] == [[3, 4]]
    assert status["noisy_electrodes"] == [[12, 7]]
    assert (held, missing) == (1, 0)
    # No window is refused for the held electrode (its frames are data); on a loaded machine
    # the in-process rig can stall past lost_after_s, and the gap that leaves may refuse some.
    assert status["scheduler"]["refused_windows"] == 0 or status["stream"]["gaps"] > 0
