"""Prometheus instruments of the ingest stage (`corticast_ingest_*`)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

_CHUNK_COST_BUCKETS = (10e-6, 20e-6, 50e-6, 100e-6, 200e-6, 500e-6, 1e-3, 5e-3, 20e-3)


class IngestMetrics:
    """Counters and gauges one ingestor updates; registered on the registry given.

    Tests and the replay bench pass their own ``CollectorRegistry`` so two ingestors in one
    process never share counts.
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        self._registry = registry
        self.samples = Counter(
            "corticast_ingest_samples", "Samples received from the stream", registry=registry
        )
        self.missing_frames = Counter(
            "corticast_ingest_missing_frames",
            "Frames absent from the stream, inferred from timestamp gaps",
            registry=registry,
        )
        self.non_finite_frames = Counter(
            "corticast_ingest_nonfinite_frames",
            "Frames with more than [ingest] max_non_finite_fraction of their channels NaN or "
            "infinite, kept as missing (the frame before held over), or with a NaN or infinite "
            "timestamp, dropped (the gap they leave is filled as any gap)",
            registry=registry,
        )
        self.held_values = Counter(
            "corticast_ingest_held_values",
            "NaN or infinite values in frames kept as data, each held at its channel's last "
            "finite value",
            registry=registry,
        )
        self.held_channels = Gauge(
            "corticast_ingest_held_channels",
            "Channels held in the newest frame: NaN or infinite there, held at their last finite "
            "value (a broken contact; the wave stage masks a channel held flat as dead); none "
            "while the newest frame is kept as missing",
            registry=registry,
        )
        self.gaps = Counter(
            "corticast_ingest_gaps",
            "Timestamp gaps longer than 1.5 nominal periods",
            registry=registry,
        )
        self.out_of_order = Counter(
            "corticast_ingest_out_of_order",
            "Samples whose timestamp did not advance past the previous one",
            registry=registry,
        )
        self.reconnects = Counter(
            "corticast_ingest_reconnects",
            "Times the stream was lost and found again",
            registry=registry,
        )
        self.connected = Gauge(
            "corticast_ingest_connected", "1 while an inlet is open", registry=registry
        )
        self.staleness = Gauge(
            "corticast_ingest_staleness_seconds",
            "Seconds since the newest sample arrived, or since its timestamp if that is "
            "earlier (NaN before the first)",
            registry=registry,
        )
        self.rate = Gauge(
            "corticast_ingest_rate_hz",
            "Sample rate measured from the stream's timestamps over [ingest] rate_window_s, "
            "gaps left out (NaN until measured)",
            registry=registry,
        )
        self.stamp_lead = Gauge(
            "corticast_ingest_stamp_lead_seconds",
            "How far the newest chunk's newest sample was stamped (clock-corrected) after it "
            "arrived: negative, the link's latency, on a source stamping on the LSL clock; "
            "over 0.01 s the stream runs ahead of this host's clock and the daemon is not "
            "ready (NaN before the first chunk of a connection)",
            registry=registry,
        )
        self.chunk_cost = Histogram(
            "corticast_ingest_chunk_cost_seconds",
            "Time to drain one chunk from the inlet, map it and write it to the ring buffer "
            "(its _count is the number of chunks)",
            buckets=_CHUNK_COST_BUCKETS,
            registry=registry,
        )

    def track_blanked(self, count: Callable[[], int]) -> None:
        """Count the frames blanked (``RingBuffer.blank``) at scrape time: the ring counts
        them, on whichever thread blanks or writes them."""
        self._registry.register(_BlankedFrames(count))

    def track_staleness(self, age: Callable[[], float]) -> None:
        """Compute staleness at scrape time, so a silent stream still shows its age growing."""
        self.staleness.set_function(age)

    def track_rate(self, rate: Callable[[], float]) -> None:
        """Read the measured rate at scrape time: the ingest thread does no more for it."""
        self.rate.set_function(rate)

    def track_stamp_lead(self, lead: Callable[[], float]) -> None:
        """Read the newest chunk's stamp lead at scrape time."""
        self.stamp_lead.set_function(lead)


class _BlankedFrames(Collector):
    """``corticast_ingest_blanked_frames_total``, read from the ring when scraped."""

    def __init__(self, count: Callable[[], int]) -> None:
        self._count = count

    def collect(self) -> Iterator[CounterMetricFamily]:
        yield CounterMetricFamily(
            "corticast_ingest_blanked_frames",
            "Measured frames blanked as stimulation artefact (marked missing from the train's "
            "request to [loop] blank_after_train_ms after it)",
            value=self._count(),
        )
