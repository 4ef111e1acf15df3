"""Shared fixtures. liblsl is told to keep quiet before any test touches it, and torch (with
OpenMP and OpenBLAS) runs on one thread unless ``OMP_NUM_THREADS`` says otherwise.

One thread, because the suite must hold on a loaded 2-core machine: the tests' models are tiny,
one thread runs them as fast as two, and two OpenMP threads competing with other processes
spin-wait for each other (a 40-step training test ran 5-10x slower and overran the 120 s
limit). Set here, before anything imports torch, it holds in this process and in every process
a test starts (daemons, ``torchrun`` workers, replays).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before the imports below load any library

import uuid

import pytest

from service.ingest.lsl import quiet_liblsl

quiet_liblsl()


@pytest.fixture
def source_id() -> str:
    """A source_id no other test (or stray rig on this machine) uses."""
    return f"corticast-test-{uuid.uuid4().hex[:12]}"
