"""Rows of a batch map back to the requests they came from."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from streaminfer.schemas.headers import RequestHeaders
from streaminfer.streams.pipeline.decoding import Decoded, split_predictions, stack_inputs
from streaminfer.workers.routing.served import Route


def item(request_id: str, rows: int, deadline_ms: int | None = None) -> Decoded:
    served = SimpleNamespace(entry=SimpleNamespace(name="m", version="1.0.0"))
    arrays = {"input": np.full((rows, 2), float(len(request_id)), dtype=np.float32)}
    return Decoded(record=None, request_id=request_id, headers=RequestHeaders(deadline_ms=deadline_ms),
                   route=Route(served), arrays=arrays, rows=rows)  # type: ignore[arg-type]


def test_requests_with_several_rows_get_back_exactly_their_rows():
    items = [item("a", 1), item("bb", 3), item("ccc", 2)]
    stacked = stack_inputs(items)
    assert stacked["input"].shape == (6, 2)
    outputs = {"label": np.arange(6, dtype=np.int64)}
    predictions = split_predictions(items, outputs, items[0].served.entry)
    assert [p.id for p in predictions] == ["a", "bb", "ccc"]
    assert [p.outputs[0].data for p in predictions] == [[0], [1, 2, 3], [4, 5]]
    assert predictions[1].outputs[0].shape == [3]


def test_a_model_returning_the_wrong_row_count_is_an_error_not_a_silent_shift():
    with pytest.raises(ValueError, match="returned 3 rows for a batch of 2"):
        split_predictions([item("a", 1), item("b", 1)], {"label": np.arange(3)}, item("a", 1).served.entry)
