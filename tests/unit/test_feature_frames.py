"""What the sink pushes online, against the online stores' write rules.

Feast's Redis store skips a row whose event timestamp is older than or equal to the stored one;
its SQLite store keeps the last row written. The aggregate's rows carry the request's event time
(two requests of one entity can share a millisecond) and when they were computed; the sink
pushes the computed time as the event timestamp, so each store ends with the newest row."""

from __future__ import annotations

import random

import pandas as pd

from streaminfer.streams.features import aggregates
from streaminfer.streams.features.aggregates import WindowSpec
from streaminfer.streams.features.frames import online_rows, stats_frame
from streaminfer.streams.features.records import FeatureRow
from streaminfer.streams.features.store import ENTITY_KEY, TIMESTAMP

SPEC = WindowSpec(step_s=60, size_s=300, lateness_s=300)
NAMES = SPEC.feature_names()


def row(entity: str, ts_ms: int, created_us: int, current: bool, count: int) -> FeatureRow:
    return FeatureRow(entity, ts_ms, created_us, current, {NAMES[0]: count, NAMES[1]: 0.5, NAMES[2]: count, NAMES[3]: 0.5})


def test_two_requests_of_one_entity_in_the_same_millisecond_go_online_as_the_later_row():
    online = online_rows(stats_frame([row("e", 1_000, 10, True, 1), row("e", 1_000, 12, True, 2)], NAMES))
    assert online[NAMES[0]].tolist() == [2]
    assert online[TIMESTAMP].tolist() == [pd.Timestamp(12, unit="us", tz="UTC")]


class RedisRule:
    """Feast's Redis online store: a row not newer than the stored one is skipped."""

    def __init__(self) -> None:
        self.stored: dict[str, tuple[pd.Timestamp, int]] = {}

    def write(self, frame: pd.DataFrame) -> None:
        for entity, ts, count in zip(frame[ENTITY_KEY], frame[TIMESTAMP], frame[NAMES[2]], strict=True):
            if entity not in self.stored or ts > self.stored[entity][0]:
                self.stored[entity] = (ts, count)


class SqliteRule(RedisRule):
    """Feast's SQLite online store: the last row written wins."""

    def write(self, frame: pd.DataFrame) -> None:
        for entity, ts, count in zip(frame[ENTITY_KEY], frame[TIMESTAMP], frame[NAMES[2]], strict=True):
            self.stored[entity] = (ts, count)


def test_each_store_ends_with_the_entity_s_features_whatever_the_ties_lateness_and_batching():
    rng = random.Random(9)
    for _ in range(40):
        # few distinct milliseconds: many requests share one; shuffled, so many arrive late
        events = [(f"r{i}", rng.choice("ab"), rng.choice([1_000, 1_001, 30_000, 61_000, 62_000])) for i in range(30)]
        rng.shuffle(events)
        states = {"a": aggregates.empty_state(), "b": aggregates.empty_state()}
        rows, created = [], 0
        for request_id, entity, ts in events:
            update = aggregates.apply(states[entity], SPEC, request_id, ts, 0.5)
            created += rng.randrange(1, 50)  # microseconds apart: one process computes one event at a time
            state = states[entity]
            rows += [FeatureRow(entity, t, created, t == state["latest_ms"], aggregates.features_at(state, SPEC, t))
                     for t in update.times]
        stores = [RedisRule(), SqliteRule()]
        while rows:
            cut = rng.randrange(1, 8)
            batch, rows = rows[:cut], rows[cut:]
            for store in stores:
                store.write(online_rows(stats_frame(batch, NAMES)))
        for store in stores:
            for entity, state in states.items():
                if state["latest_ms"]:
                    assert store.stored[entity][1] == aggregates.features(state, SPEC)[NAMES[2]], (type(store), entity)
