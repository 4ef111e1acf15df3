"""The transport floor benchmark's two measurements, briefly, over real LSL and ZeroMQ between
two processes: every message arrives after it was stamped (one clock for both processes), and
the ZeroMQ child's messages arrive over a unix socket as over TCP."""

from __future__ import annotations

import numpy as np
import pytest

from bench.benchmarks import transport_floor


def test_lsl_samples_arrive_after_their_push():
    latencies = transport_floor._lsl(0.5)
    assert latencies.size > 0
    assert (latencies > 0).all()


@pytest.mark.parametrize("transport", ["tcp", "ipc"])
def test_zmq_messages_arrive_after_their_send(transport, tmp_path):
    endpoint = "tcp://127.0.0.1:*" if transport == "tcp" else f"ipc://{tmp_path}/f.sock"
    latencies = transport_floor._zmq(endpoint, 0.5, stride=2)
    assert latencies.size > 0
    assert (latencies > 0).all() and np.isfinite(latencies).all()
