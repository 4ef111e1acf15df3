"""Daemon configuration: one TOML file plus ``CORTICAST_*`` environment overrides.

Environment variables use ``__`` between section and key, e.g.
``CORTICAST_INGEST__RING_SECONDS=20`` overrides ``[ingest] ring_seconds``. Precedence: environment
over file over built-in defaults. Unknown keys are errors, never ignored: a typo in a safety
setting must not silently fall back to a default.
"""

from __future__ import annotations

import difflib
import math
import os
import re
import tomllib
from collections.abc import Sequence
from pathlib import Path
from types import UnionType
from typing import Annotated, Any, Literal, Self, Union, get_args, get_origin

from pydantic import (
    Field,
    SecretStr,
    Strict,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

from firmware_bridge.config import (
    BridgeSettings,
    EmulatorSettings,
    InterlockSettings,
    check_serial_timing,
)
from service.core.errors import EXIT_UNUSABLE, CorticastError
from service.core.grid import DEFAULT_GRID
from service.core.net import (
    DEFAULT_API_HOST,
    DEFAULT_API_PORT,
    is_loopback_host,
    loopback_hint,
)
from service.core.private_files import check_private, read_secret_text
from service.core.realtime_settings import RealtimeSettings
from service.core.regular_files import NotRegularFileError, TooLargeError, read_regular
from service.core.settings_model import (
    PositiveSeconds,
    QuoteFreeText,
    Section,
    UserFilePath,
    UserPath,
    read_from,
)
from service.core.stimulation_markers import outlet_source_id
from service.inference.settings import ModelSettings, SchedulerSettings
from service.ingest.settings import MAX_RING_FRAMES, IngestSettings, StreamSettings
from service.loop.settings import LoopSettings
from service.policy.limits import PREDICTED_FRAMES, PolicyLimitError, check_policy_limits
from service.policy.settings import PolicySettings
from service.waves.settings import WaveSettings, window_frames
from service.zmq_api.settings import ZmqSettings

ENV_PREFIX = "CORTICAST_"
ENV_NESTED_DELIMITER = "__"
MAX_CONFIG_BYTES = 1 << 20
"""The example config, every setting shown and explained, is about 20 KiB: a file 50 times as
large is something else (a recording, a log) named by mistake, not read into memory whole."""


class RigSettings(Section):
    """The simulated rig that `corticast demo` and `corticast rig` run."""

    source: Literal["synthetic", "pattern"] | UserPath = "synthetic"
    seed: Annotated[int, Field(ge=0)] = 0
    duration_s: PositiveSeconds = 60.0
    artefacts: Literal["none", "realistic"] = "realistic"
    chunk_size: Annotated[int, Field(ge=1, le=4096)] = 4
    speed: PositiveSeconds = 1.0
    loop: bool = True


MIN_REMOTE_TOKEN_CHARS = 32
"""A token guarded by nothing but its length on a network: 32 random characters."""
MAX_TOKEN_FILE_BYTES = 4096
"""A token file's largest size: room for a token far longer than any needs, with whitespace."""

STALL_MARGIN_S = 2.0
"""How long beyond its longest wait for the device a stage may be on one window or prediction,
where ``[loop] stall_after_s`` is not set, before it is taken as stuck."""


def check_token(value: str, *, host: str, control: bool) -> None:
    """Raise ValueError (never echoing ``value``) unless ``value`` can be the control token of
    an API bound at ``host``: not empty, printable ASCII, and off loopback with control on, at
    least ``MIN_REMOTE_TOKEN_CHARS`` long. Whatever supplies the token applies it."""
    if not value:
        raise ValueError(
            "must not be empty: set a token, or leave it unset (and, on a loopback host "
            "only, set dev_no_token = true)"
        )
    if not all("!" <= char <= "~" for char in value):
        raise ValueError("must be printable ASCII without spaces (it travels in an HTTP header)")
    if control and not is_loopback_host(host) and len(value) < MIN_REMOTE_TOKEN_CHARS:
        raise ValueError(
            f"must be at least {MIN_REMOTE_TOKEN_CHARS} characters when 'host' ({host!r}) is "
            f"not a loopback address{loopback_hint(host)}, got {len(value)}; e.g. "
            "python -c 'import secrets; print(secrets.token_urlsafe(32))'"
        )


class ApiSettings(Section):
    """The HTTP API, under the same rules as the ZeroMQ sockets (``service.zmq_api.settings``).

    Control endpoints need ``token``; without one the daemon refuses to start unless
    ``dev_no_token`` is set and ``host`` is a loopback address. A ``host`` that is not loopback
    needs TLS (``ssl_certfile`` and ``ssl_keyfile``, PEM files as uvicorn reads them) and, with
    control on, a token of at least 32 characters: on a network the bearer token must not
    cross in cleartext, nor be guessable. ``allow_insecure_remote = true`` serves plain HTTP on
    a network address anyway, on purpose (logged as a warning at every start); the token
    length rule stays.

    ``token_file`` names a file holding the token instead (a container secret under
    ``/run/secrets``: an environment variable shows in ``docker inspect``); it is read once,
    here, surrounding whitespace dropped, checked as ``token`` is, and then serves as it. It,
    and ``ssl_keyfile``, are refused where other users may read them or their group write
    them, as a CURVE secret key is.

    ``own_process`` (``corticast serve``): the HTTP API and the ZeroMQ query socket run in a
    process of their own, at ``process_niceness`` more than the loop's, reaching the loop over a
    private link (``service.daemon.control_link``): parsing requests and rendering answers then
    never holds the loop's GIL. What they only read (status, readiness, metrics) is rendered by
    the loop's process at most once per ``snapshot_max_age_s``, however many clients poll.
    False serves everything from the loop's process (as ``ServedDaemon`` always does); the
    query socket's ``status`` is then still rendered at most once per ``snapshot_max_age_s``
    (the ZeroMQ ``status`` topic shares that copy), ``/status`` at each request. A control
    process that says nothing for ``control_hang_s`` (it says "alive" each second while its
    HTTP event loop answers and the watch over its query socket runs; the watch restarts a
    query socket whose thread ended, a ``query`` fault) is hung: no operator can disarm through
    it, so the loop's process disarms, counts a fault, kills it and starts it again, as when it
    ends on its own. A start of it that fails (its port taken by another program) is tried
    again every ``control_restart_every_s``, the daemon not ready meanwhile. With
    ``own_process = false`` an HTTP event loop that answers nothing for ``control_hang_s`` is
    the same ``control`` fault (disarmed, counted), and the daemon is not ready until it
    answers again: it runs in the loop's process, which nothing kills.

    ``limit_concurrency`` bounds what anyone who can connect may have the API do at once: while
    that many connections are open (the asking one counted, idle keep-alive ones too) or that
    many requests are in progress, a request is answered 503 at once (uvicorn's
    ``--limit-concurrency``), except an operator's disarm, which is answered whatever the load,
    and a request for which an idle keep-alive connection is closed (the one idle longest).
    2 at least: at 1 no request but a disarm would ever be served.
    """

    host: QuoteFreeText = DEFAULT_API_HOST
    port: Annotated[int, Field(ge=0, le=65535)] = DEFAULT_API_PORT
    control: bool = True
    dev_no_token: bool = False
    ssl_certfile: UserFilePath | None = None
    ssl_keyfile: UserFilePath | None = None
    allow_insecure_remote: bool = False
    token: SecretStr | None = None
    """After the fields its checks read."""
    token_file: UserFilePath | None = None
    own_process: bool = True
    process_niceness: Annotated[int, Field(ge=0, le=19)] = 10
    snapshot_max_age_s: Annotated[float, Field(ge=0.0, le=5.0)] = 0.1
    control_hang_s: Annotated[float, Field(ge=3.0, le=300.0)] = 10.0
    control_restart_every_s: Annotated[float, Field(ge=0.5, le=300.0)] = 5.0
    limit_concurrency: Annotated[int, Field(ge=2, le=65536)] = 100

    @property
    def tls(self) -> bool:
        """True when the API serves HTTPS."""
        return self.ssl_certfile is not None

    @field_validator("token")
    @classmethod
    def _usable_token(cls, token: SecretStr | None, info: ValidationInfo) -> SecretStr | None:
        if token is not None:
            check_token(
                token.get_secret_value(),
                host=info.data.get("host", "127.0.0.1"),
                control=info.data.get("control", True),
            )
        return token

    @model_validator(mode="after")
    def _secure_bind(self) -> ApiSettings:
        if (self.ssl_certfile is None) != (self.ssl_keyfile is None):
            raise ValueError(
                "'ssl_certfile' and 'ssl_keyfile' must be set together (TLS needs both), got "
                f"{self.ssl_certfile!r} and {self.ssl_keyfile!r}"
            )
        if not (self.tls or self.allow_insecure_remote or is_loopback_host(self.host)):
            raise ValueError(
                f"'host' = {self.host!r} is not a loopback address{loopback_hint(self.host)} "
                "and TLS is off: the bearer "
                "token and every answer would cross the network in cleartext. Set "
                "'ssl_certfile' and 'ssl_keyfile', or set 'allow_insecure_remote = true' to "
                "serve plain HTTP on purpose"
            )
        return self

    @field_validator("ssl_keyfile")
    @classmethod
    def _private_key(cls, path: Path | None) -> Path | None:
        if path is not None:
            check_private(
                repr(str(path)),
                path,
                "whoever reads it can pose as this server and take the token off the wire",
            )
        return path

    @field_validator("token_file")
    @classmethod
    def _one_source(cls, path: Path | None, info: ValidationInfo) -> Path | None:
        if path is not None and info.data.get("token") is not None:
            raise ValueError("set 'token' or 'token_file', not both")
        return path

    @model_validator(mode="wrap")
    @classmethod
    def _token_from_file(cls, data: Any, handler: Any) -> Self:
        settings = handler(data)
        if settings.token_file is None:
            return settings
        label = f"'token_file' {str(settings.token_file)!r}"
        token = read_secret_text(
            settings.token_file,
            label=label,
            noun="token",
            max_bytes=MAX_TOKEN_FILE_BYTES,
            encoding="UTF-8",
            why="whoever reads it can arm stimulation",
        )
        if not token:
            raise ValueError(f"{label} is empty")
        check_token(token, host=settings.host, control=settings.control)
        return settings.model_copy(update={"token": SecretStr(token)})


class Settings(BaseSettings):
    """Everything the daemon reads at start.

    ``strict`` makes pydantic-settings parse each environment value by its field's type before
    validation, so the strict fields (the policy's numbers: a ``true`` is not an electrode)
    still take overrides from the environment; the sections keep their own strictness.
    """

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter=ENV_NESTED_DELIMITER,
        extra="forbid",
        frozen=True,
        strict=True,
    )

    stream: StreamSettings = StreamSettings()
    ingest: IngestSettings = IngestSettings()
    rig: RigSettings = RigSettings()
    model: ModelSettings = ModelSettings()
    scheduler: SchedulerSettings = SchedulerSettings()
    waves: WaveSettings = WaveSettings()
    policy: PolicySettings = PolicySettings()
    bridge: BridgeSettings = BridgeSettings()
    interlocks: InterlockSettings = InterlockSettings()
    emulator: EmulatorSettings = EmulatorSettings()
    zmq: ZmqSettings = ZmqSettings()
    api: ApiSettings = ApiSettings()
    loop: LoopSettings = LoopSettings()
    realtime: RealtimeSettings = RealtimeSettings()

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        # The daemon reads the rig's array (DEFAULT_GRID); PUT /control/policy runs the same.
        check_policy_limits(self.policy, self.interlocks, DEFAULT_GRID)
        check_serial_timing(self.bridge, self.interlocks)
        if self.waves.predicted_frames != PREDICTED_FRAMES:
            raise ValueError(
                f"waves.predicted_frames must be {PREDICTED_FRAMES} (the models' horizon), got "
                f"{self.waves.predicted_frames}"
            )
        stride = self.scheduler.stride
        if self.model.serving == "fixed" and stride > PREDICTED_FRAMES:
            # 'auto' refuses it when it measures (service.inference.serving_probe), and then
            # refuses to arm; served as configured, nothing else would say it.
            raise ValueError(
                f"scheduler.stride ({stride}) is past the models' {PREDICTED_FRAMES}-frame "
                f"horizon: the frames after the {PREDICTED_FRAMES}th would never be predicted; "
                f"set scheduler.stride to at most {PREDICTED_FRAMES}"
            )
        if self.loop.stall_after_s is not None and self.stall_after_s <= self._device_waits_s:
            raise ValueError(
                f"loop.stall_after_s ({self.stall_after_s:g} s) must be longer than twice "
                f"bridge.ack_timeout_s ({self.bridge.ack_timeout_s:g} s): the wave stage waits "
                "that long for the device's answer to a request, and would be taken as stuck"
            )
        staleness_s = self.interlocks.max_sample_age_s
        if self.loop.stall_after_s is not None and self.stall_after_s <= staleness_s:
            raise ValueError(
                f"loop.stall_after_s ({self.stall_after_s:g} s) must be longer than "
                f"interlocks.max_sample_age_s ({staleness_s:g} s): a model whose windows take "
                "between the two could pass trains, yet would be taken as stuck at every window"
            )
        ring_frames = math.ceil(self.ingest.ring_seconds * self.stream.sample_rate_hz)
        if ring_frames > MAX_RING_FRAMES:
            raise ValueError(
                f"ingest.ring_seconds ({self.ingest.ring_seconds:g} s) at stream.sample_rate_hz "
                f"({self.stream.sample_rate_hz:g} Hz) is a ring of {ring_frames} frames; at most "
                f"{MAX_RING_FRAMES} ({MAX_RING_FRAMES * DEFAULT_GRID.n_channels * 4 / 1e9:.1f} "
                "GB, allocated at start)"
            )
        rig = self.stream
        if any(
            marker.name == rig.name and (marker.source_id or rig.source_id) == rig.source_id
            for marker in self.ingest.stimulation_marker_streams
        ):
            # Read as markers, its every frame would be a train (the inlet refuses a stream
            # at a regular rate, but only once it runs).
            raise ValueError(
                f"ingest.stimulation_marker_streams names {self.stream.name!r}, the rig's "
                "stream (stream.name): list the marker streams other tools announce their "
                "trains on"
            )
        if self.loop.stimulation_markers and not (rig.source_id or rig.name):
            raise ValueError(
                "loop.stimulation_markers needs stream.source_id or stream.name: the marker "
                "stream's source id names the rig (a recording of several says whose trains "
                "it holds), and a rig found by its type alone has neither: set the rig's "
                "source_id (or name), or stimulation_markers = false"
            )
        own = outlet_source_id(rig.source_id, rig.name) if self.loop.stimulation_markers else None
        if any(marker.source_id == own for marker in self.ingest.stimulation_marker_streams):
            # Its inlet ignores that source id (the daemon's own trains are blanked as they
            # are sent): it would find nothing, and the daemon would never be ready.
            raise ValueError(
                f"ingest.stimulation_marker_streams names source id {own!r}, the daemon's own "
                "marker stream (stream.source_id, or stream.name without one, with "
                "'-stimulation'), which is never read: "
                "list the marker streams other tools announce their trains on"
            )
        latency_s = self.ingest.stimulation_marker_latency_ms / 1000
        if self.ingest.stimulation_marker_streams and latency_s >= self.ingest.ring_seconds / 2:
            # The live scores and the AR fit read only frames that much older than the
            # newest: with the rest of the ring too short, the AR never fits, and a scored
            # prediction's inputs would be overwritten first.
            raise ValueError(
                f"ingest.stimulation_marker_latency_ms ({self.ingest.stimulation_marker_latency_ms}"
                f" ms) must be under half of ingest.ring_seconds ({self.ingest.ring_seconds:g} "
                "s): the live scores and the AR fit read only frames older than it"
            )
        rate = self.stream.sample_rate_hz
        self._check_wave_band(rate / 2)
        baseline = window_frames(self.loop.robust_sd_seconds, rate) + self.marker_settle_frames
        if ring_frames < baseline:
            # The baseline's refresh reads that much measured history from the ring, before
            # the frames a marker may still blank: with less it silently measures a shorter
            # stretch than configured, and with under half it never refreshes, and the
            # policy never has a unit to decide with. Counted in frames, as the ring and the
            # refresh count them (in seconds, 2.28 s was short of 2 s and 280 ms).
            after = (
                f" before the last ingest.stimulation_marker_latency_ms "
                f"({self.ingest.stimulation_marker_latency_ms} ms)"
                if self.marker_settle_frames
                else ""
            )
            raise ValueError(
                f"ingest.ring_seconds ({self.ingest.ring_seconds:g} s) must hold "
                f"loop.robust_sd_seconds ({self.loop.robust_sd_seconds:g} s) of measured frames"
                f"{after}, which the amplitude baseline reads at every refresh: {baseline} "
                f"frames at stream.sample_rate_hz ({rate:g} Hz), and it keeps {ring_frames}"
            )
        return self

    def _check_wave_band(self, nyquist_hz: float) -> None:
        """The wave stage's bands must lie below the stream's Nyquist frequency, and its
        extension must reach a quarter period of the band's low edge at the stream's rate; it
        refuses them when the daemon is built, which ended `corticast serve` in a traceback
        (exit 1, restarted by systemd) rather than a refusal naming the keys."""
        waves, rate = self.waves, self.stream.sample_rate_hz
        least = waves.min_extension_frames(rate)
        if waves.extension_frames is not None and waves.extension_frames < least:
            raise ValueError(
                f"waves.extension_frames ({waves.extension_frames}) must be at least {least}: "
                f"a quarter period of waves.low_hz ({waves.low_hz:g} Hz) at "
                f"stream.sample_rate_hz ({rate:g} Hz), which the Hilbert transform needs beyond "
                "the newest frames; with fewer their envelope droops"
            )
        where = f"the Nyquist frequency of stream.sample_rate_hz ({rate:g} Hz): {nyquist_hz:g} Hz"
        if not waves.high_hz < nyquist_hz:
            raise ValueError(f"waves.high_hz ({waves.high_hz:g} Hz) must be below {where}")
        if waves.adaptive_band and not waves.phase_band_top_hz < nyquist_hz:
            raise ValueError(
                f"waves.high_hz ({waves.high_hz:g} Hz) with waves.phase_band_octaves "
                f"({waves.phase_band_octaves:g}) takes the phase band up to "
                f"{waves.phase_band_top_hz:.1f} Hz, past {where}; lower either, or set "
                "waves.adaptive_band = false"
            )

    @property
    def _device_waits_s(self) -> float:
        """Longest a request waits for the device's answer: its own exchange behind one other
        (the heartbeat's, a disarm's), each up to ``[bridge] ack_timeout_s``; a wave stage
        waiting so long is not stuck."""
        return 2 * self.bridge.ack_timeout_s

    @property
    def stall_after_s(self) -> float:
        """``[loop] stall_after_s`` where set, else :data:`STALL_MARGIN_S` beyond the longest a
        request waits for the device (2.2 s with the default 0.1 s ACK deadline)."""
        if self.loop.stall_after_s is not None:
            return self.loop.stall_after_s
        return STALL_MARGIN_S + self._device_waits_s

    @property
    def marker_settle_frames(self) -> int:
        """Frames the live scores, the AR fit and the wave stage's baseline wait for before
        reading a frame: another tool's marker may blank it
        ``[ingest] stimulation_marker_latency_ms`` after its train starts. 0 while no other
        tool's marker stream is read (the daemon's own trains are blanked before they are
        sent)."""
        ingest = self.ingest
        if not ingest.stimulation_marker_streams:
            return 0
        return math.ceil(ingest.stimulation_marker_latency_ms / 1000 * self.stream.sample_rate_hz)

    @property
    def late_artefact_after_frames(self) -> int | None:
        """The wave stage's ``late_after_frames`` (``service.loop.closed_loop``): the settle,
        while another tool's marker stream is read (checked with no latency allowed too: every
        marker is late then); None while none is, and nothing can blank a frame later."""
        if not self.ingest.stimulation_marker_streams:
            return None
        return self.marker_settle_frames

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The file's contents arrive as init kwargs; the environment must win over them.
        return (env_settings, init_settings)


