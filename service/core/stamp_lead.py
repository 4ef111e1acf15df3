"""How far a stream's samples may be stamped after they arrived (on this host's LSL clock).

Why here: the ingestor judges the stream by it, and the closed loop refuses a train by it as
the train is sent; the loop should not import the ingestor (its inlet, its worker) for one
number.
"""

from __future__ import annotations

import math

MAX_STAMP_LEAD_S = 0.01
"""Most a chunk's newest sample may be stamped (clock-corrected, ``proc_clocksync``) after it
arrived on this host's LSL clock. A source stamping on its LSL clock stamps a sample when it is
taken, before it is sent, so it arrives after its stamp by the link's latency; only the
correction's error can make it look early. liblsl takes the offset from the probe with the
shortest round trip (of ``TimeProbeCount`` 8, none over ``TimeProbeMaxRTT``), off by at most
half that trip: well under a millisecond on a wired LAN, a few on a loaded wireless one; two
crystals 100 ppm apart drift 0.2 ms in the ``TimeUpdateInterval`` (2 s) between estimates, and
the arrival is read after the drain, only ever later. 10 ms is several times all of that, and
under three frame periods: a lead beyond it is a clock set wrong or an offset gone bad. (A link
whose best probe takes over 20 ms could err past it; its data would be too old for this loop's
``[interlocks] max_sample_age_s`` anyway.)"""

HOLD_OFF_S = 3.0
"""How long (of chunks' arrivals) the lead must stay within :data:`MAX_STAMP_LEAD_S` after a
chunk beyond it before the stream's stamps are trusted again. One chunk beyond is enough to
distrust them (latency only ever makes a lead smaller), but one chunk within proves little: a
clock-sync error near the limit puts only the chunks that came quickest beyond it, and a
stream judged on its newest chunk alone flaps between ready and not ready (an operator tool
that re-arms after stream faults arms and is disarmed again and again). Why 3 s: liblsl starts
a clock-offset estimate every ``TimeUpdateInterval`` (2 s), in use once its probes are in
(``TimeProbeMaxRTT`` + ``TimeProbeCount`` x ``TimeProbeInterval``, 0.64 s), so the estimate
that corrected a chunk beyond the limit is replaced at most 2 s after it; 3 s after it, a
second of chunks (hundreds at the stream's rate) were corrected by a newer estimate and stayed
within the limit too. An offset still bad shows again within that, at the next quick chunk."""


class StampLead:
    """The newest chunk's stamp lead, and the last lead beyond :data:`MAX_STAMP_LEAD_S` until
    the lead held within it for :data:`HOLD_OFF_S`. Written by one thread (the ingestor's),
    read by any: each reading is one attribute."""

    def __init__(self) -> None:
        self.newest_s = math.nan
        """The newest chunk's lead (negative: stamped before it arrived); NaN before the
        first."""
        self._beyond: tuple[float, float] | None = None
        """The last lead beyond the limit and its chunk's arrival, while not held off."""

    def reset(self) -> None:
        """Forget every chunk: a new connection's stream is judged afresh."""
        self.newest_s = math.nan
        self._beyond = None

    def add(self, lead_s: float, arrival: float) -> None:
        """A chunk whose newest sample was stamped ``lead_s`` after its ``arrival`` (s, on
        the clock the stamps are corrected to)."""
        self.newest_s = lead_s
        if lead_s > MAX_STAMP_LEAD_S:
            self._beyond = (lead_s, arrival)
        elif self._beyond is not None and arrival - self._beyond[1] >= HOLD_OFF_S:
            self._beyond = None

    def beyond_s(self) -> float | None:
        """The last lead beyond the limit, if the lead has not held within it for
        :data:`HOLD_OFF_S` since; None when the stamps can be trusted."""
        beyond = self._beyond
        return None if beyond is None else beyond[0]
