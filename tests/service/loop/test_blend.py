"""``Blend``: per horizon, the model where it beats persistence, persistence where it does not.

The unit tests feed ``observe`` synthetic scored windows whose optimal weights are known in
closed form; the join test drives a real ``ClosedLoop`` (real ring, live scoring, wave stage
and policy) with a model that is good at the first horizons and noise at the last, and reads
the served prediction and its weights from a real ZeroMQ subscription.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from service.core.grid import NOMINAL_RATE_HZ
from service.inference.predictor import PredictorInfo
from service.inference.scheduler import Prediction
from service.ingest.ring_buffer import RingBuffer
from service.loop.blend import Blend
from service.loop.closed_loop import ClosedLoop
from service.loop.live_accuracy import LiveAccuracy
from service.loop.settings import LoopSettings
from service.policy.settings import PolicySettings
from service.policy.stimulation_policy import StimulationPolicy
from service.waves.estimator import WaveEstimator
from service.waves.settings import WaveSettings
from service.zmq_api.client import PredictionClient
from service.zmq_api.publisher import ZmqPublisher
from service.zmq_api.settings import ZmqSettings
from service.zmq_api.wire import decode_message

H, GRID = 16, (18, 20)
GOOD = slice(0, 8)
BAD = slice(8, 16)
INFO = PredictorInfo("test", "cpu", "fp32", "window", "half-good", "-", "-")


def _blend(window: int = 400, min_windows: int = 50, **extra) -> tuple[Blend, CollectorRegistry]:
    registry = CollectorRegistry()
    settings = LoopSettings(blend_window=window, blend_min_windows=min_windows, **extra)
    return Blend(settings, horizons=H, registry=registry), registry


def _window(rng: np.random.Generator, model_of) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One scored window: persistence, truth = persistence + change, and the model's frames
    ``model_of(persistence, change)``."""
    persistence = rng.standard_normal(GRID)
    change = rng.standard_normal((H, *GRID))
    return model_of(persistence, change, rng), persistence, persistence + change


def _half_good(persistence, change, rng):
    """Close to the truth at horizons 1-8; at 9-16 noise around persistence, unrelated to
    the change (its MSE twice persistence's)."""
    model = persistence + change + 0.1 * rng.standard_normal(change.shape)
    model[BAD] = persistence + rng.standard_normal(change[BAD].shape)
    return model


def _gauge(registry: CollectorRegistry, horizon: int) -> float:
    return registry.get_sample_value("corticast_blend_weight", {"horizon": str(horizon)})


def test_a_model_worse_than_persistence_at_some_horizons_is_served_persistence_there_only():
    blend, registry = _blend()
    rng = np.random.default_rng(0)
    for _ in range(100):
        blend.observe(*_window(rng, _half_good))
    weights = blend.weights
    # Optimal weight Σde/Σdd: 1 / (1 + 0.1²) where good, 0 in expectation where unrelated.
    np.testing.assert_allclose(weights[GOOD], 1 / 1.01, atol=0.01)
    assert np.all(weights[BAD] < 0.02)
    assert [_gauge(registry, h + 1) for h in range(H)] == pytest.approx(weights.tolist())


def test_a_model_better_than_persistence_everywhere_is_served_unchanged():
    blend, _ = _blend()
    rng = np.random.default_rng(1)
    for _ in range(60):
        blend.observe(*_window(rng, lambda p, c, _: p + c))  # the truth
    np.testing.assert_array_equal(blend.weights, np.ones(H))
    prediction = _prediction(np.ones((16, *GRID), np.float32), seq=40)
    served, shares = blend.serve(prediction)
    assert served is prediction
    np.testing.assert_array_equal(shares.model, np.ones(H))
    np.testing.assert_array_equal(shares.ar, np.zeros(H))


