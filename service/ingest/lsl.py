"""Finding, opening and checking the acquisition stream with pylsl."""

from __future__ import annotations

import ctypes

import numpy as np
import pylsl
from pylsl.util import handle_error

from service.core.errors import CorticastError
from service.core.grid import RATE_TOLERANCE, ElectrodeGrid
from service.ingest.liblsl_config import quiet_config
from service.ingest.settings import StreamSettings


class StreamNotFoundError(CorticastError, RuntimeError):
    """No LSL stream matched the configured name/type/source_id in time."""


class AmbiguousStreamError(CorticastError, RuntimeError):
    """More than one LSL stream matches the configured name/type/source_id."""


class StreamFormatError(CorticastError, ValueError):
    """The stream found cannot feed the grid (channel count, format or rate)."""


_FLOAT_FORMATS = (pylsl.cf_float32, pylsl.cf_double64)
"""Formats liblsl converts to float32 on pull without loss that matters for µV (mne-lsl's
PlayerLSL streams double64); integer formats are ADC counts that need a scale first."""


def predicate(stream: StreamSettings) -> str:
    """XPath 1.0 predicate matching every non-empty field of ``stream``."""
    terms = [
        f"{key}='{value}'"
        for key, value in (
            ("name", stream.name),
            ("type", stream.type),
            ("source_id", stream.source_id),
        )
        if value
    ]
    return " and ".join(terms) if terms else "count(channel_count)>0"


def wanted(stream: StreamSettings) -> str:
    """The fields a stream must match, for every message saying none or several did: the
    settings an operator checks against what the rig sends (an empty field matches any)."""
    return f"name={stream.name!r}, type={stream.type!r}, source_id={stream.source_id!r}"


def near_misses(stream: StreamSettings, wait_s: float = 0.5, most: int = 5) -> str:
    """The streams on this network that share a name, type or source id with ``stream``, for
    the message that none matched: a rig whose name or type differs from ``[stream]`` (another
    tool's ``EEG`` stream, say) shows there, where "none found" alone looked like no rig."""
    seen = pylsl.resolve_streams(wait_time=wait_s)

    def shared(info: pylsl.StreamInfo) -> int:  # the source id the most telling, then the name
        return (
            4 * bool(stream.source_id and info.source_id() == stream.source_id)
            + 2 * bool(stream.name and info.name() == stream.name)
            + bool(stream.type and info.type() == stream.type)
        )

    unique = {info.uid(): info for info in seen}.values()
    near = sorted((info for info in unique if shared(info)), key=shared, reverse=True)
    if not seen:
        return (
            "No LSL stream at all is seen here (where multicast is blocked: KnownPeers, "
            "deploy/README.md, Network)."
        )
    if not near:
        return f"None of the {len(seen)} LSL streams seen here shares its name, type or source_id."
    listed = "; ".join(describe(info) for info in near[:most])
    more = f" and {len(near) - most} more" if len(near) > most else ""
    return f"Streams seen here that share its name, type or source_id: {listed}{more}."


OTHERS_WAIT_S = 0.2
"""How long :func:`resolve`, once a matching stream answered, waits for another to answer too:
the sources on this network answer a query within milliseconds."""


def resolve(stream: StreamSettings, timeout: float) -> pylsl.StreamInfo | None:
    """The stream matching ``stream`` found within ``timeout`` seconds, or None.

    Raises
    ------
    AmbiguousStreamError
        If another stream matches as well (a simulated rig left running beside the real
        one, a field left empty that both fit): whichever answered first would be read, on
        each reconnect maybe the other.
    """
    query = predicate(stream)
    found = pylsl.resolve_bypred(query, 1, timeout)
    if not found:
        return None
    if len({info.uid() for info in found}) < 2:
        found = pylsl.resolve_bypred(query, 2, OTHERS_WAIT_S) or found
    distinct = list({info.uid(): info for info in found}.values())
    if len(distinct) > 1:
        raise AmbiguousStreamError(
            f"{len(distinct)} LSL streams match {wanted(stream)}: "
            + "; ".join(f"{describe(info)} uid {info.uid()}" for info in distinct)
            + "; the rig's must be the only one: stop the other source, or set [stream] name, "
            "type and source_id to the rig's alone"
        )
    return distinct[0]


