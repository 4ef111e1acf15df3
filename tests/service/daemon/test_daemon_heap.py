"""The daemon freezes the heap it starts on (``gc.freeze``: a full collection later need not
scan what lives as long as the daemon) and unfreezes at stop what it froze; a heap frozen
before it started (by a program that embeds it, or ``tests/conftest.py``) is not its own to
scan or unfreeze. A real daemon, with no rig to read."""

from __future__ import annotations

import gc

import pytest

from service.daemon.daemon import Daemon
from tests.service._loop_harness import loop_settings


@pytest.fixture
def settings(tmp_path, exported, source_id):
    _, window, step = exported
    return loop_settings(tmp_path, window, step, source_id, bridge={"dry_run": True})


@pytest.fixture
def heap_unfrozen():
    """Nothing frozen during the test; the suite's frozen heap (``tests/conftest.py``) put
    back after it."""
    gc.unfreeze()
    yield
    gc.collect()
    gc.freeze()


def test_a_daemon_freezes_the_heap_it_starts_on_and_unfreezes_it_at_stop(settings, heap_unfrozen):
    with Daemon(settings):
        assert gc.get_freeze_count() > 0
    assert gc.get_freeze_count() == 0


def test_a_heap_frozen_before_the_daemon_started_stays_frozen_after_it_stops(settings):
    """Before, the stop unfroze it all: an embedding program's frozen heap, scanned again by
    every full collection after."""
    frozen = gc.get_freeze_count()
    assert frozen > 0  # tests/conftest.py
    with Daemon(settings):
        pass
    assert gc.get_freeze_count() > 0.9 * frozen  # less what refcounting freed meanwhile
