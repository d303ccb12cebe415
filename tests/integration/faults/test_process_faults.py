"""Process faults at CI size on Apache Kafka, each with an exact ledger (``ledger.py``): actors
SIGKILLed every few seconds, a rebalance storm, the webhook receiver and the online store down
for 15 s. At-least-once: nothing missing, repeats counted and printed; exactly-once: nothing
missing and nothing repeated as a ``read_committed`` reader sees it. The same scenarios run at
100,000 requests from ``tests/benchmarks/fault_scale.py``. Time to recover:
``process_stream.RECOVERY``."""

from __future__ import annotations

import pytest

from tests.integration.faults.ledger import GUARANTEES, LedgerReport
from tests.integration.faults.process_env import ProcessEnv
from tests.integration.faults.process_scenarios import (
    consumer_actor_kills,
    feature_sink_store_outage,
    feature_store_outage,
    rebalance_storm,
    webhook_receiver_outage,
    worker_actor_kills,
)

pytestmark = pytest.mark.faults

KILLS = 3000
STORM = 3000
OUTAGE = 1000


@pytest.fixture
def env(apache_kafka, model_repo, ray_dashboard, tmp_path) -> ProcessEnv:
    return ProcessEnv(apache_kafka.bootstrap, model_repo, tmp_path, rate_per_s=300, kill_every_s=2.5,
                      storm_every_s=3.0, outage_s=15.0, lead_s=3.0, answer_timeout_s=60.0)


def kept(report: LedgerReport) -> None:
    print(report.line())
    assert report.ok, report.line()
    assert report.recover_s is not None, f"no fault happened, or its backlog was never answered: {report.line()}"


@pytest.mark.parametrize("guarantee", GUARANTEES)
async def test_consumer_actors_sigkilled_every_few_seconds_lose_no_request(guarantee, env):
    report = await consumer_actor_kills(env, KILLS, guarantee)
    kept(report)
    assert report.dead_lettered == 0


@pytest.mark.parametrize("guarantee", GUARANTEES)
async def test_worker_pool_actors_sigkilled_every_few_seconds_lose_no_request(guarantee, env):
    report = await worker_actor_kills(env, KILLS, guarantee)
    kept(report)
    assert report.dead_lettered == 0


@pytest.mark.parametrize("guarantee", GUARANTEES)
async def test_pipelines_joining_and_leaving_the_group_every_few_seconds_lose_no_request(guarantee, env):
    report = await rebalance_storm(env, STORM, guarantee)
    kept(report)
    assert report.dead_lettered == 0


async def test_notifications_raised_while_the_webhook_receiver_is_down_are_all_delivered_when_it_returns(env):
    kept(await webhook_receiver_outage(env, OUTAGE, "at_least_once"))


@pytest.mark.parametrize("guarantee", GUARANTEES)
async def test_requests_during_an_online_store_outage_are_predicted_or_replayed_into_a_prediction(guarantee, env):
    """How many become dead letters depends on timing (a refused read takes Feast's Redis client
    3 to 9 s of retries, so a batch may wait out most of the outage; once, none failed at all):
    the ledger counts only predictions, after one replay."""
    kept(await feature_store_outage(env, OUTAGE, guarantee))


async def test_the_feature_sink_writes_every_row_streamed_during_an_online_store_outage(env):
    kept(await feature_sink_store_outage(env, OUTAGE, "at_least_once"))
