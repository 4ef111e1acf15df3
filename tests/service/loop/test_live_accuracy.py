import dataclasses
import threading

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from service.config import ConfigError, load_settings
from service.core.autoregressive import FittedAutoregressive
from service.core.non_finite import MAX_NON_FINITE_FRACTION, hold_non_finite
from service.core.scores import psnr_db
from service.inference.predictor import PredictorInfo
from service.inference.scheduler import Prediction, Scheduler
from service.ingest.ring_buffer import RingBuffer
from service.loop.ar_baseline import ArBaseline, RefitSchedule
from service.loop.blend import Blend
from service.loop.live_accuracy import PREDICTORS, LiveAccuracy
from service.loop.model_health import ModelHealth
from service.loop.settings import LoopSettings

GRID = (18, 20)


def _signal(seq: np.ndarray) -> np.ndarray:
    """A slow sine per frame: predictable, so an oracle beats persistence."""
    return np.sin(0.05 * seq)[:, None, None] * np.ones((1, *GRID), dtype=np.float32)


def _prediction(seq: int, future: np.ndarray) -> Prediction:
    past = _signal(np.arange(seq - 15, seq + 1)).astype(np.float32)
    return Prediction(future, past, seq, seq - 15, 0.0, 0.0, 0.0, 0.0, 0.0, 0, 0)


def _write(ring: RingBuffer, first: int, count: int, invalid=()) -> None:
    seqs = np.arange(first, first + count)
    valid = np.array([s not in invalid for s in seqs])
    ring.write(_signal(seqs).astype(np.float32), seqs * 0.0036, valid, 0.0)


def test_an_oracle_scores_infinite_psnr_and_beats_persistence():
    registry = CollectorRegistry()
    ring = RingBuffer(512)
    accuracy = LiveAccuracy(np.zeros(GRID, np.float32), np.ones(GRID, np.float32),
                            registry=registry)  # fmt: skip
    _write(ring, 0, 40)
    for seq in range(15, 40):
        truth = _signal(np.arange(seq + 1, seq + 17)).astype(np.float32)
        accuracy.add(_prediction(seq, truth))
    assert accuracy.update(ring) == 40 - 16 - 15  # only those whose 16 true frames exist
    _write(ring, 40, 30)
    assert accuracy.update(ring) == 40 - 15 - 9
    psnr = accuracy.psnr()
    assert np.isinf(psnr["model"]).all()
    assert np.all(np.isfinite(psnr["persistence"]))
    assert np.all(np.diff(psnr["persistence"]) < 0)  # persistence worsens with horizon
    value = registry.get_sample_value(
        "corticast_accuracy_psnr_db", {"predictor": "persistence", "horizon": "1"}
    )
    assert value == pytest.approx(psnr["persistence"][0])
    # Over all horizons: the PSNR of the MSE pooled over them, as its own gauge.
    pooled = 10 * np.log10(4 / np.mean(4 / 10 ** (psnr["persistence"] / 10)))
    assert accuracy.record().pooled_psnr["persistence"] == pytest.approx(pooled)
    assert pooled < psnr["persistence"].mean()  # below the mean of the dB
    value = registry.get_sample_value(
        "corticast_accuracy_pooled_psnr_db", {"predictor": "persistence"}
    )
    assert value == pytest.approx(pooled)


def test_predictions_with_missing_truth_are_not_scored():
    registry = CollectorRegistry()
    ring = RingBuffer(512)
    accuracy = LiveAccuracy(np.zeros(GRID, np.float32), np.ones(GRID, np.float32),
                            registry=registry)  # fmt: skip
    _write(ring, 0, 16)
    accuracy.add(_prediction(15, np.zeros((16, *GRID), np.float32)))
    _write(ring, 16, 16, invalid={20})
    assert accuracy.update(ring) == 0
    assert registry.get_sample_value("corticast_accuracy_unscorable_predictions_total") == 1
    assert accuracy.psnr()["model"].size == 0


class _Oracle:
    """Predicts the very frames that follow the window's newest frame (the scheduler's
    ``newest_seq``, missing or not); takes the frames' times, so any policy runs it."""

    info = PredictorInfo("test", "cpu", "fp32", "window", "oracle", "-", "-", irregular=True)

    def predict(self, window, newest_seq=None, past_times=None):
        return _signal(np.arange(newest_seq + 1, newest_seq + 17)).astype(np.float32)

    def warmup(self):
        pass

    def close(self):
        pass


@pytest.mark.parametrize("policy", ["hold", "irregular"])
def test_the_scheduler_s_predictions_are_scored_against_the_frames_after_their_newest(policy):
    """An oracle run by the real scheduler is perfect only if each prediction is scored
    against the 16 frames after its input's newest frame: one frame off, its PSNR is finite.
    With two newest frames missing, an ``irregular`` window's last frame fed is older than
    its newest frame; the prediction still starts after the newest."""
    ring = RingBuffer(512)
    accuracy = LiveAccuracy(np.zeros(GRID, np.float32), np.ones(GRID, np.float32),
                            model=_Oracle.info)  # fmt: skip
    scheduler = Scheduler(ring, _Oracle(), accuracy.add, missing_frames=policy,
                          registry=CollectorRegistry())  # fmt: skip
    for seq in range(120):
        _write(ring, seq, 1, invalid={80, 81})
        if ring.next_seq > scheduler.next_due():
            scheduler.run_due()
        accuracy.update(ring)
    # Newest input 15..103 have all their truth; of them 64..80 have frame 80 or 81 in it.
    assert accuracy.scored == len(range(15, 104)) - len(range(64, 81))
    assert np.isinf(accuracy.psnr()["model"]).all()


