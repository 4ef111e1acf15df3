"""Who may talk to the ZeroMQ sockets: loopback by default, CURVE for anything wider.

A PUB or ROUTER socket bound to a network interface without CURVE lets anyone on that network
read predictions (and, for the query socket, ask for them); the daemon refuses such a bind
unless the operator says, by name, that it is intended.
"""

from __future__ import annotations

import stat
import struct
from dataclasses import dataclass
from pathlib import Path

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator
from zmq.utils import z85

from service.core.net import is_loopback_host, loopback_hint
from service.core.private_files import check_private, foreign_owner

_LOCAL_TRANSPORTS = ("ipc", "inproc")
"""Transports that never leave the machine: file-system permissions or the process guard them."""

TRANSPORTS = ("tcp", *_LOCAL_TRANSPORTS)


def check_endpoint(name: str, endpoint: str) -> None:
    """Raise ValueError unless ``endpoint`` reads ``transport://address`` with a transport
    corticast binds (tcp, ipc, inproc), and a tcp port ``*`` or 1 to 65535."""
    transport, sep, address = endpoint.partition("://")
    if not sep or transport not in TRANSPORTS or not address:
        raise ValueError(
            f"'{name}' must look like 'tcp://127.0.0.1:5556' (transport one of {TRANSPORTS}),"
            f" got {endpoint!r}"
        )
    if transport != "tcp":
        return
    port = _split_tcp(address)[1]
    if not port:
        raise ValueError(f"'{name}' must name a port ('tcp://HOST:PORT' or ':*'), got {endpoint!r}")
    # libzmq takes a number past 65535 modulo 65536 (':99999' binds 34463): refuse it here.
    if port != "*" and not (port.isascii() and port.isdigit() and 1 <= int(port) <= 65535):
        raise ValueError(f"'{name}' port must be '*' or a number from 1 to 65535, got {port!r}")


def check_connect_endpoint(name: str, endpoint: str) -> None:
    """:func:`check_endpoint`, and no bind wildcard (a ``*`` host or port): a client connects
    to one host and port."""
    check_endpoint(name, endpoint)
    transport, _, address = endpoint.partition("://")
    if transport == "tcp" and "*" in _split_tcp(address):
        raise ValueError(
            f"'{name}' {endpoint!r} is a bind address ('*': any port, every interface); a "
            "client must connect to one host and port, e.g. 'tcp://127.0.0.1:5556' on the "
            "daemon's machine"
        )


_IPC_PATH_MAX = 107
"""Longest unix-socket path Linux takes (``sun_path`` is 108 bytes with its NUL)."""


def check_ipc_endpoint(name: str, endpoint: str) -> None:
    """Raise ValueError unless ``endpoint`` reads ``ipc://PATH`` with a PATH a unix socket can
    have (absolute, or ``@name`` in Linux's abstract namespace)."""
    transport, sep, path = endpoint.partition("://")
    if transport != "ipc" or not sep or not path.startswith(("/", "@")):
        raise ValueError(
            f"'{name}' must look like 'ipc:///run/corticast/pub.sock' (an absolute path, or "
            f"'ipc://@name'), got {endpoint!r}"
        )
    if len(path.encode()) > _IPC_PATH_MAX:
        raise ValueError(
            f"'{name}' path must be at most {_IPC_PATH_MAX} bytes (a unix socket's limit), got "
            f"{len(path.encode())}: {endpoint!r}"
        )


def is_loopback(endpoint: str) -> bool:
    """True when a bind to ``endpoint`` is reachable from this machine only.

    Wildcards (``*``, ``0.0.0.0``), interface names and host names (``localhost`` too) are not
    loopback: they may resolve to a network interface (``service.core.net``).
    """
    transport, _, address = endpoint.partition("://")
    if transport in _LOCAL_TRANSPORTS:
        return True
    return is_loopback_host(_split_tcp(address)[0])


def check_bind_allowed(name: str, endpoint: str, *, curve: bool, allow_insecure: bool) -> None:
    """Refuse a non-loopback bind without CURVE unless ``allow_insecure_remote`` is set."""
    if curve or allow_insecure or is_loopback(endpoint):
        return
    host = _split_tcp(endpoint.partition("://")[2])[0]
    raise ValueError(
        f"'{name}' = {endpoint!r} is not a loopback address{loopback_hint(host)} and CURVE is "
        "off: anyone on that "
        "network could read it. Set 'curve_secret_key_file' and 'curve_allowed_clients_dir', "
        "or set 'allow_insecure_remote = true' to bind it unauthenticated on purpose"
    )


def _split_tcp(address: str) -> tuple[str, str]:
    host, _, port = address.rpartition(":")
    return host, port


