"""Dead letters read back: counted, selected, and replayed to the requests topic.

A dead letter keeps its request's key, value and headers and appends ``__streaminfer.errors.*``
headers (``schemas.deadletter``). A replay strips those and sends the request again, with two
provenance headers (``schemas.headers``): ``replay-of`` names the dead letter
(``topic/partition/offset``) and ``replay-count`` says how many times the request has been
replayed. A replayed request that fails again is dead-lettered with those headers kept, so its
count survives the round trip; the same dead letter replayed twice is found by its ``replay-of``
on the requests topic. A request already replayed ``max_replays`` times is not sent again but
reported as capped, which keeps a cause that never passes from looping.

Reading "to the end" compares each partition's position with its end offset taken at the start.
A fetch hands over whole record batches, so passing an end offset means the batch holding it was
read whole; that holds also on the embedded broker, whose end offset is its last batch's base
offset + 1 rather than the high watermark.

Delivery is at-least-once: every replayed record is acknowledged before ``replay`` returns, and a
replay that fails part way may send some records again when repeated.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import NamedTuple

from aiokafka.structs import ConsumerRecord

from streaminfer.schemas import headers as h
from streaminfer.schemas.deadletter import original_headers, read_error_headers
from streaminfer.streams.clients import KafkaClients, read_to_end, start_client

DEFAULT_MAX_REPLAYS = 3
"""How many times one request may be replayed before ``replay`` reports it as capped."""

Header = tuple[str, bytes]
_PROVENANCE = (h.REPLAY_OF, h.REPLAY_COUNT)


@dataclass(frozen=True)
class DeadLetter:
    """One dead-letter record as read from its topic."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None
    headers: tuple[Header, ...]

    @classmethod
    def from_record(cls, record: ConsumerRecord) -> DeadLetter:
        return cls(record.topic, record.partition, record.offset, record.timestamp, record.key, record.value,
                   tuple(record.headers))

    @cached_property
    def errors(self) -> dict[str, object]:
        return read_error_headers(self.headers)

    @property
    def reason(self) -> str:
        return str(self.errors.get("reason", ""))

    @property
    def model(self) -> str | None:
        model = self.errors.get("model")
        return None if model is None else str(model)

    @property
    def version(self) -> str | None:
        version = self.errors.get("version")
        return None if version is None else str(version)

    @property
    def retriable(self) -> bool | None:
        """``None``: the writer did not say (dead letters from before the header existed)."""
        retriable = self.errors.get("retriable")
        return None if retriable is None else bool(retriable)

    @property
    def replays(self) -> int:
        """How many times the request in this dead letter had been replayed already."""
        for name, value in reversed(self.headers):
            if name == h.REPLAY_COUNT:
                try:
                    return int(value)
                except ValueError:
                    return 0
        return 0

    @property
    def masked(self) -> bool:
        """Whether the value is the request masked by its model's privacy policy (or dropped)."""
        return (h.PRIVACY_MASKED, b"true") in self.headers

    @property
    def where(self) -> str:
        return f"{self.topic}/{self.partition}/{self.offset}"


def replay_headers(letter: DeadLetter) -> list[Header]:
    """The request's own headers, its former provenance replaced by this replay's."""
    kept = [(k, v) for k, v in original_headers(letter.headers) if k not in _PROVENANCE]
    return [*kept, (h.REPLAY_OF, letter.where.encode()), (h.REPLAY_COUNT, str(letter.replays + 1).encode())]


@dataclass(frozen=True)
class Selection:
    """Which dead letters to replay. Empty sets and ``None`` select everything; the time range is
    on the dead letter's timestamp (when it was dead-lettered), ``since_ms`` inclusive,
    ``until_ms`` exclusive."""

    reasons: frozenset[str] = frozenset()
    models: frozenset[str] = frozenset()
    since_ms: int | None = None
    until_ms: int | None = None
    retriable: bool | None = None

    def matches(self, letter: DeadLetter) -> bool:
        return (
            (not self.reasons or letter.reason in self.reasons)
            and (not self.models or letter.model in self.models)
            and (self.since_ms is None or letter.timestamp_ms >= self.since_ms)
            and (self.until_ms is None or letter.timestamp_ms < self.until_ms)
            and (self.retriable is None or letter.retriable is self.retriable)
        )


