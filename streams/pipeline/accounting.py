"""What a pipeline counts of its work: per fetched batch the outcomes and latencies (metrics,
cost and the health window), and per commit round the lag of each owned partition.

Kept apart from the loop so the loop reads as the flow of records; everything here runs once
per batch or per round, never per record in a separate pass.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np
from aiokafka import AIOKafkaConsumer, TopicPartition

from streaminfer.monitoring.cost.meter import CostMeter
from streaminfer.monitoring.observability.metrics import PREDICTED, PipelineMetrics
from streaminfer.streams.clock import Clock
from streaminfer.streams.offsets import OffsetTracker
from streaminfer.streams.pipeline.health import HealthWindow
from streaminfer.streams.pipeline.outgoing import Outgoing


class Accounting:
    def __init__(self, metrics: PipelineMetrics, cost: CostMeter, health: HealthWindow, clock: Clock) -> None:
        self._metrics, self._cost, self._health, self._clock = metrics, cost, health, clock
        self._lag_labels: set[TopicPartition] = set()
        self.lag_total: int | None = None
        """Records behind over the owned partitions at the last ``export_lag`` (None: unknown yet)."""

    def count(self, outgoing: Sequence[Outgoing]) -> None:
        """Metrics per fetched batch: one counter update per label set, not per record; one pass
        over the records (request timestamps and outcomes together), the latencies then computed
        and bucketed for the whole batch at once."""
        now_ms = self._clock.time() * 1000
        errors: Counter[tuple[str, str, str]] = Counter()
        stamps: dict[tuple[str, str], list[int]] = {}
        for out in outgoing:
            if out.reason is None:
                key = (out.model or "", out.version or "")
                kept = stamps.get(key)
                if kept is None:
                    kept = stamps[key] = []
                kept.append(out.request_timestamp_ms)
            else:
                errors[(out.model or "", out.version or "", out.reason.value)] += 1
        predicted: dict[tuple[str, str], list[float]] = {}
        for (model, version), kept in stamps.items():
            elapsed_s = np.maximum(now_ms - np.asarray(kept, dtype=np.float64), 0.0) / 1000
            self._metrics.requests.labels(model, version, PREDICTED).inc(len(kept))
            self._cost.answered(model, version, len(kept))
            self._metrics.end_to_end_seconds.observe_many((model,), elapsed_s)
            predicted[(model, version)] = elapsed_s.tolist()
        failed: Counter[tuple[str, str]] = Counter()
        for (model, version, reason), count in errors.items():
            self._metrics.requests.labels(model, version, reason).inc(count)
            failed[(model, version)] += count
        for key in predicted.keys() | failed.keys():
            answered = predicted.get(key, [])
            self._health.observe(key[0], key[1], len(answered) + failed[key], failed[key], answered)

    def export_lag(self, consumer: AIOKafkaConsumer, tracker: OffsetTracker) -> None:
        """Records behind per owned partition: the high watermark of the latest fetch minus the
        offset after the records that have ended. (Brokers that report the high watermark as the
        last batch's base offset + 1, like the embedded one, make this a slight underestimate.)"""
        owned = set(consumer.assignment())
        for tp in self._lag_labels - owned:
            self._metrics.consumer_lag.remove(tp.topic, str(tp.partition))
        self._lag_labels = set()
        total = None
        for tp in owned:
            highwater = consumer.highwater(tp)
            ended = tracker.ended_through(tp)
            if highwater is None or ended is None:
                continue
            lag = max(0, highwater - ended)
            self._metrics.consumer_lag.labels(tp.topic, str(tp.partition)).set(lag)
            self._lag_labels.add(tp)
            total = lag + (total or 0)
        self.lag_total = total
