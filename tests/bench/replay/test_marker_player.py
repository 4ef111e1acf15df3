"""``MarkerPlayer`` with real LSL and a real rig: what a ``--realtime`` replay's daemon reads on
the marker streams it plays, as the daemon's own inlet reads them (no daemon: the inlet and a
ring are what it would run)."""

from __future__ import annotations

import dataclasses
import time
import uuid

import pytest

from bench.data.session import Session
from bench.data.synth import SynthConfig, generate_session
from bench.replay._marker_player import MarkerPlayer
from bench.rig.frame_source import SessionSource
from bench.rig.rig import SimulatedRig
from service.core.stimulation_markers import AnnouncedTrain, MarkerStream
from service.ingest.ring_buffer import RingBuffer
from service.ingest.stimulation_marker_inlet import StimulationMarkerInlet

_DEADLINE_S = 30.0


def _session(tool: str, *times: float) -> Session:
    """A short session whose recording announced a train on ``tool`` at each of ``times``
    (seconds from its first frame). 0.7 s: past the latest train any test announces (0.5 s),
    and played in real time, so no longer than that needs."""
    session = generate_session(SynthConfig(duration_s=0.7, seed=5))
    first = float(session.timestamps[0])
    trains = [
        {"time": first + t, **AnnouncedTrain(source=tool, blank_s=0.05,
                                             announcement=f"marker {k}").model_dump()}
        for k, t in enumerate(times)
    ]  # fmt: skip
    return dataclasses.replace(session, info={"stimulation": trains})


def _wait(condition, what: str) -> None:
    deadline = time.monotonic() + _DEADLINE_S
    while not condition():
        assert time.monotonic() < deadline, f"no {what} within {_DEADLINE_S:.0f} s"
        time.sleep(0.02)


def _play(
    streams: tuple[MarkerStream, ...], session: Session, *, trains: int, speed: float = 1.0
) -> tuple[MarkerPlayer, SimulatedRig, list[StimulationMarkerInlet]]:
    """Play ``session`` on a rig with the player beside it, each played stream read by a real
    marker inlet as the replay's daemon reads it; returns once the rig is done and the inlets
    have read ``trains`` markers (the trains due; one played too many is in ``played``)."""
    rig = SimulatedRig(
        SessionSource(session, loop=False),
        name=f"rig-{uuid.uuid4().hex[:8]}",
        source_id=f"rig-{uuid.uuid4().hex[:8]}",
        speed=speed,
    )
    player = MarkerPlayer(streams, session, rig)
    inlets = [
        StimulationMarkerInlet(s.name, RingBuffer(64), source_id=s.source_id, blank_s=0.05)
        for s in player.streams
    ]
    for inlet in inlets:
        inlet.start()
    try:
        _wait(lambda: all(inlet.connected for inlet in inlets), "marker stream opened")
        with player, rig:
            _wait(rig.finished.is_set, "end of the rig's session")
            _wait(lambda: sum(i.status()["markers"] for i in inlets) >= trains, "trains read")
            player.raise_if_failed()
    finally:
        for inlet in inlets:
            inlet.stop()
    return player, rig, inlets


def test_two_streams_of_one_name_play_each_recorded_train_once() -> None:
    """Two rigs' streams of one name, told apart by source id. A train recorded with its
    stream's name only (a record made before source ids were kept) is played once, not once
    on every stream of that name (the daemon would read, count and report each twice); one
    recorded with its source id is played on that stream (it was played on the first of the
    name)."""
    tool = f"tool-{uuid.uuid4().hex[:8]}"
    streams = (
        MarkerStream(name=tool, source_id="rig-a"),
        MarkerStream(name=tool, source_id="rig-b"),
    )
    session = _session(tool, 0.3, 0.5)
    session.info["stimulation"][1]["source_id"] = "rig-b"
    player, _, inlets = _play(streams, session, trains=2)
    assert player.played == 2
    assert [inlet.status()["markers"] for inlet in inlets] == [1, 1]


