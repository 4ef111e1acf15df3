"""Which failures to load a model are the host's, not the file's: out of file descriptors or
memory, from ONNX Runtime or from Python's own reads alike.

Every handler that would judge a failed read or load as the file's (a ``ModelFileError``, a
``ModelMismatchError``, the serving probe's "failed" row, ``auto`` trying the next backend)
calls :func:`raise_if_host_failure` first, and an operation whose reads raise their own
``OSError`` runs inside :func:`host_resources` (a hot swap, whose 422 says the files are
bad), so that one rule says what a passing shortage is. Judged the file's, it would stop
systemd restarting the daemon (exit 2), refuse a model that is fine, or be cached as a way of
serving that fails until the next restart.
"""

from __future__ import annotations

import errno
from collections.abc import Iterator
from contextlib import contextmanager

from service.inference.predictor import HostResourceError

OUT_OF = {
    errno.EMFILE: "this process is out of file descriptors (its limit: LimitNOFILE)",
    errno.ENFILE: "the system is out of file descriptors (fs.file-max)",
    errno.ENOMEM: "the host is out of memory",
}
"""The resources whose lack fails a load that may work later, and how a message names each."""


def out_of(number: int, doing: str, said: str) -> HostResourceError:
    """The :class:`HostResourceError` of ``doing`` (e.g. "ONNX Runtime could not load 'x'")
    failing for want of the resource errno ``number`` names (a key of :data:`OUT_OF`), with
    what the failure ``said``."""
    failure = HostResourceError(
        f"{doing}: {OUT_OF[number]} ({said}); the file was not judged, and may load when the "
        "resource is back"
    )
    failure.errno = number
    return failure


def host_resource_failure(err: BaseException, doing: str) -> HostResourceError | None:
    """``err``, raised ``doing`` something, as a :class:`HostResourceError` where the host ran
    out of descriptors or memory (an ``OSError`` with errno EMFILE, ENFILE or ENOMEM, or a
    ``MemoryError``), itself where it is one already; None where it is not such a failure
    (the caller judges it as before)."""
    if isinstance(err, HostResourceError):
        return err
    if isinstance(err, MemoryError):  # std::bad_alloc's says nothing of its own
        return out_of(errno.ENOMEM, doing, str(err) or "MemoryError")
    if isinstance(err, OSError) and err.errno in OUT_OF:
        return out_of(err.errno, doing, err.strerror or str(err))
    return None


def raise_if_host_failure(err: BaseException, doing: str) -> None:
    """Raise ``err`` as the :class:`HostResourceError` it is (:func:`host_resource_failure`),
    if it is one; return where it is not. For the handlers that would take any failure for
    the file's or the backend's fault (a row, a refusal, the next backend tried)."""
    failure = host_resource_failure(err, doing)
    if failure is err:
        raise failure
    if failure is not None:
        raise failure from err


@contextmanager
def host_resources(doing: str) -> Iterator[None]:
    """Within it, a failure :func:`host_resource_failure` calls the host's is raised as a
    :class:`HostResourceError`: around a whole operation (a hot swap), for the reads inside it
    that raise their ``OSError`` as it came (``onnx.load``, hashing, the probe's records)."""
    try:
        yield
    except (OSError, MemoryError) as err:
        raise_if_host_failure(err, doing)
        raise
