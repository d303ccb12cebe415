"""What every fault scenario does around its fault: a steady feed of requests, and a watch on the
answers that times the recovery and ends with everything the pipelines answered.

The feed counts as sent only what the broker acknowledged. A send that fails (the broker is away)
is not retried under the same request id, since it may have landed after all: its id is kept
apart as ``unconfirmed`` and a fresh id takes its place, until ``count`` are acknowledged. The
producer is idempotent, so its own retries never put a request in the topic twice.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable

from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError, OutOfOrderSequenceNumber
from aiokafka.structs import RecordMetadata

from streaminfer.demo.model import DEMO_MODEL, INPUT_NAME, demo_data
from streaminfer.schemas import headers as h
from streaminfer.schemas.codec import request_body
from streaminfer.streams.settings import KafkaSettings, TopicSettings
from tests.integration.faults.ledger import Guarantee, LedgerReport, ledger
from tests.support.harness import Collected, Collector, ends

TICK_S = 0.05
SEND_TIMEOUT_MS = 5_000


class Feed:
    """Sends ``count`` demo requests at ``rate_per_s``, ids ``{prefix}-{n}``, while faults happen."""

    def __init__(self, bootstrap: str, topic: str, count: int, rate_per_s: float, prefix: str) -> None:
        self._bootstrap, self._topic, self._count, self._rate, self._prefix = bootstrap, topic, count, rate_per_s, prefix
        self._producer = self._new_producer()
        self._rows = demo_data().x_test
        self._pending: set[asyncio.Future] = set()
        self._task: asyncio.Task[None] | None = None
        self._stale = False
        self.acknowledged: dict[str, RecordMetadata] = {}
        self.unconfirmed: set[str] = set()
        self.done = asyncio.Event()

    def _new_producer(self) -> AIOKafkaProducer:
        return AIOKafkaProducer(
            bootstrap_servers=self._bootstrap, linger_ms=5, request_timeout_ms=SEND_TIMEOUT_MS, enable_idempotence=True
        )

    async def start(self) -> Feed:
        await self._producer.start()
        self._task = asyncio.create_task(self._run())
        self._task.add_done_callback(lambda _: self.done.set())
        return self

    async def _run(self) -> None:
        """Attempts keep to the rate, failed ones included: an outage is not followed by a burst."""
        n, started = 0, time.monotonic()
        while len(self.acknowledged) < self._count:
            due = int((time.monotonic() - started) * self._rate) + 1
            while n < due and len(self.acknowledged) + len(self._pending) < self._count:
                await self._send(f"{self._prefix}-{n}", self._rows[n % len(self._rows)])
                n += 1
            if self._stale:
                await self._renew_producer()
            await asyncio.sleep(TICK_S)

    async def _renew_producer(self) -> None:
        """aiokafka's idempotent producer does not reset its sequence numbers after batches expired
        in an outage: every later send fails with OutOfOrderSequenceNumber. A new one (a new
        producer id) starts afresh, as a client would restart."""
        await asyncio.gather(*self._pending, return_exceptions=True)
        await self._producer.stop()
        self._producer = self._new_producer()
        await self._producer.start()
        self._stale = False

    async def _send(self, request_id: str, row) -> None:
        value = request_body(request_id, INPUT_NAME, row[None, :])
        headers = [(h.MODEL_NAME, DEMO_MODEL.encode()), (h.REQUEST_ID, request_id.encode())]
        try:
            future = await self._producer.send(self._topic, value=value, key=request_id.encode(), headers=headers)
        except KafkaError:
            self.unconfirmed.add(request_id)
            return
        self._pending.add(future)
        future.add_done_callback(functools.partial(self._settled, request_id))

    def _settled(self, request_id: str, future: asyncio.Future) -> None:
        self._pending.discard(future)
        if not future.cancelled() and future.exception() is None:
            self.acknowledged[request_id] = future.result()
            return
        self.unconfirmed.add(request_id)
        if isinstance(future.exception() if not future.cancelled() else None, OutOfOrderSequenceNumber):
            self._stale = True

    async def finish(self, timeout_s: float) -> dict[TopicPartition, int]:
        """Wait until ``count`` requests are acknowledged; where each partition's requests end."""
        try:
            await asyncio.wait_for(self.done.wait(), timeout_s)
        finally:
            await self.stop()
        assert self._task is not None
        self._task.result()  # a feed that failed fails the scenario
        return ends(*({m.topic_partition: m.offset + 1} for m in self.acknowledged.values()))

    async def stop(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await asyncio.gather(*self._pending, return_exceptions=True)
        await self._producer.stop()


class Watch:
    """Reads the answers (``read_committed`` for exactly-once) and times the recovery: from
    ``fault()`` until the first answer appended to its topic after it. The output topics keep the
    broker's append time (``message.timestamp.type=LogAppendTime``, see ``output_topic_configs``),
    so the time is when an answer landed, however late this reader reads it."""

    def __init__(self, bootstrap: str, topics: TopicSettings, guarantee: Guarantee) -> None:
        isolation = "read_committed" if guarantee == "exactly_once" else "read_uncommitted"
        self._collector = Collector(bootstrap, topics, isolation_level=isolation)
        self._fault_at: float | None = None

    @property
    def collected(self) -> Collected:
        return self._collector.collected

    async def __aenter__(self) -> Watch:
        await self._collector.__aenter__()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._collector.__aexit__(*exc)

    def fault(self) -> None:
        """Call the moment the fault is in place."""
        self._fault_at = time.time()

    async def until(self, predicate: Callable[[Collected], bool], timeout_s: float, what: str) -> None:
        deadline = time.monotonic() + timeout_s
        while not predicate(self.collected):
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
            await self._collector.poll(100)

    def recover_s(self) -> float | None:
        """None before ``fault()``, or if nothing was answered after it."""
        if self._fault_at is None:
            return None
        fault_ms = self._fault_at * 1000
        after = [r.timestamp for r in (*self.collected.predictions, *self.collected.dead_letters) if r.timestamp >= fault_ms]
        return (min(after) - fault_ms) / 1000 if after else None

    async def report(
        self, scenario: str, guarantee: Guarantee, kafka: KafkaSettings, feed: Feed, sent: dict[TopicPartition, int],
        timeout_s: float,
    ) -> LedgerReport:
        """Everything answered once the group committed through ``sent``, as a ledger."""
        collected = await self._collector.caught_up(kafka, sent, timeout_s)
        return ledger(scenario, guarantee, feed.acknowledged, collected, self.recover_s(), unconfirmed=feed.unconfirmed)


OUTPUT_TOPIC_CONFIGS = {"message.timestamp.type": "LogAppendTime"}
"""For the predictions and dead-letter topics of a scenario: each record's timestamp is when the
broker appended it (``Watch.recover_s`` reads them)."""
