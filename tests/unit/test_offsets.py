"""The commit point never passes a record that has not ended."""

from __future__ import annotations

from aiokafka import TopicPartition
from hypothesis import given
from hypothesis import strategies as st

from streaminfer.streams.offsets import OffsetTracker

TP = TopicPartition("requests", 0)


def test_commit_point_waits_for_the_oldest_unfinished_record():
    tracker = OffsetTracker()
    for offset in (10, 11, 12):
        tracker.track(TP, offset)
    tracker.finish(TP, 12)
    tracker.finish(TP, 11)
    assert tracker.committable() == {}
    tracker.finish(TP, 10)
    assert tracker.committable() == {TP: 13}


def test_committed_offsets_are_not_offered_again():
    tracker = OffsetTracker()
    tracker.track(TP, 0)
    tracker.finish(TP, 0)
    tracker.mark_committed(tracker.committable())
    assert tracker.committable() == {}


def test_forgotten_partitions_ignore_late_finishes():
    tracker = OffsetTracker()
    tracker.track(TP, 5)
    tracker.forget([TP])
    tracker.finish(TP, 5)
    assert tracker.committable() == {} and tracker.pending_count() == 0


@given(st.permutations(list(range(50))), st.integers(0, 50))
def test_commit_point_is_one_past_the_longest_finished_prefix(order, finished_count):
    tracker = OffsetTracker()
    for offset in range(50):
        tracker.track(TP, offset)
    finished = set(order[:finished_count])
    for offset in order[:finished_count]:
        tracker.finish(TP, offset)
    prefix = 0
    while prefix in finished:
        prefix += 1
    expected = {TP: prefix} if prefix else {}
    assert tracker.committable() == expected


def test_a_fetch_tracked_at_once_commits_as_records_tracked_one_by_one():
    at_once, one_by_one = OffsetTracker(), OffsetTracker()
    at_once.track_all(TP, [5, 6, 7])
    for offset in (5, 6, 7):
        one_by_one.track(TP, offset)
    for tracker in (at_once, one_by_one):
        tracker.finish(TP, 6)
        tracker.finish(TP, 5)
    assert at_once.committable() == one_by_one.committable() == {TP: 7}
    assert at_once.pending_count() == one_by_one.pending_count() == 1
