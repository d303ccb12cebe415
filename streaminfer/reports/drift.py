"""`streaminfer drift report --bootstrap ...`: an evidently report of the newest requests, now.

Reads the requests topic from the beginning (end offsets are not trustworthy on every broker, so
"newest" is found by reading until no more arrive), keeps the newest ``rows`` rows of the model,
and tests them against the model's training reference as one window.
"""

from __future__ import annotations

from collections import deque
from pathlib import Path

import numpy as np

from streaminfer.errors import NothingToReport
from streaminfer.monitoring.drift.model_watch import new_watch
from streaminfer.monitoring.drift.windows import ClosedWindow
from streaminfer.schemas.codec import decode_request, request_tensors
from streaminfer.schemas.errors import StreamInferError
from streaminfer.schemas.headers import parse_request_headers
from streaminfer.settings import AppSettings
from streaminfer.streams.clients import check_reachable, make_consumer, start_client
from streaminfer.workers.models.repository import ModelRepository

IDLE_POLLS = 3


async def report_from_topic(settings: AppSettings, model: str, rows: int) -> tuple[Path, list[str]]:
    entry = ModelRepository(settings.model_repository).resolve(model)
    watch = new_watch(entry, settings.monitor)
    if watch.window is None or watch.input_name is None:
        raise NothingToReport(f"{entry.name}/{entry.version} has no reference.parquet or no single matrix input to compare")
    await check_reachable(settings.kafka)
    consumer = make_consumer(settings.kafka, settings.topics.requests, group_id=None)
    await start_client(consumer, settings.kafka.bootstrap)
    newest: deque[tuple[np.ndarray, int]] = deque(maxlen=rows)
    try:
        idle = 0
        while idle < IDLE_POLLS:
            batches = await consumer.getmany(timeout_ms=500, max_records=5000)
            idle = 0 if batches else idle + 1
            for records in batches.values():
                for record in records:
                    headers = parse_request_headers(record.headers)
                    if (headers.model_name or settings.pipeline.default_model) != entry.name:
                        continue
                    try:
                        tensors, _ = request_tensors(decode_request(record.value), watch.signature)
                    except StreamInferError:
                        continue
                    for row in watch.watched(tensors[watch.input_name]):  # no personal features
                        newest.append((row, record.timestamp))
    finally:
        await consumer.stop()
    if len(newest) < settings.monitor.window_min_rows:
        raise NothingToReport(
            f"only {len(newest)} readable requests for {entry.name} on {settings.topics.requests}; "
            f"a report needs at least {settings.monitor.window_min_rows}"
        )
    import pandas as pd

    frame = pd.DataFrame(np.stack([row for row, _ in newest]), columns=watch.window.feature_names)
    result = watch.window.evaluate(ClosedWindow(frame, newest[0][1], newest[-1][1], seen=len(newest)))
    assert result.report is not None
    return result.report, result.drifted
