"""Request payloads and a batching producer, shared by `produce`, `demo` and the tests.

Payloads are encoded once up front and sent without waiting per message (``linger_ms`` batches
them): per-message ``send_and_wait`` leaves thousands of one-record batches in the log, which
slows the embedded broker down sharply.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from aiokafka import AIOKafkaProducer

from streaminfer.schemas import headers as h
from streaminfer.schemas.codec import request_body
from streaminfer.schemas.monitoring_events import Label, encode_event

Headers = list[tuple[str, bytes]]


@dataclass(frozen=True, slots=True)
class Payload:
    key: bytes | None
    value: bytes
    headers: Headers


def demo_payloads(rows: np.ndarray, count: int, model: str, input_name: str, run_id: str | None = None) -> list[Payload]:
    """``count`` requests cycling through ``rows``; ids are ``<run>-<n>`` so a run can find its own."""
    run_id = run_id or uuid.uuid4().hex[:8]
    payloads = []
    for n in range(count):
        request_id = f"{run_id}-{n}"
        row = rows[n % len(rows)]
        payloads.append(
            Payload(
                key=request_id.encode(),
                value=request_body(request_id, input_name, row[np.newaxis, :]),
                headers=[(h.REQUEST_ID, request_id.encode()), (h.MODEL_NAME, model.encode())],
            )
        )
    return payloads


def label_payloads(request_ids: list[str], labels: Iterable[int]) -> list[Payload]:
    """Ground truth for earlier requests, for ``inference.labels`` (keyed by request id)."""
    return [
        Payload(key=request_id.encode(), value=encode_event(Label(id=request_id, label=int(label))), headers=[])
        for request_id, label in zip(request_ids, labels)
    ]


def file_payloads(path: Path, model: str) -> list[Payload]:
    """One request body per line of a JSON-lines file; the body's ``id`` (if any) becomes the key."""
    payloads = []
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        try:
            request_id = json.loads(line).get("id")
        except (json.JSONDecodeError, AttributeError):
            request_id = None  # sent as is: the pipeline dead-letters it with its reason
        key = str(request_id).encode() if request_id else None
        headers = [(h.MODEL_NAME, model.encode())]
        if request_id:
            headers.append((h.REQUEST_ID, str(request_id).encode()))
        payloads.append(Payload(key=key, value=line.encode(), headers=headers))
    return payloads


async def send_all(
    producer: AIOKafkaProducer,
    topic: str,
    payloads: Iterable[Payload],
    on_sent: Callable[[int], None] | None = None,
    window: int = 2000,
) -> int:
    """Send everything, waiting for acknowledgements every ``window`` records; returns the count."""
    pending = []
    sent = 0
    for payload in payloads:
        pending.append(await producer.send(topic, value=payload.value, key=payload.key, headers=payload.headers))
        if len(pending) >= window:
            sent += await _settle(pending, on_sent)
    sent += await _settle(pending, on_sent)
    return sent


async def _settle(pending: list, on_sent: Callable[[int], None] | None) -> int:
    for future in pending:
        await future
    count = len(pending)
    pending.clear()
    if on_sent:
        on_sent(count)
    return count