def test_the_old_models_last_prediction_is_not_scored_as_the_swapped_in_models():
    """Across a hot swap the scheduler may hand on the old model's last prediction after the
    scores were reset for the new one (``Daemon.swap_model`` calls ``set_normalisation``, then
    swaps the predictor, which waits out the old one's inference in progress); it must not land
    in the new model's record. The old model here is
    upside down (far worse than persistence), the new one an oracle loaded from the very same
    files (an equal info, another model); scored as the new one's, the leftover would make
    its record 3 predictions and its PSNR finite."""
    zeros, ones = np.zeros(GRID, np.float32), np.ones(GRID, np.float32)
    old, new = (PredictorInfo("onnxruntime-cpu", "cpu", "fp32", "window", "tiny", "tiny.onnx",
                              "0" * 64) for _ in range(2))  # fmt: skip
    assert old == new and old is not new
    ring = RingBuffer(512)
    accuracy = LiveAccuracy(zeros, ones, registry=CollectorRegistry(), model=old)
    _write(ring, 0, 18)

    def made_by(model: PredictorInfo, seq: int, sign: int) -> Prediction:
        truth = _signal(np.arange(seq + 1, seq + 17)).astype(np.float32)
        return dataclasses.replace(_prediction(seq, sign * truth), predictor=model)

    leftover = made_by(old, 15, -1)  # predicted before the swap ...
    accuracy.set_normalisation(zeros, ones, new)
    accuracy.add(leftover)  # ... handed on after it
    accuracy.add(made_by(new, 16, 1))
    accuracy.add(made_by(new, 17, 1))
    _write(ring, 18, 20)  # every true frame has arrived
    assert accuracy.update(ring) == 2
    assert accuracy.scored == 2 and np.isinf(accuracy.psnr()["model"]).all()
    health = ModelHealth.judge(accuracy, LoopSettings(health_min_scored=2), running=True)
    assert health.healthy and health.scored == 2


def test_the_old_models_predictions_a_swap_leaves_unscored_are_counted():
    """Two of the old model's predictions wait for their true frames when the model changes
    (the scores are reset), and the scheduler hands on one more after it: all three were
    served and none is scored, so all three are counted; the new model's are not."""
    zeros, ones = np.zeros(GRID, np.float32), np.ones(GRID, np.float32)
    old, new = (PredictorInfo("onnxruntime-cpu", "cpu", "fp32", "window", "tiny", "tiny.onnx",
                              "0" * 64) for _ in range(2))  # fmt: skip
    registry = CollectorRegistry()
    accuracy = LiveAccuracy(zeros, ones, registry=registry, model=old)
    ring = RingBuffer(512)
    _write(ring, 0, 18)
    future = np.zeros((16, *GRID), np.float32)
    for seq in (15, 16):
        accuracy.add(dataclasses.replace(_prediction(seq, future), predictor=old))
    accuracy.set_normalisation(zeros, ones, new)
    accuracy.add(dataclasses.replace(_prediction(17, future), predictor=old))
    accuracy.add(dataclasses.replace(_prediction(17, future), predictor=new))
    _write(ring, 18, 20)
    assert accuracy.update(ring) == 1
    name = "corticast_accuracy_unscored_after_swap_predictions_total"
    assert registry.get_sample_value(name) == 3
    assert accuracy.unscored_after_swap == 3  # what /status shows


def test_scores_names_only_the_model_scored_now():
    """What the loop checks a prediction's model against before a request: the model whose
    record is judged, by identity (an equal info loaded again is another model); any model
    when none was named."""
    zeros, ones = np.zeros(GRID, np.float32), np.ones(GRID, np.float32)
    old, new = (PredictorInfo("onnxruntime-cpu", "cpu", "fp32", "window", "tiny", "tiny.onnx",
                              "0" * 64) for _ in range(2))  # fmt: skip
    accuracy = LiveAccuracy(zeros, ones, registry=CollectorRegistry(), model=old)
    assert accuracy.scores(old) and not accuracy.scores(new)
    accuracy.set_normalisation(zeros, ones, new)
    assert accuracy.scores(new) and not accuracy.scores(old)
    assert LiveAccuracy(zeros, ones, registry=CollectorRegistry()).scores(old)


def test_rolling_mean_is_the_mean_of_the_last_window_vectors():
    from service.loop.live_accuracy import _RollingMean

    rng = np.random.default_rng(0)
    values = rng.random((2500, 16)) * 1e3
    rolling = _RollingMean(window=700, horizons=16)
    for k, value in enumerate(values):
        rolling.append(value)
        if k in (0, 699, 700, 1399, 1400, 2499):
            expected = values[max(0, k - 699) : k + 1].mean(axis=0)
            np.testing.assert_allclose(rolling.mean(), expected, rtol=1e-12)
    assert len(rolling) == 700
    rolling.clear()
    rolling.append(values[0])
    np.testing.assert_allclose(rolling.mean(), values[0])


