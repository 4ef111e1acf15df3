"""`corticast serve` refuses a model that can never run with one line and exit status 2, which
the systemd unit does not restart on (RestartPreventExitStatus=2), never with a traceback; and
its stop, as systemd asks for it, runs the loop's own first."""

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from service.cli.app import app
from service.core.errors import EXIT_UNUSABLE
from tests.service._loop_harness import wait_until

_ROOT = Path(__file__).parents[3]
SHIPPED = _ROOT / "models" / "weights"
TINY = Path(__file__).parents[2] / "data" / "tiny_model"
_FAULT_SITE = Path(__file__).parent / "_child_query_fault"
"""Put on a child's ``PYTHONPATH``: a fault injected in it (its docstring)."""


def _config(tmp_path: Path, model: str) -> Path:
    config = tmp_path / "c.toml"
    config.write_text(f"[model]\n{model}\n[api]\ndev_no_token = true\n")
    return config


def _bad_models(tmp_path: Path) -> dict[str, tuple[str, str]]:
    text = tmp_path / "notes.onnx"
    text.write_text("not a model\n")
    lonely = tmp_path / "lonely.onnx"
    shutil.copy(TINY / "model.onnx", lonely)
    return {
        "missing": (
            f'path = "{tmp_path / "nope.onnx"}"',
            r"\[model\] path '.*nope\.onnx' does not exist",
        ),
        "not onnx": (
            f'path = "{text}"',
            r"\[model\] path: '.*notes\.onnx' is not a readable ONNX model",
        ),
        "step graph as path": (
            f'path = "{SHIPPED / "default.step.onnx"}"',
            r"\[model\] path '.*default\.step\.onnx' is a 'step' graph; it must be the window",
        ),
        "no step graph beside": (
            f'path = "{lonely}"',
            r"\[model\] step_path '.*lonely\.step\.onnx' does not exist",
        ),
        "another export's step graph": (
            f'path = "{TINY / "model.onnx"}"\nstep_path = "{SHIPPED / "default.step.onnx"}"',
            r"\[model\] step_path: 'default\.step\.onnx' is not the step graph of 'model\.onnx'",
        ),
    }  # fmt: skip


@pytest.mark.parametrize(
    "case",
    ["missing", "not onnx", "step graph as path", "no step graph beside",
     "another export's step graph"],
)  # fmt: skip
def test_a_model_that_can_never_load_is_one_line_and_exit_2(tmp_path, case):
    model, message = _bad_models(tmp_path)[case]
    result = CliRunner().invoke(app, ["serve", "--config", str(_config(tmp_path, model))])
    assert result.exit_code == EXIT_UNUSABLE, result.output
    assert result.output.startswith("error: ")
    assert len(result.output.strip().splitlines()) == 1, result.output
    assert re.search(message, result.output), result.output


@pytest.mark.parametrize("beside", [None, SHIPPED / "default.step.onnx"], ids=["none", "another"])
def test_auto_serving_is_not_refused_for_a_step_graph_the_probe_can_do_without(tmp_path, beside):
    """Under ``serving = "auto"`` the mode is the probe's to choose (``corticast doctor`` picks
    window mode when the step graph is missing or from another export): the start-up check
    must not refuse the window graph for it."""
    lonely = tmp_path / "lonely.onnx"
    shutil.copy(TINY / "model.onnx", lonely)
    if beside is not None:
        shutil.copy(beside, tmp_path / "lonely.step.onnx")
    config = tmp_path / "c.toml"  # no API token: the check after the model files' stops it
    config.write_text(f'[model]\npath = "{lonely}"\nserving = "auto"\n')
    result = CliRunner().invoke(app, ["serve", "--config", str(config)])
    assert "step_path" not in result.output, result.output
    assert "api.token must be set" in result.output, result.output


