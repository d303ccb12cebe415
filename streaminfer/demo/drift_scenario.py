"""`streaminfer demo --drift`: a stream whose features shift half-way, with labels, and what the
monitor made of it (which detectors fired, how soon after the shift, online accuracy)."""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from dataclasses import dataclass, field

import pandas as pd
import ray
from rich.table import Table

from streaminfer.loadgen import Payload, demo_payloads, label_payloads
from streaminfer.monitoring.drift.simulate import Shift, default_shift, drifting_stream
from streaminfer.schemas.monitoring_events import DriftEvent, decode_drift_event
from streaminfer.settings import AppSettings
from streaminfer.streams.clients import make_consumer, start_client
from streaminfer.workers.models.repository import ModelVersion

MONITOR_CATCH_UP_S = 120.0


@dataclass
class DriftStream:
    requests: list[Payload]
    labels: list[Payload]
    shift: Shift


def drift_stream(entry: ModelVersion, count: int, run_id: str, input_name: str) -> DriftStream:
    frame = pd.read_parquet(entry.reference_path)
    features = frame[entry.metadata.feature_names]
    shift = default_shift(list(features.columns), count)
    rows, picks = drifting_stream(features, count, shift, seed=17)
    requests = demo_payloads(rows, count, entry.name, input_name, run_id)
    ids = [f"{run_id}-{n}" for n in range(count)]
    return DriftStream(requests, label_payloads(ids, frame["target"].to_numpy()[picks]), shift)


@dataclass
class DriftSummary:
    shift: Shift
    events: list[DriftEvent]
    quality: dict[str, dict[str, float]]
    labels: dict[str, int]
    windows: int = 0
    windows_drifted: int = 0
    reports: list[str] = field(default_factory=list)

    def table(self) -> Table:
        table = Table(title=f"drift (shifted {', '.join(self.shift.features)} by {self.shift.by_std:g} std "
                            f"from request {self.shift.at_row})")
        for column in ("feature", "detector", "events", "first detection"):
            table.add_column(column)
        grouped: dict[tuple[str, str], list[DriftEvent]] = defaultdict(list)
        for event in self.events:
            grouped[(event.feature, event.detector)].append(event)
        for (feature, detector), events in sorted(grouped.items()):
            if events[0].kind == "window":
                first = f"{len(events)} of {self.windows} windows ({events[0].samples} rows each)"
            else:
                seen = min(e.samples for e in events)
                first = f"after {seen} rows ({seen - self.shift.at_row:+d} from the shift)"
            table.add_row(feature, detector, str(len(events)), first)
        return table

    def line(self) -> str:
        quality = "; ".join(
            f"{model} accuracy={q.get('accuracy', float('nan')):.3f} auc={q.get('roc_auc', float('nan')):.3f}"
            for model, q in self.quality.items()
        )
        flagged = sorted({e.feature for e in self.events})
        return (f"drift: {len(self.events)} events on {', '.join(flagged) or 'nothing'}; "
                f"windows drifted {self.windows_drifted}/{self.windows}; online {quality or 'n/a'}; "
                f"labels {', '.join(f'{k}={v}' for k, v in sorted(self.labels.items()))}")


async def wait_for_monitor(monitor: ray.actor.ActorHandle, requests: int, labels: int) -> dict[str, object]:
    """Until the monitor has read every request, prediction and label of the run."""
    deadline = time.monotonic() + MONITOR_CATCH_UP_S
    state: dict[str, object] = {}
    while time.monotonic() < deadline:
        state = (await monitor.ensure_started.remote()).detail
        seen = state.get("records", {})
        if seen.get("requests", 0) >= requests and seen.get("predictions", 0) >= requests and seen.get("labels", 0) >= labels:
            await asyncio.sleep(0.5)
            return (await monitor.ensure_started.remote()).detail
        await asyncio.sleep(0.5)
    return state


async def read_drift_events(settings: AppSettings, since_ms: int) -> list[DriftEvent]:
    consumer = make_consumer(settings.kafka, settings.monitor.topics.drift, group_id=None)
    await start_client(consumer, settings.kafka.bootstrap)
    events = []
    try:
        idle = 0
        while idle < 3:
            batches = await consumer.getmany(timeout_ms=300)
            idle = 0 if batches else idle + 1
            for records in batches.values():
                events += [decode_drift_event(r.value) for r in records if r.timestamp >= since_ms]
    finally:
        await consumer.stop()
    return events


def summarise(shift: Shift, events: list[DriftEvent], state: dict[str, object]) -> DriftSummary:
    reports = sorted({e.report for e in events if e.report})
    records: dict[str, int] = state.get("records", {})  # type: ignore[assignment]
    return DriftSummary(
        shift, events, state.get("quality", {}), state.get("labels", {}),  # type: ignore[arg-type]
        records.get("windows", 0), records.get("windows_drifted", 0), reports,
    )
