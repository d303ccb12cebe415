"""EventTimeMerge: records of several partitions leave in timestamp order across fetches."""

from __future__ import annotations

from aiokafka import TopicPartition
from aiokafka.structs import ConsumerRecord

from streaminfer.streams.event_time import EventTimeMerge
from streaminfer.streams.single_reader import advance_past

A, B = TopicPartition("requests", 0), TopicPartition("requests", 1)
LABELS = TopicPartition("labels", 0)
SEEN = 1_000_000.0
"""When a partition read to its end was last seen: long after every record in these tests."""


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def records(tp: TopicPartition, timestamps: list[int], first_offset: int = 0) -> list[ConsumerRecord]:
    return [
        ConsumerRecord(tp.topic, tp.partition, first_offset + i, ts, 0, None, b"", None, 0, 0, [])
        for i, ts in enumerate(timestamps)
    ]


def stamps(released: list[ConsumerRecord]) -> list[tuple[int, int]]:
    return [(r.partition, r.timestamp) for r in released]


def test_a_backlog_fetched_one_partition_at_a_time_leaves_in_timestamp_order():
    merge = EventTimeMerge(max_wait_s=5, max_records=1000, clock=Clock())
    merge.add({A: records(A, [1, 3, 5, 7])})
    assert merge.release({A, B}, at_end={A: SEEN}) == []  # B may still deliver something earlier
    merge.add({B: records(B, [2, 4, 6, 8])})
    released = merge.release({A, B}, at_end={A: SEEN, B: SEEN})
    assert [ts for _, ts in stamps(released)] == [1, 2, 3, 4, 5, 6, 7, 8]
    assert len(merge) == 0


def test_records_up_to_the_slowest_partitions_newest_leave_and_the_rest_wait():
    merge = EventTimeMerge(max_wait_s=5, max_records=1000, clock=Clock())
    merge.add({A: records(A, [1, 3, 5, 7]), B: records(B, [2, 4])})
    assert stamps(merge.release({A, B}, at_end={})) == [(0, 1), (1, 2), (0, 3), (1, 4)]
    assert len(merge) == 2
    merge.add({B: records(B, [6, 9], first_offset=2)})
    assert stamps(merge.release({A, B}, at_end={})) == [(0, 5), (1, 6), (0, 7)]


def test_a_partition_read_to_its_end_holds_nothing_back():
    merge = EventTimeMerge(max_wait_s=5, max_records=1000, clock=Clock())
    merge.add({A: records(A, [10, 20])})
    assert len(merge.release({A, B}, at_end={A: SEEN, B: SEEN})) == 2


def test_a_partition_at_its_end_holds_back_what_was_produced_within_the_grace_before_its_end_was_seen():
    merge = EventTimeMerge(max_wait_s=60, max_records=1000, grace_s=1.0, clock=Clock())
    merge.add({B: records(B, [3_000, 4_000, 4_500])})
    # A is read to its end as of 5,000 ms; a record A's producer made at 4,200 may still arrive
    assert [ts for _, ts in stamps(merge.release({A, B}, at_end={A: 5_000, B: 5_000}))] == [3_000, 4_000]
    assert [ts for _, ts in stamps(merge.release({A, B}, at_end={A: 5_600, B: 5_600}))] == [4_500]


def test_each_topic_waits_only_for_its_own_partitions():
    merge = EventTimeMerge(max_wait_s=5, max_records=1000, clock=Clock())
    merge.add({A: records(A, [10, 20])})
    # labels are behind (nothing fetched yet): the requests topic does not wait for them
    assert len(merge.release({A, LABELS}, at_end={A: SEEN})) == 2


def test_records_of_one_millisecond_interleave_across_partitions_instead_of_one_partition_after_another():
    merge = EventTimeMerge(max_wait_s=5, max_records=1000, clock=Clock())
    merge.add({A: records(A, [7, 7, 7, 7, 8]), B: records(B, [7, 7, 9])})
    released = merge.release({A, B}, at_end={A: SEEN, B: SEEN})
    assert [(r.partition, r.offset) for r in released] == [
        (0, 0), (1, 0), (0, 1), (0, 2), (1, 1), (0, 3), (0, 4), (1, 2)
    ]


def test_a_partition_that_stays_behind_holds_the_others_only_for_max_wait():
    clock = Clock()
    merge = EventTimeMerge(max_wait_s=5, max_records=1000, clock=clock)
    merge.add({A: records(A, [1, 2, 3])})
    clock.now = 4.9
    assert merge.release({A, B}, at_end={}) == []
    clock.now = 5.0
    assert stamps(merge.release({A, B}, at_end={})) == [(0, 1), (0, 2), (0, 3)]


def test_beyond_max_records_the_oldest_leave_first():
    merge = EventTimeMerge(max_wait_s=60, max_records=3, clock=Clock())
    merge.add({A: records(A, [1, 3, 5, 7])})
    # B has delivered nothing, so it holds the topic back; one record over the bound goes anyway
    assert stamps(merge.release({A, B}, at_end={})) == [(0, 1)]
    assert len(merge) == 3


def test_offsets_handed_on_are_a_prefix_of_each_partition():
    merge = EventTimeMerge(max_wait_s=5, max_records=1000, clock=Clock())
    # timestamps out of order inside a partition (two producers): offset order still wins
    merge.add({A: records(A, [1, 9, 2, 3], first_offset=100), B: records(B, [4], first_offset=7)})
    released = merge.release({A, B}, at_end={})
    assert [(r.partition, r.offset) for r in released] == [(0, 100), (1, 7)]
    offsets: dict[tuple[str, int], int] = {}
    advance_past(offsets, released)
    assert offsets == {("requests", 0): 101, ("requests", 1): 8}