def test_weights_are_clipped_to_between_persistence_and_the_model():
    """A model that predicts the change backwards (least squares: -1) gets 0; one that
    predicts half of it (least squares: 2, extrapolating past the model) gets 1."""
    blend, _ = _blend()
    rng = np.random.default_rng(2)

    def model_of(persistence, change, _):
        model = persistence + 0.5 * change
        model[BAD] = persistence - change[BAD]
        return model

    for _ in range(60):
        blend.observe(*_window(rng, model_of))
    np.testing.assert_array_equal(blend.weights, np.r_[np.ones(8), np.zeros(8)])


def test_weights_stay_at_the_model_until_the_minimum_of_windows_is_scored():
    blend, _ = _blend(min_windows=50)
    rng = np.random.default_rng(3)
    for _ in range(49):
        blend.observe(*_window(rng, _half_good))
    np.testing.assert_array_equal(blend.weights, np.ones(H))
    assert blend.status()["fitted"] is False
    blend.observe(*_window(rng, _half_good))
    assert np.all(blend.weights[BAD] < 0.1)
    assert blend.status()["fitted"] is True and blend.status()["windows"] == 50


def test_weights_follow_the_newest_window_of_scores():
    blend, _ = _blend(window=50, min_windows=10)
    rng = np.random.default_rng(4)
    for _ in range(50):
        blend.observe(*_window(rng, _half_good))
    assert np.all(blend.weights[BAD] < 0.1)
    for _ in range(50):  # the model recovers: the old windows roll out
        blend.observe(*_window(rng, lambda p, c, _: p + c))
    np.testing.assert_array_equal(blend.weights, np.ones(H))


def test_reset_serves_the_model_again_and_refits_from_nothing():
    blend, registry = _blend(min_windows=20)
    rng = np.random.default_rng(5)
    for _ in range(30):
        blend.observe(*_window(rng, _half_good))
    assert _gauge(registry, 16) < 0.1
    blend.reset()
    np.testing.assert_array_equal(blend.weights, np.ones(H))
    assert blend.windows == 0 and _gauge(registry, 16) == 1.0
    for _ in range(19):  # the minimum counts again from zero
        blend.observe(*_window(rng, _half_good))
    np.testing.assert_array_equal(blend.weights, np.ones(H))


def test_a_new_model_in_live_accuracy_resets_the_blend():
    """The daemon's swap and reload both go through ``set_normalisation``."""
    blend, _ = _blend(min_windows=20)
    rng = np.random.default_rng(6)
    for _ in range(30):
        blend.observe(*_window(rng, _half_good))
    zeros = np.zeros(GRID, np.float32)
    accuracy = LiveAccuracy(zeros, zeros + 1, registry=CollectorRegistry(), blend=blend)
    accuracy.set_normalisation(zeros, zeros + 2)
    np.testing.assert_array_equal(blend.weights, np.ones(H))
    assert blend.windows == 0


def test_disabled_serves_the_model_and_fits_nothing():
    blend, _ = _blend(min_windows=1, blend_enabled=False)
    rng = np.random.default_rng(7)
    for _ in range(5):
        blend.observe(*_window(rng, _half_good))
    np.testing.assert_array_equal(blend.weights, np.ones(H))
    assert blend.status() == {
        "enabled": False, "ar": False, "window": 400, "min_windows": 1, "windows": 0,
        "fitted": False, "weights": [1.0] * H, "ar_weights": [0.0] * H,
    }  # fmt: skip
    assert blend.wants_ar is False  # the loop computes no AR forecast for it


def test_bad_settings_and_shapes_are_refused():
    with pytest.raises(ValueError, match=r"'blend_min_windows' \(20\) must be <= 'blend_window'"):
        LoopSettings(blend_window=10, blend_min_windows=20)
    blend, _ = _blend()
    with pytest.raises(ValueError, match=r"must each be \(16, rows, cols\) .* got \[\(8, 18, 20\)"):
        blend.observe(np.zeros((8, *GRID)), np.zeros(GRID), np.zeros((8, *GRID)))
    with pytest.raises(ValueError, match=r"got \[\(16, 18, 20\), \(16, 18, 20\), \(16, 4, 4\)\]"):
        blend.observe(np.zeros((H, *GRID)), np.zeros(GRID), np.zeros((H, *GRID)),
                      np.zeros((H, 4, 4)))  # fmt: skip


