"""The chaos soak's operator: the daemon's HTTP API, as an operator's script would use it.

Only the public API: ``/healthz``, ``/readyz``, ``/status`` and the token-protected
``/control/arm``, ``/control/disarm`` and ``/control/model``. A daemon that is down answers
nothing; that is an outcome here (status 0), not an error.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_TIMEOUT_S = 10.0
_SWAP_TIMEOUT_S = 120.0
"""A swap loads and warms a model beside the running one: seconds on a loaded 2-core box."""


@dataclass(frozen=True)
class Answer:
    """An HTTP answer: ``status`` 0 when none came (refused, timed out)."""

    status: int
    body: str

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    def json(self) -> Any:
        return json.loads(self.body)


class ControlClient:
    """Calls the daemon's API at ``url`` with the bearer ``token``."""

    def __init__(self, url: str, token: str) -> None:
        self.url = url
        self._token = token

    def alive(self) -> bool:
        return self._call("GET", "/healthz", timeout_s=2.0).ok

    def ready(self) -> bool:
        return self._call("GET", "/readyz", timeout_s=5.0).ok

    def armed(self) -> bool | None:
        """Whether the daemon says it is armed; None when it does not answer."""
        answer = self._call("GET", "/status")
        return bool(answer.json()["armed"]) if answer.ok else None

    def arm(self) -> Answer:
        return self._call("POST", "/control/arm", authorised=True)

    def disarm(self, reason: str) -> Answer:
        return self._call("POST", "/control/disarm", {"reason": reason}, authorised=True)

    def swap_model(self, path: Path, step_path: Path) -> Answer:
        body = {"path": str(path), "step_path": str(step_path)}
        return self._call("PUT", "/control/model", body, authorised=True, timeout_s=_SWAP_TIMEOUT_S)

    def _call(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        *,
        authorised: bool = False,
        timeout_s: float = _TIMEOUT_S,
    ) -> Answer:
        headers = {"Content-Type": "application/json"} if body is not None else {}
        if authorised:
            headers["Authorization"] = f"Bearer {self._token}"
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data, headers, method=method)
        try:
            with urllib.request.urlopen(request, timeout=timeout_s) as response:
                return Answer(response.status, response.read().decode("utf-8", "replace"))
        except urllib.error.HTTPError as err:
            return Answer(err.code, err.read().decode("utf-8", "replace"))
        except (OSError, ValueError) as err:  # refused, reset, timed out
            return Answer(0, f"{type(err).__name__}: {err}")