class ConfigError(CorticastError, ValueError):
    """The configuration cannot be used; the message names the file, key and problem."""

    exit_code = EXIT_UNUSABLE


def load_settings(path: Path | None = None) -> Settings:
    """Read ``path`` (or only defaults and environment when None) and validate everything.

    Raises
    ------
    ConfigError
        If the file is missing or not TOML, or any key is unknown or has an invalid value.
    """
    _check_environment_sections()
    _check_environment_numbers()
    file_values: dict = {}
    if path is not None:
        try:  # utf-8-sig: an editor's byte order mark is not a TOML statement
            text = read_regular(Path(path), MAX_CONFIG_BYTES).decode("utf-8-sig")
            file_values = tomllib.loads(text)
        except FileNotFoundError:
            raise ConfigError(f"config file {str(path)!r} does not exist") from None
        except TooLargeError as err:
            raise ConfigError(
                f"config file {str(path)!r} holds {err.size} bytes, more than a config file's "
                f"{MAX_CONFIG_BYTES}: is it the config file?"
            ) from None
        except NotRegularFileError as err:
            raise ConfigError(
                f"config file {str(path)!r} is {err.kind}, not a regular file: name the config "
                "file itself"
            ) from None
        except OSError as err:
            raise ConfigError(f"config file {str(path)!r} cannot be read: {err.strerror}") from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
            raise ConfigError(f"config file {str(path)!r} is not valid TOML: {err}") from None
        _check_file_numbers(file_values, path)
    try:
        return Settings(**file_values)
    except ValidationError as err:
        raise ConfigError(_describe(err, path)) from None
    except SettingsError as err:  # the environment's JSON (a list, a table) did not parse
        raise ConfigError(_describe_environment(err)) from None


