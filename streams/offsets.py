"""Which offset may be committed: the end of the contiguous run of finished records.

Batches finish out of order, so "finished" is tracked per record and the commit point only moves
past an offset once every record at or before it has ended as an acknowledged prediction or dead
letter. This is the whole at-least-once guarantee; keep it small and tested.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable

from aiokafka import TopicPartition


class _PartitionLedger:
    __slots__ = ("commit_point", "done", "pending")

    def __init__(self) -> None:
        self.pending: deque[int] = deque()
        self.done: set[int] = set()
        self.commit_point: int | None = None  # next offset to read, i.e. the value to commit

    def add(self, offset: int) -> None:
        self.pending.append(offset)

    def finish(self, offset: int) -> None:
        self.done.add(offset)
        while self.pending and self.pending[0] in self.done:
            head = self.pending.popleft()
            self.done.discard(head)
            self.commit_point = head + 1


class OffsetTracker:
    def __init__(self) -> None:
        self._ledgers: dict[TopicPartition, _PartitionLedger] = {}
        self._committed: dict[TopicPartition, int] = {}

    def track(self, tp: TopicPartition, offset: int) -> None:
        """Register a record as taken from Kafka, in the order it was read."""
        self._ledgers.setdefault(tp, _PartitionLedger()).add(offset)

    def track_all(self, tp: TopicPartition, offsets: Iterable[int]) -> None:
        """``track`` for a partition's records of one fetch, in the order they were read."""
        ledger = self._ledgers.get(tp)
        if ledger is None:
            ledger = self._ledgers[tp] = _PartitionLedger()
        ledger.pending.extend(offsets)

    def finish(self, tp: TopicPartition, offset: int) -> None:
        """Mark a record as ended (its prediction or dead letter is acknowledged)."""
        ledger = self._ledgers.get(tp)
        if ledger is not None:  # a revoked partition's late finish is ignored
            ledger.finish(offset)

    def committable(self) -> dict[TopicPartition, int]:
        """Offsets to commit that move a partition forward since the last ``mark_committed``."""
        out = {}
        for tp, ledger in self._ledgers.items():
            point = ledger.commit_point
            if point is not None and point > self._committed.get(tp, -1):
                out[tp] = point
        return out

    def mark_committed(self, offsets: dict[TopicPartition, int]) -> None:
        self._committed.update(offsets)

    def ended_through(self, tp: TopicPartition) -> int | None:
        """The offset after the contiguous prefix of ended records (what a commit would store)."""
        ledger = self._ledgers.get(tp)
        point = ledger.commit_point if ledger is not None else None
        return point if point is not None else self._committed.get(tp)

    def pending_count(self) -> int:
        return sum(len(ledger.pending) for ledger in self._ledgers.values())

    def forget(self, partitions: Iterable[TopicPartition]) -> None:
        """Drop state of partitions this consumer no longer owns."""
        for tp in partitions:
            self._ledgers.pop(tp, None)
            self._committed.pop(tp, None)
