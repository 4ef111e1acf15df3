"""The serving rule (service.inference.serving_choice): stride, fit and choice, on measurements
written out by hand (no timing here; the probe's own tests measure)."""

import dataclasses

import pytest

from service.inference.serving_choice import Candidate, Measurement, ServingChoice, stride_for

PERIOD = 0.0036
ms = 1e-3


@pytest.mark.parametrize(
    ("p99_s", "margin", "expected"),
    [
        (0.0, 0.7, 1),  # free: every frame
        (0.7 * PERIOD, 0.7, 1),  # exactly the budget of one period still fits
        (0.7 * PERIOD * 1.001, 0.7, 2),  # a hair over: the next stride
        (2 * 0.7 * PERIOD, 0.7, 2),  # exactly two periods' budget (a quotient ceil may round up)
        (3 * 0.7 * PERIOD, 0.7, 3),
        (13.4 * ms, 0.7, 6),  # 13.4 / 2.52 = 5.3
        (13.4 * ms, 1.0, 4),  # no margin: 13.4 / 3.6 = 3.7
        (PERIOD, 0.5, 2),
    ],
)
def test_the_stride_is_the_smallest_whose_budget_holds_the_p99(p99_s, margin, expected):
    stride = stride_for(p99_s, PERIOD, margin)
    assert stride == expected
    assert p99_s <= margin * stride * PERIOD * (1 + 1e-12)
    assert stride == 1 or p99_s > margin * (stride - 1) * PERIOD


@pytest.mark.parametrize(
    ("args", "match"),
    [
        ((-1e-3, PERIOD, 0.7), "'p99_s' must be a finite number >= 0"),
        ((float("nan"), PERIOD, 0.7), "'p99_s'"),
        ((1e-3, 0.0, 0.7), "'period_s' must be a finite number > 0"),
        ((1e-3, PERIOD, 0.0), "'margin' must be a finite number > 0"),
    ],
)
def test_bad_stride_input_is_named(args, match):
    with pytest.raises(ValueError, match=match):
        stride_for(*args)


GUARD = "guard -0.04 dB (>= -0.1)"


def measured(
    mode, backend, threads, p99_ms, *, stride=1, error=0.0, problem=None, precision="fp32",
    guard=None,
):  # fmt: skip
    candidate = Candidate(mode, backend, threads, precision)
    if problem is not None:
        return Measurement(candidate, problem=problem)
    p99 = p99_ms * ms
    return Measurement(candidate, p99 / 2, p99, 200, stride, error, 2e-4, guard)


def decide(measurements, **kwargs):
    options = {"period_s": PERIOD, "margin": 0.7, "staleness_limit_s": 0.05}
    return ServingChoice.decide(measurements, **(options | kwargs))


def test_the_smallest_stride_wins_then_the_fewest_threads_then_the_p99():
    choice = decide(
        [
            measured("window", "onnxruntime-cpu", 1, 4.0),  # stride 2
            measured("window", "onnxruntime-cpu", 2, 2.4),  # stride 1, 2 threads
            measured("stream", "onnxruntime-cpu", 1, 2.5),  # stride 1, 1 thread: chosen
            measured("stream", "onnxruntime-cpu", 2, 1.2),  # stride 1, 2 threads, faster
        ]
    )
    chosen = choice.chosen.measurement.candidate
    assert chosen == Candidate("stream", "onnxruntime-cpu", 1)
    assert choice.chosen.stride == 1 and choice.advice is None
    assert [row.stride for row in choice.rows] == [2, 1, 1, 1]
    assert "stream onnxruntime-cpu x1" in choice.why and "4 of 4" in choice.why


def test_among_equal_strides_and_threads_the_lowest_p99_wins():
    choice = decide(
        [
            measured("window", "onnxruntime-cpu", 1, 2.4),
            measured("stream", "onnxruntime-cpu", 1, 1.0),
        ]
    )
    assert choice.chosen.measurement.candidate.mode == "stream"


def test_the_configured_stride_is_a_floor():
    choice = decide([measured("window", "onnxruntime-cpu", 1, 1.0)], min_stride=4)
    assert choice.chosen.stride == 4


def test_inaccurate_unavailable_and_too_slow_candidates_do_not_fit():
    choice = decide(
        [
            measured("window", "onnxruntime-cpu", 1, 9.0),  # stride 4: fits
            measured("window", "onnxruntime-cpu", 2, 1.0, error=1e-3),  # off the reference
            measured("window", "onnxruntime-cuda", 1, 0, problem="unavailable: no CUDA"),
            measured("window", "onnxruntime-cpu", 3, 41.0),  # stride 17 > 16
            measured("stream", "onnxruntime-cpu", 1, 9.0, stride=1),  # needs 4, timed at 1
            measured("stream", "onnxruntime-cpu", 2, 9.0, stride=4),  # timed where it runs
        ]
    )
    reasons = [row.reason for row in choice.rows]
    assert [row.fits for row in choice.rows] == [True, False, False, False, False, True]
    assert "off by 1.0e-03 > 2e-04" in reasons[1]
    assert reasons[2] == "unavailable: no CUDA"
    assert "needs stride 17 > horizon 16" in reasons[3]
    assert "needs stride 4, measured at 1" in reasons[4]
    assert choice.chosen is choice.rows[0]


