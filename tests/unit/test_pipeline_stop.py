"""Stopping never hangs on the broker: a group stuck in a rebalance (a member that left and is
still awaited, as the embedded broker sometimes does) holds each stop step at most
``stop_step_timeout_s``; what could not be committed is redelivered later."""

from __future__ import annotations

import asyncio
import time

from prometheus_client import CollectorRegistry

from streaminfer.monitoring.observability.metrics import PipelineMetrics
from streaminfer.streams.pipeline.loop import Pipeline
from streaminfer.streams.settings import KafkaSettings, PipelineSettings, TopicSettings
from streaminfer.workers.models.repository import ModelRepository
from streaminfer.workers.routing.served import ServedModels


class ConsumerInEndlessRebalance:
    def __init__(self) -> None:
        self.stop_called = False

    async def getmany(self, **_: object) -> dict:
        await asyncio.Event().wait()
        return {}

    async def stop(self) -> None:
        self.stop_called = True
        await asyncio.Event().wait()


class DeliveryThatNeverCommits:
    async def commit(self) -> None:
        await asyncio.Event().wait()


class ProducerThatStops:
    stopped = False

    async def stop(self) -> None:
        self.stopped = True


async def test_stop_gives_up_on_a_fetch_a_commit_and_a_group_leave_that_never_finish(tmp_path):
    settings = PipelineSettings(stop_step_timeout_s=0.3)
    models = ServedModels(ModelRepository(tmp_path), "none", make_pool=lambda entry: None)  # type: ignore[arg-type,return-value]
    pipeline = Pipeline(KafkaSettings(), TopicSettings(), settings, models, PipelineMetrics(CollectorRegistry()))
    consumer, producer = ConsumerInEndlessRebalance(), ProducerThatStops()
    pipeline._consumer, pipeline._producer = consumer, producer  # type: ignore[assignment]
    pipeline._delivery = DeliveryThatNeverCommits()  # type: ignore[assignment]
    pipeline._tasks = [asyncio.create_task(consumer.getmany(), name="consume")]  # type: ignore[list-item]

    started = time.monotonic()
    await asyncio.wait_for(pipeline.stop(), timeout=5)

    assert time.monotonic() - started < 2
    assert consumer.stop_called and producer.stopped
