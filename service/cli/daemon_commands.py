"""The daemon's commands: ``corticast serve`` and ``corticast firmware-emulator``.

``serve`` runs the closed loop in this process and, by default (``[api] own_process``), its
control plane (the HTTP API, the ZeroMQ query socket) in a child process that reaches the loop
over the control link (``service.api.control_process``). SIGTERM or Ctrl-C disarms at once,
then stops the loop (intake stops, the bridge closes, the audit log is flushed and every socket
closed; a request in flight meanwhile is answered or, an arm or a model swap, refused), then
the control process (a graceful shutdown, killed past ``STOP_TIMEOUT_S``; one still starting is
given ``STARTING_STOP_S``, then killed, and one silent for ``SILENT_AT_STOP_S`` is killed at
once) and the link, before the process exits 0: all within systemd's ``TimeoutStopSec``
(deploy/README.md, "Stopping"). A control process that ends on its own, or hangs (silent for
``[api] control_hang_s``: killed), is a fault: stimulation is disarmed (no operator could
disarm over HTTP meanwhile) and it is started again.

With ``own_process = false`` the loop runs under uvicorn in one process: the daemon starts in
the app's lifespan and stops in it, the disarm again coming first, at the signal. An HTTP event
loop blocked for ``control_hang_s`` is the same fault (``service.api.http_loop_watch``): it
cannot be killed, so the daemon stays not ready until it answers again.
"""

from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer

from service.config import Settings, load_settings
from service.core.cli_options import ConfigOption
from service.core.errors import EXIT_FAILED, CorticastError
from service.core.user_errors import fail, or_exit

if TYPE_CHECKING:  # imported where used: `corticast --help` does not load the loop
    from service.daemon.control_link import ControlLink

_log = logging.getLogger("corticast")


def serve(config: ConfigOption = None) -> None:
    """Run the daemon: stream -> model -> waves -> policy -> bridge, with the APIs."""
    settings = _load(config)
    run_daemon(settings)


def run_daemon(settings: Settings) -> None:
    """Serve ``settings`` until SIGTERM/SIGINT, on the main thread (it owns the signals).

    Exits with ``EXIT_UNUSABLE`` (2) when the configured model can never run here (its files
    missing, unreadable, not a fit for the stream, a backend this host lacks), which the
    systemd unit does not restart on, and 1 when starting failed otherwise (a port in use):
    one line either way, never a traceback for a problem the user can fix.
    """
    from service.core.descriptors import raise_descriptor_limit
    from service.daemon.daemon import Daemon
    from service.inference.model_files import ModelFiles

    raise_descriptor_limit()  # each subscriber's connection is one of this process's
    daemon = Daemon(settings, serve_queries=not settings.api.own_process)
    model = settings.model
    if model.serving == "auto":  # the probe picks the mode; the daemon checks what it picks
        model = model.model_copy(update={"mode": "window"})
    or_exit(lambda: ModelFiles.for_start(model, daemon.stream_spec))
    if settings.api.own_process:
        _serve_with_control_process(daemon, settings)
    else:
        _serve_in_process(daemon, settings)


def _serve_with_control_process(daemon, settings: Settings) -> None:
    """The loop here, the control plane in a child process; see the module docstring."""
    from service.api.app import check_api_settings
    from service.api.control_process import ControlPlaneError, ControlProcess

    or_exit(lambda: check_api_settings(settings.api))
    stopping = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        _begin_stop_now(daemon)
        stopping.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)
    try:
        daemon.start()
    except (CorticastError, ValueError, OSError) as err:
        daemon.stop()
        _could_not_start(err)
    link: ControlLink | None = None
    control: ControlProcess | None = None
    failed: ControlPlaneError | None = None
    try:
        link = _started_link(daemon)
        control = ControlProcess(settings, link.address)
        if control.start(stopping=stopping):
            daemon.control_plane_down = None
            api = settings.api
            _keep_serving(
                control, link, daemon, stopping, api.control_hang_s, api.control_restart_every_s
            )
    except ControlPlaneError as err:
        failed = err
    finally:
        # Disarmed first (the signal's disarm, on a thread of its own, waited for), then the
        # loop's own stop: the bridge's DISARM and the audit log's close record must not wait
        # on a control process that does not end, nor on the link; the whole stop fits
        # systemd's TimeoutStopSec (deploy/README.md, "Stopping"). A call from the control
        # process meanwhile finds the daemon stopping: an arm or a swap refused, a read answered.
        daemon.begin_stop()
        daemon.stop()
        if control is not None:
            control.stop()
        if link is not None:
            link.stop()
    if failed is not None:
        _could_not_start(failed)


