"""The PUB socket: every prediction (and wave, stimulation and status message) goes out here.

A send never blocks: when a subscriber's queue is full the message is dropped (for that
subscriber, or, with ``drop_policy = "counted"``, for everyone and counted here), because a
researcher's stalled notebook must never delay the next prediction. Each topic
numbers its messages (``msg_seq``) so a subscriber sees exactly what it missed, and can fetch
a missed prediction from the query socket, which serves this publisher's history.

Header of a ``prediction`` message (schema ``corticast.zmq/1``; times in seconds)::

    schema, topic, msg_seq, sent_at       set on every message (sent_at: pylsl.local_clock)
    shape, dtype                          [16, 18, 20], "float32" (little-endian, C order)
    input_seq, input_timestamp            newest input frame: ring sequence number, LSL time
    first_frame_timestamp                 LSL time of the first predicted frame
    frame_period_s, sample_rate_hz        predicted frame k is at first + k * frame_period_s
    missing_frames, skipped_before        from the scheduler (inference.scheduler.Prediction)
    predictor                             backend, device, precision, mode, model,
                                          model_path, model_sha256, irregular (the model
                                          takes the past frames' times)
    latency                               arrived_at, available_at, started_at,
                                          finished_at, handed_at, published_at (local
                                          clock), inference_s, age_s (available_at ->
                                          published_at); available_at is the newest input
                                          frame's arrival, or its timestamp where earlier
                                          (arrived_at added within schema 1)
    blend_weights                         per predicted frame, the model's weight in the
                                          payload, in [0, 1]: frame k is persistence (the
                                          last input frame) + w[k] (model - persistence)
                                          + v[k] (ar - persistence); absent from daemons
                                          that do not blend (added within schema 1: older
                                          clients ignore it)
    blend_ar_weights                      v[k]: the live fitted AR baseline's weight per
                                          predicted frame, w[k] + v[k] <= 1 (0 before the AR
                                          is fitted); absent where blend_weights is

Header of a ``wave`` message (``service.loop.closed_loop``), payload float32 ``[T, 6]``: one row
per frame, the measured past then the predicted frames::

    input_seq, input_timestamp            the prediction's newest input frame
    fields                                the payload's columns: speed_mps, direction_deg,
                                          pgd, amplitude_uv, frequency_hz, pattern
    patterns                              names of the ``pattern`` column's codes 0, 1, ...
                                          (planar, radial, rotating, disorganised)
    n_predicted                           how many of the T rows, at the end, are predicted

Header of a ``stim`` message (no payload), one per stimulation request the policy made::

    input_seq                             the prediction it was decided on
    policy                                check, reason, lead_time_s, lead_time_left_s (less
                                          the data's age), parameters (the train asked for)
    bridge                                the bridge's decision as its audit log records it
                                          (outcome, interlocks, reasons, request, health, ...);
                                          null without a bridge
    blanked                               from_timestamp, to_timestamp (local clock): frames
                                          blanked as the train's artefact; null if none

Header of a ``status`` message (no payload), published by the daemon every ``[zmq]
status_period_s`` (1 s) and at once when it is armed or disarmed or its readiness changes; the
part of ``/status`` a subscriber watches the loop by, under the same names
(``service.daemon.status.status_topic_header``; the whole document is the ``status`` query's)::

    armed, ready, not_ready_reasons       as /status: may it stimulate, may it be armed, why not
    stream                                connected, fresh, newest_age_s, measured_rate_hz,
                                          rate_problem, stamp_lead_s, stamp_lead_problem,
                                          missing_frames, blanked_frames, gaps, reconnects
    model                                 model (its name), healthy, health (state, scored,
                                          needed, summary, model_psnr_db, persistence_psnr_db)
    scheduler                             stride, predictions, skipped_windows
    latency_ms                            inference_p50/_p99, age_p50/_p99 (recent predictions),
                                          decision_age_p50/_p99 (the data's, at recent
                                          policy decisions)
    bridge                                connected, dry_run, last_disarm_reason,
                                          last_disarm_cause, minute_budget_left,
                                          day_budget_left, error, arming_refused; null
                                          without a bridge
    faults, supervisor_steps_failing      faults by stage so far; repair steps failing now
    age_s                                 how old the document was when sent (0.0: rendered
                                          for this message; at most ``[api]
                                          snapshot_max_age_s``), as the status query's reply
                                          says it (added within schema 1)
"""

