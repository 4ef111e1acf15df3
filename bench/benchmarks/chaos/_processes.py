"""The chaos soak's child processes, and what it does to them: kill, stop, stall, starve.

Every part runs as its own process (``corticast serve``, ``corticast rig``, ``corticast
firmware-emulator``, the relay, CPU hogs) so that it can be killed and restarted like the real
thing. The soak only ever signals the processes it started, by their pid.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import IO

WAVE_THREAD = "corticast-waves"
"""The daemon's wave-stage thread (``service.loop.closed_loop``), niced by
``[loop] wave_niceness``."""


class ChildProcess:
    """One child process: started, signalled, stopped; its output goes to a log file.

    Parameters
    ----------
    name
        For messages and the report.
    argv
        The command.
    log_path
        Where stdout and stderr go (appended: a restarted process continues the same log).
    env
        Extra environment variables.
    """

    def __init__(
        self, name: str, argv: list[str], log_path: Path, env: dict[str, str] | None = None
    ) -> None:
        self.name = name
        self.argv = argv
        self.log_path = log_path
        self.env = {**os.environ, **(env or {})}
        self._process: subprocess.Popen[bytes] | None = None
        self._log_file: IO[bytes] | None = None
        self.started_at: float | None = None

    def start(self) -> None:
        """Start it (again); the previous run must have ended."""
        if self.running:
            raise RuntimeError(f"{self.name} is running (pid {self.pid}); stop it first")
        self._close_log()
        self._log_file = open(self.log_path, "ab")  # noqa: SIM115 - closed when it ends
        self._process = subprocess.Popen(
            self.argv, stdout=self._log_file, stderr=subprocess.STDOUT, env=self.env
        )
        self.started_at = time.monotonic()

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def returncode(self) -> int | None:
        return None if self._process is None else self._process.poll()

    def send(self, sig: signal.Signals) -> bool:
        """Send ``sig`` if it is running; False if it had ended."""
        if not self.running:
            return False
        try:
            os.kill(self._process.pid, sig)
        except ProcessLookupError:
            return False
        return True

    def kill(self) -> int | None:
        """SIGKILL, and reap it; its exit status (None if it had not been started)."""
        if self._process is None:
            return None
        self.send(signal.SIGKILL)
        if self.running:  # a stopped process dies of SIGKILL too, but make sure it can run
            self.send(signal.SIGCONT)
        code = self._process.wait()
        self._close_log()
        return code

    def stop(self, sig: signal.Signals = signal.SIGTERM, timeout_s: float = 20.0) -> str:
        """Ask it to end with ``sig``; SIGKILL after ``timeout_s``. Says how it ended."""
        if self._process is None:
            return "not started"
        if not self.running:
            self._close_log()
            return f"had exited ({self._process.returncode})"
        self.send(signal.SIGCONT)  # a stalled process must run to handle the signal
        self.send(sig)
        return self.wait_exit(sig.name, timeout_s)

    def wait_exit(self, why: str, timeout_s: float = 20.0) -> str:
        """Wait for it to end (``why`` says what should end it); SIGKILL after ``timeout_s``."""
        try:
            code = self._process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            code = self.kill()
            return f"{why}: did not exit within {timeout_s:g} s, SIGKILLed ({code})"
        self._close_log()
        return f"{why}: exited {code}"

    def _close_log(self) -> None:
        file, self._log_file = self._log_file, None
        if file is not None:
            file.close()


def cpu_hog(log_path: Path) -> ChildProcess:
    """A process that does nothing but burn a core."""
    return ChildProcess("cpu hog", [sys.executable, "-c", "while True: pass"], log_path)


def find_wave_thread(pid: int) -> int | None:
    """The thread id of the daemon's wave stage, by the name the daemon gives its threads for
    the OS (``service.core.worker.name_os_thread``); None if no one thread bears it (the
    daemon still starting, or gone)."""
    tasks = Path(f"/proc/{pid}/task")
    try:
        tids = sorted(int(entry.name) for entry in tasks.iterdir())
    except OSError:
        return None
    named = [tid for tid in tids if _read(tasks / str(tid) / "comm") == WAVE_THREAD]
    return named[0] if len(named) == 1 else None


def set_idle(tid: int) -> int:
    """Put thread ``tid`` under SCHED_IDLE (it runs only when nothing else wants the core);
    returns its nice value, for :func:`restore_normal`."""
    nice = os.getpriority(os.PRIO_PROCESS, tid)
    os.sched_setscheduler(tid, os.SCHED_IDLE, os.sched_param(0))
    return nice


def restore_normal(tid: int, nice: int) -> None:
    """Back to SCHED_OTHER at ``nice``. Leaving SCHED_IDLE needs CAP_SYS_NICE or an
    RLIMIT_NICE that allows ``nice``; PermissionError otherwise."""
    os.sched_setscheduler(tid, os.SCHED_OTHER, os.sched_param(0))
    if os.getpriority(os.PRIO_PROCESS, tid) != nice:
        os.setpriority(os.PRIO_PROCESS, tid, nice)


def _read(path: Path) -> str | None:
    """A /proc file's text; bytes that are not UTF-8 replaced (a library may name its thread
    in any bytes)."""
    try:
        return path.read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        return None