def _check_environment_sections() -> None:
    """Refuse ``CORTICAST_<SECTION>__<KEY>`` naming no section: pydantic-settings ignores such
    a variable, so a misspelt section (``CORTICAST_BRIDG__PORT``) would silently change
    nothing, while a misspelt key in a known section is refused as unknown. Variables without
    the delimiter (``CORTICAST_LOG_FORMAT``, the deploy files' ``CORTICAST_CONFIG``) are not
    settings and are left alone."""
    sections = set(Settings.model_fields)
    for name in os.environ:
        if not name.upper().startswith(ENV_PREFIX) or ENV_NESTED_DELIMITER not in name:
            continue
        section = name[len(ENV_PREFIX) :].split(ENV_NESTED_DELIMITER, 1)[0].lower()
        if section not in sections:
            raise ConfigError(
                f"environment variable {name} names no configuration section {section!r}; "
                f"the sections are {', '.join(sorted(sections))}"
            )


_BOOL_WORDS = ("true", "false")


def _check_environment_numbers() -> None:
    """Refuse ``true`` or ``false`` for a number from the environment. pydantic-settings,
    failing to read the word as a number, reads it as JSON and then the bool as 1 or 0, past
    the policy's strictness (the file's ``min_pgd = true`` is refused)."""
    for name, value in os.environ.items():
        if not name.upper().startswith(ENV_PREFIX) or value.strip().lower() not in _BOOL_WORDS:
            continue
        keys = name[len(ENV_PREFIX) :].lower().split(ENV_NESTED_DELIMITER)
        if _takes_number(keys):
            raise ConfigError(
                f"environment variable {name} = {value!r}: {'.'.join(keys)} takes a number"
            )


