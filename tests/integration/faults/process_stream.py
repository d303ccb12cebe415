"""The moving parts every process fault scenario shares: requests sent at a steady rate while the
fault happens, answers read as they arrive (each id's first arrival timed), and the time to recover.

Time to recover, as the process scenarios measure it: **seconds from the fault's end until every
request that was sent and still had no answer at that moment has one** (the backlog the fault
left behind is cleared). A kill is over the moment it happens; for faults repeated every few
seconds the report gives the longest of them. It is an upper bound on "answers flow again": a
request of a partition the fault stalled counts, however well the other partitions kept flowing.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.structs import RecordMetadata

from tests.support.harness import Collected, Collector, Ends, Record, ends

RECOVERY = (
    "seconds from the fault's end until every request sent and unanswered at that moment is answered "
    "(the longest over the run's faults)"
)
TICKS_PER_S = 10


class Feed:
    """Sends ``records`` at ``rate_per_s`` until all are sent, the way clients keep sending while a
    fault happens. ``sent_count()`` is how many were handed to the producer so far, in order."""

    def __init__(self, bootstrap: str, topic: str, records: Sequence[Record], rate_per_s: int) -> None:
        self._producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, max_batch_size=262_144)
        self._topic, self._records, self._rate = topic, records, rate_per_s
        self._pending: list[asyncio.Future[RecordMetadata]] = []
        self._sent = 0
        self._task: asyncio.Task[None] | None = None
        self.placed: dict[TopicPartition, int] = {}

    def sent_count(self) -> int:
        return self._sent

    async def start(self) -> Feed:
        await self._producer.start()
        self._task = asyncio.create_task(self._run(), name="feed")
        return self

    async def _run(self) -> None:
        per_tick = max(1, self._rate // TICKS_PER_S)
        started = time.monotonic()
        for tick, first in enumerate(range(0, len(self._records), per_tick)):
            for key, value, headers in self._records[first : first + per_tick]:
                future = await self._producer.send(self._topic, value=value, key=key, headers=headers)
                future.add_done_callback(self._placed)
                self._pending.append(future)
                self._sent += 1
            await asyncio.sleep(max(0.0, started + (tick + 1) / TICKS_PER_S - time.monotonic()))

    def _placed(self, future: asyncio.Future[RecordMetadata]) -> None:
        if not future.cancelled() and future.exception() is None:
            meta = future.result()
            self.placed[meta.topic_partition] = max(self.placed.get(meta.topic_partition, 0), meta.offset + 1)

    @property
    def done(self) -> bool:
        return self._task is not None and self._task.done()

    async def finish(self) -> Ends:
        """Wait until every record is sent and acknowledged; where each partition now ends."""
        if self._task is not None:
            await self._task
        await asyncio.gather(*self._pending)
        await self._producer.stop()
        return ends(self.placed)

    async def close(self) -> None:
        """For ``finally``: stop sending, whatever state the feed is in."""
        if self._task is not None and not self._task.done():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._producer.stop()


@dataclass
class LiveAnswers:
    """Reads a ``Collector`` in the background, timing each request id's first answer
    (``time.monotonic()``); ``stop()`` before reading the collector to its end."""

    collector: Collector
    first_answer: dict[str, float] = field(default_factory=dict)
    _read: dict[str, int] = field(default_factory=lambda: {"predictions": 0, "dead_letters": 0})
    _task: asyncio.Task[None] | None = None
    _stopping: bool = False

    def start(self) -> LiveAnswers:
        self._task = asyncio.create_task(self._run(), name="live-answers")
        return self

    async def _run(self) -> None:
        while not self._stopping:
            await self.collector.poll(100)
            self.note(self.collector.collected)

    def note(self, collected: Collected) -> None:
        now = time.monotonic()
        for kind, records in (("predictions", collected.predictions), ("dead_letters", collected.dead_letters)):
            for request_id in collected.ids(records[self._read[kind] :]):
                self.first_answer.setdefault(request_id, now)
            self._read[kind] = len(records)

    def answered(self) -> int:
        return len(self.first_answer)

    async def until(self, predicate: Callable[[LiveAnswers], bool], timeout_s: float, what: str) -> None:
        deadline = time.monotonic() + timeout_s
        while not predicate(self):
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout_s} s waiting for {what}: {self.answered()} answered")
            if self._task is not None and self._task.done():
                self._task.result()
            await asyncio.sleep(0.1)

    async def close(self) -> None:
        """For ``finally``: stop reading, whatever state the reader is in."""
        self._stopping = True
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def stop(self) -> None:
        self._stopping = True
        if self._task is not None:
            await self._task
            self._task = None
        self.note(self.collector.collected)


@dataclass
class Recovery:
    """Fault ends, each with how many requests had been sent by then; measured once the answers'
    arrival times are known (see the module docstring)."""

    ends: list[tuple[float, int]] = field(default_factory=list)

    def fault_ended(self, sent_so_far: int) -> None:
        self.ends.append((time.monotonic(), sent_so_far))

    def seconds(self, sent_ids: Sequence[str], first_answer: Mapping[str, float]) -> float | None:
        """The longest recovery over the faults; None when there was no fault or a request sent
        before one never got an answer (the ledger reports it missing)."""
        longest: float | None = None
        for ended, sent_so_far in self.ends:
            waited = [first_answer.get(rid) for rid in sent_ids[:sent_so_far]]
            if any(at is None for at in waited):
                return None
            late = [at - ended for at in waited if at is not None and at > ended]
            longest = max(longest or 0.0, max(late, default=0.0))
        return longest


def ids_of(records: Sequence[Record]) -> list[str]:
    return [key.decode() for key, _value, _headers in records if key is not None]
