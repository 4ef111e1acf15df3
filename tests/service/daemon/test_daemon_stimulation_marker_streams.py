"""Another tool stimulating the same array, announcing its trains on an LSL marker stream
(``[ingest] stimulation_marker_streams``): the whole daemon, a real rig over LSL, the emulator
over UDP, uvicorn. Until the stream is read the daemon is not ready; a marker blanks its
train's frames in the ring the loop reads, and the daemon passes the train on on its own marker
stream; the stream lost while armed disarms."""

from __future__ import annotations

import math
import threading
import time

import pylsl
import pytest

from firmware_bridge import StimulationBridge, read_audit_log
from service.config import Settings
from service.core.stimulation_markers import STREAM_NAME as STIMULATION_STREAM
from service.core.stimulation_markers import UNHEARD, AnnouncedTrain, parse_marker
from service.daemon.daemon import Daemon
from service.ingest.stimulation_marker_inlet import StimulationMarkerInlet
from service.loop.ar_baseline import ArBaseline
from service.loop.marker_outlet import MarkerOutlet
from tests.service._loop_harness import (
    AUTH,
    arm_device_when_ready,
    loop_settings,
    served_beside_rig,
    wait_until,
)

pytestmark = pytest.mark.slow

BLANK_MS = 200


def _marker_outlet(name: str) -> pylsl.StreamOutlet:
    info = pylsl.StreamInfo(name, "Markers", 1, pylsl.IRREGULAR_RATE, pylsl.cf_string, name)
    return pylsl.StreamOutlet(info)


def _reading_a_tool(tmp_path, exported, source_id: str) -> tuple[str, Settings, pylsl.StreamOutlet]:
    """A lab tool's marker stream, its name, and the daemon's settings that read it."""
    _, window, step = exported
    name = f"{source_id}-lab-stimulator"
    settings = loop_settings(tmp_path, window, step, source_id,
                             ingest={"stimulation_marker_streams": [name]})  # fmt: skip
    return name, settings, _marker_outlet(name)


def _pushed_recorded(monkeypatch) -> list[str]:
    """What the daemon pushes on its marker stream from now, each marker's announcement."""
    pushed: list[str] = []
    push = MarkerOutlet.push

    def recorded(self, marker, stamp: float) -> None:
        pushed.append(marker.announcement)
        push(self, marker, stamp)

    monkeypatch.setattr(MarkerOutlet, "push", recorded)
    return pushed


def _daemon_s_markers(source_id: str) -> pylsl.StreamInlet:
    """An inlet on the daemon's own stimulation marker stream, open before anything is
    pushed on it (an outlet sends an inlet only what it pushes after the inlet opens)."""
    (info,) = pylsl.resolve_byprop("source_id", source_id, minimum=1, timeout=30)
    assert info.name() == STIMULATION_STREAM
    inlet = pylsl.StreamInlet(info)
    inlet.open_stream(timeout=30)
    return inlet