def _check_file_numbers(values: dict, path: Path, keys: tuple[str, ...] = ()) -> None:
    """Refuse ``true`` or ``false`` for a number in the file. The sections outside the policy
    are not strict, and pydantic reads a bool as 1 or 0: ``max_sample_age_s = true``, meant to
    switch the stale-data check on, would widen it to 1 s. A strict field (the policy's) is
    left to pydantic, which refuses it in the words ``PUT /control/policy`` uses."""
    for key, value in values.items():
        here = (*keys, key)
        if isinstance(value, dict):
            _check_file_numbers(value, path, here)
        elif isinstance(value, bool) and _takes_number(here) and not _strict(here):
            raise ConfigError(
                f"invalid config file {str(path)!r}: {'.'.join(here)} = {str(value).lower()}: "
                "takes a number"
            )


def _field_at(keys: Sequence[str]) -> FieldInfo | None:
    """The setting ``keys`` names; None where it is not a setting (an unknown key, which
    validation names)."""
    model: Any = Settings
    field = None
    for key in keys:
        field = getattr(model, "model_fields", {}).get(key)
        if field is None:
            return None
        model = field.annotation
    return field


def _strict(keys: Sequence[str]) -> bool:
    """Whether the setting ``keys`` names is strict (pydantic refuses a bool for it)."""
    field = _field_at(keys)
    return field is not None and any(isinstance(m, Strict) and m.strict for m in field.metadata)


