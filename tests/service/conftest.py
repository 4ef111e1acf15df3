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
