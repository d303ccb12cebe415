"""The broker and process fault scenarios at CI size, on Apache Kafka, each with an exact ledger:
at-least-once answers every acknowledged request (repeats counted and printed), exactly-once
answers each exactly once as a ``read_committed`` reader sees it.

A broker stopped or killed under the at-least-once pipeline is also covered by
tests/integration/test_broker_outage.py (20 s, the metric and the log lines); here the same outage
is ridden out by exactly-once. tests/benchmarks/fault_scale.py runs every scenario at 100,000.
"""

from __future__ import annotations

import pytest

from tests.integration.faults import broker_scenarios as scenarios
from tests.integration.faults.ledger import GUARANTEES, LedgerReport

pytestmark = pytest.mark.faults

COUNT = 3_000


def _kept(report: LedgerReport) -> None:
    print(report.line())  # duplicates of at-least-once are reported, not failed
    assert report.ok, report.line()
    assert report.sent == COUNT and report.dead_lettered == 0, report.line()


@pytest.mark.parametrize("guarantee", GUARANTEES)
async def test_run_process_tree_sigkilled_mid_stream_and_restarted_answers_every_request(guarantee, place, apache_kafka):
    report = await scenarios.run_killed(
        COUNT, guarantee, place, rate_per_s=scenarios.rate_for(COUNT, 15), bootstrap=apache_kafka.bootstrap
    )
    _kept(report)


@pytest.mark.parametrize("how", ["stop", "kill"])
async def test_broker_down_10_s_under_exactly_once_run_is_ridden_out_with_each_request_answered_once(how, place):
    report = await scenarios.broker_down(COUNT, "exactly_once", place, how=how, rate_per_s=scenarios.rate_for(COUNT, 15))
    _kept(report)


@pytest.mark.parametrize("guarantee", GUARANTEES)
async def test_one_of_three_brokers_sigkilled_mid_stream_loses_no_request(guarantee, place, kafka_cluster):
    report = await scenarios.cluster_broker_killed(
        COUNT, guarantee, place, rate_per_s=scenarios.rate_for(COUNT, 15), cluster=kafka_cluster
    )
    _kept(report)