def _waves(seq: np.ndarray) -> np.ndarray:
    """A travelling wave along the columns: a spatial AR model predicts it well."""
    cols = np.arange(GRID[1])
    phase = 0.2 * seq[:, None, None] - 0.5 * cols[None, None, :]
    return (np.sin(phase) * np.ones((1, GRID[0], 1))).astype(np.float32)


def test_the_fitted_ar_baseline_is_fitted_from_the_ring_and_scored_in_the_background():
    registry = CollectorRegistry()
    ring = RingBuffer(4096)
    accuracy = LiveAccuracy(np.zeros(GRID, np.float32), np.ones(GRID, np.float32),
                            registry=registry)  # fmt: skip
    seqs = np.arange(600)
    ring.write(_waves(seqs), seqs * 0.0036, np.ones(600, bool), 0.0)
    faults: list[str] = []
    with ArBaseline(ring, accuracy, sample_rate_hz=277.78, on_fault=faults.append,
                    history_s=2.0, score_every_s=0.01):  # fmt: skip
        for seq in range(300, 560, 4):
            past = _waves(np.arange(seq - 15, seq + 1))
            future = _waves(np.arange(seq + 1, seq + 17)) + np.float32(0.3)  # a biased model
            accuracy.add(Prediction(future, past, seq, seq - 15, *[0.0] * 5, 0, 0))
        assert accuracy.update(ring) == 65
        deadline = 200
        while accuracy.psnr()["ar"].size == 0 and deadline:
            ring.wait_for(10**9, 0.05)  # a bounded wait, not a timed assert
            deadline -= 1
    psnr = accuracy.psnr()
    assert accuracy.ar is not None and accuracy.ar.coefficients.shape == (13,)
    assert psnr["ar"].shape == (16,)
    assert np.all(psnr["ar"] > psnr["persistence"])  # the wave is linear-predictable
    value = registry.get_sample_value(
        "corticast_accuracy_psnr_db", {"predictor": "ar", "horizon": "16"}
    )
    assert value == pytest.approx(psnr["ar"][15])
    assert faults == []
    # A swap changes the units: the old fit and its scores are dropped.
    accuracy.set_normalisation(np.zeros(GRID, np.float32), np.full(GRID, 2.0, np.float32))
    assert accuracy.ar is None and accuracy.psnr()["ar"].size == 0


def test_the_ar_baseline_waits_for_enough_measured_frames():
    ring = RingBuffer(512)
    accuracy = LiveAccuracy(np.zeros(GRID, np.float32), np.ones(GRID, np.float32))
    assert not accuracy.refit_ar(ring, 100)  # nothing written yet
    seqs = np.arange(8)
    ring.write(_waves(seqs), seqs * 0.0036, np.ones(8, bool), 0.0)
    assert not accuracy.refit_ar(ring, 100)  # fewer frames than lags + 1
    assert accuracy.score_ar(ring) == 0 and accuracy.ar is None
    with pytest.raises(ValueError, match="'history_s' must be > 0"):
        ArBaseline(ring, accuracy, sample_rate_hz=277.78, on_fault=print, history_s=0.0)


def test_an_ar_needing_more_frames_than_the_models_input_is_refused_while_the_blend_serves_it(
    tmp_path,
):
    """The blend serves the AR forecast from the model's 16-frame input alone: a 17-lag AR
    was fitted, scored and shown beside the model, and never served (its forecast None, its
    blend share 0), with no word of why. Refused while ``blend_ar`` is on, naming the bound;
    with it off, the longer AR is scored only, as before."""
    ring = RingBuffer(1024)
    accuracy = LiveAccuracy(np.zeros(GRID, np.float32), np.ones(GRID, np.float32), ar_lags=17)
    seqs = np.arange(400)
    ring.write(_waves(seqs), seqs * 0.0036, np.ones(400, bool), 0.0)
    assert accuracy.refit_ar(ring, 300)
    assert accuracy.ar_forecast(_waves(np.arange(384, 400))) is None  # what went unsaid
    path = tmp_path / "corticast.toml"
    path.write_text("[loop]\nar_lags = 17\n")
    with pytest.raises(ConfigError, match=r"'ar_lags' \(17\) must be <= the model's 16 input"):
        load_settings(path)
    path.write_text("[loop]\nar_lags = 17\nblend_ar = false\n")
    assert load_settings(path).loop.ar_lags == 17
    path.write_text("[loop]\nar_lags = 16\n")
    assert load_settings(path).loop.ar_lags == 16


@pytest.mark.parametrize(("missing_at_the_end", "gap"), [(3, None), (3, 390), (0, 390)])
def test_under_irregular_the_served_ar_forecasts_the_frames_after_the_newest_nominal_one(
    missing_at_the_end, gap
):
    """Under ``irregular`` a prediction's past is the frames received, at their times: fed as
    if consecutive, the AR forecast from the newest received frame as if it were the newest
    nominal one (early by the frames missing at the end) and closed the gaps inside. Put back
    on the frame grid, it forecasts the same frames the model predicts."""
    ring = RingBuffer(1024)
    accuracy = LiveAccuracy(np.zeros(GRID, np.float32), np.ones(GRID, np.float32))
    seqs = np.arange(400)
    ring.write(_waves(seqs), seqs * 0.0036, np.ones(400, bool), 0.0)
    assert accuracy.refit_ar(ring, 300)
    newest = 399  # the newest nominal frame: the predicted frames are 400..415
    last = newest - missing_at_the_end
    received = np.array([s for s in range(last - 17, last + 1) if s != gap][-16:])
    times = (received - newest).astype(np.float32) + np.float32(0.03)  # a stamp's jitter
    truth = _waves(np.arange(newest + 1, newest + 17))

    def error(forecast: np.ndarray) -> float:
        return float(np.mean((forecast - truth) ** 2))

    on_the_grid = error(accuracy.ar_forecast(_waves(received), times))
    as_if_consecutive = error(accuracy.ar_forecast(_waves(received)))
    assert on_the_grid < 1e-3 and on_the_grid < as_if_consecutive / 2


