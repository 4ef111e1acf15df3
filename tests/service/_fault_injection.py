"""Fault injection around real parts, for the daemon's tests: a model load or an inference
held at a gate (a TensorRT engine build that takes minutes, a GPU call that does not return),
a model file that will not load. Each wraps the real thing and changes only its timing or
makes it fail; nothing else is stood in for."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime
from onnx import helper, numpy_helper
from onnxruntime.capi.onnxruntime_pybind11_state import Fail as OrtFail

import service.daemon.daemon
from service.zmq_api.query import QueryServer

GATE_S = 60.0
"""Longest any gate holds (so a test that fails never hangs for ever)."""


class CrashingPredictor:
    """A backend that fails mid-run (a GPU error, a corrupted session): every prediction
    raises. Swapped in under a running scheduler, with the real model's ``info``."""

    def __init__(self, info: Any) -> None:
        self.info = info

    def predict(self, window: Any, newest_seq: Any = None, past_times: Any = None) -> Any:
        raise RuntimeError("simulated inference failure")

    def warmup(self) -> None:
        """Nothing to warm."""

    def close(self) -> None:
        """Nothing to release."""


def non_finite_model(window: Path, destination: Path, where: tuple[tuple[int, ...], ...]) -> Path:
    """A copy of the window graph ``window`` (metadata and all) whose output is multiplied by
    NaN at the ``where`` indices of (1, horizons, 1, rows, cols) and by 1 elsewhere: a bad
    export, which loads and warms up as the real one does. Returns ``destination``."""
    model = onnx.load(str(window))
    [output] = model.graph.output
    shape = tuple(d.dim_value for d in output.type.tensor_type.shape.dim)
    poison = np.ones(shape, np.float32)
    for index in where:
        poison[index] = np.nan
    raw = f"{output.name}_before_poison"
    for node in model.graph.node:
        node.output[:] = [raw if name == output.name else name for name in node.output]
    model.graph.initializer.append(numpy_helper.from_array(poison, "poison"))
    model.graph.node.append(helper.make_node("Mul", [raw, "poison"], [output.name]))
    onnx.checker.check_model(model)
    onnx.save(model, str(destination))
    return destination


class HeldPredictor:
    """A real predictor whose predictions can be held: once :attr:`hold` is set, the next
    ``predict`` sets :attr:`inside` and waits for :attr:`release`. :meth:`close` records
    whether an inference was in progress when it was called. With :attr:`takes_s` set, each
    ``predict`` takes that much longer and returns (a model too slow for the host)."""

    def __init__(self, real: Any) -> None:
        self._real = real
        self.takes_s = 0.0
        self._never = threading.Event()
        self.hold = threading.Event()
        self.inside = threading.Event()
        self.release = threading.Event()
        self._predicting = 0
        self.closed = False
        self.closed_while_predicting = False

    def __getattr__(self, name: str) -> Any:  # info, metadata, warmup ...: the real model's
        return getattr(self._real, name)

    def predict(self, window, newest_seq=None, past_times=None):
        self._predicting += 1
        try:
            if self.hold.is_set():
                self.inside.set()
                self.release.wait(GATE_S)
            self._never.wait(self.takes_s)
            return self._real.predict(window, newest_seq, past_times)
        finally:
            self._predicting -= 1

    def close(self) -> None:
        self.closed = True
        self.closed_while_predicting |= self._predicting > 0
        self._real.close()


class ModelLoads:
    """Replaces ``service.daemon.daemon.predictor_from_settings`` (the daemon's one way to load a
    model) for the test's lifetime (``monkeypatch``), then:

    * :meth:`slow`: every load builds the real model, sets :attr:`loaded` and waits for
      :attr:`release` before returning it (a slow load);
    * :meth:`failing`: every load raises (a model file that has become unreadable);
    * :meth:`normal`: real loads again.

    Every model loaded is returned as a :class:`HeldPredictor` (kept in :attr:`made`), which
    behaves as the real one until held; :attr:`attempts` counts loads.
    """

    def __init__(self, monkeypatch) -> None:
        self._real = service.daemon.daemon.predictor_from_settings
        self._mode = "normal"
        self.loaded, self.release = threading.Event(), threading.Event()
        self.made: list[Any] = []
        self.attempts = 0
        self._lock = threading.Lock()
        monkeypatch.setattr(service.daemon.daemon, "predictor_from_settings", self._load)

    def slow(self) -> ModelLoads:
        self._mode = "slow"
        return self

    def failing(self) -> ModelLoads:
        self._mode = "failing"
        return self

    def normal(self) -> ModelLoads:
        self._mode = "normal"
        return self

    def _load(self, *args: Any) -> Any:
        with self._lock:
            self.attempts += 1
        if self._mode == "failing":
            raise OSError("simulated model load failure: the file cannot be read")
        predictor = HeldPredictor(self._real(*args))
        self.made.append(predictor)
        if self._mode == "slow":
            self.loaded.set()
            self.release.wait(GATE_S)
        return predictor