from __future__ import annotations

import dataclasses
import functools
import threading
from collections.abc import Callable
from types import TracebackType
from typing import Any, Self

import numpy as np
import pylsl
import zmq
from prometheus_client import CollectorRegistry

from service.core.checks import check_choice, check_positive, check_type
from service.inference.predictor import PredictorInfo
from service.inference.scheduler import Prediction
from service.zmq_api._history import PredictionHistory, Stored
from service.zmq_api._ipc_access import grant_access
from service.zmq_api._metrics import PublisherMetrics
from service.zmq_api._server import ServerSocket
from service.zmq_api.settings import ZmqSettings
from service.zmq_api.wire import (
    DTYPE_NAME,
    RESERVED_KEYS,
    SCHEMA,
    TOPICS,
    encode_header,
    payload_bytes,
)

MAX_SUBSCRIPTION_BYTES = 1024
"""A larger message from a subscriber disconnects it unread (ZMQ_MAXMSGSIZE). A subscription
is a flag byte and a topic prefix, the longest useful one 11 bytes; the limit also bounds the
handshake's commands, of which CURVE's INITIATE is about 300 bytes (more with a routing id of
up to 255). Without a limit a PUB socket took a subscription of any size into its topic tree,
in the loop's process, at about 100 bytes of memory per byte sent: one of 20 MB took 2.1 GB.
It bounds each subscription, not their number: libzmq keeps every distinct one a subscriber
sends (``XPUB_MANUAL`` as well), so 20,000 of 1 KB still take 0.9 GB; nor the frames of one
message: a multi-part message a peer leaves unfinished is held whole (a million frames of 200
bytes took 394 MB). No libzmq option bounds either. Only who may connect does: CURVE, the ipc
endpoint's file permissions, and for plain loopback TCP (every local user) the host's firewall
(``deploy/README.md``, "Who may connect to ZeroMQ")."""


def prediction_message(
    prediction: Prediction,
    info: PredictorInfo,
    sample_rate_hz: float,
    published_at: float | None = None,
    clock: Callable[[], float] = pylsl.local_clock,
    blend_weights: np.ndarray | None = None,
    blend_ar_weights: np.ndarray | None = None,
) -> tuple[dict[str, Any], np.ndarray]:
    """The header fields (all but those :meth:`ZmqPublisher.publish` adds) and the payload.

    Parameters
    ----------
    prediction
        What the scheduler handed on.
    info
        The predictor that made it: a subscriber can tell which weights produced each frame,
        across a model hot-swap too.
    sample_rate_hz
        The stream's nominal rate: the predicted frames follow the newest input at this rate.
    published_at
        Local-clock time of publication (default: now); ``age_s`` is measured to it.
    blend_weights
        The model's weight per predicted frame in ``prediction.future`` (the rest is
        persistence and, with ``blend_ar_weights``, the live AR baseline), or None to leave
        the field out.
    blend_ar_weights
        The live AR baseline's weight per predicted frame, or None to leave the field out.
    """
    check_type("prediction", prediction, Prediction)
    check_type("info", info, PredictorInfo)
    check_positive("sample_rate_hz", sample_rate_hz)
    published = clock() if published_at is None else published_at
    period = 1.0 / sample_rate_hz
    header = {
        "input_seq": int(prediction.input_seq),
        "input_timestamp": float(prediction.input_timestamp),
        "first_frame_timestamp": float(prediction.input_timestamp) + period,
        "frame_period_s": period,
        "sample_rate_hz": float(sample_rate_hz),
        "missing_frames": int(prediction.missing_frames),
        "skipped_before": int(prediction.skipped_before),
        "predictor": dict(_predictor_fields(info)),
        "latency": {
            "arrived_at": (
                prediction.available_at if prediction.arrived_at is None else prediction.arrived_at
            ),
            "available_at": prediction.available_at,
            "started_at": prediction.started_at,
            "finished_at": prediction.finished_at,
            "handed_at": prediction.handed_at,
            "published_at": published,
            "inference_s": prediction.inference_s,
            "age_s": published - prediction.available_at,
        },
    }
    for name, given in (("blend_weights", blend_weights), ("blend_ar_weights", blend_ar_weights)):
        if given is None:
            continue
        weights = np.asarray(given, dtype=np.float64)
        if weights.shape != (prediction.future.shape[0],):
            raise ValueError(
                f"'{name}' must have one weight per predicted frame "
                f"({prediction.future.shape[0]},), got shape {weights.shape}"
            )
        header[name] = weights.tolist()
    return header, prediction.future


