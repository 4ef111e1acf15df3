"""RateLimitedLog: one line an interval, and the next one says how many were left out."""

import logging

import pytest

from service.core.rate_limited_log import RateLimitedLog


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_one_line_an_interval_and_the_count_of_those_left_out(caplog):
    clock = _Clock()
    limited = RateLimitedLog(logging.getLogger("corticast.test"), 10.0, clock)
    with caplog.at_level(logging.WARNING, logger="corticast.test"):
        assert limited.log(logging.WARNING, "bad request %d", 1)
        for k in range(2, 6):
            clock.now += 1.0
            assert not limited.log(logging.WARNING, "bad request %d", k)
        assert limited.suppressed == 4
        clock.now += 6.0  # 10 s after the first line
        assert limited.log(logging.WARNING, "bad request %d", 6)
    assert [r.getMessage() for r in caplog.records] == [
        "bad request 1; at most one such line every 10 s",
        "bad request 6 (4 more like it left out since the last); at most one such line every 10 s",
    ]
    assert limited.suppressed == 0


def test_the_interval_must_be_positive():
    with pytest.raises(ValueError, match=r"'interval_s' must be > 0, got 0"):
        RateLimitedLog(logging.getLogger("corticast.test"), 0)
