"""The daemon's commands: ``corticast serve`` and ``corticast firmware-emulator``.

``serve`` runs the closed loop under uvicorn: the daemon starts in the app's lifespan and stops
in it, so SIGTERM or Ctrl-C (which uvicorn turns into a graceful shutdown) disarms, stops
intake, flushes the audit log and closes every socket before the process exits 0. The disarm
comes first, at the signal: uvicorn's graceful shutdown waits for requests in flight (a model
swap still loading, up to ``timeout_graceful_shutdown``) before the lifespan stops the daemon.
"""

from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path
from typing import Annotated

import typer

from service.config import Settings, load_settings
from service.core.cli_options import ConfigOption
from service.core.errors import EXIT_FAILED, CorticastError
from service.core.user_errors import fail, or_exit

_log = logging.getLogger("corticast")


def serve(config: ConfigOption = None) -> None:
    """Run the daemon: stream -> model -> waves -> policy -> bridge, with the APIs."""
    settings = _load(config)
    run_daemon(settings)


def run_daemon(settings: Settings) -> None:
    """Serve ``settings`` until SIGTERM/SIGINT (also what the demo runs, in a thread).

    Exits with ``EXIT_UNUSABLE`` (2) when the configured model can never run here (its files
    missing, unreadable, not a fit for the stream, a backend this host lacks), which the
    systemd unit does not restart on, and 1 when starting failed otherwise (a port in use):
    one line either way, never a traceback for a problem the user can fix.
    """
    import uvicorn

    from service.api.app import create_app
    from service.api.serving import uvicorn_config
    from service.daemon.daemon import Daemon
    from service.inference.model_files import ModelFiles

    daemon = Daemon(settings)
    or_exit(lambda: ModelFiles.for_start(settings.model, daemon.stream_spec))
    failed: list[Exception] = []

    def start() -> None:
        try:
            daemon.start()
        except (CorticastError, ValueError, OSError) as err:
            failed.append(err)
            server.should_exit = True  # before any request; the lifespan's end stops the daemon

    app = or_exit(
        lambda: create_app(daemon, settings.api, on_startup=start, on_shutdown=daemon.stop)
    )
    server = uvicorn.Server(uvicorn_config(app, settings.api))
    server.handle_exit = _disarm_first(daemon, server.handle_exit)  # what uvicorn's signals call
    # uvicorn shuts down gracefully on SIGTERM/SIGINT, then re-raises the signal against the
    # handler that was there before it; with the default one the process would die of it
    # (status -15) after a clean stop. A do-nothing handler there makes the exit status 0.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _already_handled)
    server.run()
    if failed:
        error = failed[0]
        fail(f"the daemon could not start: {error}", getattr(error, "exit_code", EXIT_FAILED))


def _disarm_first(daemon, handle_exit):
    """uvicorn's signal handler, preceded by the daemon's
    :meth:`~service.daemon.daemon.Daemon.begin_stop` (refuse arming, disarm) on a thread of its
    own: a signal handler must not wait on the device, and the disarm must not wait for the
    graceful shutdown."""

    def handler(signum: int, frame: object) -> None:
        threading.Thread(
            target=daemon.begin_stop, name="corticast-signal-disarm", daemon=True
        ).start()
        handle_exit(signum, frame)

    return handler


def _already_handled(signum: int, frame: object) -> None:
    """The signal was handled by uvicorn's graceful shutdown; nothing is left to do."""


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