def _wait_for(condition) -> None:
    """Up to 10 s for ``condition``: a bounded wait, not a timed assert."""
    for _ in range(200):
        if condition():
            return
        threading.Event().wait(0.05)


def test_a_failing_ar_round_is_reported_once_counted_and_retried_until_a_refit_succeeds():
    """A refit that raises used to end the AR thread: no other fit ever, the last one served
    and its scores frozen, one log line as the only trace. Here the fit really fails (frames
    of another grid than the normalisation's: numpy refuses to broadcast them), round after
    round: one fault report naming the cause, every failure counted, the thread alive, and
    once the data fits again (the units change, as after a swap) a later retry fits."""
    registry = CollectorRegistry()
    ring = RingBuffer(1024)
    other_grid = (4, 5)
    accuracy = LiveAccuracy(np.zeros(other_grid, np.float32), np.ones(other_grid, np.float32),
                            registry=registry)  # fmt: skip
    seqs = np.arange(600)
    ring.write(_waves(seqs), seqs * 0.0036, np.ones(600, bool), 0.0)
    faults: list[str] = []

    def failed_rounds() -> float:
        return registry.get_sample_value("corticast_accuracy_ar_failed_rounds_total")

    baseline = ArBaseline(ring, accuracy, sample_rate_hz=277.78, on_fault=faults.append,
                          registry=registry, history_s=2.0, refit_every_s=0.08,
                          score_every_s=0.01)  # fmt: skip
    with baseline:
        _wait_for(lambda: failed_rounds() >= 3)
        assert failed_rounds() >= 3 and baseline.running
        assert len(faults) == 1, faults  # reported once for the whole run of failures
        assert "ValueError" in faults[0] and "broadcast" in faults[0]
        assert accuracy.ar is None  # nothing stale is served
        accuracy.set_normalisation(np.zeros(GRID, np.float32), np.ones(GRID, np.float32))
        _wait_for(lambda: accuracy.ar is not None)
        assert accuracy.ar is not None and baseline.running
    baseline.raise_if_failed()
    assert len(faults) == 1


def test_the_refit_schedule_retries_until_a_fit_then_waits_its_period():
    """The daemon's AR thread, replay --fast and the benches' served column all refit by it:
    every round while nothing is fitted (a failed fit moves nothing), then once per period."""
    schedule = RefitSchedule(10.0)
    calls: list[float] = []
    fitted = False

    def refit(ok: bool, now: float):
        def attempt() -> bool:
            calls.append(now)
            return ok

        return attempt

    for now, ok in ((0.0, False), (0.25, False), (0.5, True)):
        assert schedule.round(now, fitted, refit(ok, now)) is ok
        fitted = fitted or ok
    assert calls == [0.0, 0.25, 0.5]
    assert schedule.round(10.25, fitted, refit(True, 10.25)) is False  # not due before 10.5
    assert schedule.round(10.5, fitted, refit(True, 10.5)) is True
    assert schedule.round(11.0, False, refit(False, 11.0)) is False  # a model change: retried
    assert calls == [0.0, 0.25, 0.5, 10.5, 11.0]


def _add_twenty(accuracy: LiveAccuracy, offset: np.float32) -> None:
    """20 predictions of the wave session's frames 300-380, each off by ``offset``."""
    for seq in range(300, 380, 4):
        future = _waves(np.arange(seq + 1, seq + 17)) + offset
        accuracy.add(Prediction(future, _waves(np.arange(seq - 15, seq + 1)), seq, seq - 15,
                                *[0.0] * 5, 0, 0))  # fmt: skip


def _scored_with_an_ar(registry: CollectorRegistry) -> tuple[LiveAccuracy, RingBuffer]:
    """Live scores of a fixed model with a fitted AR, 20 predictions scored for each."""
    ring = RingBuffer(4096)
    accuracy = LiveAccuracy(np.zeros(GRID, np.float32), np.ones(GRID, np.float32),
                            registry=registry)  # fmt: skip
    seqs = np.arange(400)
    ring.write(_waves(seqs), seqs * 0.0036, np.ones(400, bool), 0.0)
    assert accuracy.refit_ar(ring, 300)
    _add_twenty(accuracy, np.float32(0.3))
    assert accuracy.update(ring) == 20 and accuracy.score_ar(ring) == 20
    return accuracy, ring


