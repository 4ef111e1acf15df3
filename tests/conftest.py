"""Shared fixtures. liblsl is told to keep quiet before any test touches it."""

from __future__ import annotations

import uuid

import pytest

from service._lsl import quiet_liblsl

quiet_liblsl()


@pytest.fixture
def source_id() -> str:
    """A source_id no other test (or stray rig on this machine) uses."""
    return f"corticast-test-{uuid.uuid4().hex[:12]}"