@pytest.mark.skipif(shutil.which("nvidia-smi") is not None, reason="a GPU host may have TensorRT")
def test_a_backend_this_host_lacks_stops_the_daemon_with_exit_2_and_no_traceback(tmp_path):
    pytest.importorskip("onnxruntime")
    try:
        import tensorrt  # noqa: F401

        pytest.skip("TensorRT is installed here")
    except ImportError:
        pass
    config = _config(tmp_path, 'backend = "tensorrt"\nmode = "window"')
    with config.open("a") as file:
        file.write(f"port = {_free_port()}\n")
    done = _serve(config, tmp_path)
    assert done.returncode == EXIT_UNUSABLE, done.stderr
    assert "Traceback" not in done.stderr + done.stdout
    assert (
        done.stderr.strip()
        .splitlines()[-1]
        .startswith("error: the daemon could not start: tensorrt")
    ), done.stderr


def test_a_backend_that_cannot_run_the_mode_is_refused_at_config_load_with_exit_2(tmp_path):
    """TensorRT runs window mode only. Left at the default stream mode, the pair was refused
    only once the daemon started, with exit status 1, which systemd restarts; no restart can
    make it run."""
    config = _config(tmp_path, 'backend = "tensorrt"')
    result = CliRunner().invoke(app, ["serve", "--config", str(config)])
    assert result.exit_code == EXIT_UNUSABLE, result.output
    assert (
        "model: backend 'tensorrt' does not run mode = 'stream': set backend to one of "
        "onnxruntime-cuda, onnxruntime-cpu or 'auto' (or mode = 'window', which every backend "
        "runs)"
    ) in result.output


def _serve(config: Path, tmp_path: Path) -> subprocess.CompletedProcess:
    """`corticast serve` in a process of its own, run to its end in ``tmp_path`` (the bridge's
    audit log defaults to the working directory)."""
    return subprocess.run(
        [sys.executable, "-m", "service.cli.app", "serve", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_an_http_port_in_use_stops_the_daemon_with_one_line_and_exit_1(tmp_path):
    """The control process cannot bind: the loop's process says so, stops, and exits 1 (the
    unit restarts it: the port may be free next time)."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = _config(tmp_path, f'path = "{TINY / "model.onnx"}"\nmode = "window"')
        with config.open("a") as file:
            file.write(f"port = {port}\n")
        done = _serve(config, tmp_path)
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr + done.stdout
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("error: the daemon could not start: the control process"), last
    # It names the port and the setting to change, not only "see its log above".
    assert f"the HTTP API cannot listen at 127.0.0.1:{port} (Address already in use)" in last
    assert "set another [api] port in the --config file or CORTICAST_API__PORT" in last
    assert "daemon stopped" in done.stderr  # the loop was stopped, not abandoned


@pytest.mark.parametrize(
    ("fault", "why"),
    [("link_cannot_start", "[Errno 24] Too many open files"),
     ("link_no_directory", "[Errno 28] No space left on device")],
    ids=["socket", "folder"],
)  # fmt: skip
def test_a_control_link_that_cannot_start_stops_the_daemon_with_one_line_and_exit_1(
    tmp_path, monkeypatch, fault, why
):
    """The loop's end of the control link could not start (its socket: no descriptor to
    spare; its folder: no space left): the error escaped `corticast serve` as a traceback,
    only a control process that could not start being caught, and the daemon, started, was
    not stopped. Now it stops the daemon alike, with one line naming why."""
    _refused_with_one_line(
        tmp_path, monkeypatch, fault, "",
        "the control link (to the control process) could not start: " + why,
    )  # fmt: skip


def test_an_http_loop_watch_that_cannot_start_stops_the_daemon_with_one_line_and_exit_1(
    tmp_path, monkeypatch
):
    """``[api] own_process = false``: the watch over the HTTP API's event loop could not start
    (threads ran out). The error ended the app's startup: uvicorn printed a traceback and exited
    3, the daemon, started, never stopped. Now it is stopped, never served unwatched, with one
    line naming why."""
    _refused_with_one_line(
        tmp_path, monkeypatch, "http_loop_watch_no_thread", "own_process = false",
        "the watch over the HTTP API's event loop could not start: can't start new thread",
    )  # fmt: skip


def _tiny_config_on_free_ports(tmp_path: Path, api: str = "") -> Path:
    """The tiny model's config, with ``api`` lines, serving on ports free now: the HTTP API's
    and ZeroMQ's (another run on this host may hold ZeroMQ's defaults)."""
    config = _config(tmp_path, f'path = "{TINY / "model.onnx"}"\nmode = "window"')
    pub, query = (f"tcp://127.0.0.1:{_free_port()}" for _ in range(2))
    with config.open("a") as file:
        file.write(
            f'port = {_free_port()}\n{api}\n[zmq]\npub_endpoint = "{pub}"\n'
            f'query_endpoint = "{query}"\n'
        )
    return config


def _refused_with_one_line(tmp_path: Path, monkeypatch, fault: str, api: str, why: str) -> None:
    """`corticast serve` with ``fault`` (``_child_query_fault``) and ``api`` lines ends with
    exit 1 and one last line, "the daemon could not start: ``why``", no traceback, and the
    daemon stopped, not abandoned."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join((str(_FAULT_SITE), str(_ROOT))))
    monkeypatch.setenv("CORTICAST_TEST_QUERY_FAULT", fault)
    done = _serve(_tiny_config_on_free_ports(tmp_path, api), tmp_path)
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr + done.stdout
    last = done.stderr.strip().splitlines()[-1]
    assert last == f"error: the daemon could not start: {why}", done.stderr
    assert "daemon stopped" in done.stderr


