"""Where a consumer actor's session computes a batch: on the event loop's thread when the model
is fast enough that the hop to the worker thread would cost more, on the worker thread otherwise."""

from __future__ import annotations

import asyncio

import numpy as np

from streaminfer.demo.model import DEMO_MODEL, INPUT_NAME, demo_data
from streaminfer.workers.execution.local import LocalPool
from streaminfer.workers.settings import RuntimeSettings


async def _batches(model_repo, settings: RuntimeSettings, rows: list[int]) -> tuple[dict[str, object], list[dict]]:
    pool = LocalPool(model_repo.resolve(DEMO_MODEL), settings, label="test")
    await pool.start()
    x = demo_data().x_test
    try:
        outputs = [await pool.infer({INPUT_NAME: x[:n]}) for n in rows]
        [described] = await pool.describe()
    finally:
        await pool.stop()
    return described, outputs


def test_after_its_first_batch_a_fast_model_computes_on_the_event_loops_thread(model_repo):
    described, outputs = asyncio.run(_batches(model_repo, RuntimeSettings(inline_below_ms=1000), [10, 10, 50]))
    assert (described["batches_threaded"], described["batches_inline"]) == (1, 2)
    assert [o["probabilities"].shape[0] for o in outputs] == [10, 10, 50]


def test_a_model_slower_than_the_threshold_computes_every_batch_on_the_worker_thread(model_repo):
    described, _ = asyncio.run(_batches(model_repo, RuntimeSettings(inline_below_ms=1e-6), [10, 10, 50]))
    assert (described["batches_threaded"], described["batches_inline"]) == (3, 0)


def test_a_threshold_of_zero_keeps_every_batch_on_the_worker_thread(model_repo):
    described, _ = asyncio.run(_batches(model_repo, RuntimeSettings(inline_below_ms=0), [10, 10]))
    assert (described["batches_threaded"], described["batches_inline"]) == (2, 0)


def test_a_batch_computes_the_same_on_either_thread(model_repo):
    _, threaded = asyncio.run(_batches(model_repo, RuntimeSettings(inline_below_ms=0), [40, 40]))
    _, inline = asyncio.run(_batches(model_repo, RuntimeSettings(inline_below_ms=1000), [40, 40]))
    np.testing.assert_array_equal(threaded[1]["probabilities"], inline[1]["probabilities"])
    np.testing.assert_array_equal(threaded[1]["label"], inline[1]["label"])