# ------------------------------------------------------------- the AR baseline as a third source
def _with_ar(persistence, change, rng):
    """Model and AR of one window: at horizons 1-8 the AR is close (noise 0.1 sd) and the model
    far (noise 1 sd); at 9-16 the model is close and the AR unrelated noise."""
    model = persistence + change + 0.1 * rng.standard_normal(change.shape)
    model[GOOD] += rng.standard_normal(change[GOOD].shape)
    ar = persistence + rng.standard_normal(change.shape)
    ar[GOOD] = persistence + change[GOOD] + 0.1 * rng.standard_normal(change[GOOD].shape)
    return model, ar


def _observe_with_ar(blend: Blend, rng: np.random.Generator, windows: int) -> None:
    """``windows`` scored windows of :func:`_with_ar`'s model and AR."""
    for _ in range(windows):
        persistence = rng.standard_normal(GRID)
        change = rng.standard_normal((H, *GRID))
        model, ar = _with_ar(persistence, change, rng)
        blend.observe(model, persistence, persistence + change, ar)


def test_the_ar_takes_the_horizons_where_it_beats_the_model_and_the_model_keeps_the_rest():
    blend, registry = _blend()
    rng = np.random.default_rng(10)
    _observe_with_ar(blend, rng, 100)
    shares = blend.shares
    # Least squares at 1-8 (E dd = 2, E aa = 1.01, E da = E de = E ae = 1): w = 0.01/1.02,
    # v = 1/1.02, inside the triangle; at 9-16 the two-way 1/1.01 and no AR.
    np.testing.assert_allclose(shares.model[GOOD], 0.01 / 1.02, atol=0.02)
    np.testing.assert_allclose(shares.ar[GOOD], 1 / 1.02, atol=0.02)
    np.testing.assert_allclose(shares.model[BAD], 1 / 1.01, atol=0.02)
    assert np.all(shares.ar[BAD] < 0.02)
    ar_gauges = [
        registry.get_sample_value("corticast_blend_ar_weight", {"horizon": str(h + 1)})
        for h in range(H)
    ]
    assert ar_gauges == pytest.approx(shares.ar.tolist())
    assert blend.status()["ar_weights"] == pytest.approx(shares.ar.tolist())


def test_without_ar_forecasts_the_weights_are_exactly_the_two_way_ones():
    blend, _ = _blend(min_windows=10)
    rng = np.random.default_rng(11)
    de, dd = np.zeros(H), np.zeros(H)
    for _ in range(40):
        model, persistence, truth = _window(rng, _half_good)
        blend.observe(model, persistence, truth)
        d, e = (model - persistence).reshape(H, -1), (truth - persistence).reshape(H, -1)
        de += np.einsum("hk,hk->h", d, e)
        dd += np.einsum("hk,hk->h", d, d)
    np.testing.assert_allclose(blend.weights, np.clip(de / dd, 0, 1), rtol=1e-12)
    np.testing.assert_array_equal(blend.shares.ar, np.zeros(H))


def test_shares_stay_in_the_triangle_when_least_squares_would_leave_it():
    """Model and AR each predict half of the change: least squares wants w + v = 2 (past
    both), and the served frame may not extrapolate: w + v = 1. Both backwards: w = v = 0."""
    blend, _ = _blend(min_windows=10)
    rng = np.random.default_rng(12)
    for _ in range(30):
        persistence = rng.standard_normal(GRID)
        change = rng.standard_normal((H, *GRID))
        model = persistence + 0.5 * change + 0.01 * rng.standard_normal(change.shape)
        ar = persistence + 0.5 * change + 0.01 * rng.standard_normal(change.shape)
        model[BAD], ar[BAD] = persistence - change[BAD], persistence - 0.5 * change[BAD]
        blend.observe(model, persistence, persistence + change, ar)
    shares = blend.shares
    assert np.all(shares.model >= 0) and np.all(shares.ar >= 0)
    np.testing.assert_allclose((shares.model + shares.ar)[GOOD], 1.0, atol=1e-12)
    np.testing.assert_array_equal(shares.model[BAD], 0.0)
    np.testing.assert_array_equal(shares.ar[BAD], 0.0)


