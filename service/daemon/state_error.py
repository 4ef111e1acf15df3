"""The daemon's refusal of an operator action its state does not allow, in a module of its own:
the control process raises it again from the link's answers, and must not import the daemon
(the loop's stages and scipy cost it seconds at every start) to know the class."""

from __future__ import annotations

from service.core.errors import CorticastError


class DaemonStateError(CorticastError, RuntimeError):
    """An operator action that the daemon's current state does not allow (e.g. arming while
    not ready or while stopping); the message says why."""