def sessions_out_of_descriptors(monkeypatch, failing: int = 1) -> list[str]:
    """ONNX Runtime's ``failing``-th session build (counted from 1) fails as a process out of
    file descriptors makes it fail ("system error number 24": the message of a real EMFILE,
    tests/service/inference/test_inference.py's child), every other is built for real.
    Returns the paths built, in order, the failed one too."""
    real, built = onnxruntime.InferenceSession, []

    def session(path: str, *args: Any, **kwargs: Any) -> Any:
        built.append(path)
        if len(built) == failing:
            raise OrtFail(
                f"[ONNXRuntimeError] : 1 : FAIL : Load model from {path} failed:system error "
                "number 24"
            )
        return real(path, *args, **kwargs)

    monkeypatch.setattr(onnxruntime, "InferenceSession", session)
    return built


def thread_refused(
    monkeypatch, name: str, *, once: bool = False, error: Exception | None = None
) -> list[str]:
    """Each thread named ``name`` (with ``once``, only the first) fails to start as any does
    where threads ran out (the message Python gives then, or ``error``: a ``MemoryError`` for
    its stack); every other starts for real. The threads made meanwhile are of a subclass of
    ``threading.Thread``, so code must look it up as it makes one (``threading.Thread(...)``).
    Returns the names refused, as they are."""
    real, refused = threading.Thread, []

    class Refused(real):
        def start(self) -> None:
            if self.name == name and not (once and refused):
                refused.append(self.name)
                raise error or RuntimeError("can't start new thread")
            super().start()

    monkeypatch.setattr(threading, "Thread", Refused)
    return refused


class Call:
    """``function()`` on a thread of its own; :attr:`done` is set when it has returned or
    raised (:attr:`result`, :attr:`error`)."""

    def __init__(self, function: Any, name: str = "test-call") -> None:
        self.done = threading.Event()
        self.result: Any = None
        self.error: BaseException | None = None
        self._function = function
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.result = self._function()
        except BaseException as err:  # handed to the test, which asserts on it
            self.error = err
        finally:
            self.done.set()


def socket_closed_at_first_request(closed: threading.Event) -> type[QueryServer]:
    """A QueryServer whose own thread closes its socket at the first request it reads (in that
    thread: a ZeroMQ socket is not thread-safe), sets ``closed``, and so fails the reply's
    send with ``ZMQError`` (ENOTSOCK), which ends the thread as any ZeroMQ error there would.
    Once ``closed`` is set it answers as the real server does."""

    class SocketClosedUnderIt(QueryServer):
        def _reply(self, frames: list[bytes]) -> list[bytes]:
            if not closed.is_set():
                closed.set()
                self._server.socket.close(linger=0)
            return super()._reply(frames)

    return SocketClosedUnderIt


def socket_closed_at_every_start(starts: list[float]) -> type[QueryServer]:
    """A QueryServer whose own thread closes its socket as soon as it starts, every time it is
    started, so that its first poll fails with ``ZMQError`` (ENOTSOCK) and ends the thread: a
    fault that comes back after every restart. Each start's monotonic time goes to ``starts``
    (taken as it begins, in the starting thread)."""

    class SocketClosedAtEveryStart(QueryServer):
        def _prepare(self) -> None:
            starts.append(time.monotonic())
            super()._prepare()

        def _work(self) -> None:
            self._server.socket.close(linger=0)
            super()._work()

    return SocketClosedAtEveryStart


def socket_closed_then_no_restart(starts: list[float]) -> type[QueryServer]:
    """:func:`socket_closed_at_every_start`'s server, whose starts after the first fail in
    ``_prepare`` as a bind to an endpoint another process took meanwhile would: the supervisor's
    restart keeps failing, the thread's failure unchanged."""
    closing = socket_closed_at_every_start(starts)

    class NotStartedAgain(closing):
        def _prepare(self) -> None:
            if starts:
                starts.append(time.monotonic())
                raise OSError("cannot bind 'query_endpoint': simulated: Address already in use")
            super()._prepare()

    return NotStartedAgain
