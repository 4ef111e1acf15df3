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
    STREAM_NAME,
    STREAM_TYPE,
    AnnouncedTrain,
    StimulationMarker,
    outlet_source_id,
)

_log = logging.getLogger("corticast.loop")


class MarkerOutlet:
    """An LSL marker stream (one string channel, irregular rate) of stimulation markers.

    Parameters
    ----------
    source_id
        The outlet's LSL source id: the rig stream's, with ``-stimulation`` appended, so that
        a recorder that resolves by source id finds this daemon's markers again after a
        restart and tells two rigs' apart.
    """

    def __init__(self, source_id: str) -> None:
        info = pylsl.StreamInfo(
            STREAM_NAME,
            STREAM_TYPE,
            1,
            pylsl.IRREGULAR_RATE,
            pylsl.cf_string,
            outlet_source_id(source_id),
        )
        info.desc().append_child_value("format", StimulationMarker.model_fields["format"].default)
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
