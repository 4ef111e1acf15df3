"""Imported by every Python process started with this folder on ``PYTHONPATH`` (``site`` imports
``sitecustomize`` at start): in a control process, the fault ``CORTICAST_TEST_QUERY_FAULT`` names
is injected into its ZeroMQ query server, the real one wrapped as the daemon's tests wrap it in
their own process (``tests.service._fault_injection``). ``first_request``: its own thread closes
its socket at the first request, ending the thread as any ZeroMQ error would; ``no_restart``:
closed as soon as it starts, and every start after the first fails as a bind to a taken
endpoint would. ``start_hangs`` is the process's own start instead: uvicorn's startup never
ends (as one stuck in it would not), so it never serves, and a SIGTERM only sets uvicorn's flag,
which nothing reads. ``ignores_sigterm``: it serves, but a SIGTERM does nothing (uvicorn's
handler is taken away), as a process stuck in its graceful shutdown would not end; only the
stop's SIGKILL ends it. ``link_cannot_start`` is the loop's process's own: the listening socket of
its end of the control link cannot be made (no descriptor to spare), or, ``link_no_directory``,
nor the folder it lives in (no space left); so are ``http_loop_watch_no_thread``: the watch
over its HTTP API's event loop (``[api] own_process = false``) gets no thread, as where threads
ran out, and ``waves_no_thread``: the daemon's wave stage gets none, its start half done."""

import os
import threading

_FAULT = os.environ.get("CORTICAST_TEST_QUERY_FAULT")
_NO_THREAD_FOR = {
    "http_loop_watch_no_thread": "corticast-http-loop-watch",
    "waves_no_thread": "corticast-waves",
}
"""Faults that refuse one thread, by the thread's name."""

if _FAULT == "start_hangs":
    import asyncio

    import uvicorn

    async def _never_started(self, sockets=None) -> None:
        await asyncio.sleep(600)  # killed long before, unless the test fails

    uvicorn.Server.startup = _never_started
elif _FAULT == "ignores_sigterm":
    import uvicorn

    def _ignored(self, sig: int, frame: object) -> None:
        """Nothing: the SIGTERM is caught and dropped."""

    uvicorn.Server.handle_exit = _ignored
elif _FAULT == "link_cannot_start":
    import errno

    from service.daemon.control_link import ControlLink

    def _no_descriptor(self) -> None:
        raise OSError(errno.EMFILE, "Too many open files")

    ControlLink._prepare = _no_descriptor
elif _FAULT == "link_no_directory":
    import errno
    import types

    from service.daemon import control_link

    def _no_space(prefix: str | None = None) -> str:
        raise OSError(errno.ENOSPC, "No space left on device")

    control_link.tempfile = types.SimpleNamespace(mkdtemp=_no_space)
elif _FAULT in _NO_THREAD_FOR:
    _real_start = threading.Thread.start

    def _refused(self: threading.Thread) -> None:
        if self.name == _NO_THREAD_FOR[_FAULT]:
            raise RuntimeError("can't start new thread")
        _real_start(self)

    threading.Thread.start = _refused
elif _FAULT is not None:
    from service.zmq_api import query
    from tests.service._fault_injection import (
        socket_closed_at_first_request,
        socket_closed_then_no_restart,
    )

    query.QueryServer = (
        socket_closed_at_first_request(threading.Event())
        if _FAULT == "first_request"
        else socket_closed_then_no_restart([])
    )
