"""How many consumer actors the group should have, from its lag: a pure decision.

``decide(settings, memory, seen, now_s)`` returns a ``Decision`` and the ``Memory`` to pass next
time; it reads no clock and calls nothing. ``ScalingPolicy`` keeps the memory and reads the time
from a ``Clock``, so a test drives it with ``ManualClock`` and asserts the exact reading at which
it scales.

Rules, in order:

1. Outside the bounds (fewer than ``min_consumers``, more than ``max_consumers`` or the
   requests topic's partitions): back inside at once, with the bound as the reason.
2. Up on ``lag`` when the group is over ``lag_per_consumer`` records behind per running consumer
   (to the lag over ``lag_per_consumer``, one more at least), or on ``growth`` when the lag grew
   faster than ``growth_per_s`` since the last reading (one more).
3. Down on ``idle``, one at a time, once the lag stayed at or under ``idle_lag`` for ``idle_for_s``.
   The gap between ``idle_lag`` and ``lag_per_consumer`` is the hysteresis.
4. A change waits out the cool-down since the last change (``up_cooldown_s`` before an increase,
   ``down_cooldown_s`` before a decrease): it holds with the reason ``cooldown``. An increase
   the limits leave no room for holds with the limit as the reason (``max``, ``partitions``,
   ``cpus``, ``gpus``).

>>> settings = ScalingSettings(max_consumers=4, lag_per_consumer=1000, idle_lag=10, idle_for_s=30)
>>> decision, memory = decide(settings, Memory(), Seen(lag=5200, running=1, limits={"partitions": 6}), now_s=0.0)
>>> decision.direction, decision.desired, decision.reason
('up', 4, 'lag')
>>> decision, memory = decide(settings, memory, Seen(lag=0, running=4, limits={"partitions": 6}), now_s=70.0)
>>> decision.direction, decision.reason  # idle from now on, not for 30 s yet
('hold', 'steady')
>>> decide(settings, memory, Seen(lag=0, running=4, limits={"partitions": 6}), now_s=100.0)[0].desired
3
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Literal

from streaminfer.scaling.settings import ScalingSettings
from streaminfer.streams.clock import SYSTEM_CLOCK, Clock

Direction = Literal["up", "down", "hold"]


@dataclass(frozen=True)
class Seen:
    """One reading: the group's lag, the consumers running, and what else bounds their count
    (``partitions``, ``cpus``, ``gpus``: the most consumers each leaves room for)."""

    lag: int
    running: int
    limits: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Decision:
    desired: int
    direction: Direction
    reason: str
    """up: ``lag``, ``growth``, ``min``; down: ``idle``, ``max``, ``partitions``; hold: ``steady``,
    ``cooldown``, or the limit that leaves no room (``max``, ``partitions``, ``cpus``, ``gpus``)."""
    lag: int
    growth_per_s: float

    @property
    def changes(self) -> bool:
        return self.direction != "hold"


@dataclass(frozen=True)
class Memory:
    """What a decision needs of the past: the last change, since when the group is idle, and the
    previous reading (for the growth rate). Times on the caller's monotonic clock."""

    last_change_s: float | None = None
    idle_since_s: float | None = None
    previous: tuple[float, int] | None = None


def decide(settings: ScalingSettings, memory: Memory, seen: Seen, now_s: float) -> tuple[Decision, Memory]:
    growth = _growth(memory.previous, seen.lag, now_s)
    idle = seen.lag <= settings.idle_lag
    idle_since = (memory.idle_since_s if memory.idle_since_s is not None else now_s) if idle else None
    remembered = replace(memory, idle_since_s=idle_since, previous=(now_s, seen.lag))
    limits = {"max": settings.max_consumers, **seen.limits}
    want, reason = _wanted(settings, seen, growth, now_s - idle_since if idle_since is not None else None, limits)

    def hold(why: str) -> tuple[Decision, Memory]:
        return Decision(seen.running, "hold", why, seen.lag, growth), remembered

    if want == seen.running:
        return hold(reason)
    since_change = math.inf if memory.last_change_s is None else now_s - memory.last_change_s
    if want > seen.running:
        ceiling, bound = min((limit, name) for name, limit in limits.items())
        want = min(want, ceiling)
        if want <= seen.running:
            return hold(bound)
        if reason != "min" and since_change < settings.up_cooldown_s:
            return hold("cooldown")
    elif reason == "idle" and since_change < settings.down_cooldown_s:
        return hold("cooldown")
    direction: Direction = "up" if want > seen.running else "down"
    changed = replace(remembered, last_change_s=now_s, idle_since_s=None)  # idle counts afresh after a change
    return Decision(want, direction, reason, seen.lag, growth), changed


def _wanted(
    settings: ScalingSettings, seen: Seen, growth: float, idle_for: float | None, limits: Mapping[str, int]
) -> tuple[int, str]:
    running = seen.running
    if running < settings.min_consumers:
        return settings.min_consumers, "min"
    hard = {name: limit for name, limit in limits.items() if name in ("max", "partitions")}
    over = [(limit, name) for name, limit in hard.items() if running > max(limit, settings.min_consumers)]
    if over:
        limit, name = min(over)
        return max(limit, settings.min_consumers), name
    if seen.lag > settings.lag_per_consumer * running:
        return max(running + 1, math.ceil(seen.lag / settings.lag_per_consumer)), "lag"
    if growth > settings.growth_per_s:
        return running + 1, "growth"
    if idle_for is not None and idle_for >= settings.idle_for_s and running > settings.min_consumers:
        return running - 1, "idle"
    return running, "steady"


def _growth(previous: tuple[float, int] | None, lag: int, now_s: float) -> float:
    """Records a second the lag grew by since the previous reading (negative: it shrank)."""
    if previous is None or now_s <= previous[0]:
        return 0.0
    return (lag - previous[1]) / (now_s - previous[0])


class ScalingPolicy:
    """``decide`` with its memory kept, on a clock."""

    def __init__(self, settings: ScalingSettings, clock: Clock = SYSTEM_CLOCK) -> None:
        self._settings = settings
        self._clock = clock
        self._memory = Memory()

    def decide(self, seen: Seen) -> Decision:
        decision, self._memory = decide(self._settings, self._memory, seen, self._clock.monotonic())
        return decision