def test_nan_outputs_and_a_missing_tolerance_are_named_not_taken_for_int8():
    """A model that outputs NaN has a NaN parity error (the cache keeps it so): its reason says
    its outputs are off, not that an fp32 graph lacks an int8 guard (what a swap's 409 repeats);
    a record with an error but no tolerance (edited by hand) is named, not a crash."""
    nan = measured("window", "onnxruntime-cpu", 2, 1.0, error=float("nan"))
    edited = dataclasses.replace(measured("window", "onnxruntime-cpu", 1, 1.0), tolerance=None)
    choice = decide([nan, edited])
    assert [row.reason for row in choice.rows] == [
        "outputs off by nan > 2e-04",
        "no tolerance to check its outputs against",
    ]
    assert choice.chosen is None


def test_a_p99_past_the_staleness_budget_does_not_fit_and_the_advice_says_what_would_help():
    choice = decide(
        [
            measured("window", "onnxruntime-cpu", 1, 30.0),  # stride 12, but 30 > 0.7 x 20 ms
            measured("window", "onnxruntime-cuda", 1, 0, problem="unavailable: no CUDA"),
        ],
        staleness_limit_s=0.02,
    )
    assert choice.chosen is None
    assert "p99 > 14 ms (staleness)" in choice.rows[0].reason
    assert "max_sample_age_s" in choice.advice
    assert "a faster backend (not available here: onnxruntime-cuda" in choice.advice
    assert "a smaller model" in choice.advice
    assert choice.why.startswith("no candidate fits")


def test_past_the_horizon_the_advice_says_a_longer_stride_would_not_help():
    choice = decide([measured("window", "onnxruntime-cpu", 1, 45.0)], staleness_limit_s=1.0)
    assert choice.chosen is None and "past the 16-frame horizon" in choice.advice


def test_a_stream_way_timed_short_of_its_stride_is_not_called_too_slow_for_staleness():
    """A stream way whose p99 grew each time it was timed at a longer stride ends timed at
    one stride short of what it needs: it does not fit, but its p99 (20 ms here) is well
    inside the staleness budget and its stride inside the horizon. The advice must not say a
    longer stride would not help: timed there ([scheduler] stride, a floor) it may fit."""
    choice = decide(
        [measured("stream", "onnxruntime-cpu", 1, 20.0, stride=7)], staleness_limit_s=1.0
    )
    assert choice.chosen is None and choice.rows[0].reason == "needs stride 8, measured at 7"
    assert "staleness" not in choice.advice and "does not change" not in choice.advice
    assert "[scheduler] stride = 8" in choice.advice


def test_the_table_and_the_status_block_say_the_same():
    choice = decide(
        [
            measured("window", "onnxruntime-cpu", 1, 3.0),
            measured("stream", "onnxruntime-cpu", 1, 2.0),
        ]
    )
    header, *lines = choice.table()
    assert header.split()[:4] == ["candidate", "precision", "p50", "ms"]
    assert lines[1].startswith("stream onnxruntime-cpu x1") and lines[1].endswith("<==")
    assert lines[1].split()[3] == "fp32" and "parity 0.0e+00" in lines[1]
    assert "yes, at stride 2" in lines[0] and not lines[0].endswith("<==")
    block = choice.as_dict()
    assert block["chosen"] == {
        "mode": "stream", "backend": "onnxruntime-cpu", "threads": 1, "precision": "fp32",
        "stride": 1, "p99_ms": pytest.approx(2.0),
    }  # fmt: skip
    assert [c["needs_stride"] for c in block["candidates"]] == [2, 1]
    assert block["frame_period_ms"] == pytest.approx(3.6)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"margin": 0.0}, "'margin' must be in"), ({"min_stride": 17}, "'min_stride' must be in")],
)
def test_bad_rule_settings_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        decide([], **kwargs)


def test_int8_is_chosen_only_where_it_is_faster_at_the_same_stride_and_threads():
    """Precision is no key of its own: at equal stride and threads the lower p99 wins."""
    fp32 = measured("window", "onnxruntime-cpu", 1, 2.0)
    faster = measured("window", "onnxruntime-cpu", 1, 1.5, precision="int8", guard=GUARD)
    slower = measured("window", "onnxruntime-cpu", 1, 2.2, precision="int8", guard=GUARD)
    assert decide([fp32, faster]).chosen.measurement is faster
    assert decide([fp32, slower]).chosen.measurement is fp32
    equal = measured("window", "onnxruntime-cpu", 1, 2.0, precision="int8", guard=GUARD)
    assert decide([equal, fp32]).chosen.measurement is fp32  # a tie keeps fp32
    choice = decide([fp32, faster])
    assert "window onnxruntime-cpu x1 int8" in choice.why
    assert choice.as_dict()["chosen"]["precision"] == "int8"
    row = choice.table()[2]
    assert row.split()[3] == "int8" and GUARD in row and row.endswith("<==")


def test_int8_that_lets_a_smaller_stride_fit_wins_over_fewer_threads_of_fp32():
    fp32 = measured("window", "onnxruntime-cpu", 1, 4.0)  # stride 2
    int8 = measured("window", "onnxruntime-cpu", 2, 2.4, precision="int8", guard=GUARD)
    assert decide([fp32, int8]).chosen.measurement is int8


def test_int8_without_its_guard_is_not_accurate_whatever_its_parity():
    """Its parity is with int8's own reference: without the guard nothing vouches for it
    against fp32."""
    unguarded = measured("window", "onnxruntime-cpu", 1, 1.0, precision="int8")
    fp32 = measured("window", "onnxruntime-cpu", 1, 2.0)
    choice = decide([fp32, unguarded])
    assert choice.chosen.measurement is fp32
    assert choice.rows[1].reason == "int8 without a passed guard record"