@functools.lru_cache(maxsize=8)
def _predictor_fields(info: PredictorInfo) -> tuple[tuple[str, str], ...]:
    """``dataclasses.asdict`` costs ~10 µs, half of a publish; the predictor rarely changes."""
    return tuple(dataclasses.asdict(info).items())


class ZmqPublisher:
    """Binds the PUB socket; publishes from the scheduler thread; keeps the query history.

    Sends are serialised by a lock held only for the non-blocking send, so the wave, stim and
    status topics may be published from other threads than the scheduler's without sharing a
    ZeroMQ socket unsafely.

    Parameters
    ----------
    settings
        Endpoint, high-water mark, drop policy, history size and CURVE keys.
    registry
        Prometheus registry of ``corticast_zmq_messages_total`` and
        ``corticast_zmq_dropped_messages_total``.
    clock
        Local clock (``pylsl.local_clock``), the one every other corticast time uses.
    io_thread_priority
        ``(policy, priority)`` (``os.SCHED_FIFO``, 10) for the I/O thread that sends every
        message, which would otherwise wait behind whatever runs at the process's priority;
        None leaves it there. Only where permitted: libzmq aborts the process if it is not.
    """

    def __init__(
        self,
        settings: ZmqSettings | None = None,
        *,
        registry: CollectorRegistry | None = None,
        clock: Callable[[], float] = pylsl.local_clock,
        io_thread_priority: tuple[int, int] | None = None,
    ) -> None:
        self.settings = settings if settings is not None else ZmqSettings()
        check_type("settings", self.settings, ZmqSettings)
        self.metrics = PublisherMetrics(registry if registry is not None else CollectorRegistry())
        self.history = PredictionHistory(self.settings.history)
        self._clock = clock
        self._context_options = (
            {}
            if io_thread_priority is None
            else {
                zmq.THREAD_SCHED_POLICY: io_thread_priority[0],
                zmq.THREAD_PRIORITY: io_thread_priority[1],
            }
        )
        self._server: ServerSocket | None = None
        self._lock = threading.Lock()
        # Counters survive stop()/start(): a subscriber sees a gap, never a repeated number.
        self._msg_seq = dict.fromkeys(TOPICS, 0)

    def start(self) -> Self:
        """Bind the socket (errors, including a refused insecure bind, reach the caller)."""
        with self._lock:
            if self._server is not None:
                raise RuntimeError("ZmqPublisher is already started; call stop() before start()")
            options = {zmq.SNDHWM: self.settings.send_hwm, zmq.MAXMSGSIZE: MAX_SUBSCRIPTION_BYTES}
            if self.settings.drop_policy == "counted":
                # Without it a PUB socket drops silently per subscriber and never says so.
                options[zmq.XPUB_NODROP] = 1
            server = ServerSocket(
                self.settings, zmq.PUB, "pub_endpoint", options, self._context_options,
                also_endpoint_name="pub_ipc_endpoint",
            )  # fmt: skip
            if server.also_endpoint is not None:
                try:
                    grant_access(
                        server.also_endpoint, self.settings.pub_ipc_mode,
                        self.settings.pub_ipc_group,
                    )  # fmt: skip
                except BaseException:
                    server.close()
                    raise
            self._server = server
        return self

    def stop(self) -> None:
        """Close the socket, discarding unsent messages; idempotent."""
        with self._lock:
            server, self._server = self._server, None
        if server is not None:
            server.close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self._server is not None

    @property
    def endpoint(self) -> str:
        """The bound endpoint, with the port the OS chose for ``tcp://HOST:*``."""
        server = self._server
        if server is None:
            raise RuntimeError("ZmqPublisher is not started; call start() first")
        return server.endpoint

    @property
    def ipc_endpoint(self) -> str | None:
        """The bound ``pub_ipc_endpoint``, or None when none is set."""
        server = self._server
        if server is None:
            raise RuntimeError("ZmqPublisher is not started; call start() first")
        return server.also_endpoint

    def publish(self, topic: str, header: dict[str, Any], payload: np.ndarray | None) -> bool:
        """Send ``[topic, header JSON, payload]`` without blocking.

        Parameters
        ----------
        topic
            One of ``prediction``, ``wave``, ``stim``, ``status``.
        header
            JSON-able fields; numpy scalars are converted and NaN/inf become null. The keys
            ``schema``, ``topic``, ``msg_seq``, ``sent_at``, ``shape``, ``dtype`` are added
            here and may not be supplied.
        payload
            A float32 array of any shape (sent little-endian, C order), or None.

        Returns
        -------
        bool
            False when the message was dropped (a subscriber's queue was full).
        """
        return self._publish(topic, header, payload, self._clock())

    def publish_prediction(
        self,
        prediction: Prediction,
        info: PredictorInfo,
        sample_rate_hz: float,
        *,
        blend_weights: np.ndarray | None = None,
        blend_ar_weights: np.ndarray | None = None,
    ) -> bool:
        """Publish ``prediction`` on ``prediction`` and keep it for the query socket.

        It is kept even when the send is dropped: that is the prediction a subscriber that
        sees the ``msg_seq`` gap will ask for. Returns False when the send was dropped.
        ``blend_weights``, ``blend_ar_weights``: see :func:`prediction_message`.
        """
        now = self._clock()
        header, payload = prediction_message(
            prediction, info, sample_rate_hz, published_at=now,
            blend_weights=blend_weights, blend_ar_weights=blend_ar_weights,
        )  # fmt: skip
        seq = int(prediction.input_seq)
        return self._publish(
            "prediction", header, payload, now,
            before_send=lambda frame, data: self.history.add(Stored(seq, frame, data)),
        )  # fmt: skip

    def _publish(
        self,
        topic: str,
        header: dict[str, Any],
        payload: np.ndarray | None,
        sent_at: float,
        before_send: Callable[[bytes, bytes], None] | None = None,
    ) -> bool:
        """Encode and send; ``before_send`` gets the frames first, so that whatever it stores
        (the query history) is there before any subscriber can have the message and ask."""
        check_choice("topic", topic, TOPICS)
        check_type("header", header, dict)
        clash = RESERVED_KEYS.intersection(header)
        if clash:
            raise ValueError(
                f"'header' must not set {sorted(clash)}: the publisher sets "
                f"{sorted(RESERVED_KEYS)}, got keys {sorted(header)}"
            )
        full = {"schema": SCHEMA, "topic": topic, "sent_at": sent_at}
        if payload is not None:
            data, shape = payload_bytes("payload", payload)
            full.update(shape=shape, dtype=DTYPE_NAME)
        else:
            data = b""
        full.update(header)
        with self._lock:
            if self._server is None:
                raise RuntimeError("ZmqPublisher is not started; call start() first")
            full["msg_seq"] = self._msg_seq[topic]
            frame = encode_header(full)  # a header it refuses takes no number: no false gap
            self._msg_seq[topic] += 1
            if before_send is not None:
                before_send(frame, data)
            try:
                self._server.socket.send_multipart([topic.encode(), frame, data], flags=zmq.NOBLOCK)
            except zmq.Again:
                self.metrics.dropped[topic].inc()
                return False
        self.metrics.messages[topic].inc()
        return True
