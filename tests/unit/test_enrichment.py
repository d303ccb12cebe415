"""Enrichment appends an entity's online features to its request, or says why it cannot."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from streaminfer.schemas.deadletter import Reason
from streaminfer.schemas.headers import RequestHeaders
from streaminfer.streams.pipeline.decoding import Decoded
from streaminfer.streams.pipeline.enrichment import Enricher
from streaminfer.workers.models.repository import Enrichment
from streaminfer.workers.routing.served import Route

FEATURES = ["entity_stats:requests_60s", "entity_stats:mean_score_60s"]


class StoreDict:
    def __init__(self, values: dict[str, dict[str, float | None]], fail: bool = False) -> None:
        self.values, self.fail, self.reads = values, fail, 0

    def read(self, entities: list[str], refs: list[str]) -> dict[str, dict[str, float | None]]:
        self.reads += 1
        if self.fail:
            raise ConnectionError("redis at 127.0.0.1:6379 refused the connection")
        names = [r.split(":")[1] for r in refs]
        return {e: {n: self.values.get(e, {}).get(n) for n in names} for e in entities}


def item(entity: str | None, rows: int = 1, required: bool = True) -> Decoded:
    enrichment = Enrichment(input="input", features=FEATURES, required=required, default=-1.0)
    served = SimpleNamespace(entry=SimpleNamespace(name="m", version="1.0.0", metadata=SimpleNamespace(enrichment=enrichment, privacy=None)))
    arrays = {"input": np.full((rows, 1), 7.0, dtype=np.float32)}
    return Decoded(record=None, request_id="r", headers=RequestHeaders(), route=Route(served), arrays=arrays, rows=rows,  # type: ignore[arg-type]
                   parameters=None if entity is None else {"entity_id": entity})


async def test_an_entity_s_features_are_appended_to_every_row_in_order():
    store = StoreDict({"alice": {"requests_60s": 3, "mean_score_60s": 0.25}})
    [(enriched, error)] = await Enricher(lambda: store).enrich([item("alice", rows=2)])
    assert error is None
    np.testing.assert_array_equal(enriched.arrays["input"], [[7.0, 3.0, 0.25], [7.0, 3.0, 0.25]])
    assert enriched.arrays["input"].dtype == np.float32


async def test_a_batch_reads_the_store_once():
    store = StoreDict({"a": {"requests_60s": 1, "mean_score_60s": 0.1}, "b": {"requests_60s": 2, "mean_score_60s": 0.2}})
    outcomes = await Enricher(lambda: store).enrich([item("a"), item("b"), item("a")])
    assert [e for _, e in outcomes] == [None, None, None] and store.reads == 1


@pytest.mark.parametrize(
    ("entity", "values", "message"),
    [
        ("bob", {}, "entity 'bob' has no entity_stats:requests_60s, entity_stats:mean_score_60s"),
        ("carol", {"carol": {"requests_60s": 1}}, "entity 'carol' has no entity_stats:mean_score_60s"),
        (None, {}, "needs an entity: set parameters.entity_id"),
    ],
)
async def test_a_missing_entity_or_feature_is_a_feature_missing_dead_letter(entity, values, message):
    [(_, error)] = await Enricher(lambda: StoreDict(values)).enrich([item(entity)])
    assert error is not None and error.reason is Reason.FEATURE_MISSING
    assert message in str(error)


async def test_optional_features_fall_back_to_the_default():
    [(enriched, error)] = await Enricher(lambda: StoreDict({})).enrich([item("dave", required=False)])
    assert error is None
    np.testing.assert_array_equal(enriched.arrays["input"], [[7.0, -1.0, -1.0]])


async def test_an_unreadable_store_makes_replayable_dead_letters_not_a_crash():
    outcomes = await Enricher(lambda: StoreDict({}, fail=True)).enrich([item("a"), item("b")])
    assert all(e is not None and e.reason is Reason.FEATURE_STORE_UNAVAILABLE for _, e in outcomes)
    assert "refused the connection" in str(outcomes[0][1])
