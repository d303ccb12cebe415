"""Drift event to webhook: delivery latency, and what a receiver outage does to alerts.

    PYTHONPATH=. python tests/benchmarks/alert_latency.py [SECONDS]

`streaminfer alerts run` runs in its own process with the default evaluation interval (1 s),
`group_wait_s: 0` and a receiver whose retries back off up to 5 s. A feeder writes a drift event
on a new feature every 200 ms, so each is a new alert. Latency is from the moment the broker
acknowledged the drift event to the notification's arrival at a real HTTP receiver. Then the
receiver goes down for 20 s while alerts keep coming, and comes back: how long until every
accepted notification has arrived, and whether any arrived twice.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from pathlib import Path

from streaminfer.broker import EmbeddedBroker
from streaminfer.streams.settings import KafkaSettings
from tests.benchmarks.alerting_isolation import AlertingBeside


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def first_arrivals(beside: AlertingBeside) -> dict[str, float]:
    """Feature -> when (wall clock) its alert first reached the receiver. The receiver stamps
    arrivals with the monotonic clock; the offset to the wall clock is taken once."""
    offset = time.time() - time.monotonic()
    seen: dict[str, float] = {}
    for request in beside.receiver.received:
        for alert in request.json["alerts"]:
            seen.setdefault(alert["labels"]["feature"], request.arrived + offset)
    return seen


async def main(bootstrap: str, seconds: float) -> None:
    beside = AlertingBeside(KafkaSettings(bootstrap=bootstrap), Path(tempfile.mkdtemp()), 0.0,
                            feed_every_s=0.2, evaluation_interval_s=1.0, max_backoff_s=5.0)
    async with beside:
        await asyncio.sleep(seconds)
        fed = dict(beside.sent_at)
        await beside.receiver.until(lambda r: set(first_arrivals(beside)) >= set(fed), timeout_s=30)
        arrivals = first_arrivals(beside)
        latency = [arrivals[f] - fed[f] for f in fed]
        print(f"drift event -> webhook, {len(latency)} alerts: p50 {percentile(latency, 0.5) * 1000:.0f} ms, "
              f"p99 {percentile(latency, 0.99) * 1000:.0f} ms, max {max(latency) * 1000:.0f} ms", flush=True)

        await beside.receiver.down()
        down_at = time.time()
        await asyncio.sleep(20)
        await beside.receiver.up()
        up_at = time.time()
        during = {f: t for f, t in beside.sent_at.items() if down_at <= t < up_at}
        await beside.receiver.until(lambda r: set(first_arrivals(beside)) >= set(during), timeout_s=120)
        done_at = time.time()
        arrivals = first_arrivals(beside)
        caught_up = max(arrivals[f] for f in during) - up_at
        keys = beside.receiver.by_idempotency_key()
        print(f"outage: receiver down {up_at - down_at:.0f} s while {len(during)} alerts fired; all of them arrived "
              f"within {caught_up:.1f} s of it coming back (checked {done_at - up_at:.1f} s after); "
              f"lost: {len(set(during) - set(arrivals))}; notifications arriving twice: "
              f"{sum(1 for n in keys.values() if n > 1)} of {len(keys)}", flush=True)


if __name__ == "__main__":
    broker = EmbeddedBroker().start()
    try:
        asyncio.run(main(broker.bootstrap, float(sys.argv[1]) if len(sys.argv) > 1 else 20.0))
    finally:
        broker.stop()
