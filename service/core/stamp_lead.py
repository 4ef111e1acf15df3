"""How far a stream's samples may be stamped after they arrived (on this host's LSL clock).

Why here: the ingestor judges the stream by it, and the closed loop refuses a train by it as
the train is sent; the loop must not import the ingestor (and pylsl with it) for one number.
"""

from __future__ import annotations

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
