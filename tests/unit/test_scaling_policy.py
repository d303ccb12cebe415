"""The autoscaling policy on a manual clock: thresholds, hysteresis, cool-downs and bounds, at the
exact reading where each decision changes."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from streaminfer.scaling.policy import ScalingPolicy, Seen
from streaminfer.scaling.settings import ScalingSettings
from streaminfer.streams.clock import ManualClock

SETTINGS = ScalingSettings(
    enabled=True, min_consumers=1, max_consumers=6, lag_per_consumer=1000, growth_per_s=500, idle_lag=10,
    idle_for_s=20, up_cooldown_s=5, down_cooldown_s=30,
)
ROOM = {"partitions": 8, "cpus": 8}


def policy(settings: ScalingSettings = SETTINGS) -> tuple[ScalingPolicy, ManualClock]:
    clock = ManualClock()
    return ScalingPolicy(settings, clock), clock


def test_lag_over_the_threshold_per_consumer_scales_to_lag_over_the_threshold():
    scaling, _ = policy()
    decision = scaling.decide(Seen(lag=3500, running=1, limits=ROOM))
    assert (decision.direction, decision.desired, decision.reason, decision.lag) == ("up", 4, "lag", 3500)


def test_lag_just_over_the_threshold_adds_at_least_one_consumer():
    scaling, _ = policy()
    assert scaling.decide(Seen(lag=2001, running=2, limits=ROOM)).desired == 3
    scaling, _ = policy()
    assert scaling.decide(Seen(lag=2000, running=2, limits=ROOM)).direction == "hold", "at the threshold: not over it"


def test_lag_growing_faster_than_the_threshold_adds_one_before_the_lag_threshold():
    scaling, clock = policy()
    assert scaling.decide(Seen(lag=100, running=2, limits=ROOM)).reason == "steady"
    clock.advance(2)
    as_fast = scaling.decide(Seen(lag=1100, running=2, limits=ROOM))  # 500/s: not faster than 500/s
    assert (as_fast.direction, as_fast.growth_per_s) == ("hold", 500.0)
    clock.advance(1)
    faster = scaling.decide(Seen(lag=1700, running=2, limits=ROOM))  # 600/s, under 2 x 1000 behind
    assert (faster.direction, faster.desired, faster.reason, faster.growth_per_s) == ("up", 3, "growth", 600.0)


def test_lag_between_the_idle_and_the_scale_up_thresholds_holds_for_ever():
    """Hysteresis: after scaling up, a lag under the up threshold but over ``idle_lag`` changes nothing."""
    scaling, clock = policy()
    assert scaling.decide(Seen(lag=3000, running=1, limits=ROOM)).desired == 3
    for _ in range(60):
        clock.advance(5)
        decision = scaling.decide(Seen(lag=11, running=3, limits=ROOM))
        assert (decision.direction, decision.reason) == ("hold", "steady")


def test_an_idle_group_drains_one_consumer_after_idle_for_s_and_the_next_after_a_fresh_idle_period():
    scaling, clock = policy(SETTINGS.model_copy(update={"down_cooldown_s": 0}))
    moments = []
    running = 3
    for second in range(0, 61):
        decision = scaling.decide(Seen(lag=10, running=running, limits=ROOM))
        if decision.changes:
            moments.append((second, decision.direction, decision.desired, decision.reason))
            running = decision.desired
        clock.advance(1)
    assert moments == [(20, "down", 2, "idle"), (41, "down", 1, "idle")], "idle counts afresh after each change"


def test_a_record_of_lag_over_idle_lag_restarts_the_idle_period():
    scaling, clock = policy(SETTINGS.model_copy(update={"down_cooldown_s": 0}))
    scaling.decide(Seen(lag=0, running=2, limits=ROOM))
    clock.advance(19)
    scaling.decide(Seen(lag=11, running=2, limits=ROOM))
    clock.advance(1)
    assert scaling.decide(Seen(lag=0, running=2, limits=ROOM)).direction == "hold"
    clock.advance(20)
    assert scaling.decide(Seen(lag=0, running=2, limits=ROOM)).direction == "down"


def test_a_scale_up_waits_out_the_up_cooldown_since_the_last_change():
    scaling, clock = policy()
    assert scaling.decide(Seen(lag=2500, running=1, limits=ROOM)).desired == 3
    clock.advance(4.5)
    held = scaling.decide(Seen(lag=9000, running=3, limits=ROOM))
    assert (held.direction, held.desired, held.reason) == ("hold", 3, "cooldown")
    clock.advance(0.5)
    assert scaling.decide(Seen(lag=9000, running=3, limits=ROOM)).desired == 6


def test_a_scale_down_waits_out_the_down_cooldown_after_a_scale_up():
    scaling, clock = policy()
    scaling.decide(Seen(lag=2500, running=1, limits=ROOM))
    clock.advance(1)
    scaling.decide(Seen(lag=0, running=3, limits=ROOM))  # idle from here
    clock.advance(28.5)  # idle 28.5 s, 29.5 s since the change
    held = scaling.decide(Seen(lag=0, running=3, limits=ROOM))
    assert (held.direction, held.reason) == ("hold", "cooldown")
    clock.advance(0.5)
    assert scaling.decide(Seen(lag=0, running=3, limits=ROOM)).desired == 2


def test_a_scale_up_stops_at_the_tightest_bound_and_names_it():
    scaling, clock = policy()
    decision = scaling.decide(Seen(lag=50_000, running=1, limits={"partitions": 4, "cpus": 3}))
    assert (decision.direction, decision.desired, decision.reason) == ("up", 3, "lag")
    clock.advance(10)
    at_cpus = scaling.decide(Seen(lag=50_000, running=3, limits={"partitions": 4, "cpus": 3}))
    assert (at_cpus.direction, at_cpus.reason) == ("hold", "cpus")
    clock.advance(10)
    at_partitions = scaling.decide(Seen(lag=50_000, running=4, limits={"partitions": 4, "cpus": 9}))
    assert (at_partitions.direction, at_partitions.reason) == ("hold", "partitions")
    clock.advance(10)
    at_max = scaling.decide(Seen(lag=50_000, running=6, limits={"partitions": 12, "cpus": 9}))
    assert (at_max.direction, at_max.reason) == ("hold", "max")


def test_below_min_scales_up_at_once_even_in_a_cooldown():
    scaling, clock = policy(SETTINGS.model_copy(update={"min_consumers": 2}))
    assert scaling.decide(Seen(lag=5000, running=2, limits=ROOM)).direction == "up"
    clock.advance(1)
    decision = scaling.decide(Seen(lag=0, running=1, limits=ROOM))  # one was lost
    assert (decision.direction, decision.desired, decision.reason) == ("up", 2, "min")


def test_more_consumers_than_partitions_scale_down_to_the_partitions_without_waiting():
    scaling, _ = policy()
    decision = scaling.decide(Seen(lag=500, running=5, limits={"partitions": 3, "cpus": 9}))
    assert (decision.direction, decision.desired, decision.reason) == ("down", 3, "partitions")


def test_an_idle_group_never_drains_below_min_consumers():
    scaling, clock = policy(SETTINGS.model_copy(update={"min_consumers": 2, "down_cooldown_s": 0}))
    for _ in range(100):
        decision = scaling.decide(Seen(lag=0, running=2, limits=ROOM))
        assert (decision.direction, decision.reason) == ("hold", "steady")
        clock.advance(1)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"min_consumers": 5, "max_consumers": 4}, "min_consumers"),
        ({"idle_lag": 1000, "lag_per_consumer": 1000}, "idle_lag"),
    ],
)
def test_settings_refuse_bounds_or_thresholds_out_of_order(changes, message):
    with pytest.raises(ValidationError, match=message):
        ScalingSettings(**changes)
