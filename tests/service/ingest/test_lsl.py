import time

import numpy as np
import pylsl
import pytest

from service.ingest.lsl import ChunkPuller, predicate
from service.ingest.settings import StreamSettings


def test_predicate_matches_only_the_fields_given():
    assert predicate(StreamSettings(name="a", type="ECoG", source_id="s")) == (
        "name='a' and type='ECoG' and source_id='s'"
    )
    assert predicate(StreamSettings(name="", type="ECoG", source_id="")) == "type='ECoG'"


@pytest.fixture
def outlet_and_puller(source_id):
    outlet = pylsl.StreamOutlet(
        pylsl.StreamInfo("p", "ECoG", 3, 100.0, pylsl.cf_float32, source_id)
    )
    inlet = pylsl.StreamInlet(pylsl.resolve_bypred(f"source_id='{source_id}'", 1, 5)[0])
    inlet.open_stream(5)
    samples = np.zeros((8, 3), np.float32)
    timestamps = np.zeros(8)
    yield outlet, ChunkPuller(inlet, samples, timestamps), samples, timestamps
    inlet.close_stream()


def test_puller_writes_samples_and_timestamps_into_the_rows_asked(outlet_and_puller):
    outlet, puller, samples, timestamps = outlet_and_puller
    data = np.arange(12, dtype=np.float32).reshape(4, 3)
    outlet.push_chunk(data, [10.0, 10.01, 10.02, 10.03])
    received = puller.pull(0, 1, 5.0)
    assert received == 1
    deadline = time.monotonic() + 5
    while received < 4 and time.monotonic() < deadline:
        received += puller.pull(received, 8 - received, 0.05)
    assert received == 4
    np.testing.assert_array_equal(samples[:4], data)
    np.testing.assert_allclose(timestamps[:4], [10.0, 10.01, 10.02, 10.03])
    assert not samples[4:].any()


@pytest.mark.parametrize(("offset", "count"), [(0, 9), (7, 2), (-1, 1), (0, 0)])
def test_puller_refuses_rows_outside_its_buffers(outlet_and_puller, offset, count):
    _, puller, _, _ = outlet_and_puller
    with pytest.raises(ValueError, match="do not fit a buffer of 8 samples"):
        puller.pull(offset, count, 0.0)


def test_puller_refuses_buffers_of_the_wrong_type(outlet_and_puller):
    _, puller, samples, timestamps = outlet_and_puller
    inlet = puller._inlet
    with pytest.raises(TypeError, match="C-contiguous float32"):
        ChunkPuller(inlet, samples.astype(np.float64), timestamps)
    with pytest.raises(TypeError, match=r"'timestamps' must be float64 of shape \(8,\)"):
        ChunkPuller(inlet, samples, timestamps[:4])