def test_serve_mixes_the_three_and_gives_the_ars_share_to_persistence_without_a_forecast():
    blend, _ = _blend(min_windows=10)
    rng = np.random.default_rng(13)
    _observe_with_ar(blend, rng, 30)
    shares = blend.shares
    model = rng.standard_normal((H, *GRID)).astype(np.float32)
    ar = rng.standard_normal((H, *GRID)).astype(np.float32)
    prediction = _prediction(model, seq=40)
    last = prediction.past[-1]
    served, used = blend.serve(prediction, ar)
    expected = (
        last + shares.model[:, None, None] * (model - last) + shares.ar[:, None, None] * (ar - last)
    )
    np.testing.assert_allclose(served.future, expected, atol=1e-5)
    np.testing.assert_array_equal(used.ar, shares.ar)
    served, used = blend.serve(prediction)  # no forecast (not fitted yet)
    np.testing.assert_array_equal(used.ar, np.zeros(H))
    np.testing.assert_allclose(
        served.future, last + shares.model[:, None, None] * (model - last), atol=1e-5
    )
    blend.reset()
    np.testing.assert_array_equal(blend.shares.ar, np.zeros(H))


# ---------------------------------------------------------------------- through the loop
def _signal(seq: np.ndarray) -> np.ndarray:
    """A travelling sine (rows x cols x frames): predictable, not constant."""
    rows, cols = np.meshgrid(np.arange(GRID[0]), np.arange(GRID[1]), indexing="ij")
    phase = 0.08 * np.asarray(seq)[:, None, None] - 0.3 * cols[None] + 0.1 * rows[None]
    return (50.0 * np.sin(phase)).astype(np.float32)


def _prediction(future: np.ndarray, seq: int) -> Prediction:
    past = _signal(np.arange(seq - 15, seq + 1))
    return Prediction(future, past, seq, seq - 15, seq * 0.0036, 0.0, 0.0, 0.0, 0.0, 0, 0, INFO)


@pytest.fixture
def publisher() -> Iterator[ZmqPublisher]:
    settings = ZmqSettings(pub_endpoint="tcp://127.0.0.1:*", query_endpoint="tcp://127.0.0.1:*")
    with ZmqPublisher(settings, registry=CollectorRegistry()) as publisher:
        yield publisher


def _closed_loop(ring, publisher, accuracy, settings, blend) -> ClosedLoop:
    """A real ClosedLoop on ``ring`` (wave stage and policy at test settings, no bridge)."""
    rate = NOMINAL_RATE_HZ
    return ClosedLoop(
        ring,
        WaveEstimator(
            WaveSettings(low_hz=2.0, high_hz=12.0, extension_frames=35),
            grid=ring.grid,
            sample_rate_hz=rate,
        ),
        StimulationPolicy(PolicySettings(), grid=ring.grid, sample_rate_hz=rate),
        lambda: None,
        publisher,
        accuracy,
        settings,
        sample_rate_hz=rate,
        model_healthy=lambda: True,
        registry=CollectorRegistry(),
        blend=blend,
    )


def _blended_loop(publisher, first: int, accuracy_type=LiveAccuracy):
    """A real ClosedLoop whose blend is fitted once 30 predictions are scored (live scores over
    the last 100), its ring holding the travelling sine up to frame ``first``."""
    settings = LoopSettings(blend_window=200, blend_min_windows=30)
    blend = Blend(settings, registry=CollectorRegistry())
    zeros = np.zeros(GRID, np.float32)
    accuracy = accuracy_type(
        zeros, zeros + 100, window=100, registry=CollectorRegistry(), blend=blend
    )
    ring = RingBuffer(1024)
    ring.write(_signal(np.arange(first + 1)), np.arange(first + 1) * 0.0036,
               np.ones(first + 1, bool), 0.0)  # fmt: skip
    return _closed_loop(ring, publisher, accuracy, settings, blend), accuracy, ring


