"""`corticast serve` whose log stops being read (journald stalled, a terminal's Ctrl-S, a pager
that stopped reading): no thread of the daemon may wait on the log's writer. Its stderr here is
a real pipe, filled before the daemon starts and never read: every write to it blocks."""

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx

from tests.service._loop_harness import NotifySocket, free_port, wait_until
from tests.service._stalled_stderr import full_pipe

TINY = Path(__file__).parents[2] / "data" / "tiny_model"


def _answers(http: httpx.Client, path: str) -> bool:
    try:
        return http.get(path).status_code in (200, 503)
    except httpx.HTTPError:
        return False


def test_a_log_nobody_reads_holds_up_neither_the_daemon_nor_its_stop(tmp_path):
    """Every record was written to stderr on the logging thread, holding the handler's lock:
    the first log line at the start blocked, and the daemon never served (so too a fault's
    disarm, the supervisor's rounds, the watchdog's pings once running). Now records are
    queued, and written by a thread of their own: the loop's process serves its control
    process's /healthz and /readyz (a call over the link into the loop), its supervisor comes
    round (the watchdog's pings go on), and a SIGTERM ends it with exit 0, its flush of the log
    at exit bounded."""
    port = free_port()
    config = tmp_path / "c.toml"
    config.write_text(
        f'[model]\npath = "{TINY / "model.onnx"}"\nmode = "window"\n'
        f"[stream]\nresolve_timeout_s = 0.5\n[bridge]\ndry_run = true\n"
        f"[api]\ndev_no_token = true\nport = {port}\n"
    )
    read_end, write_end = full_pipe()
    systemd = NotifySocket()
    try:
        serve = subprocess.Popen(
            [sys.executable, "-m", "service.cli.app", "serve", "--config", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=write_end,
            cwd=tmp_path,
            env={**os.environ, "NOTIFY_SOCKET": systemd.path},
        )
    finally:
        os.close(write_end)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
            wait_until(lambda: _answers(http, "/healthz"), 60, "/healthz to answer")
            ready = http.get("/readyz")
        assert ready.status_code == 503, ready.text  # no stream: answered by the loop, not ready
        assert any("stream" in why for why in ready.json()["reasons"]), ready.text
        pinged = systemd.count("WATCHDOG=1")
        wait_until(lambda: systemd.count("WATCHDOG=1") >= pinged + 3, 30,
                   "the supervisor's rounds to go on")  # fmt: skip
        serve.send_signal(signal.SIGTERM)
        assert serve.wait(60) == 0
    finally:
        if serve.poll() is None:
            serve.kill()
            serve.wait(30)
        os.close(read_end)
        systemd.close()
