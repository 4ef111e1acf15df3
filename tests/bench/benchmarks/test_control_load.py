"""The control-plane load of the end-to-end benchmark: its HTTP and ZeroMQ query clients reach a
real served daemon (tiny model, no rig, bridge in dry run), are answered, and are counted; and
the benchmark's refusal of two second phases at once."""

from __future__ import annotations

import subprocess
import time
import uuid

import pytest

from bench.benchmarks import _control_load, end_to_end_latency
from bench.benchmarks._control_load import ControlLoad, served
from service.api.served import ServedDaemon
from tests.data.tiny_model import copy_tiny_model
from tests.service._loop_harness import TOKEN, loop_settings

_SLOW_START = (
    "import runpy, time; time.sleep(1.6); "
    "runpy.run_module('bench.benchmarks._control_load', run_name='__main__')"
)
"""A load process slow to start (a loaded machine's imports): then its arguments, as -m."""


def test_both_loads_are_answered_and_counted(tmp_path, monkeypatch):
    """The load runs for as long as the block lasts, however long its processes take to
    start (here longer than the block)."""
    _, window, step = copy_tiny_model(tmp_path / "model")
    source_id = f"corticast-test-{uuid.uuid4().hex[:12]}"
    settings = loop_settings(tmp_path, window, step, source_id, bridge={"dry_run": True})
    popen = subprocess.Popen

    def slow_to_start(command: list[str], **kwargs) -> subprocess.Popen:
        if command[1:3] == ["-m", _control_load.__name__]:
            command = [command[0], "-c", _SLOW_START, *command[3:]]
        return popen(command, **kwargs)

    monkeypatch.setattr(_control_load.subprocess, "Popen", slow_to_start)
    with (
        ServedDaemon(settings) as daemon,
        ControlLoad(daemon.url, TOKEN, daemon.daemon.query.endpoint, clients=2, rate_hz=20) as load,
    ):
        time.sleep(1.5)
    http, query = load.counts["http"], load.counts["query"]
    assert http.get("/status 200", 0) > 0 and http.get("/metrics 200", 0) > 0, http
    assert served(http) == sum(http.values()), http  # nothing failed
    # No rig: there is no prediction yet, so "latest" is refused, with an answer.
    assert query.get("status answered", 0) > 0 and query.get("latest refused", 0) > 0, query
    assert served(query) == sum(query.values()), query
    assert set(load.seconds) == {"http", "query"}
    assert all(seconds > 0 for seconds in load.seconds.values()), load.seconds
    assert set(load.cpu_seconds) == {"http", "query"}


def test_bad_arguments_are_refused_by_name():
    with pytest.raises(ValueError, match=r"'clients' must be >= 0, got -1"):
        ControlLoad("http://127.0.0.1:1", TOKEN, "tcp://127.0.0.1:2", clients=-1)
    with pytest.raises(ValueError, match=r"'rate_hz' must be >= 0, got -2"):
        ControlLoad("http://127.0.0.1:1", TOKEN, "tcp://127.0.0.1:2", clients=1, rate_hz=-2)


def test_the_benchmark_refuses_hog_and_control_load_together(monkeypatch, capsys):
    argv = ["end_to_end_latency", "--hog", "1", "--control-load", "1"]
    monkeypatch.setattr("sys.argv", argv)
    with pytest.raises(SystemExit):
        end_to_end_latency.main()
    assert "--hog and --control-load are separate runs" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--subscribe", "ab", "--hog", "1"], "--subscribe ab compares the two endpoints quiet"),
        (["--rounds", "0"], "--rounds must be >= 1, got 0"),
    ],
)
def test_the_benchmark_refuses_phases_it_cannot_compare(monkeypatch, capsys, extra, message):
    monkeypatch.setattr("sys.argv", ["end_to_end_latency", *extra])
    with pytest.raises(SystemExit):
        end_to_end_latency.main()
    assert message in capsys.readouterr().err