def _takes_number(keys: Sequence[str]) -> bool:
    """Whether the setting ``keys`` names holds a number (or a number or nothing)."""
    field = _field_at(keys)
    if field is None:
        return False
    model = field.annotation
    kinds = [
        get_args(kind)[0] if get_origin(kind) is Annotated else kind
        for kind in (get_args(model) if get_origin(model) in (Union, UnionType) else (model,))
        if kind is not type(None)
    ]
    return bool(kinds) and all(kind in (int, float) for kind in kinds)


def _describe_environment(err: SettingsError) -> str:
    """pydantic-settings names only the section ('error parsing value for field "policy"'):
    name its variables and the parser's reason."""
    found = re.search(r'field "(\w+)"', str(err))
    section = found[1] if found else "?"
    prefix = f"{ENV_PREFIX}{section}".upper()
    names = sorted(name for name in os.environ if name.upper().startswith(prefix))
    variables = ", ".join(names) or f"{prefix}*"
    what = "variable" if len(names) == 1 else "variables"
    return (
        f"invalid configuration: environment {what} {variables} (section {section!r}) is not "
        f"the JSON its setting needs: {err.__cause__ or err}; e.g. "
        f"{ENV_PREFIX}POLICY__TARGET_ELECTRODES='[[3, 4], [3, 5]]'"
    )