def test_another_tool_s_trains_are_blanked_and_its_marker_stream_gates_arming(
    tmp_path, exported, source_id, monkeypatch
):
    _, window, step = exported
    # A fault disarms first and is counted after: here the count comes late.
    disarm = StimulationBridge.disarm_in_background  # a fault's (the supervisor's)

    def slow_to_count(self, reason: str, *, cause: str = "fault") -> bool:
        was_armed = disarm(self, reason, cause=cause)
        time.sleep(0.5)
        return was_armed

    monkeypatch.setattr(StimulationBridge, "disarm_in_background", slow_to_count)
    name = f"{source_id}-lab-stimulator"
    settings = loop_settings(
        tmp_path, window, step, source_id,
        ingest={"stimulation_marker_streams": [name], "stimulation_marker_blank_ms": BLANK_MS,
                "stimulation_marker_latency_ms": 300,
                # 1 s, not 36 ms: the disarm must be the marker stream's, not a stale stream's
                # on a loaded host (the rig's gaps are not what this test is about).
                "stale_after_frames": 278},
    )  # fmt: skip
    with served_beside_rig(settings, source_id) as (served, http, emulator):
        daemon = served.daemon
        # The live scores wait out the latency a marker may come with: 84 frames.
        assert daemon.accuracy.settle_frames == math.ceil(0.3 * settings.stream.sample_rate_hz)

        def reasons() -> str:
            return " ".join(http.get("/readyz").json().get("reasons", []))

        # Everything else ready, the marker stream not there: not ready, naming it.
        wait_until(
            lambda: daemon.ingestor.is_fresh() and daemon.scheduler.predictions > 0,
            60, "the stream and the model to run",
        )  # fmt: skip
        assert http.get("/readyz").status_code == 503
        assert f"stimulation marker stream {name!r} not connected" in reasons()
        refused = http.post("/control/arm", headers=AUTH)
        assert refused.status_code == 409 and name in refused.text

        outlet = _marker_outlet(name)
        wait_until(lambda: http.get("/readyz").status_code == 200, 30, "ready", reasons)
        (read,) = http.get("/status").json()["stream"]["stimulation_marker_streams"]
        assert read["name"] == name and read["connected"] and read["markers"] == 0
        assert read["late_markers"] == 0 and read["latency_ms"] == pytest.approx(300)

        # A train of the other tool, announced as it starts.
        passed_on = _daemon_s_markers(f"{source_id}-stimulation")
        ring = daemon.ingestor.ring
        train = pylsl.local_clock()
        outlet.push_sample(["train on contacts 12, 13"], train)
        end = train + BLANK_MS / 1000
        wait_until(
            lambda: ring.next_seq > 0 and ring.latest(1).timestamps[-1] > end + 0.05,
            30, "frames past the train's blanking",
        )  # fmt: skip
        frames = ring.latest(min(ring.next_seq, 1000))
        inside = (frames.timestamps >= train) & (frames.timestamps <= end)
        assert inside.sum() >= 50  # 200 ms at 277.78 Hz: 55 frames
        assert not frames.valid[inside].any()
        after = frames.timestamps > end
        assert frames.valid[after].mean() > 0.9  # the rig drops none; measured again
        status = http.get("/status").json()["stream"]
        assert status["stimulation_marker_streams"][0]["markers"] == 1
        assert status["blanked_frames"] >= inside.sum()
        metrics = http.get("/metrics").text
        assert f'corticast_ingest_stimulation_markers_total{{stream="{name}"}} 1.0' in metrics
        # Passed on, on the daemon's own marker stream: a recording of it says where
        # every artefact the daemon blanked is, whoever delivered it.
        text, stamp = passed_on.pull_sample(timeout=30)
        assert text is not None, "the train was not passed on"
        assert parse_marker(text[0]) == AnnouncedTrain(
            source=name, source_id=name, blank_s=BLANK_MS / 1000,
            announcement="train on contacts 12, 13",
        )  # fmt: skip
        assert stamp == pytest.approx(train, abs=1e-3)

        # A marker 1 s late (more than the 300 ms allowed): the frames of its train were read
        # as they came, so the live scores that may hold them are forgotten.
        def forgotten() -> int:
            return http.get("/status").json()["scheduler"]["scores_forgotten"]

        assert forgotten() == 0
        outlet.push_sample(["a train announced late"], pylsl.local_clock() - 1.0)
        wait_until(lambda: forgotten() == 1, 30, "the live scores to be forgotten")
        (read,) = http.get("/status").json()["stream"]["stimulation_marker_streams"]
        assert read["late_markers"] == 1

        # Armed, the tool's stream goes: its trains would go unblanked, so a fault.
        assert arm_device_when_ready(http, emulator) == {"armed": True}
        del outlet
        wait_until(lambda: not http.get("/status").json()["armed"], 30, "disarmed")
        wait_until(lambda: not emulator.device.armed, 30, "the device to disarm")
        # Counted once disarmed (a fault disarms first): waited for, not taken as done.
        wait_until(
            lambda: http.get("/status").json()["faults"].get("stream", 0) >= 1,
            30, "the stream fault to be counted",
        )  # fmt: skip
        assert f"stimulation marker stream {name!r} not connected" in reasons()
    disarms = [r for r in read_audit_log(settings.bridge.audit_log) if r["event"] == "disarm"]
    assert disarms[0]["cause"] == "fault" and name in disarms[0]["reason"]


def test_a_stream_read_as_the_daemon_starts_has_its_opening_blank_passed_on(
    tmp_path, exported, source_id, monkeypatch
):
    """A tool's marker stream already there when the daemon starts: its inlet may open it,
    and pass on the blank around the opening, before the start has gone further. The inlets
    were started before the daemon's own marker stream was made, and those records went
    nowhere: the recording said nothing of the frames blanked then. Here the start is held,
    after the inlets are started, until each has opened its stream."""
    name, settings, outlet = _reading_a_tool(tmp_path, exported, source_id)
    pushed = _pushed_recorded(monkeypatch)
    daemon = Daemon(settings)
    start = ArBaseline.start

    def held_until_read(self) -> ArBaseline:
        opened = lambda: all(inlet.connected for inlet in daemon.marker_inlets)  # noqa: E731
        wait_until(opened, 30, f"the inlet to open {name}")
        return start(self)

    monkeypatch.setattr(ArBaseline, "start", held_until_read)
    try:
        daemon.start()
    finally:
        daemon.stop()
    del outlet
    assert pushed == [UNHEARD, UNHEARD]