def _started_link(daemon) -> ControlLink:
    """The loop's end of the control link, made and started. One that cannot be (no folder
    for its socket, no descriptor or thread to spare) ends `corticast serve` as a control
    process that cannot start does: the daemon stopped, one line naming why, no traceback.

    Raises
    ------
    ControlPlaneError
        Naming the error; what was made of the link is removed first.
    """
    from service.api.control_process import ControlPlaneError
    from service.daemon.control_link import ControlLink

    link: ControlLink | None = None
    try:
        link = ControlLink(daemon)
        return link.start()
    except (OSError, RuntimeError) as err:
        if link is not None:
            link.stop()  # its folder
        raise ControlPlaneError(
            f"the control link (to the control process) could not start: {err}"
        ) from err


_WATCH_S = 0.5
"""How often the loop's process looks at its control process."""
_SIGNAL_GRACE_S = 1.0
"""A control process that ended this long before a stop signal reached us ended for the stop
(a Ctrl-C reaches the whole process group; systemd signals the whole unit)."""


def _keep_serving(
    control,
    link,
    daemon,
    stopping: threading.Event,
    hang_after_s: float,
    restart_every_s: float,
) -> None:
    """Until ``stopping``: a control process that ends, or is silent for ``hang_after_s``, is
    a fault; disarm, kill a silent one only then (the kill may wait, ``KILLED_END_S`` at most),
    start it again. One that a SIGKILL has not ended yet (in uninterruptible sleep) still holds
    its ports: its restart fails, and is tried again as any failed start is, until it ends.
    The loop's end of the link ending is a fault too (the control process would answer every
    call, a disarm's too, 503): disarm, start it again, where the control process finds it at
    its next call. A start of the control process that fails is tried again every
    ``restart_every_s``, the same fault still: not counted again nor disarmed again, the daemon
    not ready, naming the start's error. A start under way when ``stopping`` is set is
    abandoned at once, the process it started stopped (``ControlProcess.start``): a stop does
    not wait for a start that hangs."""
    from service.api.control_process import ControlPlaneError

    restarting = False
    """Whether the last start failed: the process is down for the fault already counted."""
    link_lost = False
    """Whether the link's last start failed: it is down for the fault already counted."""
    while not stopping.wait(_WATCH_S):
        if not link.running and not stopping.is_set():
            link_lost = not _restart_link(link, daemon, link_lost, restart_every_s)
            if link_lost:
                stopping.wait(restart_every_s)
                continue
        if not restarting:
            what = _what_happened(control, stopping, hang_after_s)
            if what is None:  # it serves: the link's restart just now made it not ready
                daemon.control_plane_down = None
                continue
            daemon.control_plane_failed(what)
            _log.error(
                "the control process (HTTP API, ZeroMQ queries) %s: stimulation disarmed; "
                "starting it again", what,
            )  # fmt: skip
            if control.exit_status() is None:  # hung: killed once disarmed, the wait bounded
                control.kill()
        try:
            if control.start(stopping=stopping):  # else stopping: the loop ends
                daemon.control_plane_down = None
                restarting = False
        except ControlPlaneError as err:
            restarting = True
            daemon.control_plane_down = f"control process restart failed: {err}; trying again"
            _log.error("%s; trying again in %g s", err, restart_every_s)
            stopping.wait(restart_every_s)


def _what_happened(control, stopping: threading.Event, hang_after_s: float) -> str | None:
    """What happened to the control process if it ended on its own or hung (for the caller to
    kill, once it has disarmed: the kill may wait); None while it serves, or where it ended for
    a stop signal."""
    status = control.exit_status()
    if status is None:
        silent = control.silent_s()
        if silent < hang_after_s:
            return None
        return f"hung (silent for {silent:.1f} s; killed)"
    if stopping.wait(_SIGNAL_GRACE_S):
        return None
    return f"exited with status {status}"


