"""The stamp-lead judgement on its own: a lead beyond the limit distrusts the stamps at once,
and only a lead held within it for the hold-off trusts them again."""

from __future__ import annotations

import math

from service.core.stamp_lead import HOLD_OFF_S, MAX_STAMP_LEAD_S, StampLead

BEYOND = MAX_STAMP_LEAD_S + 0.002
WITHIN = MAX_STAMP_LEAD_S - 0.002


def test_the_last_lead_beyond_is_kept_until_the_lead_held_within_for_the_hold_off():
    lead = StampLead()
    assert lead.beyond_s() is None and math.isnan(lead.newest_s)
    lead.add(WITHIN, 10.0)
    assert lead.beyond_s() is None
    lead.add(0.5, 10.1)
    lead.add(BEYOND, 10.2)  # the last one beyond is the one named
    lead.add(WITHIN, 10.3)
    assert lead.beyond_s() == BEYOND and lead.newest_s == WITHIN
    lead.add(WITHIN, 10.2 + HOLD_OFF_S * 0.99)
    assert lead.beyond_s() == BEYOND
    lead.add(BEYOND, 10.2 + HOLD_OFF_S * 0.995)  # the hold-off starts again from here
    lead.add(WITHIN, 10.2 + HOLD_OFF_S * 1.5)
    assert lead.beyond_s() == BEYOND
    lead.add(WITHIN, 10.2 + HOLD_OFF_S * 2)
    assert lead.beyond_s() is None and lead.newest_s == WITHIN


def test_a_reset_forgets_a_lead_beyond_the_limit():
    lead = StampLead()
    lead.add(5.0, 1.0)
    lead.reset()
    assert lead.beyond_s() is None and math.isnan(lead.newest_s)
