"""Trains another tool delivers to the array, read from its LSL marker stream and blanked.

The daemon blanks the frames of every train it sends itself (``service.loop.closed_loop``).
A lab may also stimulate the same array from another tool (an open-loop protocol, a second
stimulator). Its trains put the same mV artefact on the frames, and unblanked the daemon reads
them as cortex: it predicts from them, scores its models on them, and may ask for a train in
answer to the artefact of someone else's. Such tools announce their trains on LSL marker
streams, as LabRecorder expects. Each stream named in ``[ingest] stimulation_marker_streams``
is read here: every sample is a train delivered at its timestamp, and the ring blanks the frames
stamped from then to ``[ingest] stimulation_marker_blank_ms`` later (``RingBuffer.blank``, which
also blanks frames already written). A sample that is a corticast marker
(``service.core.stimulation_markers``, from another daemon) is blanked for its own ``blank_s``.

The inlet corrects the marker stream's clock to this host's, as the ingestor does the rig's, so
both are stamped on one clock. A marker reaches the daemon a link's latency after its train
starts: the frames that arrived meanwhile were read as they came, and are blanked from then on.
What the daemon learns from the stream (the live scores, the blend, the AR fit) waits
``[ingest] stimulation_marker_latency_ms`` for them; a marker later than that is counted as
late and said, and the daemon forgets the scores, which may hold its artefact (``on_late``).

While a named stream is not connected the daemon does not know of that tool's trains: it is not
ready, and losing the stream while armed is a fault (``service.daemon``). An outlet sends an
inlet only what it pushes after the inlet opens, so a train announced just before (at start, or
while the stream was lost) is never heard of: each time the stream is opened, the frames from
one blank before to one blank after are blanked, as those of a train announced then would be
(the longer blank another daemon's stream describes, if it does).
A stream is not taken as read where it may not be the tool's whole record: while two streams
bear its name (the daemon's own marker stream, found by source id, aside), while it has a
nominal rate (the rig's stream or a trigger channel, no markers), or once its outlet stops
answering the resolver (a frozen program or a host off the network closes no connection).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from typing import NamedTuple

import pylsl
from prometheus_client import CollectorRegistry, Counter, Gauge
from pydantic import ValidationError
from pylsl.util import LostError

from service.core.rate_limited_log import RateLimitedLog
from service.core.stimulation_markers import (
    DEFAULT_MARKER_LATENCY_MS,
    DEFAULT_MARKER_UNHEARD_S,
    LONGEST_BLANK_KEY,
    MAX_BLANK_S,
    UNHEARD,
    AnnouncedTrain,
    MarkerStream,
    StimulationMarker,
    as_announced,
    corticast_marker_in,
    recorded_source_id,
)
from service.core.worker import BackgroundWorker
from service.ingest.lsl import describe
from service.ingest.ring_buffer import RingBuffer

_log = logging.getLogger("corticast.ingest")

_PULL_S = 0.05
"""Longest one pull waits for a marker before checking for a stop request."""
_LOOK_EVERY_S = 0.1
"""How often the resolver's results are looked at while the stream is not open."""
_OPEN_S = 1.0
"""Longest opening a stream found may take (the first clock-offset estimate takes ~0.6 s)."""
STOP_TIMEOUT_S = 3 * _OPEN_S + 1.0
"""Longest :meth:`StimulationMarkerInlet.stop` waits for the thread: an opening under way blocks
in three liblsl calls of up to ``_OPEN_S`` each (the clock offset, the open, the description),
which no stop request interrupts. An inlet left running past its stop (the worker's default
2 s) went on recording to the daemon's marker stream after the daemon closed it."""
_FAR_OFF_S = 10.0
"""A marker stamped further than this ahead of now, or whose blank ended longer than this
before now, is taken to be on another clock."""
_FORGET_AFTER_S = 1.0
"""A stream that stopped answering the resolver leaves its results after this long."""
_BUFFER = 360
"""The inlet's queue, in hundreds of markers (liblsl's unit for an irregular stream): a burst
of a tool's per-pulse markers queued while the inlet waits on the ring must not push out the
oldest ones, whose trains would then go unblanked."""


