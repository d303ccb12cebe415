"""Records of many partitions, handed on in event-time order across fetches.

A reader of all partitions gets them fetch by fetch, and a fetch holds whichever partitions'
data came back: when the reader is behind, one fetch can hold a whole partition's backlog and
the next another's. Count-based drift windows fed in that order mix the start and the end of
the stream, so a shift shows in the wrong windows or in none. Sorting inside a fetch does not
help; this merge holds records back until no partition can still deliver an earlier one.

A topic's *watermark* is the least, over its partitions, of what each can still deliver: the
newest timestamp seen in a partition that has more to read; for a partition read to its end,
the time its end was last seen less ``grace_s``, since a record produced before then may still be
on its way (a producer's linger and batching, another host's clock). Records at or below the
watermark are handed on, merged by timestamp; a partition's records always leave in offset
order, so the offsets handed on are a prefix of each partition and a checkpoint of them resumes
exactly after what was processed (what was held is read again). A live stream is so processed
about ``grace_s`` behind; a backlog, as fast as it is read. Records of one millisecond are spread
evenly across partitions (``_spread_ties``), the best guess at the order they were produced in.

A partition that stays behind (a slow broker, an open transaction) would hold the others back
forever, so a record waits at most ``max_wait_s`` of wall time, and at most ``max_records`` are
held; past either bound the oldest go out in order anyway.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping

from aiokafka import TopicPartition
from aiokafka.structs import ConsumerRecord

from streaminfer.streams.single_reader import Batches


class EventTimeMerge:
    """``add`` each fetch, then ``release`` what is safe to process, in timestamp order."""

    def __init__(
        self, max_wait_s: float, max_records: int, grace_s: float = 1.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._max_wait_s = max_wait_s
        self._grace_ms = grace_s * 1000
        self._max_records = max_records
        self._clock = clock
        self._held: dict[TopicPartition, deque[tuple[float, ConsumerRecord]]] = {}
        self._newest: dict[TopicPartition, int] = {}
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def add(self, batches: Batches) -> None:
        now = self._clock()
        for tp, records in batches.items():
            held = self._held.setdefault(tp, deque())
            for record in records:
                held.append((now, record))
                self._newest[tp] = max(self._newest.get(tp, record.timestamp), record.timestamp)
            self._count += len(records)

    def release(self, partitions: Iterable[TopicPartition], at_end: Mapping[TopicPartition, float]) -> list[ConsumerRecord]:
        """What may be processed now, oldest first. ``partitions`` are all those read (one that
        has not delivered anything yet holds its topic back too); ``at_end``: those read up to
        their end, with when that end was seen (Unix ms, the clock of record timestamps)."""
        watermarks = self._watermarks(partitions, at_end)
        forced = self._forced_watermark()
        keyed: list[tuple[int, float, ConsumerRecord]] = []
        for tp, held in self._held.items():
            bound = max(watermarks.get(tp.topic, _NO_BOUND), forced)
            taken: list[ConsumerRecord] = []
            while held and held[0][1].timestamp <= bound:
                taken.append(held.popleft()[1])
            keyed.extend(_spread_ties(taken))
        self._count -= len(keyed)
        keyed.sort(key=lambda item: (item[0], item[1]))  # stable: a partition's order is kept
        return [record for _, _, record in keyed]

    def _watermarks(
        self, partitions: Iterable[TopicPartition], at_end: Mapping[TopicPartition, float]
    ) -> dict[str, float]:
        marks: dict[str, float] = {}
        for tp in partitions:
            if tp in at_end:  # all it has is here, bar what was produced too recently to be
                limit = max(at_end[tp] - self._grace_ms, self._newest.get(tp, _NO_BOUND))
            else:
                limit = self._newest.get(tp, _NO_BOUND)
            marks[tp.topic] = min(marks.get(tp.topic, float("inf")), limit)
        return marks

    def _forced_watermark(self) -> float:
        """The timestamp up to which records go out whatever the watermark: those held past
        ``max_wait_s``, and the oldest beyond ``max_records``."""
        forced = _NO_BOUND
        overdue = self._clock() - self._max_wait_s
        for held in self._held.values():
            for arrived, record in held:
                if arrived > overdue:
                    break
                forced = max(forced, record.timestamp)
        excess = self._count - self._max_records
        if excess > 0:
            oldest = sorted(record.timestamp for held in self._held.values() for _, record in held)
            forced = max(forced, oldest[excess - 1])
        return forced


def _spread_ties(records: list[ConsumerRecord]) -> list[tuple[int, float, ConsumerRecord]]:
    """Each record with its timestamp and where it falls among its partition's records of the
    same millisecond, from 0 to 1. A fast producer stamps hundreds of records with one
    millisecond; sorted by timestamp alone, one partition's share of it would all come before
    the next's. Spread evenly instead, records of a millisecond interleave across partitions
    much as they were produced (keys spread them over partitions at random)."""
    out: list[tuple[int, float, ConsumerRecord]] = []
    start = 0
    while start < len(records):
        stamp, end = records[start].timestamp, start + 1
        while end < len(records) and records[end].timestamp == stamp:
            end += 1
        run = end - start
        out.extend((stamp, (i + 0.5) / run, records[start + i]) for i in range(run))
        start = end
    return out


_NO_BOUND = float("-inf")
