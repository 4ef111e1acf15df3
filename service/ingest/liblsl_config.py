"""The configuration liblsl runs with: the site's ``lsl_api.cfg``, kept quiet.

liblsl reads one configuration per process, at its first use, and content given in code
(``pylsl.set_config_content``) wins over every file. Giving it only ``[log] level = -1`` (to
keep liblsl's INFO chatter off the terminal) made the daemon and the rig ignore the lab's
``lsl_api.cfg``: its ``KnownPeers`` where multicast does not cross the network (what
``deploy/README.md`` tells an operator to set), its ``SessionID``, ``ResolveScope``, ``IPv6``
and tuning. Here the content given is that file, the one liblsl would have read, with the
quiet log level added unless the file sets a level of its own.

The file's format is liblsl's own INI dialect (``src/util/inireader.cpp``: ``[section]`` and
``;`` only at the start of a line, and a key given twice makes liblsl drop the whole file), so
the one question asked of it, whether it sets ``log.level``, is answered by those rules, not by
``configparser``'s.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

__all__ = ["QUIET", "liblsl_config_file", "quiet_config"]

_log = logging.getLogger("corticast.ingest")

QUIET = "[log]\nlevel = -1\n"
"""liblsl's warnings and errors only (its INFO lines are level 0)."""

_SEARCHED = ("lsl_api.cfg", "~/lsl_api/lsl_api.cfg", "/etc/lsl_api/lsl_api.cfg")
"""Where liblsl looks after ``LSLAPICFG``, in order (``src/api_config.cpp``)."""


def liblsl_config_file() -> Path | None:
    """The file liblsl reads when no configuration is given in code: the first readable of
    ``$LSLAPICFG``, ``./lsl_api.cfg``, ``~/lsl_api/lsl_api.cfg`` and ``/etc/lsl_api/lsl_api.cfg``;
    None if there is none."""
    named = os.environ.get("LSLAPICFG")
    for name in ([named] if named else []) + list(_SEARCHED):
        path = Path(name).expanduser()
        try:
            with path.open("rb"):
                return path
        except OSError:
            continue
    return None


def quiet_config() -> str:
    """The site's configuration (:func:`liblsl_config_file`) with liblsl's log kept to warnings
    and errors, unless the file sets a log level itself."""
    path = liblsl_config_file()
    if path is None:
        return QUIET
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as err:  # gone or unreadable since it was found: as liblsl would, go on
        _log.warning("liblsl configuration %s could not be read (%s); using defaults", path, err)
        return QUIET
    _log.info("liblsl configuration from %s", path)
    if _sets_log_level(text):
        return text
    return text + ("" if not text or text.endswith("\n") else "\n") + QUIET


def _sets_log_level(text: str) -> bool:
    """Whether liblsl's INI reader finds ``level`` in a ``[log]`` section of ``text``."""
    section = ""
    for line in text.splitlines():
        if not line.strip() or line.startswith(";"):
            continue
        if line.startswith("["):
            closing = line.find("]")
            section = line[1:closing] if closing > 0 else section
            continue
        if section == "log" and line.partition("=")[0].strip() == "level":
            return True
    return False
