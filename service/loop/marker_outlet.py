"""The daemon's LSL outlet of stimulation markers (``service.core.stimulation_markers``).

One marker per train the stimulator may have delivered, stamped when its STIMULATE left, on the LSL
clock the rig's frames are stamped on (after clock sync): LabRecorder, recording the rig's
stream, records these beside it, and the recording then says where its artefacts are. The
trains other tools announced, which the daemon blanked as well, go out on it too.
"""

from __future__ import annotations

import logging

import pylsl

from service.core.stimulation_markers import (
    LONGEST_BLANK_KEY,
    MAX_BLANK_S,
    STREAM_NAME,
    STREAM_TYPE,
    AnnouncedTrain,
    StimulationMarker,
    outlet_source_id,
)

_log = logging.getLogger("corticast.loop")

VERDICT_MARGIN_S = 1.0
"""Beyond the ACK deadlines, what a verdict may take after its STIMULATE left (the audit log's
write, the loop's turn): part of the longest blank a marker says."""


def longest_marker_blank_s(
    *,
    ack_timeout_s: float,
    max_train_duration_ms: int,
    blank_after_train_ms: int,
    announced_blank_ms: int,
) -> float:
    """The longest blank a marker of a daemon so configured says. Its own train is blanked from
    its sending to its verdict, then for the train and ``[loop] blank_after_train_ms``. The
    latest verdict is a ``failed`` one: the STIMULATE's ACK deadline passes, then that of the
    DISARM the bridge sends on missing it, and :data:`VERDICT_MARGIN_S`. A train another tool
    announced, which it passes on, for ``[ingest] stimulation_marker_blank_ms``. (One another
    daemon announced, passed on in turn, says that daemon's own.)"""
    own = (
        2 * ack_timeout_s + VERDICT_MARGIN_S + (max_train_duration_ms + blank_after_train_ms) / 1000
    )
    return min(MAX_BLANK_S, max(own, announced_blank_ms / 1000))


class MarkerOutlet:
    """An LSL marker stream (one string channel, irregular rate) of stimulation markers.

    Parameters
    ----------
    rig_source_id, rig_name
        The rig stream the daemon reads, by ``[stream] source_id`` and ``name``: the outlet's
        LSL source id names it (``outlet_source_id``), so that a recorder that resolves by
        source id finds this daemon's markers again after a restart and a recording of two
        rigs says whose trains these are.
    longest_blank_s
        The longest blank a marker of this daemon may say, written in the stream's
        description: another daemon reading this stream blanks that long around the moment
        it opens it, for a train announced just before.
    """

    def __init__(self, rig_source_id: str, longest_blank_s: float, *, rig_name: str) -> None:
        info = pylsl.StreamInfo(
            STREAM_NAME,
            STREAM_TYPE,
            1,
            pylsl.IRREGULAR_RATE,
            pylsl.cf_string,
            outlet_source_id(rig_source_id, rig_name),
        )
        info.desc().append_child_value("format", StimulationMarker.model_fields["format"].default)
        info.desc().append_child_value(LONGEST_BLANK_KEY, f"{longest_blank_s:.3f}")
        self._outlet: pylsl.StreamOutlet | None = pylsl.StreamOutlet(info)
        self.source_id = info.source_id()

    def push(self, marker: StimulationMarker | AnnouncedTrain, stamp: float) -> None:
        """Push ``marker`` stamped ``stamp`` (LSL clock). Never raises: a marker lost is logged;
        the train and its blanking stand either way."""
        outlet = self._outlet
        if outlet is None:
            return
        try:
            outlet.push_sample([marker.to_text()], stamp)
        except Exception as err:  # liblsl's errors are RuntimeErrors of many kinds
            _log.error("stimulation marker %s not pushed: %s", marker.to_text(), err)

    def close(self) -> None:
        """Withdraw the stream (recorders see it end). Idempotent."""
        self._outlet = None
