"""What one model's loop put out during a replay, in the form a ZeroMQ subscriber receives.

``--fast`` and ``--realtime`` feed the same record: the realtime replay decodes the daemon's
messages off the PUB socket, the fast replay hands over the very headers the daemon's
publisher would have sent. So everything downstream (scores, wave comparison, decision
timeline) cannot tell the two apart except by the timing fields.

Kept per message, small: prediction timing and provenance; the predicted frames only for a
few example windows (23 KB each) while the scorer reduces every prediction to its errors on
arrival; per wave message the predicted frames' speed and direction and summaries of the
rest; every stimulation request with the policy's and the bridge's verdicts.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from bench.replay._prediction_scorer import PredictionScorer
from service.waves.summary import carries_wave

_EXAMPLE_SLACK = 64
"""A prediction stands in for a requested example window if it starts this close after it."""


class ReplayRecord:
    """The messages of one model (and each policy variant's stimulation requests).

    Parameters
    ----------
    name
        The model's name in the report.
    scorer
        Scores each prediction as it arrives.
    example_seqs
        Slots at which to keep the predicted frames for the report's strips (the first
        prediction at or just after each).
    variants
        Policy variants whose ``stim`` messages are kept apart (1 without a sweep).
    """

    def __init__(
        self,
        name: str,
        scorer: PredictionScorer,
        example_seqs: Sequence[int] = (),
        *,
        variants: int = 1,
    ) -> None:
        self.name = name
        self.scorer = scorer
        self.predictor: dict[str, Any] | None = None
        self._prediction_rows: list[tuple[float, ...]] = []
        self._wanted = sorted(set(int(seq) for seq in example_seqs))
        self.examples: dict[int, tuple[int, np.ndarray]] = {}
        self._wave_seq: list[int] = []
        self._wave_tail: list[np.ndarray] = []
        self._wave_summary: list[tuple[float, ...]] = []
        self.stims: list[list[dict[str, Any]]] = [[] for _ in range(variants)]
        self.policy_checks: list[dict[str, int]] = [{} for _ in range(variants)]
        self.counters: dict[str, int] = {}
        self.dead_electrodes: list[list[int]] = []
        """(row, col) of the electrodes the loop's wave estimate left out as dead at the end."""
        self.noisy_electrodes: list[list[int]] = []
        """(row, col) of those it left out as noisy at the end."""

    # ------------------------------------------------------------------ intake
    def on_message(
        self,
        topic: str,
        header: dict[str, Any],
        array: np.ndarray | None,
        *,
        received_at: float | None = None,
        variant: int = 0,
    ) -> None:
        """Take one message (topic, decoded header, payload) as the publisher sent it."""
        if topic == "prediction":
            self._prediction(header, array, received_at)
        elif topic == "wave":
            self._wave(header, array)
        elif topic == "stim":
            self.stims[variant].append(header)

    def _prediction(
        self, header: dict[str, Any], future: np.ndarray, received_at: float | None
    ) -> None:
        seq = int(header["input_seq"])
        latency = header["latency"]
        transit = math.nan if received_at is None else received_at - latency["published_at"]
        self._prediction_rows.append(
            (
                seq,
                float(header["input_timestamp"]),
                float(latency["inference_s"]),
                float(latency["age_s"]),
                transit,
                math.nan if received_at is None else received_at,
                int(header["skipped_before"]),
                int(header["missing_frames"]),
            )
        )
        if self.predictor is None:
            self.predictor = dict(header["predictor"])
        self.scorer.add(seq, future)
        at = bisect.bisect_right(self._wanted, seq) - 1
        if at >= 0:
            target = self._wanted[at]
            if target not in self.examples and seq - target <= _EXAMPLE_SLACK:
                self.examples[target] = (seq, np.array(future, dtype=np.float32))

    def _wave(self, header: dict[str, Any], table: np.ndarray) -> None:
        n_predicted = int(header["n_predicted"])
        columns = {name: table[:, i] for i, name in enumerate(header["fields"])}
        tail = slice(table.shape[0] - n_predicted, table.shape[0])
        self._wave_seq.append(int(header["input_seq"]))
        pattern = columns["pattern"][tail].astype(np.int64)
        speed = columns["speed_mps"][tail]
        wave = carries_wave(speed, columns["pgd"][tail], pattern)
        self._wave_tail.append(
            np.stack([speed, columns["direction_deg"][tail], wave]).astype(np.float32)
        )
        self._wave_summary.append(
            (
                float(np.median(columns["pgd"][tail])),
                float(np.median(columns["amplitude_uv"][tail])),
                float(np.bincount(pattern).argmax()),
            )
        )

    # ------------------------------------------------------------------ views
    @property
    def predictions(self) -> dict[str, np.ndarray]:
        """Columns over predictions in arrival order: ``input_seq``, ``input_timestamp``,
        ``inference_s``, ``age_s`` (ingest -> publish), ``transit_s`` (publish -> received),
        ``received_at`` (local clock; both NaN in fast mode), ``skipped_before``,
        ``missing_frames``."""
        names = (
            "input_seq",
            "input_timestamp",
            "inference_s",
            "age_s",
            "transit_s",
            "received_at",
            "skipped_before",
            "missing_frames",
        )
        rows = np.array(self._prediction_rows, dtype=np.float64).reshape(-1, len(names))
        out = {name: rows[:, i] for i, name in enumerate(names)}
        for name in ("input_seq", "skipped_before", "missing_frames"):
            out[name] = out[name].astype(np.int64)
        return out

    @property
    def waves(self) -> dict[str, np.ndarray]:
        """Per wave message: ``input_seq``; ``speed_mps``, ``direction_deg`` and ``wave``
        (whether it carries one, ``service.waves.summary.carries_wave``) (M, 16) of the
        predicted frames; medians ``pgd`` and ``amplitude_uv`` and the commonest ``pattern``
        over them."""
        n = len(self._wave_seq)
        tail = np.stack(self._wave_tail) if n else np.zeros((0, 3, 0), dtype=np.float32)
        summary = np.array(self._wave_summary, dtype=np.float64).reshape(n, 3)
        return {
            "input_seq": np.array(self._wave_seq, dtype=np.int64),
            "speed_mps": tail[:, 0],
            "direction_deg": tail[:, 1],
            "wave": tail[:, 2] > 0,
            "pgd": summary[:, 0],
            "amplitude_uv": summary[:, 1],
            "pattern": summary[:, 2].astype(np.int64),
        }
