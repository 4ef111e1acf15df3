"""The wire format's documentation (``service.zmq_api.publisher``, where the README sends
subscribers) names every field the daemon sends: the predictor's, the wave topic's columns and
pattern names, and the stim topic's."""

from __future__ import annotations

import dataclasses
import re

from service.inference.predictor import PredictorInfo
from service.loop.closed_loop import WAVE_FIELDS
from service.waves.estimator import PATTERNS
from service.zmq_api import publisher


def test_every_field_sent_is_documented_where_the_readme_points():
    doc = publisher.__doc__
    sent = [field.name for field in dataclasses.fields(PredictorInfo)]
    sent += [*WAVE_FIELDS, *PATTERNS, "n_predicted", "lead_time_left_s", "blanked"]
    missing = [name for name in sent if not re.search(rf"\b{name}\b", doc)]
    assert not missing, f"fields sent but not documented in service/zmq_api/publisher.py: {missing}"
    for topic in ("prediction", "wave", "stim", "status"):
        assert f"Header of a ``{topic}`` message" in doc