@pytest.mark.parametrize("own_process", [True, False], ids=["control process", "in process"])
def test_a_daemon_thread_that_cannot_start_stops_the_daemon_with_one_line_and_exit_1(
    tmp_path, monkeypatch, own_process
):
    """The daemon's wave stage got no thread (the process or its unit at its task limit:
    ``TasksMax=``): the RuntimeError escaped both serve paths as a traceback, and the stages
    already started (the ingestor, the bridge with its audit log open) were never stopped.
    Now `corticast serve` says so in one line, exits 1 (a restart may find threads), and the
    daemon is stopped: the audit log closed."""
    _refused_with_one_line(
        tmp_path, monkeypatch, "waves_no_thread", f"own_process = {str(own_process).lower()}",
        "no thread could be started (can't start new thread): this process or its systemd "
        "unit is at its task limit (TasksMax=, ulimit -u); the daemon was stopped",
    )  # fmt: skip
    records = (tmp_path / "corticast-audit.jsonl").read_text().splitlines()
    assert json.loads(records[-1])["event"] == "close", records[-3:]


def test_the_loops_own_stop_does_not_wait_for_a_control_process_that_ignores_sigterm(
    tmp_path, monkeypatch
):
    """A SIGTERM'd control process that does not end (its graceful shutdown stuck) was waited
    for ``STOP_TIMEOUT_S`` (10 s), killed, waited for again, and the link stopped, before the
    loop's own stop began: the bridge's close (its DISARM, the audit log's close record) came
    after 11 s and more of systemd's 15 s ``TimeoutStopSec``, itself up to 4 s with a silent
    device, so that systemd's SIGKILL could come first. Now the loop stops first: its audit
    log is closed, and the daemon stopped, before the control process is killed."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join((str(_FAULT_SITE), str(_ROOT))))
    monkeypatch.setenv("CORTICAST_TEST_QUERY_FAULT", "ignores_sigterm")
    config = _tiny_config_on_free_ports(tmp_path)
    log = tmp_path / "serve.log"
    with log.open("w") as stderr:
        serve = subprocess.Popen(
            [sys.executable, "-m", "service.cli.app", "serve", "--config", str(config)],
            stderr=stderr,
            cwd=tmp_path,
        )
    try:
        wait_until(lambda: "control plane serving" in log.read_text(), 60, "it to serve")
        serve.send_signal(signal.SIGTERM)
        assert serve.wait(60) == 0, log.read_text()
    finally:
        serve.kill()
    said = log.read_text().splitlines()
    assert "Traceback" not in "\n".join(said)
    [stopped] = [k for k, line in enumerate(said) if "daemon stopped" in line]
    [killed] = [k for k, line in enumerate(said) if "did not stop within" in line]
    assert stopped < killed, said[stopped - 2 :]  # the loop's stop did not wait for the kill
    records = (tmp_path / "corticast-audit.jsonl").read_text().splitlines()
    assert json.loads(records[-1])["event"] == "close", records[-3:]
