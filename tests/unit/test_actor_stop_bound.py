"""Ctrl-C ends ``run`` even when an actor's stop waits on something that never answers: each
actor's stop is awaited for a bounded time, then the actor is released anyway."""

from __future__ import annotations

import asyncio
import logging

from streaminfer.supervision import stopped_within


async def test_a_stop_that_never_ends_is_given_up_after_its_budget_with_a_warning(caplog):
    never: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    with caplog.at_level(logging.WARNING, logger="streaminfer.supervision"):
        assert await stopped_within(never, 0.05, "a consumer actor") is False
    assert "a consumer actor did not stop within 0 s; released" in caplog.text
    assert never.cancelled()


async def test_a_stop_that_ends_in_time_is_awaited_to_its_end():
    finished = []

    async def stop() -> None:
        await asyncio.sleep(0.01)
        finished.append(True)

    assert await stopped_within(stop(), 5.0, "the monitor actor") is True
    assert finished == [True]
