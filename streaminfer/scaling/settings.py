"""Settings of the autoscaler (``STREAMINFER_SCALING__*``, ``[scaling]`` in a settings file)."""

from __future__ import annotations

from pydantic import BaseModel, Field, model_validator


class ScalingSettings(BaseModel):
    """When consumer actors are added and drained, and within which bounds.

    Up: the group's lag is over ``lag_per_consumer`` records per running consumer, or it grows
    faster than ``growth_per_s``. Down, one at a time: the lag stayed at or under ``idle_lag`` for
    ``idle_for_s``. The two thresholds are far apart on purpose (hysteresis), and after any change
    the next waits out a cool-down. The count stays within ``min_consumers``/``max_consumers``, the
    requests topic's partitions and what the cluster's free CPUs (or GPUs) can hold.
    """

    enabled: bool = False
    """Scale the consumer actors (``pipeline.consumers`` is where they start; at least 1)."""

    min_consumers: int = Field(1, ge=1)
    """Fewest consumer actors; the group never drains below this."""

    max_consumers: int = Field(8, ge=1)
    """Most consumer actors (the requests topic's partitions and the free CPUs bound it too)."""

    interval_s: float = Field(2.0, gt=0)
    """How often the group's lag is read and a decision taken."""

    lag_per_consumer: int = Field(2000, ge=1)
    """Scale up once the group's lag is over this many records per running consumer; the count
    becomes the lag over this (one more at least), within the bounds."""

    growth_per_s: float = Field(1000.0, gt=0)
    """Scale up by one when the lag grows faster than this many records a second between two
    readings, before it reaches ``lag_per_consumer``."""

    idle_lag: int = Field(100, ge=0)
    """At or under this many records behind (the whole group), the group counts as idle."""

    idle_for_s: float = Field(30.0, ge=0)
    """How long the group stays idle before one consumer is drained."""

    up_cooldown_s: float = Field(10.0, ge=0)
    """After a change, no scale up for this long (the new members' rebalance settles first)."""

    down_cooldown_s: float = Field(60.0, ge=0)
    """After a change, no scale down for this long."""

    action_timeout_s: float = Field(60.0, gt=0)
    """Longest a new consumer may take to own partitions, and a drained one to stop; a consumer
    that does not drain in time is released anyway (what it had not committed is answered again)."""

    @model_validator(mode="after")
    def _bounds_and_thresholds_in_order(self) -> ScalingSettings:
        if self.min_consumers > self.max_consumers:
            raise ValueError(f"scaling.min_consumers ({self.min_consumers}) is over scaling.max_consumers ({self.max_consumers})")
        if self.idle_lag >= self.lag_per_consumer:
            raise ValueError(f"scaling.idle_lag ({self.idle_lag}) must be under scaling.lag_per_consumer "
                             f"({self.lag_per_consumer}): the gap between them keeps the count from flapping")
        return self
