"""Watching actors: how many answer, and which Ray has restarted since the last look.

Ray restarts a dead actor under the same name in a new process, so a restart shows as a new
process id behind the same name. The supervisor of each shape reports what it saw each round.
Stopping one is bounded too (``stopped_within``): an actor that does not stop in time is released.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Awaitable
from dataclasses import dataclass, field

from streaminfer.monitoring.observability.metrics import ActorMetrics

log = logging.getLogger(__name__)


@dataclass
class Sighting:
    name: str
    role: str
    pid: int | None
    """None when the actor did not answer this round (dead, or being restarted)."""


@dataclass
class ActorWatcher:
    metrics: ActorMetrics
    _pids: dict[str, int] = field(default_factory=dict)
    restarts: int = 0

    def observe(self, sightings: list[Sighting]) -> None:
        alive: dict[str, int] = defaultdict(int)
        for seen in sightings:
            alive.setdefault(seen.role, 0)
            if seen.pid is None:
                continue
            alive[seen.role] += 1
            previous = self._pids.get(seen.name)
            if previous is None:
                self.metrics.restarts.labels(seen.name, seen.role)  # a series at 0, so the first restart shows
            elif previous != seen.pid:
                self.metrics.restarts.labels(seen.name, seen.role).inc()
                self.restarts += 1
            self._pids[seen.name] = seen.pid
        for role, count in alive.items():
            self.metrics.actors.labels(role).set(count)

    def forget(self, name: str, role: str) -> None:
        """An actor released on purpose (scaled down): no longer watched, its restarts series gone."""
        if self._pids.pop(name, None) is not None:
            self.metrics.restarts.remove(name, role)


async def stopped_within(stop: Awaitable[object], seconds: float, what: str) -> bool:
    """Await an actor's ``stop``, at most ``seconds``; False (and a warning) when it took longer.

    Ctrl-C must end ``run`` even when a stop waits on something that does not answer: the caller
    releases the actor either way, and what it had not committed is answered again by the next
    owner of its partitions."""
    try:
        await asyncio.wait_for(stop, seconds)
    except asyncio.TimeoutError:
        log.warning("stop: %s did not stop within %.0f s; released (what it had not committed is "
                    "answered again)", what, seconds)
        return False
    return True