def _drive(loop, ring, publisher, seqs, predict) -> list:
    """For each slot: the loop handles ``predict(seq)``, then the next frame arrives; returns
    every prediction message a real subscriber received."""
    received = []
    with PredictionClient(publisher.endpoint, None, topics=("prediction",)) as client:
        for seq in seqs:
            loop.process(predict(seq))
            ring.write(_signal(np.array([seq + 1])), np.array([(seq + 1) * 0.0036]),
                       np.ones(1, bool), 0.0)  # fmt: skip
            while (message := client.receive(timeout_s=0.001)) is not None:
                received.append(message)
        while (message := client.receive(timeout_s=1.0)) is not None:
            received.append(message)
    return received


def test_the_loop_serves_and_publishes_the_blend_and_scores_it_beside_the_model(publisher):
    """Exact at horizons 1-8, noise around the last frame at 9-16: once fitted, the
    subscriber receives the model's frames at 1-8 and (nearly) the last input frame at 9-16,
    with the weights that made them; live accuracy's served row beats the model's at 9-16,
    is as good as persistence there, and matches the model at 1-8."""
    loop, accuracy, ring = _blended_loop(publisher, 15)
    rng = np.random.default_rng(8)

    def half_good(seq: int) -> Prediction:
        future = _signal(np.arange(seq + 1, seq + 17))
        last = _signal(np.array([seq]))[0]
        future[BAD] = last + rng.normal(0, 40, future[BAD].shape).astype(np.float32)
        return _prediction(future, seq)

    received = _drive(loop, ring, publisher, range(15, 260), half_good)
    assert received, "no prediction reached the subscriber"
    message = received[-1]
    assert message.header["input_seq"] == 259
    weights = message.blend_weights
    assert weights is not None and weights.shape == (16,)
    np.testing.assert_array_equal(weights[GOOD], 1.0)
    assert np.all(weights[BAD] < 0.2)
    input_seq = message.header["input_seq"]
    model = _signal(np.arange(input_seq + 1, input_seq + 17))
    last = _signal(np.array([input_seq]))[0]
    np.testing.assert_allclose(message.array[GOOD], model[GOOD], atol=1e-4)
    # At the noisy horizons the served frame is within w * noise of the last input frame.
    off = np.abs(message.array[BAD] - last).max(axis=(1, 2))
    assert np.all(off <= weights[BAD] * 40 * 6 + 1e-3)
    psnr = accuracy.psnr()
    assert np.all(psnr["served"][BAD] > psnr["model"][BAD] + 2)
    assert np.all(psnr["served"][BAD] > psnr["persistence"][BAD] - 0.5)
    np.testing.assert_array_equal(psnr["served"][GOOD], psnr["model"][GOOD])


def test_the_loop_serves_the_fitted_ar_where_it_beats_the_model(publisher):
    """A travelling sine, which the 13-parameter AR fitted on the ring forecasts closely, and
    a model that is noise around the last frame at every horizon: once the blend is fitted,
    what reaches the subscriber is mostly the AR's forecast, with weights to say so, and its
    live scores beat both the model and persistence at frame 1. As in the daemon, each
    forecast is started before "inference" (the scheduler's hook) and runs on the loop's AR
    thread."""
    first = 199
    loop, accuracy, ring = _blended_loop(publisher, first, _ThreadNoting)
    rng = np.random.default_rng(14)
    assert accuracy.ar_forecast(_signal(np.arange(first - 15, first + 1))) is None
    accuracy.threads.clear()
    assert accuracy.refit_ar(ring, 200)  # what the daemon's AR thread does
    loop.open_ar_thread()  # what start() does; process() drives the loop here

    def noise_started_ahead(seq: int) -> Prediction:
        last = _signal(np.array([seq]))[0]
        noise = rng.normal(0, 20, (H, *GRID)).astype(np.float32)
        prediction = _prediction(last + noise, seq)
        loop.ahead(prediction.past, seq)
        if seq in loop._ar_started:  # the model's inference, which the forecast runs beside
            loop._ar_started[seq].result(timeout=30.0)
        return prediction

    message = _drive(loop, ring, publisher, range(first, first + 240), noise_started_ahead)[-1]
    assert message.header["input_seq"] == first + 239
    ar_weights, weights = message.blend_ar_weights, message.blend_weights
    assert ar_weights is not None and ar_weights.shape == (H,)
    assert ar_weights[0] > 0.9 and weights[0] < 0.1
    assert np.all(ar_weights + weights <= 1.0 + 1e-12)
    seq = message.header["input_seq"]
    truth = _signal(np.arange(seq + 1, seq + 17))
    last = _signal(np.array([seq]))[0]
    assert np.abs(message.array[0] - truth[0]).max() < 0.5 * np.abs(last - truth[0]).max()
    psnr = accuracy.psnr()
    assert psnr["served"][0] > psnr["persistence"][0] + 3, psnr
    assert psnr["served"][0] > psnr["model"][0] + 3, psnr
    assert len(accuracy.threads) >= 240 and set(accuracy.threads) == {"corticast-ar-ahead_0"}
    loop.stop()  # never started: stopping releases the AR thread


