"""What both ends of the control link share: its address and the failures that cross it as
themselves (``service.daemon.control_link`` is the loop's end, ``service.api.remote_daemon``
the control process's).

A module of its own because the control process imports it: importing the loop's end instead
loaded the whole daemon (its stages, scipy) into the control process, about 2 s of each of its
starts on two cores, and a restarted control plane is that much longer without its disarm
route.
"""

from __future__ import annotations

import dataclasses

from service.core.errors import ModelMismatchError
from service.daemon.state_error import DaemonStateError
from service.inference.predictor import BackendUnavailableError, HostResourceError


@dataclasses.dataclass(frozen=True)
class LinkAddress:
    """Where the link listens and the key a connection must prove; given to the child process
    in its start arguments (never on a command line or in the environment)."""

    path: str
    authkey: bytes = dataclasses.field(repr=False)
    """Never in its repr: a traceback or log line that shows the address must not show it."""


SENT_AS_THEMSELVES: dict[str, type[Exception]] = {
    kind.__name__: kind
    for kind in (
        DaemonStateError,
        BackendUnavailableError,
        ModelMismatchError,
        HostResourceError,
        ValueError,
        OSError,
    )
}
"""The failures that cross by name and are raised again as themselves on the other end (the
API answers each its own way); ours before their builtin bases, the order :func:`kind_of` tries
them in. ModelFileError and PolicyLimitError cross with their detail
(``service.daemon.control_link.answer``)."""


def kind_of(err: Exception) -> str:
    """The name ``err`` crosses as: the first of :data:`SENT_AS_THEMSELVES` it is, else a plain
    failure."""
    return next(
        (name for name, kind in SENT_AS_THEMSELVES.items() if isinstance(err, kind)), "Exception"
    )