def _describe(err: ValidationError, path: Path | None) -> str:
    where = f"config file {str(path)!r}" if path is not None else "configuration"
    lines = [f"invalid {where}:"]
    for problem in err.errors():
        limits = problem.get("ctx", {}).get("error")
        if isinstance(limits, PolicyLimitError):  # a cross-section check: name each field
            lines += [f"  policy.{field}: {text}" for field, text in limits.problems]
            continue
        if problem["type"] == "extra_forbidden":  # the key meant, not pydantic's words
            lines.append(f"  {_unknown_key(problem['loc'])}{_origin(problem['loc'])}")
            continue
        message = problem["msg"]
        if problem["type"] == "value_error":  # a rule of ours: its message, not pydantic's frame
            message = message.removeprefix("Value error, ")
        if not problem["loc"]:  # a rule across sections names its keys itself
            lines.append(f"  {message}")
            continue
        key = ".".join(str(part) for part in problem["loc"])
        origin = _origin(problem["loc"])
        echo = (
            problem["type"] != "missing"
            and problem["loc"]  # not the whole file's values
            and not (problem["type"] == "value_error" and _SAYS_WHAT_IT_GOT.search(message))
        )  # a rule of ours that says what it got (or, for a secret, its length) has said it
        shown = _without_secrets(problem["loc"], problem["input"])
        got = f", got {shown!r}" if echo else ""
        lines.append(f"  {key}: {message}{got}{_relative_to(problem)}{origin}")
    return "\n".join(lines)


