"""The daemon's processes take the file descriptors the host allows (``service.core.descriptors``):
an unauthenticated flood of idle connections to the API must not use up the 1024 a process
starts with."""

import logging
import resource
from collections.abc import Iterator

import pytest
from typer.testing import CliRunner

from service.cli.app import app
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


def _expected(hard: int) -> int:
    return MOST_DESCRIPTORS if hard == resource.RLIM_INFINITY else min(hard, MOST_DESCRIPTORS)


def test_corticast_serve_raises_the_limit_before_it_starts_anything(soft_limit, tmp_path):
    """Raised first thing: the control process it starts inherits it. Here the start ends at
    once (a model that does not exist, exit 2), after the limit was raised."""
    config = tmp_path / "c.toml"
    config.write_text(f'[model]\npath = "{tmp_path / "nope.onnx"}"\n[api]\ndev_no_token = true\n')
    result = CliRunner().invoke(app, ["serve", "--config", str(config)])
    assert result.exit_code == 2, result.output
    assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] == _expected(soft_limit[1])


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
