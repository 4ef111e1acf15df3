"""Configuration of the ZeroMQ API: where it binds, how much it buffers, who may connect."""

from __future__ import annotations

import stat
from typing import Annotated, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from service.core.settings_model import UserDirectoryPath, UserFilePath
from service.zmq_api._security import check_bind_allowed, check_endpoint, check_ipc_endpoint


class ZmqSettings(BaseModel):
    """The PUB socket (predictions, waves, stimulation events, status) and the query socket.

    Attributes
    ----------
    pub_endpoint
        Where the PUB socket binds. ``tcp://127.0.0.1:*`` picks a free port (tests).
    pub_ipc_endpoint
        A second endpoint the same PUB socket binds, ``ipc://PATH`` (a unix socket), or None
        for none. Subscribers on this machine that connect there skip the TCP stack
        (``bench.benchmarks.transport_floor``: 0.83-0.96x the time of loopback TCP per message
        on a 2-core VM). ``pub_endpoint`` stays bound as well, for everyone else. Who may
        connect is who may open the file (connecting needs write permission on it); under
        CURVE this endpoint requires it too.
    pub_ipc_mode, pub_ipc_group
        Permissions given to ``pub_ipc_endpoint``'s file right after the bind (e.g. ``0o660``
        in TOML) and the group it is given to (one the daemon's user is in). None leaves them
        as libzmq made them: the daemon's umask, under the unit's ``UMask=0077`` owner only,
        so subscribers running as other users are refused until these say otherwise.
    query_endpoint
        Where the ROUTER socket answering ``latest`` / ``by_seq`` / ``status`` binds.
    send_hwm
        Messages queued per subscriber before the publisher drops. 1000 is about 3.6 s of
        predictions at stride 1: enough to ride out a subscriber's pause, short enough that
        nothing stale piles up for a closed loop.
    drop_policy
        What a full subscriber queue costs. ``"counted"``: the message is sent to no one and
        counted in ``corticast_zmq_dropped_messages_total`` (exact, and every subscriber sees
        the same ``msg_seq`` gap); a subscriber that stops reading while connected then
        starves every other one until it reads or disconnects. ``"per_subscriber"``: libzmq's
        default; each subscriber loses only its own overflow and the others are unaffected,
        but the publisher cannot see it (the counter stays 0; subscribers see ``msg_seq``
        gaps). Neither ever blocks the loop. The default is ``"per_subscriber"``: on a rig
        several people subscribe at once, and one paused notebook must not blind the others.
    history
        Predictions kept for ``by_seq`` queries (about 23 KB each for 16 frames).
    status_period_s
        How often the daemon publishes its status on the ``status`` topic (also at once when
        it is armed or disarmed, or its readiness changes). Each message renders the status
        document in the loop's process, as a ``status`` query does; with no subscriber to
        ``status`` nothing is sent. At least 0.1 s: the daemon's supervisor, which publishes
        it, comes round every ``[loop] supervise_every_s`` (0.1 s).
    curve_secret_key_file
        The server's ``.key_secret`` certificate (``zmq.auth.create_certificates``). With
        ``curve_allowed_clients_dir`` it turns CURVE on for both sockets.
    curve_allowed_clients_dir
        Directory of the public ``.key`` certificates of the clients admitted; read at start.
    allow_insecure_remote
        Bind a non-loopback endpoint without CURVE anyway. Off, such a bind is refused,
        because anyone on that network could read the stream.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    pub_endpoint: str = "tcp://127.0.0.1:5556"
    pub_ipc_endpoint: str | None = None
    pub_ipc_mode: Annotated[int, Field(ge=0, le=0o777)] | None = None
    pub_ipc_group: Annotated[str, Field(min_length=1)] | None = None
    query_endpoint: str = "tcp://127.0.0.1:5557"
    send_hwm: Annotated[int, Field(ge=1, le=1_000_000)] = 1000
    drop_policy: Literal["counted", "per_subscriber"] = "per_subscriber"
    history: Annotated[int, Field(ge=1, le=16384)] = 1024
    status_period_s: Annotated[float, Field(ge=0.1, le=3600.0, allow_inf_nan=False)] = 1.0
    curve_secret_key_file: UserFilePath | None = None
    curve_allowed_clients_dir: UserDirectoryPath | None = None
    allow_insecure_remote: bool = False

    @property
    def curve(self) -> bool:
        """True when both sockets require CURVE authentication."""
        return self.curve_secret_key_file is not None

    @model_validator(mode="after")
    def _secure_binds(self) -> Self:
        if (self.curve_secret_key_file is None) != (self.curve_allowed_clients_dir is None):
            raise ValueError(
                "'curve_secret_key_file' and 'curve_allowed_clients_dir' must be set together "
                f"(CURVE needs both), got {self.curve_secret_key_file!r} and "
                f"{self.curve_allowed_clients_dir!r}"
            )
        if self.pub_endpoint == self.query_endpoint and not _any_port(self.pub_endpoint):
            raise ValueError(
                "'pub_endpoint' and 'query_endpoint' must differ, "
                f"got {self.pub_endpoint!r} for both"
            )
        file_access = self.pub_ipc_mode is not None or self.pub_ipc_group is not None
        if file_access and not (self.pub_ipc_endpoint or "").startswith("ipc:///"):
            raise ValueError(
                "'pub_ipc_mode' and 'pub_ipc_group' set the permissions of a socket file: they "
                "need 'pub_ipc_endpoint' = 'ipc:///PATH' (an abstract 'ipc://@name' has none: "
                f"anyone on this machine may connect), got {self.pub_ipc_endpoint!r}"
            )
        if self.pub_ipc_group is not None and not (self.pub_ipc_mode or 0) & stat.S_IWGRP:
            # Connecting needs write permission on the file: the group would be given a
            # socket its subscribers are refused at, with nothing saying why.
            mode = "unset" if self.pub_ipc_mode is None else f"{self.pub_ipc_mode:#o}"
            raise ValueError(
                f"'pub_ipc_group' {self.pub_ipc_group!r} is given the socket file, but its "
                "subscribers connect only with write permission on it: set 'pub_ipc_mode' with "
                f"the group's write bit (0o660), got {mode}"
            )
        if self.pub_ipc_endpoint is not None:
            check_ipc_endpoint("pub_ipc_endpoint", self.pub_ipc_endpoint)
            taken = {self.pub_endpoint, self.query_endpoint}
            if self.pub_ipc_endpoint in taken:
                raise ValueError(
                    "'pub_ipc_endpoint' must differ from 'pub_endpoint' and 'query_endpoint', "
                    f"got {self.pub_ipc_endpoint!r}"
                )
        for name in ("pub_endpoint", "query_endpoint"):
            endpoint = getattr(self, name)
            check_endpoint(name, endpoint)
            check_bind_allowed(
                name, endpoint, curve=self.curve, allow_insecure=self.allow_insecure_remote
            )
        return self


def _any_port(endpoint: str) -> bool:
    """``tcp://HOST:*`` lets the OS pick a port, so two such binds never collide."""
    return endpoint.endswith((":*", ":0"))