def _restart_link(link, daemon, reported: bool, restart_every_s: float) -> bool:
    """The loop's end of the control link ended on its own: a fault (disarm first) unless
    ``reported`` (its last restart failed), then the link is started again at the same
    address; whether it runs. A start that fails (no descriptor, no thread to spare) leaves
    the daemon not ready, naming it, for the watch to try again after ``restart_every_s``,
    rather than end `corticast serve` with a traceback.
    The daemon stays not ready until the watch has seen the control process serve (it may be
    down, its restarts failing)."""
    if not reported:
        try:
            link.raise_if_failed()
            why = "it ended"
        except RuntimeError as err:
            why = str(err)
        daemon.control_plane_failed(f"lost its link to the loop's process ({why})")
        _log.error("the control link ended (%s): stimulation disarmed; starting it again", why)
    try:
        link.start()
    except (OSError, RuntimeError) as err:
        daemon.control_plane_down = f"control link restart failed: {err}; trying again"
        _log.error("the control link could not start again (%s); trying again in %g s",
                   err, restart_every_s)  # fmt: skip
        return False
    return True


def _serve_in_process(daemon, settings: Settings) -> None:
    """Loop and control plane in this process, under uvicorn (``[api] own_process = false``)."""
    import uvicorn

    from service.api.app import create_app
    from service.api.http_loop_watch import HttpLoopWatch
    from service.api.serving import exit_zero_after_graceful_shutdown, uvicorn_config

    failed: list[Exception] = []
    watch = HttpLoopWatch(daemon, settings.api.control_hang_s)

    def start() -> None:
        try:
            daemon.start()
            watch.watch()  # never served unwatched: HttpLoopWatch.watch says why
        except (CorticastError, ValueError, OSError) as err:
            failed.append(err)
            daemon.begin_stop()  # arming refused now: uvicorn still binds before it shuts down
            server.should_exit = True  # before any request; the lifespan's end stops the daemon

    def stop() -> None:
        watch.stop()  # first: the daemon's stop holds the event loop it watches
        daemon.stop()

    app = or_exit(lambda: create_app(daemon, settings.api, on_startup=start, on_shutdown=stop))
    server = uvicorn.Server(uvicorn_config(app, settings.api))
    server.handle_exit = _disarm_first(daemon, server.handle_exit)  # what uvicorn's signals call
    exit_zero_after_graceful_shutdown()
    server.run()
    if failed:
        _could_not_start(failed[0])


def _disarm_first(daemon, handle_exit):
    """uvicorn's signal handler, preceded by :func:`_begin_stop_now`: the disarm must not wait
    for the graceful shutdown."""

    def handler(signum: int, frame: object) -> None:
        _begin_stop_now(daemon)
        handle_exit(signum, frame)

    return handler


def _begin_stop_now(daemon) -> None:
    """The daemon's :meth:`~service.daemon.daemon.Daemon.begin_stop` (refuse arming, disarm)
    on a thread of its own: called from a signal handler, which must not wait on the device.
    Where no thread can be had (threads ran out), here all the same, waiting at most one
    exchange with the device: the error raised out of the handler skipped the disarm, and
    under uvicorn the graceful shutdown whose end stops the daemon."""
    try:
        threading.Thread(
            target=daemon.begin_stop, name="corticast-signal-disarm", daemon=True
        ).start()
    except RuntimeError as err:
        _log.error("no thread for the stop's disarm (%s): disarming in the signal handler", err)
        daemon.begin_stop()


def _could_not_start(err: Exception) -> NoReturn:
    """One line and the error's exit status (``EXIT_UNUSABLE`` for what a restart cannot fix)."""
    fail(f"the daemon could not start: {err}", getattr(err, "exit_code", EXIT_FAILED))


def firmware_emulator(
    config: ConfigOption = None,
    seconds: Annotated[
        float | None, typer.Option(help="Stop after this many seconds (default: Ctrl-C).")
    ] = None,
) -> None:
    """Play the stimulator: the device side of the protocol, with its own interlocks.

    Listens where ``[bridge]`` points the daemon (transport, host, port or serial port) and
    applies ``[emulator]``'s limits; every pulse train it "delivers" is logged.
    """
    from firmware_bridge import run_emulator

    settings = _load(config)
    emulator = or_exit(lambda: run_emulator(settings.bridge, settings.emulator, duration_s=seconds))
    typer.echo(f"emulator: delivered {len(emulator.pulses)} pulse train(s)", err=True)


def _load(config: Path | None) -> Settings:
    return or_exit(lambda: load_settings(config))