class _ThreadNoting(LiveAccuracy):
    """Notes the thread each AR forecast ran on."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.threads: list[str] = []

    def ar_forecast(self, past, past_times=None):
        self.threads.append(threading.current_thread().name)
        return super().ar_forecast(past, past_times)


class _HeldForecast(LiveAccuracy):
    """An AR forecast that runs until the test lets it finish."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.gate = threading.Event()
        self.running = threading.Event()

    def ar_forecast(self, past, past_times=None):
        self.running.set()
        self.gate.wait(60.0)
        return super().ar_forecast(past, past_times)


def test_a_forecast_still_running_is_not_waited_for_and_is_fitted_on_once_done(publisher):
    """The prediction whose AR forecast is not ready is served at once without the AR (its
    share goes to persistence, the weights published say so); the forecast still reaches the
    blend's fit when that prediction is scored. (Waiting would have served the AR share.)"""
    settings = LoopSettings(blend_window=200, blend_min_windows=5)
    blend = _NotingBlend(settings, registry=CollectorRegistry())
    zeros = np.zeros(GRID, np.float32)
    accuracy = _HeldForecast(zeros, zeros + 100, registry=CollectorRegistry(), blend=blend)
    _observe_with_ar(blend, np.random.default_rng(15), 10)  # the AR gets frames 1-8
    assert blend.shares.ar[0] > 0.5
    ring = RingBuffer(1024)
    seq = 199
    ring.write(_signal(np.arange(seq + 1)), np.arange(seq + 1) * 0.0036, np.ones(seq + 1, bool),
               0.0)  # fmt: skip
    assert accuracy.refit_ar(ring, 200)
    loop = _closed_loop(ring, publisher, accuracy, settings, blend)
    loop.open_ar_thread()
    prediction = _prediction(_signal(np.arange(seq + 1, seq + 17)), seq)
    loop.ahead(prediction.past, seq)
    # Running, not only queued: stopping the loop below cancels forecasts not yet begun.
    assert accuracy.running.wait(30.0)
    loop.process(prediction)
    accuracy.gate.set()
    # What was published, from the publisher's own store (what a query would get): one
    # message, so not a subscription that may join after it was sent.
    stored = publisher.history.latest()
    header, frames = decode_message(stored.header, stored.payload)
    assert header["input_seq"] == seq
    np.testing.assert_array_equal(header["blend_ar_weights"], np.zeros(H))
    shares = blend.shares
    last = prediction.past[-1]
    expected = last + shares.model[:, None, None].astype(np.float32) * (prediction.future - last)
    np.testing.assert_allclose(frames, expected, atol=1e-4)
    ring.write(_signal(np.arange(seq + 1, seq + 18)), np.arange(seq + 1, seq + 18) * 0.0036,
               np.ones(17, bool), 0.0)  # fmt: skip
    loop.stop()  # lets the running forecast finish (the gate is open)
    blend.with_ar.clear()
    assert accuracy.update(ring) == 1
    assert blend.with_ar == [True]  # the served-without window was fitted with its forecast


