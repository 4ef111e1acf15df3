"""Fixtures shared by the service tests: a small exported model and a session to feed it."""

import pytest

from bench.data.synth import SynthConfig, generate_session
from tests.data.tiny_model import copy_tiny_model


@pytest.fixture(scope="session")
def session():
    return generate_session(SynthConfig(duration_s=6.0, seed=21))


@pytest.fixture(scope="session")
def exported(tmp_path_factory):
    """A briefly trained MR-layer model: its run directory, window graph and step graph.

    The committed one (``tests/data/tiny_model.py`` says how it is made and when to remake
    it), copied: exporting a step graph here would take longer than a test may.
    """
    return copy_tiny_model(tmp_path_factory.mktemp("model"))


@pytest.fixture(scope="session")
def int8_pair(tiny_int8):
    """The tiny model's fp32 window and step graphs with their int8 copies beside them, in a
    directory of their own (``tiny_int8``, read-only): a probe of ``exported`` must not see
    them."""
    window, step, _ = tiny_int8
    return window, step