def test_a_train_of_a_source_id_not_configured_is_played_on_a_stream_of_its_name() -> None:
    """Another daemon's record of a train is read as it is: its source id is the stream that
    daemon read (a third rig's), not the one the recording's daemon read it on, which the
    configuration names. The recording's daemon blanked its frames, and so does the replay's
    reading of the recording (``--fast``): ``--realtime`` plays it on a stream of its name,
    so its daemon blanks them too."""
    tool = f"tool-{uuid.uuid4().hex[:8]}"
    session = _session(tool, 0.3)
    session.info["stimulation"][0]["source_id"] = "rig-c"
    player, _, (inlet,) = _play((MarkerStream(name=tool, source_id="rig-b"),), session, trains=1)
    assert player.played == 1
    assert inlet.status()["markers"] == 1


def test_a_train_of_a_stream_the_configuration_does_not_name_is_played_on_the_first() -> None:
    """Another daemon's record of a third tool's train keeps that tool's name, not the name of
    the stream the recording's daemon read it on; and a recording's daemon may have read a
    stream this configuration leaves out. Its frames were blanked live and ``--fast`` blanks
    them: ``--realtime`` plays it on the first stream, so its daemon blanks them too, once."""
    third, tool = (f"tool-{uuid.uuid4().hex[:8]}" for _ in range(2))
    session = _session(third, 0.3)
    streams = (MarkerStream(name=tool), MarkerStream(name=f"{tool}-b"))
    player, _, inlets = _play(streams, session, trains=1)
    assert player.played == 1
    assert [inlet.status()["markers"] for inlet in inlets] == [1, 0]


def test_a_train_whose_blank_ended_before_the_session_is_not_played(caplog) -> None:
    """A train the recording holds from long before its first frame (the tool's stream was
    recorded earlier than the rig's) blanked no frame of the session: played at its stamp,
    the daemon takes it for a marker on another clock and blanks from now, the first frames
    the replay plays."""
    tool = f"tool-{uuid.uuid4().hex[:8]}"
    player, _, (inlet,) = _play((MarkerStream(name=tool),), _session(tool, -30.0, 0.3), trains=1)
    assert not [r.getMessage() for r in caplog.records if "from now" in r.getMessage()]
    assert player.played == 1
    assert inlet.status()["markers"] == 1


@pytest.mark.parametrize("speed", [1.0, 4.0])
def test_a_train_is_stamped_as_the_rig_stamps_its_frame(speed: float) -> None:
    """The rig stamps a frame at its start plus the frame's session time, whatever its speed:
    a train's marker is stamped so too, so the daemon blanks the frames it was on."""
    tool = f"tool-{uuid.uuid4().hex[:8]}"
    stream = MarkerStream(name=tool)
    _, rig, (inlet,) = _play((stream,), _session(tool, 0.5), trains=1, speed=speed)
    assert rig.played_from is not None
    stamp = inlet.status()["last_marker_timestamp"]
    assert stamp == pytest.approx(rig.played_from + 0.5, abs=0.005)


def test_two_trains_announced_at_one_stamp_are_both_played(monkeypatch) -> None:
    """A tool that announces a train with two markers at one stamp (its start and its
    parameters): both are played, in the recording's order. Both are read however long the
    inlet takes over the first (here 1.5 s, past the end of the rig's session, 0.4 s after
    the train)."""
    blank = StimulationMarkerInlet._blank
    slow: list[bool] = []

    def slow_first(self, value: object, stamp: float) -> None:
        if not slow:
            slow.append(True)
            time.sleep(1.5)
        blank(self, value, stamp)

    monkeypatch.setattr(StimulationMarkerInlet, "_blank", slow_first)
    tool = f"tool-{uuid.uuid4().hex[:8]}"
    player, _, (inlet,) = _play((MarkerStream(name=tool),), _session(tool, 0.3, 0.3), trains=2)
    assert player.played == 2
    assert inlet.status()["markers"] == 2
