"""The rate meter on timestamps made here: what it must measure, and what must not move it."""

from __future__ import annotations

import math

import numpy as np
import pytest

from service.core.grid import NOMINAL_RATE_HZ
from service.core.rate_meter import BUCKET_S, RateMeter

PERIOD = 1.0 / NOMINAL_RATE_HZ


def _meter(**overrides) -> RateMeter:
    return RateMeter(**({"expected_hz": NOMINAL_RATE_HZ, "tolerance": 0.02, "window_s": 10.0}
                        | overrides))  # fmt: skip


def _stamps(rate_hz: float, seconds: float, *, jitter_s=0.0, drop=0.0, seed=0) -> np.ndarray:
    """Timestamps of a stream at ``rate_hz``: jitter clipped to a quarter nominal period (as
    ``bench.data.synth``), a share ``drop`` of samples lost (never the first)."""
    rng = np.random.default_rng(seed)
    n = int(seconds * rate_hz)
    times = np.arange(n) / rate_hz
    times += np.clip(rng.normal(0.0, jitter_s, n), -PERIOD / 4, PERIOD / 4) if jitter_s else 0
    keep = rng.random(n) >= drop
    keep[0] = True
    return times[keep]


def _feed(meter: RateMeter, stamps: np.ndarray, chunk: int = 4) -> int:
    """Steps of ``stamps`` in chunks, as the ingestor adds them; returns the judgements."""
    steps = np.diff(stamps)
    return sum(meter.add_steps(steps[i : i + chunk]) for i in range(0, steps.shape[0], chunk))


def test_a_stream_stamped_at_200_hz_is_measured_at_200_and_named():
    meter = _meter()
    _feed(meter, _stamps(200.0, 3.0))
    assert meter.measured_hz == pytest.approx(200.0, rel=1e-9)
    assert meter.problem().startswith("stream rate 200.00 Hz measured from its timestamps")
    assert "[stream] sample_rate_hz is 277.78 Hz ([ingest] rate_tolerance 0.02)" in (
        meter.problem()
    )


def test_nothing_is_judged_before_half_a_second_of_timestamps():
    meter = _meter()
    short = _stamps(200.0, BUCKET_S * 0.9)
    assert _feed(meter, short) == 0
    assert math.isnan(meter.measured_hz)
    assert meter.problem().startswith("stream rate not measured yet")
    assert _feed(meter, short[-1] + _stamps(200.0, BUCKET_S * 0.2)) == 1
    assert meter.measured_hz == pytest.approx(200.0)


def test_the_ingestors_regular_runs_count_as_their_steps():
    meter = _meter()
    while not meter.add_run(4, 4 / 250.0):
        pass
    assert meter.measured_hz == pytest.approx(250.0)
    assert "stream rate 250.00 Hz" in meter.problem()


@pytest.mark.parametrize("seed", range(5))
def test_jitter_drift_and_drops_do_not_move_the_rate(seed):
    """Timestamp jitter up to a quarter period (0.3 ms sd, clipped at 0.9 ms), a crystal
    100 ppm fast and 10 % of samples lost: within 0.4 % from the first half second on (the
    tolerance is 2 %), within 0.02 % over the whole window: only the window's two ends carry
    jitter, and each gap counts its lost samples."""
    rate = NOMINAL_RATE_HZ * (1 + 100e-6)
    stamps = _stamps(rate, 12.0, jitter_s=0.3e-3, drop=0.1, seed=seed)
    meter = _meter()
    first = np.searchsorted(stamps, 0.6)
    assert _feed(meter, stamps[:first]) == 1
    assert meter.measured_hz == pytest.approx(rate, rel=4e-3)
    assert meter.problem() is None
    _feed(meter, stamps[first - 1 :])
    assert meter.measured_hz == pytest.approx(rate, rel=2e-4)
    assert meter.problem() is None


def test_a_long_run_of_lost_samples_is_not_a_slower_rate():
    stamps = _stamps(NOMINAL_RATE_HZ, 6.0)
    lost = np.concatenate([stamps[:300], stamps[400:]])  # 100 samples, 0.36 s, in one gap
    meter = _meter()
    _feed(meter, lost)
    assert meter.measured_hz == pytest.approx(NOMINAL_RATE_HZ, rel=1e-9)


def test_an_outage_or_a_backward_step_counts_for_nothing():
    stamps = _stamps(210.0, 2.0)
    meter = _meter()
    _feed(meter, np.concatenate([stamps, stamps[-1] + 60.0 + stamps]))  # a minute's jump
    _feed(meter, np.concatenate([stamps, stamps - 0.5]))  # a step back
    assert meter.measured_hz == pytest.approx(210.0, rel=1e-9)


def test_a_stream_whose_every_step_is_a_gap_is_measured_at_the_rate_it_arrives():
    meter = _meter()
    _feed(meter, _stamps(100.0, 3.0))  # 2.78 nominal periods a step
    assert meter.measured_hz == pytest.approx(100.0, rel=1e-9)
    assert "stream rate 100.00 Hz" in meter.problem()


@pytest.mark.parametrize("jitter_s", [0.3e-3, 0.6e-3])
@pytest.mark.parametrize("rate", [186.0, 187.0, 188.0])
def test_a_jittered_stream_whose_steps_straddle_the_gap_threshold_is_measured_at_its_rate(
    rate, jitter_s
):
    """At 186-188 Hz a step is 1.48-1.49 nominal periods: jittered, about half are gaps of 2
    slots and half steady steps of 1, which added up to ~277 Hz and passed (271-278 Hz measured
    before). The steady steps average ~1.3 periods, not 1: the gaps are no lost samples."""
    meter = _meter()
    _feed(meter, _stamps(rate, 12.0, jitter_s=jitter_s, seed=1))
    assert meter.measured_hz == pytest.approx(rate, rel=1e-3)
    assert meter.problem().startswith(f"stream rate {meter.measured_hz:.2f} Hz measured from")


def test_back_at_the_rate_once_the_wrong_one_has_left_the_window():
    meter = _meter(window_s=2.0)
    wrong = _stamps(200.0, 3.0)
    _feed(meter, wrong)
    assert meter.problem() is not None
    right = wrong[-1] + PERIOD + _stamps(NOMINAL_RATE_HZ, 3.0)
    judgements = []
    for i in range(0, right.shape[0] - 1, 4):
        if _feed(meter, right[i : i + 5]):
            judgements.append((right[i + 4] - right[0], meter.problem() is None))
    within = [at for at, ok in judgements if ok]
    assert within and all(ok for at, ok in judgements if at >= within[0])
    assert 1.5 <= within[0] <= 2.0 + BUCKET_S  # once the window holds little of 200 Hz


def test_reset_forgets_the_stream():
    meter = _meter()
    _feed(meter, _stamps(200.0, 2.0))
    meter.reset()
    assert math.isnan(meter.measured_hz)
    assert meter.problem().startswith("stream rate not measured yet")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"expected_hz": 0.0}, "'expected_hz' must be a finite number > 0, got 0.0"),
        ({"tolerance": 1.5}, r"'tolerance' must be a finite number in \[0, 1\], got 1.5"),
        ({"window_s": 0.1}, "'window_s' must be a finite number >= 0.5, got 0.1"),
    ],
)
def test_bad_settings_are_refused_by_name(overrides, message):
    with pytest.raises(ValueError, match=message):
        _meter(**overrides)