@dataclass(frozen=True)
class CurveKeys:
    """A Z85-encoded key pair, as ``zmq.auth.load_certificate`` reads it."""

    public: bytes
    secret: bytes


def load_secret_keys(name: str, path: Path) -> CurveKeys:
    """Read a ``.key_secret`` certificate; a public-only file is refused by name, since a
    server or client cannot prove who it is without its secret half, and so is one that other
    users may read (they could pose as its owner) or that its group may write (choose the key).
    """
    label = f"'{name}' {str(path)!r}"
    public, secret = _load_certificate(label, path)
    if secret is None:
        raise ValueError(
            f"{label} holds no secret key: pass the '.key_secret' file that "
            "zmq.auth.create_certificates wrote, not the public '.key'"
        )
    _check_key(label, "secret", secret)
    check_private(
        label,
        path,
        "whoever reads it can pose as its owner (zmq.auth.create_certificates leaves its mode "
        "to the umask)",
    )
    return CurveKeys(public=public, secret=secret)


def load_public_key(name: str, path: Path) -> bytes:
    """Read the public key from a ``.key`` (or ``.key_secret``) certificate."""
    return _load_certificate(f"'{name}' {str(path)!r}", path)[0]


def _load_certificate(label: str, path: Path) -> tuple[bytes, bytes | None]:
    """``zmq.auth.load_certificate``, each key checked, every failure a ValueError starting
    with ``label`` (libzmq says only 'Invalid argument' of a malformed key)."""
    try:
        public, secret = zmq.auth.load_certificate(path)
    except (OSError, ValueError) as err:
        raise ValueError(f"{label} is not a readable CURVE certificate: {err}") from err
    _check_key(label, "public", public)
    return public, secret


_Z85_KEY_LENGTH = 40
"""A 32-byte CURVE key in Z85 text."""


def _check_key(label: str, which: str, key: bytes) -> None:
    try:
        valid = len(key) == _Z85_KEY_LENGTH and len(z85.decode(key)) == 32
    except (KeyError, ValueError, struct.error):  # a character outside Z85, or past 2**32
        valid = False
    if not valid:
        raise ValueError(
            f"{label} holds a {which} key of {len(key)} characters; a CURVE key "
            f"is {_Z85_KEY_LENGTH} Z85 characters (write it with zmq.auth.create_certificates)"
        )


_OTHERS_WRITE = stat.S_IWGRP | stat.S_IWOTH


def start_authenticator(context: zmq.Context, allowed_clients_dir: Path) -> ThreadAuthenticator:
    """Start the ZAP handler of ``context`` admitting only the public keys in the directory.

    It must run before a CURVE socket binds: without a ZAP handler libzmq accepts any client
    key. The directory is read once here; a key added later needs a restart. Each key is
    checked first (pyzmq only logs a file it cannot read, and then admits no one), and so is
    who may write the directory and its keys: whoever can, can admit a key of their own.
    """
    directory = Path(allowed_clients_dir)
    name = "curve_allowed_clients_dir"
    keys = sorted(directory.glob("*.key"))
    if not keys:
        raise ValueError(
            f"'{name}' {str(directory)!r} holds no public key ('*.key') files: no client could "
            "ever connect"
        )
    for what, path in (("folder", directory), *(("file", key) for key in keys)):
        label = f"'{name}' {what} {str(path)!r}"
        info = path.stat()
        mode = info.st_mode
        owner = foreign_owner(info)
        if owner is not None:
            raise ValueError(
                f"{label} belongs to another user (uid {owner}), who may write it: chown it "
                "to the daemon's user or root; whoever can write there can admit a key of "
                "their own"
            )
        if mode & _OTHERS_WRITE:
            raise ValueError(
                f"{label} is writable by users other than its owner "
                f"(mode {stat.S_IMODE(mode):04o}): chmod go-w it; whoever can write there can "
                "admit a key of their own"
            )
        if what == "file":
            _load_certificate(label, path)
    authenticator = ThreadAuthenticator(context)
    authenticator.start()
    try:
        authenticator.configure_curve(domain="*", location=str(directory))
    except BaseException:
        authenticator.stop()
        raise
    return authenticator


def make_curve_server(socket: zmq.Socket, keys: CurveKeys) -> None:
    """Make ``socket`` (not yet bound) a CURVE server with ``keys``."""
    socket.curve_secretkey = keys.secret
    socket.curve_publickey = keys.public
    socket.curve_server = True


def make_curve_client(socket: zmq.Socket, keys: CurveKeys, server_public: bytes) -> None:
    """Make ``socket`` (not yet connected) a CURVE client of the server with ``server_public``."""
    socket.curve_secretkey = keys.secret
    socket.curve_publickey = keys.public
    socket.curve_serverkey = server_public