class StatsKey(NamedTuple):
    reason: str
    model: str | None
    version: str | None
    retriable: bool | None


def stats(letters: Iterable[DeadLetter]) -> Counter[StatsKey]:
    """Dead letters counted by reason, model, version and retriable."""
    return Counter(StatsKey(d.reason, d.model, d.version, d.retriable) for d in letters)


@dataclass
class ReplayPlan:
    """The selected dead letters, split into those to send and those already replayed too often."""

    send: list[DeadLetter] = field(default_factory=list)
    capped: list[DeadLetter] = field(default_factory=list)
    masked: list[DeadLetter] = field(default_factory=list)
    """Letters holding a masked request (``privacy.masked``), not the original: never sent again,
    since the model would answer a request that was never made."""


def plan_replay(
    letters: Iterable[DeadLetter], selection: Selection, max_replays: int, sent_before: Mapping[str, int] | None = None,
) -> ReplayPlan:
    """``sent_before``: how many times each dead letter (by ``where``) was replayed already, as the
    ``replay-of`` headers on the requests topic say; a dead letter replayed before counts those
    replays on top of its request's own ``replay-count``."""
    plan = ReplayPlan()
    for letter in letters:
        if not selection.matches(letter):
            continue
        if letter.masked:
            plan.masked.append(letter)
            continue
        replays = letter.replays + (sent_before or {}).get(letter.where, 0)
        (plan.capped if replays >= max_replays else plan.send).append(letter)
    return plan


async def read_dead_letters(clients: KafkaClients, topic: str, idle_timeout_s: float = 30.0) -> list[DeadLetter]:
    """Every record of ``topic`` from its beginning to where each partition ends now, without a
    consumer group (nothing is committed). ``idle_timeout_s``: how long a partition may stay short
    of its end with nothing arriving before this gives up on it."""
    records = await read_to_end(clients, topic, idle_timeout_s=idle_timeout_s)
    return sorted((DeadLetter.from_record(r) for r in records), key=lambda d: (d.partition, d.offset))


async def read_replays(clients: KafkaClients, requests_topic: str, since_ms: int | None,
                       idle_timeout_s: float = 30.0) -> Counter[str]:
    """How many times each dead letter was replayed already: the ``replay-of`` headers of the
    requests topic from ``since_ms`` on (a dead letter's replays come after it), to its end now."""
    sent: Counter[str] = Counter()
    for record in await read_to_end(clients, requests_topic, since_ms=since_ms, idle_timeout_s=idle_timeout_s):
        for name, value in record.headers:
            if name == h.REPLAY_OF:
                sent[value.decode("utf-8", errors="replace")] += 1
    return sent


async def replay(
    clients: KafkaClients,
    requests_topic: str,
    letters: Sequence[DeadLetter],
    progress: Callable[[int], None] = lambda sent: None,
) -> int:
    """Send each dead letter's request to ``requests_topic`` with its original key, value and
    headers plus provenance; returns how many the broker acknowledged (all, or this raises)."""
    producer = clients.producer()
    await start_client(producer, clients.kafka.bootstrap)
    acknowledged = 0

    def done(future: asyncio.Future[object]) -> None:
        nonlocal acknowledged
        if not future.cancelled() and future.exception() is None:
            acknowledged += 1
            progress(1)

    try:
        pending = []
        for letter in letters:
            future = await producer.send(requests_topic, value=letter.value, key=letter.key,
                                         headers=replay_headers(letter))
            future.add_done_callback(done)
            pending.append(future)
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return acknowledged
