"""Who, beyond a file's mode bits, may read or write a secret (or an admission list).

An ACL entry can let a named user or group read a file whose mode reads 0640 or 0600 (the
group's bits then show the ACL's mask), and a file's owner may read it and chmod it whatever
its mode, and a group's read bit lets every member of that group read it: a check of the
mode alone passes a file that another user may read. The secrets' checks (``[api]
token_file``, ``ssl_keyfile``, the CURVE secret keys; the admitted clients' keys and their
folder for the owner) refuse one with an ACL, owned by a user other than this process's or
root, or readable by a group this process is not in (the group's read is for the daemon):
:func:`check_private`, one rule for every secret.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from service.core.regular_files import NotRegularFileError, TooLargeError, open_regular

ACL_ATTRIBUTE = "system.posix_acl_access"
"""The extended attribute Linux stores a file's access ACL in (absent when it has none)."""


def has_acl(file: int | Path) -> bool:
    """Whether ``file`` (an open descriptor, or a path, followed) has an access ACL; False
    where the filesystem has no extended attributes."""
    try:
        return ACL_ATTRIBUTE in os.listxattr(file)
    except OSError:
        return False


def foreign_owner(info: os.stat_result) -> int | None:
    """The owner's uid of the file ``info`` describes, where it is neither this process's
    (effective) user nor root; None where it is one of those."""
    owner = info.st_uid
    return None if owner in (0, os.geteuid()) else owner


def foreign_group_reads(info: os.stat_result) -> int | None:
    """The gid of the group that may read the file ``info`` describes, where this process is
    not in it (that read is for someone else); None where the group may not read it, or this
    process is in the group."""
    if not info.st_mode & stat.S_IRGRP:
        return None
    group = info.st_gid
    return None if group == os.getegid() or group in os.getgroups() else group


def check_private(label: str, file: int | Path, why: str) -> None:
    """Raise ValueError, naming ``label`` and saying ``why`` it matters, if the secret ``file``
    (an open descriptor, or a path) is open to other users: readable by them or writable by
    its group, owned by another user, readable by a group this process is not in, or given an
    ACL."""
    info = os.stat(file)
    mode = stat.S_IMODE(info.st_mode)
    chmod = "chmod 0600 it (or 0400; 0640 where the daemon reads it by its group)"
    if mode & (stat.S_IRWXO | stat.S_IWGRP):
        raise ValueError(f"{label} is open to other users (mode {mode:04o}): {chmod}; {why}")
    owner = foreign_owner(info)
    if owner is not None:
        raise ValueError(
            f"{label} belongs to another user (uid {owner}), who may read it and chmod it: "
            f"chown it to the user that reads it, or root; {why}"
        )
    group = foreign_group_reads(info)
    if group is not None:
        raise ValueError(
            f"{label} may be read by group {group}, which the daemon is not in: "
            f"chgrp it to the daemon's group, or chmod 0600 it; {why}"
        )
    if has_acl(file):
        raise ValueError(
            f"{label} has an ACL that may let other users read it (its mode reads {mode:04o}): "
            f"remove it (setfacl -b), then {chmod}; {why}"
        )


def read_secret_text(
    path: Path,
    *,
    label: str,
    noun: str,
    max_bytes: int,
    encoding: str,
    why: str,
    owner_only: bool = False,
) -> str:
    """The text of the secret file ``path``, stripped of surrounding whitespace: one rule for
    the secrets read whole (the API's token file, the stimulator link's key).

    It must be a regular file of at most ``max_bytes`` (:func:`open_regular`: a FIFO would
    block the read forever, a recording named by mistake be read whole into memory), open to
    no other user (:func:`check_private`; with ``owner_only`` not to its group either), and
    ``encoding`` text.

    Raises
    ------
    ValueError
        Naming ``label``, the rule broken and, for ``why``, what a reader could do; never the
        file's content.
    """
    try:
        with open_regular(path, max_bytes) as (file, info):
            if owner_only and info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
                raise ValueError(
                    f"{label} is open to users other than its owner (mode "
                    f"{stat.S_IMODE(info.st_mode):04o}): chmod go-rwx it, {why}"
                )
            check_private(label, file.fileno(), why)
            data = file.read(max_bytes + 1)  # should it grow meanwhile
        if len(data) > max_bytes:
            raise TooLargeError(len(data))
        return data.decode(encoding).strip()
    except NotRegularFileError as err:
        raise ValueError(
            f"{label} is {err.kind}, not a regular file: name the {noun} file itself"
        ) from None
    except TooLargeError as err:
        raise ValueError(
            f"{label} is {err.size} bytes long, more than a {noun} file's {max_bytes}: name the "
            f"file that holds the {noun} alone"
        ) from None
    except (OSError, UnicodeDecodeError) as err:
        reason = err.strerror if isinstance(err, OSError) else f"it is not {encoding} text"
        raise ValueError(f"{label} cannot be read: {reason}") from None