def test_a_new_model_leaves_no_figures_of_the_old_one_in_the_metrics():
    """``/metrics`` showed the old model's rolling PSNR after a swap until the new one's first
    score, and the old AR's forever when the new model is robust-online (never AR-fitted):
    the gauges must say what ``psnr()`` says, nothing until the new model is scored."""
    registry = CollectorRegistry()
    accuracy, ring = _scored_with_an_ar(registry)

    def gauges(pooled: bool = False) -> dict[str, float | None]:
        return {
            name: registry.get_sample_value(
                *(("corticast_accuracy_pooled_psnr_db", {"predictor": name}) if pooled else
                  ("corticast_accuracy_psnr_db", {"predictor": name, "horizon": "1"}))
            )
            for name in PREDICTORS
        }  # fmt: skip

    assert all(value is not None for value in (*gauges().values(), *gauges(True).values()))
    accuracy.set_normalisation(None, None)  # a robust-online model swapped in
    assert not accuracy.refit_ar(ring, 300)  # its AR is never fitted ...
    assert all(psnr.size == 0 for psnr in accuracy.psnr().values())
    assert gauges() == gauges(True) == dict.fromkeys(PREDICTORS)  # ... nor shown from the old's

    # A fixed model swapped in again: once scored, its own figures are shown.
    accuracy.set_normalisation(np.zeros(GRID, np.float32), np.ones(GRID, np.float32))
    _add_twenty(accuracy, np.float32(0.5))
    assert accuracy.update(ring) == 20
    shown, psnr = gauges(), accuracy.psnr()
    for name in ("model", "served", "persistence"):
        assert shown[name] == pytest.approx(psnr[name][0])


def test_a_dropped_ar_fit_leaves_no_figures_of_it():
    """A failed round drops the fit (``ArBaseline``): no AR is served or scored "as before the
    first fit". Its figures stayed, in ``psnr()`` and in the gauge, frozen at their last
    values for as long as the failures went on, as if an AR were still scored (the frozen
    'ar' scores the failure path was written to end). The other predictors' stay."""
    registry = CollectorRegistry()
    accuracy, _ = _scored_with_an_ar(registry)

    def shown(name: str) -> float | None:
        return registry.get_sample_value(
            "corticast_accuracy_psnr_db", {"predictor": name, "horizon": "1"}
        )

    def pooled(name: str) -> float | None:
        return registry.get_sample_value("corticast_accuracy_pooled_psnr_db", {"predictor": name})

    assert shown("ar") is not None and pooled("ar") is not None
    accuracy.drop_ar()
    assert accuracy.ar is None and accuracy.psnr()["ar"].size == 0
    assert shown("ar") is None and pooled("ar") is None
    assert pooled("model") is not None
    assert accuracy.psnr()["model"].size == 16 and shown("model") is not None


@pytest.mark.parametrize("all_channels", [True, False])
def test_only_the_channels_given_are_scored(all_channels):
    """A prediction right on every channel but one, and far off on that one: scored on every
    channel (``None``) its PSNR is finite, on the others infinite."""
    ring = RingBuffer(512)
    accuracy = LiveAccuracy(np.zeros(GRID, np.float32), np.ones(GRID, np.float32))
    live = np.ones(GRID, dtype=bool)
    live[4, 7] = False
    accuracy.score_channels(None if all_channels else live)
    _write(ring, 0, 40)
    future = _signal(np.arange(16, 32)).astype(np.float32)
    future[:, 4, 7] += 1e3
    accuracy.add(_prediction(15, future))
    assert accuracy.update(ring) == 1
    psnr = accuracy.psnr()
    assert np.isinf(psnr["model"]).all() != all_channels
    assert np.isfinite(psnr["model"]).all() == all_channels
    assert np.isfinite(psnr["persistence"]).all()


def test_the_blend_is_fitted_as_if_the_channels_left_out_were_not_there():
    """A channel left out must not steer the blend's weights: far off there, the model is
    weighed as if it were right there."""
    settings = LoopSettings(blend_min_windows=1, blend_window=10)
    live = np.ones(GRID, dtype=bool)
    live[4, 7] = False
    weights = []
    for offset in (0.0, 1e3):
        blend = Blend(settings)
        accuracy = LiveAccuracy(np.zeros(GRID, np.float32), np.ones(GRID, np.float32), blend=blend)
        accuracy.score_channels(live)
        ring = RingBuffer(512)
        _write(ring, 0, 60)
        for seq in range(15, 40, 3):
            future = 0.9 * _signal(np.arange(seq + 1, seq + 17)).astype(np.float32)
            future[:, 4, 7] += offset
            accuracy.add(_prediction(seq, future))
        assert accuracy.update(ring) > 0
        weights.append(blend.shares)
    np.testing.assert_array_equal(weights[0].model, weights[1].model)
    np.testing.assert_array_equal(weights[0].ar, weights[1].ar)


