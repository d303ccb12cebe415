"""What a pipeline counts of its work: per fetched batch the outcomes and latencies (metrics,
cost and the health window), and per commit round the lag of each owned partition.

Kept apart from the loop so the loop reads as the flow of records; everything here runs once
per batch or per round, never per record in a separate pass.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

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
        over the records (latencies and outcomes together)."""
        now_ms = self._clock.time() * 1000
        errors: Counter[tuple[str, str, str]] = Counter()
        seconds: dict[tuple[str, str], list[float]] = {}
        for out in outgoing:
            if out.reason is None:
                key = (out.model or "", out.version or "")
                elapsed = now_ms - out.request_timestamp_ms
                kept = seconds.get(key)
                if kept is None:
                    kept = seconds[key] = []
                kept.append(elapsed / 1000 if elapsed > 0 else 0.0)
            else:
                errors[(out.model or "", out.version or "", out.reason.value)] += 1
        for (model, version), elapsed_s in seconds.items():
            self._metrics.requests.labels(model, version, PREDICTED).inc(len(elapsed_s))
            self._cost.answered(model, version, len(elapsed_s))
            observe = self._metrics.end_to_end_seconds.labels(model).observe
            for value in elapsed_s:
                observe(value)
        failed: Counter[tuple[str, str]] = Counter()
        for (model, version, reason), count in errors.items():
            self._metrics.requests.labels(model, version, reason).inc(count)
            failed[(model, version)] += count
        for key in seconds.keys() | failed.keys():
            predicted = seconds.get(key, [])
            self._health.observe(key[0], key[1], len(predicted) + failed[key], failed[key], predicted)

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