class _NotingBlend(Blend):
    """Notes whether each observed window came with an AR forecast."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.with_ar: list[bool] = []

    def observe(self, model, persistence, truth, ar=None, channels=None) -> None:
        self.with_ar.append(ar is not None)
        super().observe(model, persistence, truth, ar, channels)


def test_an_unstable_ar_fit_is_served_within_what_its_input_spanned():
    """Fitted on a recording that grows by 30 % every frame, the AR's roll-out keeps growing
    (about 1.3^16, 66-fold, by frame 16); what the blend would serve of it stays within the
    largest value of the window it was given."""
    zeros = np.zeros(GRID, np.float32)
    accuracy = LiveAccuracy(zeros, zeros + 100, registry=CollectorRegistry())
    ring = RingBuffer(256)
    n = 24
    growth = (1.3 ** np.arange(n))[:, None, None] * (_signal(np.arange(n)) + 60.0)
    ring.write(growth.astype(np.float32), np.arange(n) * 0.0036, np.ones(n, bool), 0.0)
    assert accuracy.refit_ar(ring, n)
    past = growth[-16:].astype(np.float32)
    raw = accuracy.ar.predict((past / 100)[None], H)[0] * 100
    largest = np.abs(past[-accuracy.ar.lags :]).max()
    assert np.abs(raw).max() > 10 * largest  # the fit is as unstable as the test says
    served = accuracy.ar_forecast(past)
    assert np.abs(served).max() <= largest * (1 + 1e-6)
    inside = np.abs(raw) < largest  # left as they are
    assert inside.any()
    np.testing.assert_allclose(served[inside], raw[inside], rtol=1e-4)


def test_the_ar_thread_is_made_when_the_loop_starts_not_by_the_scheduler(publisher):
    """Made by the scheduler's first call, it would inherit that thread's real-time policy
    and pinned CPUs and queue behind inference; made at start, by the starting thread, it
    runs beside it. The scheduler's calls reuse it."""
    first = 199
    loop, accuracy, ring = _blended_loop(publisher, first)
    assert accuracy.refit_ar(ring, 200)

    def ar_threads() -> list[threading.Thread]:  # the threads, not their names: each pool's
        # first is "corticast-ar-ahead_0", so another test's pool not yet gone hid a new one
        return [t for t in threading.enumerate() if t.name.startswith("corticast-ar-ahead")]

    before = ar_threads()
    with loop:
        made = [thread for thread in ar_threads() if thread not in before]
        assert len(made) == 1
        scheduler = threading.Thread(target=loop.ahead, args=(_signal(np.arange(184, 200)), first))
        scheduler.start()
        scheduler.join(30.0)
        assert [thread for thread in ar_threads() if thread not in before] == made
    assert made[0] not in ar_threads()  # stopped with the loop


def test_a_loop_without_its_ar_thread_starts_none_and_forecasts_when_serving(publisher):
    """The scheduler's hook called on a loop that was never started (no AR thread) must not
    make one in the scheduler's thread; the prediction is still served with its AR forecast,
    computed then, in the serving thread."""
    first = 199
    loop, accuracy, ring = _blended_loop(publisher, first, _ThreadNoting)
    assert accuracy.refit_ar(ring, 200)
    accuracy.threads.clear()

    def ar_threads() -> list[threading.Thread]:  # the threads, not their names: each pool's
        # first is "corticast-ar-ahead_0", so another test's pool not yet gone hid a new one
        return [t for t in threading.enumerate() if t.name.startswith("corticast-ar-ahead")]

    before = ar_threads()
    prediction = _prediction(_signal(np.arange(first + 1, first + 17)), first)
    scheduler = threading.Thread(target=loop.ahead, args=(prediction.past, first))
    scheduler.start()
    scheduler.join(30.0)
    assert ar_threads() == before and accuracy.threads == []
    loop.process(prediction)
    assert accuracy.threads == [threading.current_thread().name]
    loop.stop()
