"""Follows the predictions and dead-letter topics and keeps score: what `demo` and `tail` show."""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field

import msgspec
import numpy as np
from aiokafka.structs import ConsumerRecord

from streaminfer.schemas import headers as h
from streaminfer.schemas.codec import decode_prediction
from streaminfer.schemas.deadletter import headers_dict, read_error_headers
from streaminfer.schemas.errors import StreamInferError


@dataclass
class Scoreboard:
    """Counts each request id once; duplicates (at-least-once redeliveries) are counted apart."""

    run_prefix: str | None = None
    predictions: int = 0
    dead_letters: int = 0
    duplicates: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    reasons: dict[str, int] = field(default_factory=dict)
    recent: deque[tuple[str, str]] = field(default_factory=lambda: deque(maxlen=6))
    first_seen: float | None = None
    last_seen: float | None = None
    _seen: set[str] = field(default_factory=set)

    @property
    def answered(self) -> int:
        return self.predictions + self.dead_letters

    def observe(self, record: ConsumerRecord, dead_letter: bool) -> None:
        fields = headers_dict(record.headers)
        request_id = (fields.get(h.REQUEST_ID) or b"").decode()
        if self.run_prefix and not request_id.startswith(self.run_prefix):
            return
        if request_id in self._seen:
            self.duplicates += 1
            return
        self._seen.add(request_id)
        now = time.time()
        self.first_seen = self.first_seen or now
        self.last_seen = now
        if dead_letter:
            self.dead_letters += 1
            reason = str(read_error_headers(record.headers).get("reason", "?"))
            self.reasons[reason] = self.reasons.get(reason, 0) + 1
            self.recent.append((request_id, f"dead letter: {reason}"))
            return
        self.predictions += 1
        sent_ms = fields.get(h.REQUEST_TIMESTAMP_MS)
        if sent_ms:
            self.latencies_ms.append(record.timestamp - int(sent_ms))
        self.recent.append((request_id, describe_prediction(record.value)))

    def percentile_ms(self, q: float) -> float:
        return float(np.percentile(self.latencies_ms, q)) if self.latencies_ms else float("nan")


def describe_prediction(value: bytes) -> str:
    """A one-line rendering: each output's first values (or why there are none to show)."""
    try:
        prediction = decode_prediction(value)
    except (StreamInferError, msgspec.MsgspecError, TypeError) as exc:
        return f"unreadable prediction: {exc}"
    parts = []
    for output in prediction.outputs:
        shown = ", ".join(f"{v:.4g}" if isinstance(v, float) else str(v) for v in output.data[:3])
        parts.append(f"{output.name}=[{shown}]")
    return f"{prediction.model_name}/{prediction.model_version} " + " ".join(parts)
