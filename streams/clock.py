"""The clock the streams run on: wall time, monotonic time, and waiting on either.

Everything in ``streams`` that reads the time or waits for a deadline takes a ``Clock``:
``SYSTEM_CLOCK`` (the default) is the real one; ``ManualClock`` moves only when a test advances it,
so flushes on a deadline, backoffs and timeouts are driven without sleeping, and a test asserts
the exact moment something was due instead of how long it took.

>>> import asyncio
>>> async def main() -> None:
...     clock = ManualClock(start_s=100.0)
...     sleeper = asyncio.ensure_future(clock.sleep(5))
...     print(await clock.sleeping())
...     clock.advance(5)
...     await sleeper
...     print(clock.time(), clock.monotonic())
>>> asyncio.run(main())
5.0
105.0 5.0
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import math
import time
from collections.abc import Awaitable
from typing import Any, Protocol, TypeVar

T = TypeVar("T")


class Clock(Protocol):
    def time(self) -> float:
        """Seconds since the epoch (what deadlines and timestamps in headers are measured in)."""
        ...

    def monotonic(self) -> float:
        """Seconds from an arbitrary start that never goes back (for intervals)."""
        ...

    async def sleep(self, seconds: float) -> None: ...

    async def wait_for(self, aw: Awaitable[T], timeout_s: float) -> T:
        """``aw``'s result, or ``asyncio.TimeoutError`` once ``timeout_s`` passed on this clock
        (``aw`` is then cancelled), like ``asyncio.wait_for``."""
        ...


class SystemClock:
    """The real clock: ``time.time``, ``time.monotonic`` and asyncio's own timers."""

    def time(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    async def wait_for(self, aw: Awaitable[T], timeout_s: float) -> T:
        return await asyncio.wait_for(aw, timeout_s)


SYSTEM_CLOCK: Clock = SystemClock()


class ManualClock:
    """A clock that stands still until ``advance()``: for tests and replays.

    ``time()`` is ``start_s`` plus the time advanced, ``monotonic()`` the time advanced. Sleeps and
    timeouts register a wakeup; ``advance()`` wakes those due, oldest first. ``sleeping()`` waits
    for the fact a test needs before advancing: someone is waiting on this clock.
    """

    def __init__(self, start_s: float = 1_700_000_000.0) -> None:
        self._start = start_s
        self._elapsed = 0.0
        self._timers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._order = itertools.count()
        self._registered = asyncio.Event()

    def time(self) -> float:
        return self._start + self._elapsed

    def monotonic(self) -> float:
        return self._elapsed

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        timer = self._timer(seconds)
        try:
            await timer
        finally:
            timer.cancel()

    async def wait_for(self, aw: Awaitable[T], timeout_s: float) -> T:
        task = asyncio.ensure_future(aw)
        if timeout_s > 0:
            timer = self._timer(timeout_s)
            either: set[asyncio.Future[Any]] = {task, timer}
            try:
                await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
            except asyncio.CancelledError:
                task.cancel()
                raise
            finally:
                timer.cancel()
        if task.done():
            return task.result()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        raise asyncio.TimeoutError

    def advance(self, seconds: float) -> None:
        """Move the clock forward and wake every sleep and timeout due by then, in due order
        (they run at the loop's next turns; await what they lead to)."""
        if seconds < 0:
            raise ValueError(f"a clock does not go back ({seconds} s)")
        self._elapsed += seconds
        while self._timers and self._timers[0][0] <= self._elapsed:
            _, _, timer = heapq.heappop(self._timers)
            if not timer.done():
                timer.set_result(None)

    @property
    def wakeups(self) -> list[float]:
        """When (on ``monotonic()``) each current sleep or timeout is due, earliest first."""
        return sorted(due for due, _, timer in self._timers if not timer.done())

    async def sleeping(self, within_s: float = math.inf) -> float:
        """Wait until something sleeps or times out on this clock due at most ``within_s`` from
        now; returns the earliest such wakeup (on ``monotonic()``)."""
        while True:
            due = [at for at in self.wakeups if at <= self._elapsed + within_s]
            if due:
                return due[0]
            self._registered.clear()
            await self._registered.wait()

    def _timer(self, seconds: float) -> asyncio.Future[None]:
        timer: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._timers, (self._elapsed + seconds, next(self._order), timer))
        self._registered.set()
        return timer