_SAYS_WHAT_IT_GOT = re.compile(r"\bgot\b")
"""How a message of our own rules says the value it refused ('..., got 5')."""

_PATH_MISSING = frozenset({"path_not_file", "path_not_directory"})


def _relative_to(problem: Any) -> str:
    """Where a relative path that is not there was looked for (:func:`read_from`)."""
    return read_from(problem["input"]) if problem["type"] in _PATH_MISSING else ""


def _origin(loc: tuple) -> str:
    """Where the value at ``loc`` came from, when that was the environment: its variable, or
    for a key those nested below it (``CORTICAST_API__TOKEN__FILE`` makes ``api.token`` a
    table); a section's are not named for the section's value, which the file may hold."""
    env_name = ENV_PREFIX + ENV_NESTED_DELIMITER.join(str(part) for part in loc).upper()
    below = env_name + ENV_NESTED_DELIMITER if len(loc) > 1 else None
    names = sorted(
        name
        for name in os.environ
        if name.upper() == env_name or (below and name.upper().startswith(below))
    )
    return f" (from environment {', '.join(names)})" if names else ""


def _unknown_key(loc: tuple) -> str:
    """``loc`` named as a key that is no setting, with the setting it is closest to (a typo)
    or else those its section has: pydantic says only 'Extra inputs are not permitted'."""
    key = ".".join(str(part) for part in loc)
    model = _model_at(loc[:-1])
    if model is None:  # inside a list's tables (a marker stream): say it as pydantic does
        return f"{key}: Extra inputs are not permitted"
    known = sorted(model.model_fields)
    close = difflib.get_close_matches(str(loc[-1]), known, n=1)
    if len(loc) == 1:
        hint = f"did you mean [{close[0]}]?" if close else f"the sections are {', '.join(known)}"
        return f"{key}: not a section; {hint}"
    section = ".".join(str(part) for part in loc[:-1])
    if close:
        return f"{key}: not a setting; did you mean {section}.{close[0]}?"
    return f"{key}: not a setting; [{section}] has {', '.join(known)}"


def _model_at(loc: tuple) -> Any:
    """The settings model whose table ``loc`` names (a section or a table inside one), or
    None where ``loc`` passes through something else."""
    if not loc:
        return Settings
    field = _field_at(loc)
    model = None if field is None else field.annotation
    return model if hasattr(model, "model_fields") else None


_SECRET_KEYS = frozenset({"token"})
"""Keys whose values an error message never echoes (it goes to a terminal, a journal)."""


def _without_secrets(loc: tuple, value: object) -> object:
    """``value`` as an error may show it: a secret key's value, alone or anywhere inside the
    dicts of a section or of the whole file, replaced by a placeholder."""
    if loc and loc[-1] in _SECRET_KEYS:
        return "<secret>"
    if isinstance(value, dict):
        return {k: _without_secrets((*loc, k), v) for k, v in value.items()}
    return value
