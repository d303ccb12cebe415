"""Per-entity window aggregates: exact, idempotent under replay, bounded in memory."""

from __future__ import annotations

import random

import pytest

from streaminfer.streams.features import aggregates
from streaminfer.streams.features.aggregates import WindowSpec

SPEC = WindowSpec(step_s=60, size_s=300, lateness_s=300)
MIN = 60_000


def recompute(events: list[tuple[str, int, float]], spec: WindowSpec, probe: bool = False) -> dict[str, float | int]:
    """The features straight from the definition: the latest event's step bucket, and the
    ``size/step`` buckets that end with it (a ``probe`` event only sets the time)."""
    latest = max(ts for _, ts, _ in events)
    current = latest // (spec.step_s * 1000)
    seen: dict[str, tuple[int, float]] = {}
    for request_id, ts, score in events:
        if not (probe and request_id == "__probe__"):
            seen.setdefault(request_id, (ts, score))
    tumbling = [s for ts, s in seen.values() if ts // (spec.step_s * 1000) == current]
    hopping = [s for ts, s in seen.values() if current - spec.buckets < ts // (spec.step_s * 1000) <= current]
    names = spec.feature_names()
    return {
        names[0]: len(tumbling), names[1]: sum(tumbling) / len(tumbling) if tumbling else 0.0,
        names[2]: len(hopping), names[3]: sum(hopping) / len(hopping) if hopping else 0.0,
    }


def run(events: list[tuple[str, int, float]]) -> aggregates.State:
    state = aggregates.empty_state()
    for request_id, ts, score in events:
        aggregates.apply(state, SPEC, request_id, ts, score)
    return state


def test_features_cover_the_latest_minute_and_the_five_minutes_ending_with_it():
    events = [("a", 0, 1.0), ("b", 2 * MIN + 5, 0.5), ("c", 4 * MIN + 1, 0.2), ("d", 4 * MIN + 30_000, 0.4)]
    values = aggregates.features(run(events), SPEC)
    assert values == {"requests_60s": 2, "mean_score_60s": pytest.approx(0.3),
                      "requests_300s": 4, "mean_score_300s": pytest.approx(0.525)}


def test_a_replayed_request_is_not_counted_twice_but_its_rows_are_written_again():
    events = [("a", 1_000, 1.0), ("b", 2_000, 0.0)]
    state = run(events)
    assert aggregates.apply(state, SPEC, "a", 1_000, 1.0) == aggregates.Update(changed=False, times=[1_000, 2_000])
    assert aggregates.features(state, SPEC)["requests_60s"] == 2


def test_a_replayed_late_request_writes_again_the_corrected_current_row_it_wrote_the_first_time():
    state = run([("a", 1_000, 1.0), ("c", 3_000, 0.0)])
    first = aggregates.apply(state, SPEC, "b", 2_000, 0.5)  # late: it corrects the row at 3_000, the current one
    # a crash: the state holding "b" was saved, its rows never left; "b" is read again
    assert aggregates.apply(state, SPEC, "b", 2_000, 0.5) == aggregates.Update(changed=False, times=first.times)
    assert first.times == [2_000, 3_000]


def test_a_request_that_arrives_after_later_ones_corrects_their_rows():
    state = run([("a", 1_000, 1.0), ("c", 3_000, 0.0), ("d", 2 * MIN, 0.5)])
    update = aggregates.apply(state, SPEC, "b", 2_000, 0.5)
    assert update == aggregates.Update(changed=True, times=[2_000, 3_000, 2 * MIN])
    assert aggregates.features_at(state, SPEC, 2_000)["requests_60s"] == 2
    assert aggregates.features_at(state, SPEC, 3_000) == {
        "requests_60s": 3, "mean_score_60s": pytest.approx(0.5), "requests_300s": 3, "mean_score_300s": pytest.approx(0.5)}
    assert aggregates.features_at(state, SPEC, 2 * MIN)["requests_300s"] == 4


def test_requests_later_than_the_allowed_lateness_are_ignored_and_older_buckets_dropped():
    state = run([(f"r{m}", m * MIN, 1.0) for m in range(20)])
    assert len(state["buckets"]) == SPEC.late_buckets + SPEC.buckets
    assert aggregates.apply(state, SPEC, "late", 13 * MIN, 1.0) == aggregates.Update(changed=False, times=[])
    assert aggregates.features(state, SPEC)["requests_300s"] == 5


def test_shuffled_and_replayed_streams_give_the_features_recomputed_from_the_definition():
    rng = random.Random(7)
    for _ in range(200):
        events = [(f"r{i}", rng.randrange(0, 8 * MIN), rng.random()) for i in range(rng.randrange(1, 60))]
        rng.shuffle(events)  # entities read from several partitions arrive out of order
        # a restarted worker re-reads a suffix it had already applied
        replayed = events + events[rng.randrange(0, len(events)):]
        got = aggregates.features(run(replayed), SPEC)
        want = recompute(events, SPEC)
        assert got.keys() == want.keys()
        for name in want:
            assert got[name] == pytest.approx(want[name]), name


def test_a_hopping_window_that_is_not_a_multiple_of_its_step_is_refused():
    with pytest.raises(ValueError, match="multiple"):
        WindowSpec(step_s=60, size_s=90)


def as_of(events: list[tuple[str, int, float]], spec: WindowSpec, ts_ms: int) -> dict[str, float | int]:
    return recompute([e for e in events if e[1] <= ts_ms] + [("__probe__", ts_ms, 0.0)], spec, probe=True)


def test_the_last_row_written_for_each_time_holds_the_features_as_of_that_time_whatever_the_arrival_order():
    rng = random.Random(11)
    for _ in range(100):
        events = [(f"r{i}", rng.randrange(0, 6 * MIN), rng.random()) for i in range(rng.randrange(1, 40))]
        rng.shuffle(events)
        state, written, accepted = aggregates.empty_state(), {}, []
        for request_id, ts, score in events:
            update = aggregates.apply(state, SPEC, request_id, ts, score)
            if update.changed:
                accepted.append((request_id, ts, score))
            for at in update.times:
                written[at] = aggregates.features_at(state, SPEC, at)  # a later row for a time wins
        # requests older than every kept window when they arrive are ignored by design
        for at, values in written.items():
            want = as_of(accepted, SPEC, at)
            assert values == {k: pytest.approx(v) for k, v in want.items()}, at


def test_rows_lost_in_a_crash_after_the_state_was_saved_are_all_written_again_by_the_replay():
    """Faust saves a table's change and sends the agent's rows through one producer, to
    different partitions: a SIGKILL can keep the saved state and lose the rows, and the worker
    then reads again from its committed offset."""
    rng = random.Random(5)
    for _ in range(200):
        events = [(f"r{i}", rng.randrange(0, 6 * MIN), rng.random()) for i in range(rng.randrange(1, 40))]
        rng.shuffle(events)
        crash = rng.randrange(len(events))
        state, written = aggregates.empty_state(), {}
        for n, (request_id, ts, score) in enumerate(events):
            update = aggregates.apply(state, SPEC, request_id, ts, score)
            if n < crash:  # the rows of the requests from the crash on never left
                written.update({at: aggregates.features_at(state, SPEC, at) for at in update.times})
        for request_id, ts, score in events[crash:]:  # read again; the saved state holds them all
            update = aggregates.apply(state, SPEC, request_id, ts, score)
            assert not update.changed
            written.update({at: aggregates.features_at(state, SPEC, at) for at in update.times})
        assert set(written) == {ts for _, ts, _ in events}
        for at, values in written.items():
            assert values == {k: pytest.approx(v) for k, v in as_of(events, SPEC, at).items()}, at