def test_a_train_read_as_the_daemon_stops_is_passed_on_before_its_marker_stream_ends(
    tmp_path, exported, source_id, monkeypatch
):
    """The daemon's marker stream was withdrawn before the inlets stopped: a train another
    tool announced meanwhile was blanked, and its record went nowhere. Here a train comes as
    the daemon's stop asks each inlet to stop, and is read before the inlet is asked (once
    asked, a thread between two pulls ends without reading it: patched at ``stop``, which the
    daemon calls after asking every inlet, the test failed whenever the push came then)."""
    name, settings, outlet = _reading_a_tool(tmp_path, exported, source_id)
    events = _pushed_recorded(monkeypatch)
    close = MarkerOutlet.close

    def withdrawn(self) -> None:
        events.append("stream closed")
        close(self)

    monkeypatch.setattr(MarkerOutlet, "close", withdrawn)
    request_stop = StimulationMarkerInlet.request_stop

    def read_a_train_first(self) -> None:
        outlet.push_sample(["a train during the stop"])
        wait_until(lambda: self.status()["markers"] == 1, 30, "the train to be read")
        request_stop(self)

    monkeypatch.setattr(StimulationMarkerInlet, "request_stop", read_a_train_first)
    daemon = Daemon(settings)
    try:
        daemon.start()
        opened = lambda: all(inlet.connected for inlet in daemon.marker_inlets)  # noqa: E731
        wait_until(opened, 30, f"the inlet to open {name}")
    finally:
        daemon.stop()
    assert events == [UNHEARD, UNHEARD, "a train during the stop", "stream closed"]


def test_the_daemon_asks_every_marker_inlet_to_stop_before_it_waits_on_any(
    tmp_path, exported, source_id, monkeypatch
):
    """An inlet in the middle of opening its stream finishes the opening's liblsl calls (up to
    ``STOP_TIMEOUT_S``) before it stops. Stopped one after another, several such inlets
    held the daemon's stop for the sum of their openings; asked to stop together, for the
    slowest. Here two tools' streams are each being opened, slowly, as the daemon stops."""
    _, window, step = exported
    names = [f"{source_id}-lab-stimulator-{n}" for n in (1, 2)]
    settings = loop_settings(tmp_path, window, step, source_id,
                             ingest={"stimulation_marker_streams": names})  # fmt: skip
    outlets = [_marker_outlet(name) for name in names]
    opening: set[str] = set()
    open_stream = pylsl.StreamInlet.open_stream

    def slowly(self, *args, **kwargs):
        opening.add(threading.current_thread().name)
        time.sleep(0.5)  # as a busy host or a slow network may take, within the inlet's limit
        return open_stream(self, *args, **kwargs)

    monkeypatch.setattr(pylsl.StreamInlet, "open_stream", slowly)
    events: list[tuple[str, str]] = []
    request_stop, stop = StimulationMarkerInlet.request_stop, StimulationMarkerInlet.stop

    def requested(self) -> None:
        events.append(("stop asked", self.name))
        request_stop(self)

    def waited(self, *args, **kwargs) -> bool:
        ended = stop(self, *args, **kwargs)
        events.append(("stopped" if ended else "still running", self.name))
        return ended

    monkeypatch.setattr(StimulationMarkerInlet, "request_stop", requested)
    monkeypatch.setattr(StimulationMarkerInlet, "stop", waited)
    daemon = Daemon(settings)
    try:
        daemon.start()
        wait_until(lambda: len(opening) == 2, 30, "both inlets to begin opening their streams")
    finally:
        daemon.stop()
    del outlets
    first_wait = next(i for i, (event, _) in enumerate(events) if event != "stop asked")
    assert sorted(events[:first_wait]) == [("stop asked", name) for name in names]
    assert sorted(events[first_wait:]) == [("stopped", name) for name in names]


def test_a_daemon_without_a_source_id_names_the_rig_stream_in_its_marker_stream(
    tmp_path, exported, source_id, monkeypatch
):
    """``[stream] source_id`` empty: the daemon reads the one stream of its name (and type).
    Its marker stream's source id was the empty one with ``-stimulation``, which names no
    rig: a recording of two rigs could not say whose trains it holds, and two such daemons'
    streams were one to a recorder and to each other's inlets. It names the rig stream by
    its name, as the recording's reader matches it (``bench.data.session_io``)."""
    _, window, step = exported
    rig = f"{source_id}-rig"
    settings = loop_settings(tmp_path, window, step, "", stream={"name": rig})
    opened: list[MarkerOutlet] = []
    init = MarkerOutlet.__init__

    def kept(self, *args, **kwargs) -> None:
        init(self, *args, **kwargs)
        opened.append(self)

    monkeypatch.setattr(MarkerOutlet, "__init__", kept)
    with Daemon(settings):  # its marker stream is made at start, before the rig is found
        (outlet,) = opened
        found = pylsl.resolve_byprop("source_id", outlet.source_id, minimum=1, timeout=30)
    assert [info.name() for info in found] == [STIMULATION_STREAM]
    assert rig in outlet.source_id, f"{outlet.source_id!r} names no rig stream"
