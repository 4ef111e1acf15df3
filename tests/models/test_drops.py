"""Simulated frame loss: the rates it promises, and batches exactly as the daemon feeds them."""

import numpy as np
import pytest
import torch

from models.data import SessionWindows
from models.drops import DropModel, DroppedWindows
from models.objective import Batch


@pytest.fixture(scope="module")
def windows(session):
    return SessionWindows(session, "train", stride=8, extra_past=16)


def test_drop_rates_are_what_they_say():
    rng = np.random.default_rng(0)
    random = np.mean([DropModel(random_rate=0.1).received(1000, rng).mean() for _ in range(20)])
    assert random == pytest.approx(0.9, abs=0.01)
    bursts = np.stack([DropModel(burst_rate=0.1).received(1000, rng) for _ in range(20)])
    assert 1 - bursts.mean() == pytest.approx(0.1, abs=0.025)
    # Bursts come in runs: a lost frame's neighbour is mostly lost too, unlike random loss.
    lost = ~bursts
    assert (lost[:, 1:] & lost[:, :-1]).sum() / lost.sum() > 0.6
    assert DropModel().received(50, rng).all()


def test_irregular_batches_hold_the_frames_received_at_their_times(windows):
    dropped = DroppedWindows(windows, DropModel(random_rate=0.2, burst_rate=0.1), seed=3)
    for index in range(0, len(dropped), 7):
        item = dropped[index]
        assert isinstance(item, Batch)
        span = windows.span(index)
        arrived = dropped.received(index)
        newest = arrived.size - 1
        chosen = np.flatnonzero(arrived)[-16:]
        assert item.past.shape == (16, 1, 18, 20) and item.past_times.shape == (16,)
        assert item.past_times.tolist() == (chosen - newest).tolist()
        torch.testing.assert_close(item.past, span[chosen])
        torch.testing.assert_close(item.future, span[-16:])  # always the true next frames
    assert any(dropped[i].past_times[0] < -15 for i in range(len(dropped)))


def test_hold_batches_repeat_the_last_frame_received(windows):
    held = DroppedWindows(windows, DropModel(random_rate=0.3), fill="hold", seed=3)
    index = next(i for i in range(len(held)) if not held.received(i)[-16:].all())
    item, span, arrived = held[index], windows.span(index), held.received(index)
    assert item.past_times.tolist() == list(range(-15, 1))
    for k, position in enumerate(range(arrived.size - 16, arrived.size)):
        source = max(p for p in range(position + 1) if arrived[p])
        torch.testing.assert_close(item.past[k], span[source])


def test_drops_are_the_same_on_every_read_and_differ_by_seed(windows):
    drops = DropModel(random_rate=0.2)
    a, b = DroppedWindows(windows, drops, seed=1), DroppedWindows(windows, drops, seed=2)
    assert np.array_equal(a.received(5), a.received(5))
    assert any(not np.array_equal(a.received(i), b.received(i)) for i in range(10))
    assert a.provenance["drops"] == {
        "random_rate": 0.2, "burst_rate": 0.0, "burst_frames": (3, 8), "fill": "irregular"
    }  # fmt: skip


def test_bad_drop_settings_are_refused(session):
    with pytest.raises(ValueError, match="random_rate"):
        DropModel(random_rate=1.5)
    with pytest.raises(ValueError, match="burst_frames"):
        DropModel(burst_frames=(5, 2))
    with pytest.raises(ValueError, match="extra_past >= 1"):
        DroppedWindows(SessionWindows(session, "train", stride=8), DropModel())