def test_the_ar_baseline_is_fitted_without_the_channels_left_out():
    """A channel of loud noise in the fit's rows turned the AR's coefficients to fitting
    noise; left out, the fit is the one on the other channels alone, and it is scored on
    them (here the fit with it kept had coefficients all near 0)."""
    ring = RingBuffer(1024)
    seqs = np.arange(600)
    frames = _waves(seqs)
    frames[:, 4, 7] += np.random.default_rng(2).normal(0.0, 300.0, 600).astype(np.float32)
    ring.write(frames, seqs * 0.0036, np.ones(600, bool), 0.0)
    live = np.ones(GRID, dtype=bool)
    live[4, 7] = False
    accuracy = LiveAccuracy(np.zeros(GRID, np.float32), np.ones(GRID, np.float32))
    accuracy.score_channels(live)
    assert accuracy.refit_ar(ring, 600)
    without = frames.astype(np.float64)
    without[:, 4, 7] = np.nan
    expected = FittedAutoregressive(accuracy.ar.lags).fit(without).coefficients
    np.testing.assert_allclose(accuracy.ar.coefficients, expected, rtol=1e-9)
    for seq in range(300, 560, 4):
        accuracy.add(_prediction(seq, _waves(np.arange(seq + 1, seq + 17))))
    accuracy.update(ring)
    assert accuracy.score_ar(ring) > 0
    psnr = accuracy.psnr()
    assert np.all(psnr["ar"] > psnr["persistence"])  # the wave, not the noise, was fitted


def test_a_mask_leaving_no_channel_is_refused_and_scores_stay_finite():
    """No channel to score is no mean square at all: scored, it was NaN in every rolling
    figure (and kept NaN for up to two windows after the mask came back, the rolling sum
    subtracting NaN), a model judged unhealthy on NaN dB. It is refused, naming the mask,
    and the scores go on over the mask before it."""
    ring = RingBuffer(512)
    _write(ring, 0, 60)
    accuracy = LiveAccuracy(np.zeros(GRID, np.float32), np.ones(GRID, np.float32))
    with pytest.raises(ValueError, match="'live' must leave at least one channel"):
        accuracy.score_channels(np.zeros(GRID, dtype=bool))
    for seq in range(15, 40):
        accuracy.add(_prediction(seq, 0.9 * _signal(np.arange(seq + 1, seq + 17))))
    assert accuracy.update(ring) > 0
    assert all(np.isfinite(value) for value in accuracy.record().pooled_psnr.values())


def _scores_through_a_late_marker(settle_frames: int) -> LiveAccuracy:
    """Scores of a model far worse than persistence (upside down) on a slow sine, live, in the
    rig's 4-frame chunks, through another tool's 100-frame train of +-500 (mV on a background
    of 1) whose marker reaches the ring 40 frames (144 ms) after the train started: its frames
    are blanked then, as ``StimulationMarkerInlet`` blanks them."""
    ring = RingBuffer(2048)
    zeros, ones = np.zeros(GRID, np.float32), np.ones(GRID, np.float32)
    accuracy = LiveAccuracy(zeros, ones, registry=CollectorRegistry(), window=2000,
                            settle_frames=settle_frames)  # fmt: skip
    train, marker_after = np.arange(600, 700), 40
    for first in range(0, 1400, 4):
        seqs = np.arange(first, first + 4)
        frames = _signal(seqs).astype(np.float32)
        on = np.isin(seqs, train)
        frames[on] = 500 * np.where(seqs[on] % 2, 1, -1)[:, None, None]
        ring.write(frames, seqs * 0.0036, np.ones(4, np.bool_), 0.0)
        if first == train[0] + marker_after:  # the marker arrives
            ring.blank(train[0] * 0.0036 - 0.0018, train[-1] * 0.0036 + 0.0018)
        newest = first + 3
        if newest >= 15:
            past = ring.latest(16).frames
            upside_down = -_signal(np.arange(newest + 1, newest + 17)).astype(np.float32)
            accuracy.add(Prediction(upside_down, past, newest, newest - 15,
                                    0.0, 0.0, 0.0, 0.0, 0.0, 0, 0))  # fmt: skip
        accuracy.update(ring)
    return accuracy


def test_a_late_marker_s_artefact_never_reaches_the_scores_the_health_is_judged_on():
    """Another tool's marker reaches the daemon a link's latency after its train starts. The
    predictions whose frames the train was on must not be scored: on +-500 the model's and
    persistence's errors are alike and all of every figure, and a model 12 dB worse than
    persistence on cortex was judged level with it (healthy). Scored a ``settle_frames``
    after their truth (the latency allowed), their frames are blanked by then, as are the
    inputs a prediction before the marker rested on."""
    settings = LoopSettings(health_min_scored=100, health_margin_db=3.0)
    late = _scores_through_a_late_marker(settle_frames=139)  # 500 ms at 277.78 Hz
    health = ModelHealth.judge(late, settings, running=True)
    assert health.state == "unhealthy", health.describe()
    assert health.persistence_psnr_db - health.model_psnr_db > 10
    # Of the predictions (newest input 15, 19, ...) whose truth ended 139 frames before the
    # last written (1399), all were scored but those the train was on, by an input or a true
    # frame (newest input 584..714).
    assert late.scored == len(range(15, 1400 - 139 - 16, 4)) - len(range(587, 715, 4))


def test_without_a_latency_allowed_the_late_marker_s_artefact_is_scored():
    """The counterpart: scored as soon as their truth arrived (``settle_frames`` 0, which is
    how every prediction was scored before), the predictions on the train before its marker
    came made the model's record level with persistence's: a model far worse judged
    healthy. The daemon allows no latency only while no other tool's markers are read."""
    settings = LoopSettings(health_min_scored=100, health_margin_db=3.0)
    health = ModelHealth.judge(_scores_through_a_late_marker(settle_frames=0), settings,
                               running=True)  # fmt: skip
    assert health.state == "healthy", health.describe()


