"""The ring against the model's window: refused at start, where the model is known (the
config alone cannot know it). Real daemon and model; it never gets as far as a stream."""

import pytest

from service.config import ConfigError
from service.core.errors import ModelMismatchError
from service.daemon.daemon import Daemon
from tests.service._loop_harness import loop_settings


def _refused_at_start(
    tmp_path, exported, source_id, ring_seconds, error, *, robust_sd_seconds=0.03, **ingest
) -> str:
    """Start a daemon with this ring, ``robust_sd_seconds`` (0.03 passes the config's own rule)
    and any other ``[ingest]`` settings; it must refuse with ``error`` before a thread runs:
    the message."""
    _, window, step = exported
    settings = loop_settings(
        tmp_path, window, step, source_id,
        ingest={"ring_seconds": ring_seconds, **ingest},
        loop={"robust_sd_seconds": robust_sd_seconds},
    )  # fmt: skip
    daemon = Daemon(settings)
    try:
        with pytest.raises(error) as refused:
            daemon.start()
        assert not daemon.ingestor.running and daemon.scheduler is None
    finally:
        daemon.stop()
    return str(refused.value)


def test_a_ring_shorter_than_the_models_window_is_refused_at_start(tmp_path, exported, source_id):
    """``ring_seconds = 0.04`` keeps 12 frames at 277.78 Hz, fewer than the 16 the model reads
    for each prediction; ``robust_sd_seconds = 0.03`` passes the config's own rule (the ring
    holds the baseline's history), so the daemon used to start, and every window then failed
    to read. Refused at start with one error naming the setting, both counts and the fix,
    before a thread runs."""
    _, window, _ = exported
    message = _refused_at_start(tmp_path, exported, source_id, 0.04, ModelMismatchError)
    assert message.startswith(
        "[ingest] ring_seconds (0.04 s) keeps 12 frames at 277.78 Hz, fewer than the 16 that "
        f"model {str(window)!r} reads for each prediction (its input window of 16 frames); "
    ), message
    assert message.endswith("set [ingest] ring_seconds to at least 0.0576 s"), message


def test_a_ring_shorter_than_the_wave_estimates_window_is_refused_at_start(
    tmp_path, exported, source_id
):
    """``ring_seconds = 0.1`` keeps 28 frames: enough for the model's 16 and for
    ``robust_sd_seconds = 0.03``, but each wave estimate reads ``[waves] past_frames`` (48)
    measured frames up to the prediction's input. The daemon used to start, serve and score
    every prediction, and then skip every decision (and publish no wave), silently: the wave
    stage found its frames gone from the ring. Refused at start, naming both settings."""
    assert _refused_at_start(tmp_path, exported, source_id, 0.1, ConfigError) == (
        "[ingest] ring_seconds (0.1 s) keeps 28 frames at 277.78 Hz, fewer than the 48 "
        "measured frames each wave estimate reads ([waves] past_frames); no decision could "
        "ever be made: set [ingest] ring_seconds to more than 0.1728 s (the ring must also "
        "hold the frames that arrive while a decision waits)"
    )


def test_a_baseline_window_shorter_than_its_estimate_needs_is_refused_at_start(
    tmp_path, exported, source_id
):
    """``robust_sd_seconds = 0.03`` is 8 frames, fewer than the 16 measured frames the
    amplitude baseline's robust s.d. needs: every refresh was skipped, the policy never had an
    amplitude unit, and the daemon served and scored predictions but never decided, and
    nothing said why. Refused at start, naming the setting and the least that works."""
    assert _refused_at_start(tmp_path, exported, source_id, 1.0, ConfigError) == (
        "[loop] robust_sd_seconds (0.03 s) is 8 frames at 277.78 Hz, fewer than the 16 "
        "measured frames the amplitude baseline's robust s.d. needs; no decision could ever "
        "be made: set [loop] robust_sd_seconds to at least 0.0576 s"
    )


def test_a_ring_too_short_for_a_prediction_to_be_scored_is_refused_at_start(
    tmp_path, exported, source_id
):
    """The live scores read each prediction's input and its 16 true frames only
    ``[ingest] stimulation_marker_latency_ms`` after the last (90 ms: 26 frames, while another
    tool's marker stream is read), and leave it unscored once the ring has overwritten any of
    them (a marker may have blanked it). ``ring_seconds = 0.2`` keeps 56 frames: the model's
    16, the wave estimate's 48, twice the latency (the config's rule), but not 16 + 16 + 26.
    The daemon used to start, and no prediction was ever scored: the model stayed unproven,
    stimulation blocked, for good. Refused at start, naming the settings and the fix."""
    refused = _refused_at_start(
        tmp_path, exported, source_id, 0.2, ModelMismatchError, robust_sd_seconds=0.06,
        stimulation_marker_streams=[f"{source_id}-lab"], stimulation_marker_latency_ms=90,
    )  # fmt: skip
    window = exported[1]
    assert refused == (
        "[ingest] ring_seconds (0.2 s) keeps 56 frames at 277.78 Hz, fewer than the 58 the "
        f"live scores read for each prediction of model {str(window)!r} (its input of 16 "
        "frames, its 16 true frames and the 26 of [ingest] stimulation_marker_latency_ms after "
        "them); no prediction could "
        "ever be scored, nor the model proven: set [ingest] ring_seconds to more than "
        "0.2088 s (the ring must also hold the frames that arrive while a prediction waits)"
    )
