"""Other tools' marker streams, played to a ``--realtime`` replay's daemon beside the rig.

A configuration that names other tools' stimulation marker streams (``[ingest]
stimulation_marker_streams``) makes the daemon wait for them: while one is not read it is not
ready and refuses to arm, so a replay's daemon with no such stream never decided anything. The
replay plays each one, as its tool did on the rig: an LSL marker outlet of that name, pushing
each train the recording announced on it when the rig plays the train's time, stamped as the rig
stamps its frames (a train of a stream it does not name goes out on the first). A train goes out
as the :class:`AnnouncedTrain` the recording holds, so its frames are blanked for what the
replay's reading of the recording says (the configured blank, or what the recording's daemon
blanked live), as ``--fast`` blanks them. The records of the blank around the recording daemon's
openings of a stream are no trains: the replay's daemon blanks around its own.

Each stream is given a source id of this replay's, and the daemon is told to read only that one,
so replays side by side on one host do not find two streams of one name.
"""

from __future__ import annotations

import uuid

import pylsl

from bench.data.session import Session
from bench.data.stimulation import INFO_KEY, is_opening_blank
from bench.rig.rig import SimulatedRig
from service.core.stimulation_markers import (
    ANNOUNCED_FORMAT,
    STREAM_TYPE,
    AnnouncedTrain,
    MarkerStream,
    marker_from_fields,
)
from service.core.worker import BackgroundWorker

_WAIT_S = 0.05
"""Longest wait before checking for a stop request."""


class MarkerPlayer(BackgroundWorker):
    """Plays the trains ``session`` announced on ``streams`` as ``rig`` plays the session.

    Parameters
    ----------
    streams
        The configured marker streams (``[ingest] stimulation_marker_streams``).
    session
        The session the rig plays; its ``info["stimulation"]`` holds the trains.
    rig
        The rig playing it, not yet started: its :attr:`~SimulatedRig.played_from` times
        every marker.
    """

    def __init__(
        self, streams: tuple[MarkerStream, ...], session: Session, rig: SimulatedRig
    ) -> None:
        super().__init__("corticast-replay-markers")
        tag = uuid.uuid4().hex[:12]
        self.streams = tuple(
            MarkerStream(name=s.name, source_id=f"corticast-replay-{tag}-{k}")
            for k, s in enumerate(streams)
        )
        """What the daemon is to read: each stream by this replay's source id."""
        self._rig = rig
        first = float(session.timestamps[0])
        # A train names its stream, and its source id where the record kept it: it is played
        # once, on the configured stream of both, else on the first of its name, else on the
        # first stream (the daemon blanks it all the same, as ``--fast`` does).
        # One whose blank ended before the session's first frame blanked none of its frames:
        # pushed at its stamp, the daemon would take it for a marker on another clock and
        # blank from now.
        self._trains = sorted(
            (
                (time_s, *played)
                for entry in session.info.get(INFO_KEY, [])
                if (played := _announced(streams, entry)) is not None
                and (time_s := float(entry["time"]) - first) + played[1].blank_s >= 0
            ),
            key=lambda train: train[0],  # stable: two at one stamp keep the recording's order
        )
        """(session time, stream index, train), in the order they are played."""
        self._outlets = [pylsl.StreamOutlet(_info(stream)) for stream in self.streams]
        """Open from now: the daemon is not ready until it reads each one."""
        self.played = 0

    def _work(self) -> None:
        while not self._rig.playing.wait(_WAIT_S):
            if self._stop_requested.is_set():
                return
        start = self._rig.played_from
        assert start is not None  # set before ``playing``
        speed = self._rig.speed
        for time_s, k, train in self._trains:
            # Pushed when the rig plays the train's time, stamped as it stamps that frame.
            delay = start + time_s / speed - pylsl.local_clock()
            if delay > 0 and self._stop_requested.wait(delay):
                return
            self._outlets[k].push_sample([train.to_text()], start + time_s)
            self.played += 1
        self._stop_requested.wait()  # the streams stay, read, until the replay ends

    def _release(self) -> None:
        self._outlets = []  # destroying an outlet takes its stream off the network


def _info(stream: MarkerStream) -> pylsl.StreamInfo:
    """A marker stream as LSL marker streams are: one string channel, irregular rate."""
    return pylsl.StreamInfo(
        stream.name, STREAM_TYPE, 1, pylsl.IRREGULAR_RATE, pylsl.cf_string, stream.source_id
    )


def _announced(
    streams: tuple[MarkerStream, ...], entry: object
) -> tuple[int, AnnouncedTrain] | None:
    """The index of the first of the configured ``streams`` (at least one) the train
    ``entry`` (an ``info["stimulation"]`` entry) was announced on, by name and, where both say
    one, source id, else of the first of its name, else 0, and the train; None for anything
    else (the daemon's own trains, the blank around an opening).

    A source id or a name no configured stream has is no reason to leave a train out: another
    daemon's record of a train is read as it is, its source and source id the stream that
    daemon read (a third tool's), not the one it was read on here; and a stream the
    recording's daemon read may be one this configuration leaves out. The recording's daemon
    blanked its frames, and the replay's reading of the recording blanks them (``--fast``):
    played on a stream of the replay's daemon, they are blanked there too."""
    if not isinstance(entry, dict) or entry.get("format") != ANNOUNCED_FORMAT:
        return None
    if is_opening_blank(entry):
        return None
    marker = marker_from_fields({key: v for key, v in entry.items() if key != "time"})
    assert isinstance(marker, AnnouncedTrain)  # its format says so
    named = [k for k, s in enumerate(streams) if s.name == marker.source]
    if not named:
        return 0, marker
    source_id = marker.source_id
    same = (k for k in named if source_id is None or streams[k].matches(marker.source, source_id))
    return next(same, named[0]), marker
