"""``[loop]``: how the daemon runs the loop around the model (baseline, model health,
supervision, thread priorities)."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, model_validator

from service.core.live_channels import HISTORY_S
from service.core.settings_model import PositiveSeconds, Section
from service.inference.predictor import DEFAULT_STREAM


class LoopSettings(Section):
    """How the daemon runs the loop around the model."""

    robust_sd_seconds: PositiveSeconds = HISTORY_S
    """Measured history each estimate of the background's robust s.d. (the policy's amplitude
    unit) is taken from; one estimate every ``robust_sd_every_s``."""
    robust_sd_every_s: PositiveSeconds = 1.0
    baseline_history_s: Annotated[float, Field(ge=1, le=3600, allow_inf_nan=False)] = 60.0
    """The policy's unit is the lower quartile of the estimates of this long: the quiet
    background, so that a seizure lasting many seconds does not become its own baseline."""
    health_min_scored: Annotated[int, Field(ge=1, le=1000)] = 200
    """Predictions of a model that must be scored live (against the frames that then arrived)
    before it may trigger stimulation. Until then the model is *unproven*: after start, after a
    hot swap and after a reload, its count starts from zero, and the bridge's ``model``
    interlock blocks every request (arming is allowed; ``/status`` shows "scored n of N").
    200 predictions are 216 measured frames at stride 1, about 0.8 s of data and 13 disjoint
    16-frame horizons: enough for the mean PSNR against persistence's to tell a broken or
    mismatched model from a working one, short enough that a model swapped in is judged
    within a second on a host that keeps up (about 10 s on a starved 2-core host predicting
    20 times a second, still before the demo's first seizure at 12 s). Fewer makes the
    judgement noisier; more lengthens the blind spell after every swap. At most 1000, the
    live scores' rolling window (``service.loop.live_accuracy``): a larger count could never be
    reached, and the model would never be allowed to stimulate."""
    health_margin_db: Annotated[float, Field(ge=-20, le=20, allow_inf_nan=False)] = 0.0
    """Once proven, the model is unhealthy (stimulation blocked, arming refused) while its live
    PSNR over all horizons is below persistence's by more than this."""
    ar_lags: Annotated[int, Field(ge=1, le=64)] = 11
    """Own past frames of the live fitted AR baseline (``"ar"`` in the live scores): with the
    neighbour term and the bias, 13 coefficients shared by all electrodes. At most the model's
    16 input frames while ``blend_ar`` is on: the blend serves it from that input."""
    ar_history_s: PositiveSeconds = 8.0
    """Measured frames the live AR baseline is fitted on, the newest this many seconds (at most
    the ring's ``[ingest] ring_seconds``): seconds of 360 electrodes pin 13 coefficients down."""
    ar_refit_every_s: PositiveSeconds = 10.0
    """How often the live AR baseline is refitted, in a background thread that never delays
    the scheduler; a recent fit follows a recording whose dynamics drift."""
    supervise_every_s: PositiveSeconds = 0.1
    """How often the supervisor checks and repairs every stage; every round it completes pings
    the systemd watchdog (liveness: whether the daemon is ready or not). A repair step that
    fails is tried again the next round, then at doubling intervals up to 5 s."""
    stall_after_s: Annotated[float, Field(ge=0.5, le=600, allow_inf_nan=False)] | None = None
    """Longest the scheduler may be inside one window, or the wave stage on one prediction,
    before it is taken as stuck (a call that does not return): armed, that is a fault of the
    stage (``predictor`` or ``waves``) that disarms; armed or not, the daemon is not ready,
    naming it, until the stage comes round again (``service.daemon.stalls``). A window takes
    milliseconds and a request at most ``[bridge] ack_timeout_s`` behind one other exchange
    (set, it must be longer than twice that, and than ``[interlocks] max_sample_age_s``: a
    model whose windows take longer than the staleness limit can pass no train, as its data
    are older when its prediction comes, and one faster than it must never be taken as stuck;
    under ``[model] serving = "auto"`` the served way's measured p99 is within that limit).
    A model slower than this limit per window is a fault too, named too slow, not stuck.
    Unset (:attr:`Settings.stall_after_s`): 2 s beyond those two waits, 2.2 s with the default
    0.1 s, so a change of the ACK deadline never needs it changed too; 2 s is a hang, not a
    slow host: a starved 2-core host, garbage collection and the rests of ``[realtime]
    idle_share`` stay well under it. At least 0.5 s: shorter, a stage merely starved of its
    CPU for a moment would disarm."""
    gil_switch_interval_ms: Annotated[float, Field(gt=0, le=100, allow_inf_nan=False)] = 0.5
    """Longest a Python thread keeps the GIL while another asks for it (Python's default is
    5 ms). The scheduler thread comes back from inference, which runs without the GIL, and
    must take it again to publish: behind the wave stage or the HTTP server it could wait the
    whole 5 ms, the whole latency budget."""
    wave_niceness: Annotated[int, Field(ge=0, le=19)] = 5
    """Added to the wave stage thread's nice value: when cores are short, inference runs
    first; the wave stage takes the newest prediction when it gets to it."""
    blend_enabled: bool = True
    """Serve, per horizon, the MSE-optimal convex blend of the model and persistence fitted on
    the live scores (``service.loop.blend``), so that no horizon is served worse than repeating
    the last frame. Off: the model's prediction is served as it is."""
    blend_ar: bool = True
    """Let the live fitted AR baseline (``ar_*``) into the blend as a third source, once it is
    fitted on the recording: per horizon the served frame is then the MSE-optimal convex
    combination of model, AR and persistence. On recordings unlike the model's training data
    the AR, fitted on the session itself, often predicts the first frames better. Costs one AR
    forecast per prediction (about a tenth of a stream-mode inference of the default), run on
    a thread of its own beside the inference."""
    blend_window: Annotated[int, Field(ge=1, le=100_000)] = 1000
    """Scored predictions the blend weights are fitted on (the newest ones), as many as the
    live scores' rolling window: about 3.6 s of data at stride 1, long enough for a stable
    weight, short enough to follow a recording that changes."""
    blend_min_windows: Annotated[int, Field(ge=1, le=100_000)] = 200
    """Scored predictions before the weights move from 1 (the model as it is): as many as a
    model needs to be proven healthy (``health_min_scored``), 13 disjoint 16-frame horizons.
    Fewer lets a handful of windows decide; must not exceed ``blend_window``."""

    blank_after_train_ms: Annotated[int, Field(ge=0, le=10_000)] = 100
    """After a train the stimulator may have delivered (ACKed, or sent with no valid ACK), the
    frames stamped from the sending of its STIMULATE to this long after the train's end are
    blanked: marked missing, so that no prediction, wave estimate, baseline, score or fit
    reads the stimulation artefact as cortex (those arriving while the device answers are
    blanked as they arrive). The train itself is always blanked; this covers the amplifiers'
    recovery after it (tens of ms on µECoG headstages; longer without fast settle)."""

    stimulation_markers: bool = True
    """Push each train the stimulator may have delivered as a marker on the LSL stream
    ``corticast-stimulation`` (type ``Markers``; ``service.core.stimulation_markers``),
    stamped when its STIMULATE left: recorded by LabRecorder beside the rig's stream, it lets
    a replay of the recording blank the same frames."""

    @model_validator(mode="after")
    def _blend_min_fits_window(self) -> LoopSettings:
        if self.blend_min_windows > self.blend_window:
            raise ValueError(
                f"'blend_min_windows' ({self.blend_min_windows}) must be <= 'blend_window' "
                f"({self.blend_window}): the weights could never be fitted"
            )
        return self

    @model_validator(mode="after")
    def _served_ar_fits_the_input(self) -> LoopSettings:
        """The AR the blend serves is forecast from the model's input window alone
        (``LiveAccuracy.ar_forecast``): one with more own lags than its frames was fitted and
        scored but never served, its blend share 0 without a word."""
        past = DEFAULT_STREAM.past_frames
        if self.blend_enabled and self.blend_ar and self.ar_lags > past:
            raise ValueError(
                f"'ar_lags' ({self.ar_lags}) must be <= the model's {past} input frames while "
                "'blend_ar' is on: the AR is served from the model's input, and one that needs "
                "more frames would never be served; set blend_ar = false to score a longer AR "
                "without serving it"
            )
        return self