class StimulationMarkerInlet(BackgroundWorker):
    """Reads the LSL marker stream ``name`` and blanks each train's frames in ``ring``.

    Parameters
    ----------
    name
        The marker stream's LSL name (any type, channel count and format).
    source_id
        Its source id, where streams of that name come from several tools or rigs (None: any).
    ring
        The ring the rig's frames are written to, stamped on this host's LSL clock.
    blank_s
        How long after a marker its frames are blanked (a corticast marker says its own).
    latency_s
        How late after its timestamp a marker may arrive before it is counted as late: what
        the daemon learns from the stream waits that long for a frame's marker.
    metrics
        The inlets' :class:`MarkerMetrics` (:func:`marker_metrics`), shared by one daemon's
        inlets and labelled by stream; None: unregistered ones.
    announce
        Called with each train read (and its stamp) once its frames are blanked: the daemon
        pushes it on its own stimulation marker stream, so a recording holds every train it
        blanked. Not called for an :class:`AnnouncedTrain` read (already announced). Called
        too for the blank around each opening of the stream (announcement :data:`UNHEARD`).
    on_late
        Called for each marker later than ``latency_s`` onto frames already written, once its
        frames are blanked: the daemon forgets the live scores that may hold them.
    ignore_source_id
        The source id of a stream of this name that is not read: the daemon's own marker
        stream, when ``name`` is ``corticast-stimulation`` (another daemon's, read beside it).
    unheard_s
        How long the stream read may go unheard by the resolver before it is taken as gone
        (``[ingest] stimulation_marker_unheard_s``).
    """

    def __init__(
        self,
        name: str,
        ring: RingBuffer,
        *,
        source_id: str | None = None,
        blank_s: float,
        latency_s: float = DEFAULT_MARKER_LATENCY_MS / 1000,
        metrics: MarkerMetrics | None = None,
        announce: Callable[[AnnouncedTrain, float], None] | None = None,
        on_late: Callable[[], None] | None = None,
        ignore_source_id: str | None = None,
        unheard_s: float = DEFAULT_MARKER_UNHEARD_S,
    ) -> None:
        super().__init__(f"corticast-markers-{name}")
        if not (math.isfinite(blank_s) and blank_s > 0):
            raise ValueError(f"blank_s must be a positive number of seconds, got {blank_s!r}")
        self.name = name
        self.stream = MarkerStream(name=name, source_id=source_id)
        self.label = str(self.stream)
        """The stream as the config names it: in what is said of it, its metrics and status."""
        self._ring = ring
        if not (math.isfinite(latency_s) and latency_s >= 0):
            raise ValueError(f"latency_s must be a number of seconds >= 0, got {latency_s!r}")
        if not (math.isfinite(unheard_s) and unheard_s > 0):
            raise ValueError(f"unheard_s must be a positive number of seconds, got {unheard_s!r}")
        self._blank_s = blank_s
        self._latency_s = latency_s
        self._unheard_s = unheard_s
        self._announce = announce
        self._on_late = on_late
        self._ignore_source_id = ignore_source_id
        metrics = metrics if metrics is not None else marker_metrics(None)
        self._markers_total = metrics.markers.labels(self.label)
        self._late_total = metrics.late.labels(self.label)
        self._connected_gauge = metrics.connected.labels(self.label)
        self._inlet: pylsl.StreamInlet | None = None
        self._resolver: pylsl.ContinuousResolver | None = None
        self._lock = threading.Lock()
        self._markers = 0
        self._late_markers = 0
        self._read_source_id: str | None = None
        """The source id of the stream read, as a record keeps it (None: none, one too long,
        or none read yet): each train is recorded with it, so a recording's reader tells two
        streams of one name apart."""
        self._last_timestamp: float | None = None
        self._blanked_until: float | None = None
        self._problem: str | None = "not found yet"
        self._blank_log = RateLimitedLog(_log, interval_s=1.0)  # a marker per pulse: 100/s
        # A tool's every marker may be off in the same way, a hundred a second: said, not
        # repeated.
        self._far_off_log = RateLimitedLog(_log)
        self._late_log = RateLimitedLog(_log)
        self._not_corticast_log = RateLimitedLog(_log)
        self._next_look = 0.0
        self._uid: str | None = None
        """The uid of the stream read."""
        self._heard_at = 0.0
        """When the resolver last listed it (``time.monotonic()``)."""
        self._lost: str | None = None
        """Why the stream was last lost, until it is read again."""
        self._passed_over: tuple[str | None, float] = (None, 0.0)
        """The uid of a stream whose outlet went away, and until when it is not opened again
        (``time.monotonic()``): the resolver lists it for ``_FORGET_AFTER_S`` more, and
        opening it waited out ``_OPEN_S`` twice for nothing, said "found, then gone" in place
        of why it was lost, and held up a stop as long."""

    # ----------------------------------------------------------------- readers
    @property
    def connected(self) -> bool:
        """Whether the stream is open: its markers reach the ring."""
        return self._inlet is not None and self.running

    def not_connected_reason(self) -> str | None:
        """Why this stream's trains would go unblanked now (None while connected)."""
        if self.connected:
            return None
        with self._lock:
            problem = self._problem
        if self._error is not None:
            problem = f"its inlet failed: {self._error}"
        elif not self.running:
            problem = "not read (inlet stopped)"
        return (
            f"stimulation marker stream {self.label!r} not connected ({problem}): trains "
            "another tool delivers would be read as cortex"
        )

    def status(self) -> dict[str, object]:
        """For ``/status``: the stream, whether it is read, markers so far (and how many came
        late), the newest one's timestamp and the latest end of a blank one made (this host's
        LSL clock): a corticast marker says its own blank, up to an hour, and every decision
        on its frames is refused meanwhile (the ``artefact`` interlock)."""
        with self._lock:
            return {
                "name": self.name,
                "source_id": self.stream.source_id,
                "connected": self.connected,
                "markers": self._markers,
                "late_markers": self._late_markers,
                "last_marker_timestamp": self._last_timestamp,
                "blanked_until": self._blanked_until,
                "blank_ms": self._blank_s * 1000,
                "latency_ms": self._latency_s * 1000,
            }

    # ----------------------------------------------------------------- worker
    def stop(self, timeout: float = STOP_TIMEOUT_S) -> bool:
        """:meth:`BackgroundWorker.stop`, waiting out an opening under way
        (:data:`STOP_TIMEOUT_S`)."""
        return super().stop(timeout)

    def _prepare(self) -> None:
        self._set_problem("not found yet")  # started again: not looked for since
        # In the background, answering at once: a one-shot resolve may block for seconds past
        # its timeout (measured: 5.5 s for 0.5), and a stop would wait on it.
        # Both QuoteFreeText in the config: no quote ends the predicate early.
        predicate = f"name='{self.name}'"
        if self.stream.source_id is not None:
            predicate += f" and source_id='{self.stream.source_id}'"
        self._resolver = pylsl.ContinuousResolver(pred=predicate, forget_after=_FORGET_AFTER_S)

    def _work(self) -> None:
        while not self._stop_requested.is_set():
            if self._inlet is None:
                self._find()
                continue
            if (now := time.monotonic()) >= self._next_look:
                self._next_look = now + _LOOK_EVERY_S
                if (gone := self._gone(self._found(), now)) is not None:
                    self._lose(gone)
                    continue
            try:
                sample, stamp = self._inlet.pull_sample(timeout=_PULL_S)
            except LostError:
                self._passed_over = (self._uid, time.monotonic() + _FORGET_AFTER_S)
                self._lose("its outlet went away")
                continue
            if sample is not None:
                self._blank(_as_text_or_number(sample[0]), stamp)

    def _found(self) -> list[pylsl.StreamInfo]:
        """The streams of this name (and source id) the resolver sees now, less the one to
        ignore and one whose outlet just went away (:attr:`_passed_over`)."""
        passed_over, until = self._passed_over
        if time.monotonic() >= until:
            passed_over = None
        return [
            info
            for info in self._resolver.results()
            if (self._ignore_source_id is None or info.source_id() != self._ignore_source_id)
            and (passed_over is None or info.uid() != passed_over)
        ]

    def _ambiguity(self, found: list[pylsl.StreamInfo]) -> str | None:
        """Why ``found`` is not one marker stream to read (None: it is). Of two of one name,
        either read alone leaves the other's trains unblanked, said to be read; a stream at a
        regular rate (the rig's, a trigger channel) has samples that are no trains."""
        if len(found) > 1:
            if self.stream.source_id is not None:
                fix = "give each its own source id"
            else:
                fix = (
                    "give each tool's stream a name of its own, or name the one to read with "
                    "its source id in [ingest] stimulation_marker_streams "
                    f'({{name = "{self.name}", source_id = "..."}})'
                )
            return (
                f"{len(found)} streams are {self.label!r} "
                f"({', '.join(map(describe, found))}): {fix}"
            )
        if found and (rate := found[0].nominal_srate()) != pylsl.IRREGULAR_RATE:
            return (
                f"{describe(found[0])} has a nominal rate of {rate:g} Hz: a marker stream has "
                "none (every sample a train); is it the rig's stream or a trigger channel?"
            )
        return None

    def _gone(self, found: list[pylsl.StreamInfo], now: float) -> str | None:
        """Why the stream read is to be left (None: it is not): another of its name has come,
        or the resolver has not heard from it for ``unheard_s``: its program frozen or its host
        off the network close no connection, so no pull fails (liblsl's watchdog does not watch
        a stream without a rate)."""
        if (ambiguous := self._ambiguity(found)) is not None:
            return ambiguous
        if any(info.uid() == self._uid for info in found):
            self._heard_at = now
        elif now - self._heard_at > self._unheard_s:
            return (
                f"its outlet has not answered for {now - self._heard_at:.1f} s: its program "
                "frozen, or its host off the network?"
            )
        return None

    def _find(self) -> None:
        found = self._found()
        if not found:
            # Not found since it was lost: why it was stays the news.
            self._set_problem("not found" if self._lost is None else f"lost: {self._lost}")
            self._stop_requested.wait(_LOOK_EVERY_S)
            return
        if (ambiguous := self._ambiguity(found)) is not None:
            self._set_problem(ambiguous)
            self._stop_requested.wait(_LOOK_EVERY_S)
            return
        info = found[0]
        try:
            inlet = pylsl.StreamInlet(
                info,
                max_buflen=_BUFFER,
                recover=False,
                processing_flags=pylsl.proc_clocksync,
                as_numpy=True,  # a string's raw bytes: a marker that is not UTF-8 is still one
            )
            inlet.time_correction(_OPEN_S)  # taken now, not inside the first marker's pull
            inlet.open_stream(_OPEN_S)
        except (LostError, pylsl.util.TimeoutError) as err:
            self._set_problem(f"found, then gone before it opened: {err}")
            return
        blank_s = max(self._blank_s, _longest_blank_described(inlet, self.name))
        self._read_source_id = recorded_source_id(info.source_id())
        # Blanked and recorded before it is said to be read: whoever sees it connected sees
        # the opening's blanks on the daemon's marker stream too.
        self._record_unheard(blank_s, self._blank_unheard(blank_s))
        self._inlet = inlet
        self._uid, self._heard_at = info.uid(), time.monotonic()
        self._connected_gauge.set(1)
        self._set_problem(None)
        self._lost = None
        _log.info(
            "reading stimulation markers from %s; frames from %.0f ms before to %.0f ms after "
            "now blanked (a train it announced before it was read is not known)",
            describe(info), blank_s * 1000, blank_s * 1000,
        )  # fmt: skip

    def _record_unheard(self, blank_s: float, opened: float) -> None:
        """Record the opening's blanks as the daemon's blanks are, so a replay or training
        blanks them alike: the blank before the opening and the one after (each within a
        marker's longest)."""
        unheard = AnnouncedTrain(
            source=self.name, source_id=self._read_source_id, blank_s=blank_s,
            announcement=UNHEARD,
        )  # fmt: skip
        for stamp in (opened - blank_s, opened):
            self._pass_on(unheard, stamp)

    def _blank_unheard(self, blank_s: float) -> float:
        """Blank what a train announced just before the stream was opened would have, its
        marker saying ``blank_s``: from that long before now (its earliest stamp that reaches
        now) to that long after (its latest end). Returns now."""
        now = pylsl.local_clock()
        self._blank_span(now - blank_s, now + blank_s)
        return now

    def _blank_span(self, start: float, end: float) -> int:
        """Blank the ring's frames stamped in [``start``, ``end``] and keep ``end`` for
        ``blanked_until``; returns how many frames already written it blanked."""
        blanked = self._ring.blank(start, end)
        with self._lock:
            self._blanked_until = max(end, self._blanked_until or end)
        return blanked

    def _lose(self, why: str) -> None:
        # Why, before it is said not to be read: whoever sees it not connected (readiness, a
        # disarm's reason) is told why, not "None".
        self._set_problem(f"lost: {why}")
        self._lost = why
        self._close_inlet()
        _log.error(
            "stimulation marker stream %r lost (%s): trains another tool delivers now are not "
            "blanked; looking for it again", self.label, why,
        )  # fmt: skip

    def _blank(self, value: object, stamp: float) -> None:
        """Blank the frames of the train ``value`` announces at ``stamp``, then announce it."""
        text = value if isinstance(value, str) else str(value)
        marker = None
        try:
            marker = corticast_marker_in(text)
        except ValidationError as err:  # blanked all the same, for the default time
            self._not_corticast_log.log(
                logging.WARNING,
                "marker on %r is not a corticast marker (%s); blanking %.0f ms",
                self.label, str(err).splitlines()[0], self._blank_s * 1000,
            )  # fmt: skip
        train = as_announced(self.name, text, self._blank_s, marker, self._read_source_id)
        now = pylsl.local_clock()
        if not math.isfinite(stamp):  # when is unknown: blanked from now, not skipped
            self._far_off_log.log(
                logging.WARNING,
                "marker on %r has timestamp %r; blanking from now", self.label, stamp,
            )  # fmt: skip
            stamp = now
        elif stamp - now > _FAR_OFF_S or stamp + train.blank_s < now - _FAR_OFF_S:
            # Not on this host's LSL clock (a tool stamping its own time base): its train is
            # happening about now, whatever the stamp says. Blanked and announced from now
            # only: a blank far ahead would be kept until then (forever, for time.time()).
            # One stamped long ago whose blank reaches about now is on this clock: another
            # daemon's record of the blank before it opened a stream, or of a train whose
            # verdict came late (a failed one waits out two ACK deadlines).
            self._far_off_log.log(
                logging.ERROR,
                "marker on %r stamped %.1f s from now: is that tool stamping on the LSL clock? "
                "blanking from now",
                self.label, stamp - now,
            )  # fmt: skip
            stamp = now
        blanked = self._blank_span(stamp, stamp + train.blank_s)
        try:
            self._after_blank(train, marker, stamp, blanked)
        finally:
            # Counted last: whoever sees it counted sees it said and passed on too.
            self._markers_total.inc()
            with self._lock:
                self._markers += 1
                self._last_timestamp = stamp

    def _after_blank(
        self,
        train: AnnouncedTrain,
        marker: StimulationMarker | AnnouncedTrain | None,
        stamp: float,
        blanked: int,
    ) -> None:
        """Count ``train`` late if it is, say its ``blanked`` frames, and pass it on (unless
        ``marker`` was already announced)."""
        # Another daemon's record of the blank before its opening of a stream is stamped that
        # blank before it is pushed, by design, and is no train: not a late marker.
        opening = isinstance(marker, AnnouncedTrain) and marker.announcement == UNHEARD
        if blanked and not opening and (late_s := pylsl.local_clock() - stamp) > self._latency_s:
            self._count_late(late_s, blanked)
        self._blank_log.log(
            logging.INFO,
            "train announced on %r at %.3f: frames to %.0f ms after it blanked (%d already "
            "written)", self.label, stamp, train.blank_s * 1000, blanked,
        )  # fmt: skip
        # One already announced (another daemon's record of a third tool's train) is not
        # passed on again: two daemons reading each other's streams would echo it forever.
        if not isinstance(marker, AnnouncedTrain):
            self._pass_on(train, stamp)

    def _count_late(self, late_s: float, blanked: int) -> None:
        """Count and say a marker that came after the frames it blanked may have been read:
        the live scores the model-health interlock judges may hold its artefact."""
        self._late_total.inc()
        with self._lock:
            self._late_markers += 1
        self._late_log.log(
            logging.WARNING,
            "marker on %r arrived %.0f ms after its timestamp, later than [ingest] "
            "stimulation_marker_latency_ms (%.0f): %d frames of its train were written before "
            "it, and the live scores, the blend and the AR fit may have read them as cortex",
            self.label, late_s * 1000, self._latency_s * 1000, blanked,
        )  # fmt: skip
        if self._on_late is not None:  # raising, it ends the inlet: a fault while armed
            self._on_late()

    def _pass_on(self, train: AnnouncedTrain, stamp: float) -> None:
        """Announce ``train``, blanked from ``stamp``, on the daemon's marker stream."""
        if self._announce is None:
            return
        try:
            self._announce(train, stamp)
        except Exception:  # the blanking stands; the record of it is what was lost
            _log.exception("train announced on %r not passed on", self.label)

    def _set_problem(self, problem: str | None) -> None:
        with self._lock:
            self._problem = problem

    def _release(self) -> None:
        self._resolver = None

    def _finished(self) -> None:
        # Why, before it is said not to be read (as _lose says it): the thread ends after.
        self._set_problem("not read (inlet stopped)")
        self._close_inlet()

    def _close_inlet(self) -> None:
        """Stop reading the stream (its markers no longer reach the ring)."""
        inlet, self._inlet = self._inlet, None
        self._connected_gauge.set(0)
        if inlet is not None:
            inlet.close_stream()