@pytest.mark.parametrize(("capacity", "scored"), [(58, 200), (57, 0)])
def test_a_prediction_is_scored_only_while_the_ring_holds_its_input_truth_and_settle(
    capacity, scored
):
    """The bound the daemon refuses a ring under (``_check_ring_holds_scored_frames``): a
    prediction is scored ``settle_frames`` after its last true frame, and left unscored where
    the ring has overwritten one of its frames by then (a marker may have blanked it). A ring
    of 16 input + 16 true + 26 settle frames scores every prediction, written a frame at a
    time; one frame shorter, none, with nothing blanked."""
    ring = RingBuffer(capacity)
    accuracy = LiveAccuracy(np.zeros(GRID, np.float32), np.ones(GRID, np.float32),
                            registry=CollectorRegistry(), settle_frames=26)  # fmt: skip
    for seq in range(15 + 200 + 16 + 26):
        _write(ring, seq, 1)
        if seq >= 15:
            accuracy.add(_prediction(seq, _signal(np.arange(seq + 1, seq + 17))))
        accuracy.update(ring)
    assert (accuracy.scored, ring.blanked_frames) == (scored, 0)


def test_the_ar_is_not_scored_on_a_past_reaching_into_blanked_artefact():
    """``[loop] ar_lags`` (up to 64) may reach further back than the model's 16-frame input.
    A prediction whose input and true frames are clear of a blanked train is scored; the AR
    scored beside it reads its own ``ar_lags`` frames, and where those reach into the train
    (held frames, no cortex) its figure would be one the model's and persistence's never
    are. Of 31 predictions scored (newest input 330..360) with a 24-lag AR, the three whose
    AR past reaches the train's frames 300..309 (newest input 330..332) are left out."""
    ring = RingBuffer(1024)
    accuracy = LiveAccuracy(np.zeros(GRID, np.float32), np.ones(GRID, np.float32),
                            registry=CollectorRegistry(), ar_lags=24)  # fmt: skip
    seqs = np.arange(400)
    ring.write(_waves(seqs), seqs * 0.0036, np.ones(400, bool), 0.0)
    ring.blank(300 * 0.0036 - 0.0018, 309 * 0.0036 + 0.0018)
    assert accuracy.refit_ar(ring, 300)
    for seq in range(330, 361):
        accuracy.add(Prediction(_waves(np.arange(seq + 1, seq + 17)),
                                _waves(np.arange(seq - 15, seq + 1)), seq, seq - 15,
                                *[0.0] * 5, 0, 0))  # fmt: skip
    assert accuracy.update(ring) == 31
    assert accuracy.score_ar(ring) == 31 - 3


def test_scores_forgotten_for_a_late_marker_leave_the_model_unproven_until_scored_again():
    """A marker later than the latency allowed may have let its train's frames into the
    scores: forgotten, with the blend's fit and the AR, the model is unproven (the ``model``
    interlock blocks) until ``health_min_scored`` predictions are scored again."""
    registry = CollectorRegistry()
    ring = RingBuffer(512)
    zeros, ones = np.zeros(GRID, np.float32), np.ones(GRID, np.float32)
    blend = Blend(LoopSettings(), registry=CollectorRegistry())
    accuracy = LiveAccuracy(zeros, ones, registry=registry, blend=blend)
    settings = LoopSettings(health_min_scored=20)
    _write(ring, 0, 80)
    for seq in range(15, 60):
        accuracy.add(_prediction(seq, _signal(np.arange(seq + 1, seq + 17)).astype(np.float32)))
    accuracy.update(ring)
    assert accuracy.refit_ar(ring, 80)
    assert ModelHealth.judge(accuracy, settings, running=True).state == "healthy"
    accuracy.forget_scores()
    health = ModelHealth.judge(accuracy, settings, running=True)
    assert (health.state, health.scored) == ("unproven", 0)
    assert accuracy.ar is None and accuracy.psnr()["model"].size == 0
    assert blend.status()["windows"] == 0
    assert accuracy.scores_forgotten == 1
    assert registry.get_sample_value("corticast_accuracy_scores_forgotten_total") == 1
    _write(ring, 80, 40)
    for seq in range(80, 103):
        accuracy.add(_prediction(seq, _signal(np.arange(seq + 1, seq + 17)).astype(np.float32)))
    accuracy.update(ring)
    assert ModelHealth.judge(accuracy, settings, running=True).state == "healthy"


def test_values_the_ingest_held_are_not_scored_as_the_truth():
    """A broken contact sends NaN on one electrode from frame 20 on; the ingest holds its last
    finite value (``hold_non_finite``, marked held in the ring as the ingestor marks it). The
    cortex went on: a model predicting what it did (the signal) is right there, persistence,
    which repeats the held value, is not. Scored against the held value, the right model
    erred on that electrode (finite PSNR) and persistence's error there was 0; left out, the
    model is perfect and each left-out value is counted, on the metric and for ``/status``."""
    registry = CollectorRegistry()
    ring = RingBuffer(512)
    accuracy = LiveAccuracy(np.zeros(GRID, np.float32), np.ones(GRID, np.float32),
                            registry=registry)  # fmt: skip
    seqs = np.arange(60)
    frames = _signal(seqs).astype(np.float32)
    frames[20:, 4, 7] = np.nan
    sent_non_finite = ~np.isfinite(frames)
    result = hold_non_finite(frames, None, MAX_NON_FINITE_FRACTION)
    assert result.valid.all() and np.isfinite(frames).all()
    ring.write(frames, seqs * 0.0036, result.valid, 0.0, held=sent_non_finite)
    for seq in (15, 25, 30):
        accuracy.add(_prediction(seq, _signal(np.arange(seq + 1, seq + 17)).astype(np.float32)))
    assert accuracy.update(ring) == 3
    assert np.isinf(accuracy.psnr()["model"]).all()
    assert np.isfinite(accuracy.psnr()["persistence"]).all()
    held = 12 + 16 + 16  # frames 20..31, 26..41, 31..46
    assert accuracy.held_values_not_scored == held
    name = "corticast_accuracy_held_values_not_scored_total"
    assert registry.get_sample_value(name) == held


