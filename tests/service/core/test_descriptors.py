"""``service.core.descriptors``: the soft file-descriptor limit raised, never lowered; a host
that refuses is served with what there is. (The control process raising its own:
``tests/service/cli/test_serve_control_fault.py``.)"""

import logging
import resource
from collections.abc import Iterator

import pytest

from service.core import descriptors
from service.core.descriptors import MOST_DESCRIPTORS, raise_descriptor_limit


@pytest.fixture
def soft_limit() -> Iterator[tuple[int, int]]:
    """This process's soft limit lowered to 256 for the test (the hard one as it is); put back
    after. Skipped where the hard limit leaves no room above 256."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard <= 256:
        pytest.skip(f"the hard descriptor limit is {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
    try:
        yield 256, hard
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_the_soft_limit_is_raised_to_the_hard_one_at_most_the_cap(soft_limit):
    hard = soft_limit[1]
    expected = MOST_DESCRIPTORS if hard == resource.RLIM_INFINITY else min(hard, MOST_DESCRIPTORS)
    assert raise_descriptor_limit() == expected
    assert resource.getrlimit(resource.RLIMIT_NOFILE) == (expected, hard)


def test_a_limit_already_above_is_never_lowered(monkeypatch):
    monkeypatch.setattr(descriptors, "MOST_DESCRIPTORS", 8)
    before = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert raise_descriptor_limit() == before[0]
    assert resource.getrlimit(resource.RLIMIT_NOFILE) == before


def test_a_host_that_refuses_the_raise_is_served_with_what_there_is(
    soft_limit, monkeypatch, caplog
):
    def refused(which, limits):
        raise ValueError("not allowed here")

    monkeypatch.setattr(resource, "setrlimit", refused)
    with caplog.at_level(logging.WARNING, "corticast.daemon"):
        assert raise_descriptor_limit() == 256
    assert "could not raise the file descriptor limit from 256" in caplog.text
    assert "not allowed here" in caplog.text