def _longest_blank_described(inlet: pylsl.StreamInlet, name: str) -> float:
    """The longest blank the stream's description says its markers may say (another daemon's
    marker stream: ``service.loop.marker_outlet``), at most a marker's longest; 0 where it says
    none, or nothing readable (the configured blank then stands)."""
    try:
        text = inlet.info(_OPEN_S).desc().child_value(LONGEST_BLANK_KEY)
    except (LostError, pylsl.util.TimeoutError):
        return 0.0
    if not text:
        return 0.0
    try:
        longest = float(text)
    except ValueError:
        longest = math.nan
    if not (math.isfinite(longest) and longest >= 0):
        _log.warning(
            "stimulation marker stream %r describes its longest blank as %r, not a number of "
            "seconds; its trains before it was read are blanked for the configured time",
            name, text[:50],
        )  # fmt: skip
        return 0.0
    if longest > MAX_BLANK_S:
        _log.warning(
            "stimulation marker stream %r describes its longest blank as %r s, beyond a "
            "marker's longest (%.0f s): its trains before it was read are blanked for that",
            name, text[:50], MAX_BLANK_S,
        )  # fmt: skip
        return MAX_BLANK_S
    return longest


def _as_text_or_number(value: object) -> object:
    """A marker's first channel as the inlet (``as_numpy``) gives it: a string stream's raw
    bytes as text (bytes that are not UTF-8 replaced: still a train, and text that can be
    logged and recorded), a number as a Python number."""
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return value.item() if hasattr(value, "item") else value


class MarkerMetrics(NamedTuple):
    """The metrics every marker inlet of one daemon shares, labelled by stream name."""

    markers: Counter
    late: Counter
    connected: Gauge


def marker_metrics(registry: CollectorRegistry | None) -> MarkerMetrics:
    """One daemon's :class:`MarkerMetrics`, registered in ``registry``."""
    return MarkerMetrics(
        markers=Counter(
            "corticast_ingest_stimulation_markers",
            "Trains announced on a stimulation marker stream of another tool "
            "([ingest] stimulation_marker_streams); each one's frames are blanked",
            ["stream"],
            registry=registry,
        ),
        late=Counter(
            "corticast_ingest_late_stimulation_markers",
            "Markers that arrived later after their timestamp than [ingest] "
            "stimulation_marker_latency_ms, onto frames already written: the live scores "
            "(the model-health interlock's) may hold their trains' artefact",
            ["stream"],
            registry=registry,
        ),
        connected=Gauge(
            "corticast_ingest_stimulation_marker_stream_connected",
            "1 while the stimulation marker stream is read; 0: that tool's trains are not "
            "blanked (the daemon is not ready, and disarms if armed)",
            ["stream"],
            registry=registry,
        ),
    )