def test_the_ar_baseline_is_not_scored_on_values_the_ingest_held():
    """The AR baseline is scored on the windows the model was, and as the model is: a value
    the ingest held (electrode (4, 7) sending NaN from frame 300 on) is left out of its true
    frames too. Scored there, the travelling wave it forecasts was compared with a flat line."""
    clean, ring = RingBuffer(1024), RingBuffer(1024)
    seqs = np.arange(600)
    frames = _waves(seqs)
    clean.write(frames.copy(), seqs * 0.0036, np.ones(600, bool), 0.0)
    frames[300:, 4, 7] = np.nan
    sent_non_finite = ~np.isfinite(frames)
    result = hold_non_finite(frames, None, MAX_NON_FINITE_FRACTION)
    ring.write(frames, seqs * 0.0036, result.valid, 0.0, held=sent_non_finite)
    accuracy = LiveAccuracy(np.zeros(GRID, np.float32), np.ones(GRID, np.float32))
    assert accuracy.refit_ar(clean, 600)  # fitted on clean frames: only the scoring differs
    windows = range(300, 560, 4)
    for seq in windows:
        accuracy.add(_prediction(seq, _waves(np.arange(seq + 1, seq + 17))))
    assert accuracy.update(ring) == len(windows)
    assert accuracy.score_ar(ring) == len(windows)
    lags = accuracy.ar.lags
    past = np.stack([frames[seq + 1 - lags : seq + 1] for seq in windows])
    target = np.stack([frames[seq + 1 : seq + 17] for seq in windows])
    square = np.square(accuracy.ar.predict(past, 16) - target, dtype=np.float64)
    measured = np.ones(square.shape, bool)
    measured[..., 4, 7] = False
    expected = psnr_db(np.where(measured, square, 0.0).sum(axis=(2, 3)).mean(axis=0) / 359)
    np.testing.assert_allclose(accuracy.psnr()["ar"], expected, rtol=1e-9)


def test_the_blend_is_fitted_as_if_the_values_the_ingest_held_were_not_there():
    """A value the ingest held must not steer the blend's weights either: a model far off
    the held value (which the cortex did not take) is weighed as one right there."""
    settings = LoopSettings(blend_min_windows=1, blend_window=10)
    seqs = np.arange(60)
    frames = _signal(seqs).astype(np.float32)
    frames[20:, 4, 7] = np.nan
    sent_non_finite = ~np.isfinite(frames)
    hold_non_finite(frames, None, MAX_NON_FINITE_FRACTION)
    weights = []
    for offset in (0.0, 1e3):
        blend = Blend(settings)
        accuracy = LiveAccuracy(np.zeros(GRID, np.float32), np.ones(GRID, np.float32), blend=blend)
        ring = RingBuffer(512)
        ring.write(frames, seqs * 0.0036, np.ones(60, bool), 0.0, held=sent_non_finite)
        for seq in range(20, 40, 3):
            future = 0.9 * _signal(np.arange(seq + 1, seq + 17)).astype(np.float32)
            future[:, 4, 7] += offset
            accuracy.add(_prediction(seq, future))
        assert accuracy.update(ring) > 0
        weights.append(blend.shares)
    np.testing.assert_array_equal(weights[0].model, weights[1].model)
    np.testing.assert_array_equal(weights[0].ar, weights[1].ar)


def test_the_ar_baseline_is_fitted_without_the_values_the_ingest_held():
    """A held value repeats the one before it: fitted on as data, a contact broken for a
    while (electrode (4, 7) NaN over 400 of the 600 frames) gives the fit rows of pure
    persistence. Left out as unmeasured, the fit is the one with them NaN."""
    ring = RingBuffer(1024)
    seqs = np.arange(600)
    frames = _waves(seqs)
    frames[100:500, 4, 7] = np.nan
    sent_non_finite = ~np.isfinite(frames)
    result = hold_non_finite(frames, None, MAX_NON_FINITE_FRACTION)
    ring.write(frames, seqs * 0.0036, result.valid, 0.0, held=sent_non_finite)
    accuracy = LiveAccuracy(np.zeros(GRID, np.float32), np.ones(GRID, np.float32))
    assert accuracy.refit_ar(ring, 600)
    without = frames.astype(np.float64)
    without[sent_non_finite] = np.nan
    expected = FittedAutoregressive(accuracy.ar.lags).fit(without).coefficients
    np.testing.assert_allclose(accuracy.ar.coefficients, expected, rtol=1e-9)