def describe(info: pylsl.StreamInfo) -> str:
    """One line naming a stream, for logs and error messages."""
    return (
        f"'{info.name()}' (type {info.type()!r}, source_id {info.source_id()!r}, "
        f"{info.channel_count()} channels at {info.nominal_srate():g} Hz on {info.hostname()})"
    )


def check_format(info: pylsl.StreamInfo, stream: StreamSettings, grid: ElectrodeGrid) -> None:
    """Refuse a stream that cannot fill the grid at the configured rate."""
    if info.channel_count() != grid.n_channels:
        raise StreamFormatError(
            f"stream {describe(info)} has {info.channel_count()} channels; the "
            f"{grid.rows}x{grid.cols} electrode grid needs exactly {grid.n_channels}"
        )
    if info.channel_format() not in _FLOAT_FORMATS:
        raise StreamFormatError(
            f"stream {describe(info)} carries channel format code {info.channel_format()}; "
            f"corticast reads floating-point voltages: float32 (cf_float32 = "
            f"{pylsl.cf_float32}) or double64 (cf_double64 = {pylsl.cf_double64})"
        )
    rate = info.nominal_srate()
    if abs(rate - stream.sample_rate_hz) > RATE_TOLERANCE * stream.sample_rate_hz:
        raise StreamFormatError(
            f"stream {describe(info)} declares {rate:g} Hz; stream.sample_rate_hz is "
            f"{stream.sample_rate_hz:g} Hz"
        )


def quiet_liblsl() -> None:
    """Keep liblsl's own INFO chatter off the terminal (warnings and errors still show), and
    the site's ``lsl_api.cfg`` in effect (``service.ingest.liblsl_config``).

    Must run before any other liblsl call in the process; later calls have no effect.
    """
    pylsl.set_config_content(quiet_config())


class ChunkPuller:
    """Pulls samples and timestamps straight into preallocated arrays.

    ``StreamInlet.pull_chunk`` builds ctypes arguments and a timestamp array on every call,
    about 40 µs per chunk on the CI machine, most of the ingest budget. This calls the same
    liblsl function through pylsl's binding with the arguments built once per connection.

    Parameters
    ----------
    inlet
        An open float32 inlet.
    samples
        (max_samples, channels) float32 C-contiguous destination, kept alive by the caller.
    timestamps
        (max_samples,) float64 destination.
    """

    def __init__(self, inlet: pylsl.StreamInlet, samples: np.ndarray, timestamps: np.ndarray):
        if samples.dtype != np.float32 or not samples.flags.c_contiguous:
            raise TypeError("'samples' must be a C-contiguous float32 array")
        if timestamps.dtype != np.float64 or timestamps.shape != samples.shape[:1]:
            raise TypeError(f"'timestamps' must be float64 of shape ({samples.shape[0]},)")
        self._inlet = inlet  # keeps the liblsl handle alive
        self._handle = inlet.obj
        self._function = pylsl.lib.lib.lsl_pull_chunk_f
        self._channels = samples.shape[1]
        self._samples = samples
        self._timestamps = timestamps
        self._error = ctypes.c_int()
        self._error_ref = ctypes.byref(self._error)

    def pull(self, offset: int, max_samples: int, timeout: float) -> int:
        """Pull up to ``max_samples`` into rows ``offset..``; wait up to ``timeout`` s for them.

        liblsl returns early only with ``timeout=0``: use a one-sample pull to wait for data,
        then ``timeout=0`` to drain what else is buffered. Returns the number of samples.

        Raises
        ------
        ValueError
            If the rows asked for do not fit the buffers (liblsl would write past their end).
        pylsl.util.LostError
            If the source is gone.
        """
        if offset < 0 or max_samples < 1 or offset + max_samples > self._samples.shape[0]:
            raise ValueError(
                f"rows {offset}..{offset + max_samples - 1} do not fit a buffer of "
                f"{self._samples.shape[0]} samples"
            )
        count = self._function(
            self._handle,
            ctypes.c_void_p(self._samples.ctypes.data + offset * self._samples.strides[0]),
            ctypes.c_void_p(self._timestamps.ctypes.data + offset * self._timestamps.strides[0]),
            ctypes.c_size_t(max_samples * self._channels),
            ctypes.c_size_t(max_samples),
            ctypes.c_double(timeout),
            self._error_ref,
        )
        if self._error.value:
            handle_error(self._error.value)
        return count // self._channels
