"""The root of every error corticast raises on purpose.

Each stage keeps its own exceptions beside the code that raises them (``ConfigError`` in
``service.config``, ``StreamFormatError`` in ``service.ingest.lsl``, ``BridgeError`` and its
tree in ``firmware_bridge.errors``, ...), all beneath :class:`CorticastError`, so a caller that
must not let one escape (the CLI, a supervisor) catches one class, and a caller that wants one
problem catches that. As in pyzmq's ``zmq.error``, each keeps the built-in base it had
(``ValueError`` for bad input, ``RuntimeError`` for a state that does not allow the call), so
code that catches those still works.
"""

from __future__ import annotations

EXIT_FAILED = 1
"""Exit status of a command that failed at run time (a stream not found, a file unreadable, a
device that refused): running again after fixing the rig or the file may work."""
EXIT_UNUSABLE = 2
"""Exit status of a command whose configuration or arguments can never work: running it again
unchanged cannot help, so the systemd unit does not restart on it
(``RestartPreventExitStatus=2``)."""


class CorticastError(Exception):
    """Something corticast detected and refused, with a message that names the problem.

    ``exit_code`` is the status a command line exits with when this error ends it
    (:mod:`service.core.user_errors`)."""

    exit_code: int = EXIT_FAILED


class ModelMismatchError(CorticastError, ValueError):
    """A model file does not fit the stream, the daemon's window or the mode asked of it.

    Here rather than beside the predictors because ``models`` (which may not import the
    runtime) raises it too: S-HR-VQVAE's raster sampler checks its stage files itself."""

    exit_code = EXIT_UNUSABLE
    """The same file does not fit the same stream after a restart either."""
